"""Each kind's rule, applied to the bytes: what is accepted with which facts, and every refusal."""

from __future__ import annotations

import io

import pytest
import trio

from gateway.media.errors import MediaError
from gateway.media.inspection import Inspector, inspect
from gateway.media.kinds import MediaLimits

from . import samples

LIMITS = MediaLimits(image_bytes=200_000, video_bytes=300_000, voice_bytes=100_000, file_bytes=50_000, voice_ms=3_000, video_ms=20_000, thumbnail_edge=16)


def run(kind: str, data: bytes, limits: MediaLimits = LIMITS):
    return inspect(kind, io.BytesIO(data), len(data), limits)


@pytest.mark.parametrize(
    "kind, data, content_type",
    [
        ("image", samples.jpeg(), "image/jpeg"),
        ("image", samples.png(), "image/png"),
        ("image", samples.gif(), "image/gif"),
        ("image", samples.webp(), "image/webp"),
        ("image", samples.heic(), "image/heic"),
        ("image", samples.avif(), "image/avif"),
        ("file", samples.heic(), "image/heic"),
        ("video", samples.mp4(10_000), "video/mp4"),
        ("video", samples.webm(), "video/webm"),
        ("voice", samples.wav(1.0), "audio/wav"),
        ("voice", samples.m4a(2_000), "audio/mp4"),
        ("voice", samples.webm(), "video/webm"),
        ("file", samples.pdf(), "application/pdf"),
        ("file", samples.TEXT, "text/plain"),
        ("file", samples.jpeg(), "image/jpeg"),
    ],
)
def test_accepted(kind: str, data: bytes, content_type: str) -> None:
    found = run(kind, data)
    assert (found.kind, found.content_type, found.size) == (kind, content_type, len(data))


def test_facts_of_each_kind() -> None:
    image = run("image", samples.jpeg(64, 48))
    assert (image.width, image.height, image.duration_ms) == (64, 48, None)
    assert image.thumbnail is not None and image.thumbnail[:2] == b"\xff\xd8"
    assert run("video", samples.mp4(10_000)).duration_ms == 10_000
    assert run("voice", samples.wav(1.5)).duration_ms == 1_500
    assert run("voice", samples.webm()).duration_ms is None  # no timing at all: unknown
    recorded = run("voice", samples.recorded_webm(2.0))  # as a browser records it: no duration in its header
    assert recorded.content_type == "video/webm" and abs(recorded.duration_ms - 2_000) <= 40
    pdf = run("file", samples.pdf())
    assert (pdf.width, pdf.duration_ms, pdf.thumbnail) == (None, None, None)


@pytest.mark.parametrize(
    "kind, data, code",
    [
        ("image", b"", "empty_file"),
        ("file", b"", "empty_file"),
        ("image", samples.EXE, "unsupported_type"),  # a .jpg holding an executable
        ("image", samples.HTML, "unsupported_type"),  # a .jpg holding an HTML page
        ("file", samples.EXE, "unsupported_type"),
        ("file", samples.ELF, "unsupported_type"),
        ("file", samples.HTML, "unsupported_type"),
        ("file", samples.SVG, "unsupported_type"),
        ("image", samples.pdf(), "unsupported_type"),
        ("video", samples.jpeg(), "unsupported_type"),
        ("voice", samples.mp4(1_000), "unsupported_type"),  # a video is not a voice message
        ("image", samples.truncated(samples.jpeg(300, 300)), "undecodable"),
        ("image", samples.png_bomb(), "decompression_bomb"),
        ("image", samples.truncated(samples.heic(300, 300)), "undecodable"),
        ("image", samples.truncated(samples.avif(300, 300)), "undecodable"),
        ("voice", samples.wav(4.0), "too_long"),
        ("video", samples.mp4(25_000), "too_long"),
        ("file", b"x" * 50_001, "file_too_large"),
        ("location", samples.TEXT, "unknown_kind"),
    ],
)
def test_refused(kind: str, data: bytes, code: str) -> None:
    with pytest.raises(MediaError) as info:
        run(kind, data)
    assert info.value.code == code
    assert info.value.message


async def test_the_inspector_runs_off_the_event_loop_a_bounded_number_at_a_time() -> None:
    inspector = Inspector(LIMITS, concurrency=1, max_waiting=1)
    data = samples.jpeg(64, 64)
    results = []

    async def one() -> None:
        try:
            results.append(await inspector.inspect("image", io.BytesIO(data), len(data)))
        except MediaError as exc:
            results.append(exc.code)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
    # One runs, one waits, the others find the waiting room full.
    codes = [r for r in results if isinstance(r, str)]
    assert len(results) == 4 and 1 <= len(codes) <= 2 and set(codes) == {"busy"}
    assert all(r.width == 64 for r in results if not isinstance(r, str))
