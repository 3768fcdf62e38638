"""Envelopes: request decoding and validation, server frame encoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import StoredMessage
from gateway.protocol.envelope import Limits, decode_request, encode_message, validate_body
from gateway.protocol.errors import ERRORS, RequestError

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_to_a_request_or_a_documented_error(data):
    try:
        request = decode_request(data)
    except RequestError as exc:
        assert exc.code in ERRORS
    else:
        assert type(request) is dict and type(request["t"]) is str


@settings(max_examples=300, deadline=None)
@given(msgpack_values)
def test_any_msgpack_value_decodes_to_a_request_or_a_documented_error(value):
    try:
        request = decode_request(msgpack.packb(value))
    except RequestError as exc:
        assert exc.code in ("bad_frame", "bad_request")
    else:
        assert msgpack.packb(request) == msgpack.packb(value)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "text", "text": "七天无理由退货吗?"},
        {"kind": "image", "url": "https://cdn.example/a.jpg", "size": 1024, "w": 10, "h": 20},
        {"kind": "video", "url": "https://cdn.example/a.mp4", "duration_ms": 15000},
        {"kind": "voice", "url": "https://cdn.example/a.amr", "duration_ms": 3000},
        {"kind": "file", "url": "https://cdn.example/invoice.pdf", "name": "发票.pdf"},
        {"kind": "location", "lat": 31.23, "lng": 121.47, "name": "上海"},
        {"kind": "location", "lat": -90, "lng": 180, "name": "", "address": "上海市黄浦区人民大道 120 号"},
        {"kind": "image", "attachment": "0190f3c2a1b2c3d4e5f60718"},
        {"kind": "video", "attachment": "a1", "duration_ms": 10_000},
        {"kind": "voice", "attachment": "a1"},  # the server fills in the duration
        {"kind": "file", "attachment": "a1"},  # and the name
        {"kind": "file", "attachment": "a1", "name": "发票.pdf", "size": 20480},
    ],
)
def test_valid_bodies(body):
    validate_body(body, Limits())


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "text"}, "text"),
        ({"kind": "text", "text": ""}, "text"),
        ({"kind": "voice", "url": "https://x/a.amr"}, "duration_ms"),
        ({"kind": "file", "url": "https://x/a"}, "name"),
        ({"kind": "location", "lat": 0, "lng": float("nan")}, "lng"),
        ({"kind": "image", "url": "javascript:alert(1)"}, "url"),
        ({"kind": "sticker"}, "kind"),
        ({"kind": "location", "lat": 1, "lng": 2, "address": "a" * 513}, "address"),
        ({"kind": "location", "lat": 1, "lng": 2, "address": 7}, "address"),
        ({"kind": "location", "lng": 2, "address": "x"}, "lat"),
        ({"kind": "image", "attachment": ""}, "attachment"),
        ({"kind": "image", "attachment": "x" * 129}, "attachment"),
        ({"kind": "image", "attachment": 12}, "attachment"),
        ({"kind": "file", "attachment": "a1", "name": ""}, "name"),
        ({"kind": "voice", "attachment": "a1", "duration_ms": -1}, "duration_ms"),
        ({"kind": "image"}, "url"),  # neither an attachment nor a URL
    ],
)
def test_invalid_bodies_name_the_field(body, field):
    with pytest.raises(RequestError) as info:
        validate_body(body, Limits())
    assert f"`{field}`" in info.value.message


@given(st.text(max_size=50), st.integers(1, 2**40), st.dictionaries(st.text(max_size=5), msgpack_values, max_size=3))
def test_the_spliced_message_frame_is_the_plain_msgpack_map(text, seq, extra):
    body = {"kind": "text", "text": text, **extra}
    m = StoredMessage("c1", seq, "cm", "alice", "shopper", 1700000000000, msgpack.packb(body))
    decoded = msgpack.unpackb(encode_message(m), raw=False, strict_map_key=False)
    expected = {"t": "msg", "conv": "c1", "seq": seq, "cmid": "cm", "from": "alice", "role": "shopper", "ts": 1700000000000, "body": body}
    assert msgpack.packb(decoded) == msgpack.packb(expected)  # bytes, not ==: NaN != NaN
