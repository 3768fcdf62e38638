"""Image facts with Pillow: size, thumbnail, EXIF orientation, and the refusals."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.media.errors import MediaError
from gateway.media.images import inspect_image

from . import samples


def facts(data: bytes, *, max_pixels: int = 40_000_000, edge: int = 32):
    return inspect_image(io.BytesIO(data), max_pixels=max_pixels, thumbnail_edge=edge)


def test_size_and_a_thumbnail_within_the_edge_keeping_the_aspect() -> None:
    f = facts(samples.jpeg(640, 480), edge=32)
    assert (f.width, f.height) == (640, 480)
    thumb = Image.open(io.BytesIO(f.thumbnail))
    assert thumb.format == "JPEG"
    assert thumb.size == (f.thumbnail_width, f.thumbnail_height) == (32, 24)


def test_a_small_image_is_not_enlarged() -> None:
    f = facts(samples.png(20, 10), edge=32)
    assert (f.thumbnail_width, f.thumbnail_height) == (20, 10)


@pytest.mark.parametrize("orientation, size", [(1, (60, 40)), (3, (60, 40)), (6, (40, 60)), (8, (40, 60))])
def test_exif_orientation_is_applied_to_size_and_thumbnail(orientation: int, size: tuple[int, int]) -> None:
    # Stored 60x40: left half red, right half blue. Orientation 6 means "rotate 90° clockwise to
    # display": red ends up on top. 8 is the other way (red at the bottom), 3 is upside down.
    f = facts(samples.jpeg(60, 40, orientation=orientation, halves=True), edge=60)
    assert (f.width, f.height) == size
    thumb = Image.open(io.BytesIO(f.thumbnail)).convert("RGB")
    assert thumb.size == size
    w, h = thumb.size
    top, bottom = thumb.getpixel((w // 2, 3)), thumb.getpixel((w // 2, h - 4))
    left, right = thumb.getpixel((3, h // 2)), thumb.getpixel((w - 4, h // 2))

    def red(p):
        return p[0] > 200 and p[2] < 60

    def blue(p):
        return p[2] > 200 and p[0] < 60

    expected = {1: red(left) and blue(right), 3: blue(left) and red(right), 6: red(top) and blue(bottom), 8: blue(top) and red(bottom)}
    assert expected[orientation], (top, bottom, left, right)


def test_transparency_is_flattened_onto_white() -> None:
    f = facts(samples.png(10, 10, mode="RGBA"))
    px = Image.open(io.BytesIO(f.thumbnail)).convert("RGB").getpixel((5, 5))
    assert all(c > 240 for c in px)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(MediaError) as info:
        facts(samples.png_bomb())
    assert info.value.code == "decompression_bomb"


def test_the_pixel_limit_is_the_configured_one() -> None:
    with pytest.raises(MediaError) as info:
        facts(samples.jpeg(100, 100), max_pixels=9_999)
    assert info.value.code == "decompression_bomb"
    assert facts(samples.jpeg(100, 100), max_pixels=10_000).width == 100


@pytest.mark.parametrize(
    "data",
    [
        samples.truncated(samples.jpeg(200, 200), 0.5),
        samples.truncated(samples.png(200, 200, mode="RGB"), 0.6),
        samples.jpeg()[:2] + b"\x00" * 200,
        b"\x89PNG\r\n\x1a\n" + b"garbage" * 10,
    ],
)
def test_undecodable_and_truncated_images_are_refused(data: bytes) -> None:
    with pytest.raises(MediaError) as info:
        facts(data)
    assert info.value.code == "undecodable"


@pytest.mark.parametrize("make", [samples.heic, samples.avif], ids=["heic", "avif"])
def test_heic_and_avif_photos_get_a_jpeg_thumbnail(make) -> None:
    f = facts(make(640, 480), edge=32)
    assert (f.width, f.height) == (640, 480)
    thumb = Image.open(io.BytesIO(f.thumbnail)).convert("RGB")
    assert (Image.open(io.BytesIO(f.thumbnail)).format, thumb.size) == ("JPEG", (32, 24))
    assert thumb.getpixel((4, 12))[0] > 200 and thumb.getpixel((28, 12))[2] > 200  # red left, blue right


@pytest.mark.parametrize("make", [samples.heic, samples.avif], ids=["heic", "avif"])
def test_heic_and_avif_over_the_pixel_limit_are_refused_before_decoding(make) -> None:
    with pytest.raises(MediaError) as info:
        facts(make(64, 48), max_pixels=64 * 48 - 1)
    assert info.value.code == "decompression_bomb" and "64x48" in info.value.message


def test_avif_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (64, 48), (255, 0, 0))
    im.paste((0, 0, 255), (32, 0, 64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # taken sideways
    out = io.BytesIO()
    im.save(out, "AVIF", exif=exif, quality=90)
    f = facts(out.getvalue(), edge=64)
    assert (f.width, f.height) == (48, 64)
    thumb = Image.open(io.BytesIO(f.thumbnail)).convert("RGB")
    assert thumb.size == (48, 64) and thumb.getpixel((24, 4))[0] > 200 and thumb.getpixel((24, 60))[2] > 200  # red on top
