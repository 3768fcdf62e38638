"""Content types come from the bytes: magic numbers for binary formats, strict plain text else."""

from __future__ import annotations

import io

import pytest

from gateway.media.sniffing import TEXT_CHUNK, content_type

from . import samples


@pytest.mark.parametrize(
    "data, expected",
    [
        (samples.jpeg(), "image/jpeg"),
        (samples.png(), "image/png"),
        (samples.gif(), "image/gif"),
        (samples.webp(), "image/webp"),
        (samples.avif(), "image/avif"),
        (samples.heic(), "image/heic"),
        (samples.heic(brand=b"heix"), "image/heic"),  # a brand filetype does not know, read from the ftyp box
        (samples.mp4(), "video/mp4"),
        (samples.mp4(brand=b"qt  "), "video/quicktime"),
        (samples.m4a(), "audio/mp4"),
        (samples.wav(), "audio/wav"),
        (samples.webm(), "video/webm"),
        (samples.pdf(), "application/pdf"),
        (samples.EXE, "application/x-msdownload"),
        (samples.ELF, "application/x-executable"),
        (samples.TEXT, "text/plain"),
    ],
)
def test_types_are_read_from_the_bytes(data: bytes, expected: str) -> None:
    assert content_type(io.BytesIO(data)) == expected


@pytest.mark.parametrize(
    "data",
    [
        samples.HTML,
        samples.SVG,
        b"   \n<HTML><p>hi</p></html>",
        b"hello <script>alert(1)</script>",
        b"\xff\xfe not utf-8",
        b"text with a \x00 NUL",
        "caf\u00e9".encode()[:-1],  # a multi-byte character cut at the end
    ],
)
def test_markup_binary_junk_and_broken_utf8_have_no_type(data: bytes) -> None:
    assert content_type(io.BytesIO(data)) is None


def test_markup_split_across_read_chunks_is_still_seen() -> None:
    data = b"a" * (TEXT_CHUNK - 4) + b"<scr" + b"ipt>x</script>"
    assert content_type(io.BytesIO(data)) is None
    assert content_type(io.BytesIO(b"a" * (TEXT_CHUNK + 100))) == "text/plain"
