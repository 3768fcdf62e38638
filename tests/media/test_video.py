"""Video posters and durations read by PyAV (gateway/media/video.py), through inspection: a real
clip gets a poster and its size, an oversized one none, one PyAV cannot read is still a video."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.media.errors import MediaError
from gateway.media.inspection import inspect
from gateway.media.kinds import MediaLimits
from gateway.media.video import inspect_video

from . import samples

LIMITS = MediaLimits(video_bytes=300_000, video_ms=20_000, thumbnail_edge=32)


def run(data: bytes, limits: MediaLimits = LIMITS):
    return inspect("video", io.BytesIO(data), len(data), limits)


@pytest.mark.parametrize("fmt, codec, content_type", [("mp4", "mpeg4", "video/mp4"), ("webm", "libvpx", "video/webm")])
def test_a_real_clip_gets_its_first_frame_as_a_poster(fmt: str, codec: str, content_type: str) -> None:
    found = run(samples.video(64, 48, seconds=1.5, fmt=fmt, codec=codec))
    assert (found.content_type, found.width, found.height, found.duration_ms) == (content_type, 64, 48, 1_500)
    poster = Image.open(io.BytesIO(found.thumbnail))
    assert (poster.format, poster.size) == ("JPEG", (32, 24))  # the longer edge at the thumbnail limit
    red, green, blue = poster.convert("RGB").getpixel((16, 12))
    assert red > 150 and green < 80 and blue < 80  # the clip's colour


@pytest.mark.parametrize("degrees, top", [(90, "left"), (270, "right")])
def test_a_portrait_phone_clip_gets_an_upright_poster_and_its_upright_size(degrees: int, top: str) -> None:
    # Landscape frames (left half blue, right half red) that the track says to show turned: a
    # clockwise quarter turn brings the left half to the top, a counterclockwise one the right.
    clip = samples.rotated(samples.video(64, 48, colour=(200, 30, 30), left=(30, 30, 200)), degrees)
    found = run(clip)
    assert (found.width, found.height) == (48, 64)
    poster = Image.open(io.BytesIO(found.thumbnail)).convert("RGB")
    assert poster.size == (24, 32)
    upper, lower = poster.getpixel((12, 4)), poster.getpixel((12, 28))
    blue, red = (upper, lower) if top == "left" else (lower, upper)
    assert blue[2] > 150 and blue[0] < 80 and red[0] > 150 and red[2] < 80, (upper, lower)


def test_webm_durations_come_from_pyav_where_mutagen_reads_none() -> None:
    # mutagen has no WebM reader: the 1.5 s is PyAV's, and it is held to the kind's limit too.
    clip = samples.video(seconds=1.5, fmt="webm", codec="libvpx")
    assert run(clip).duration_ms == 1_500
    with pytest.raises(MediaError) as refused:
        run(clip, MediaLimits(video_bytes=300_000, video_ms=1_000))
    assert refused.value.code == "too_long"


def test_a_frame_over_the_pixel_limit_is_not_decoded() -> None:
    found = run(samples.video(64, 48), MediaLimits(video_bytes=300_000, image_pixels=64 * 48 - 1))
    assert (found.width, found.height, found.thumbnail, found.duration_ms) == (64, 48, None, 1_500)
    facts = inspect_video(io.BytesIO(samples.video(64, 48)), max_pixels=64 * 48 - 1, thumbnail_edge=32)
    assert facts is not None and facts.oversized and facts.poster is None


@pytest.mark.parametrize("data", [samples.mp4(10_000), samples.webm(), samples.truncated(samples.video(), 0.3)])
def test_a_video_pyav_cannot_decode_is_still_a_video_without_a_poster(data: bytes) -> None:
    found = run(data)
    assert found.thumbnail is None and found.content_type in ("video/mp4", "video/webm")


def test_the_synthetic_boxes_keep_their_mutagen_duration() -> None:
    assert run(samples.mp4(10_000)).duration_ms == 10_000
