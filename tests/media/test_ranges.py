"""Range headers over a 1000-byte attachment (RFC 9110 §14.1.2)."""

from __future__ import annotations

import pytest

from gateway.media.errors import MediaError
from gateway.media.ranges import ByteRange, parse_range


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=500-", ByteRange(500, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # a suffix longer than the whole: all of it
        ("bytes=900-5000", ByteRange(900, 999)),  # clamped to the end
        ("bytes=999-999", ByteRange(999, 999)),
        ("BYTES = 10 - 19", ByteRange(10, 19)),
        (None, None),
        ("bytes=0-1,5-6", None),  # several ranges: the whole, as allowed
        ("items=0-1", None),  # another unit: ignored
        ("bytes=9-1", None),  # invalid: ignored
        ("bytes=-", None),
        ("bytes=abc", None),
        ("bytes=" + "9" * 30 + "-", None),
    ],
)
def test_parse(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(MediaError) as info:
        parse_range(header, 1000)
    assert info.value.code == "range_not_satisfiable" and info.value.status == 416


def test_content_range_and_length() -> None:
    r = ByteRange(100, 199)
    assert r.length == 100
    assert r.content_range(1000) == "bytes 100-199/1000"
