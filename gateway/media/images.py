"""Image facts with Pillow: the size as displayed, and a thumbnail with EXIF orientation applied.

Pillow reads JPEG, PNG, GIF, WebP and AVIF itself; HEIC through pillow-heif's opener, registered
when this module is imported: in every process that decodes uploads (the inspection workers, and
the gateway itself with ``--media-inspection threads``).

The pixel count is checked from the header, before anything is decoded, so a small file that
declares a huge image (a decompression bomb) costs nothing. Decoding then reads the whole file, so
a truncated or corrupt image is refused too. JPEGs decode in draft mode at a reduced scale (DCT
scaling), which keeps the memory a large photo needs near that of its thumbnail.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import MediaError

pillow_heif.register_heif_opener()

THUMBNAIL_TYPE = "image/jpeg"
_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that turn the image a quarter


@dataclass(frozen=True, slots=True)
class ImageFacts:
    width: int  # as displayed: after the EXIF orientation
    height: int
    thumbnail: bytes  # a JPEG whose longer edge is at most the limit
    thumbnail_width: int
    thumbnail_height: int
    display: bytes | None = None  # with display=True: the whole image, upright, as a JPEG


def inspect_image(source: BinaryIO, *, max_pixels: int, thumbnail_edge: int, display: bool = False) -> ImageFacts:
    """Decode ``source`` and make its thumbnail, and with ``display`` a JPEG of the whole image
    (for formats browsers do not show); raises MediaError (decompression_bomb, undecodable)."""
    source.seek(0)
    try:
        with Image.open(source) as im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise MediaError("undecodable", "the image has no pixels")
            if width * height > max_pixels:
                raise MediaError(
                    "decompression_bomb", f"the image is {width}x{height} pixels; at most {max_pixels} are allowed"
                )
            orientation = im.getexif().get(_ORIENTATION, 1)
            if not display:
                im.draft("RGB", (thumbnail_edge, thumbnail_edge))  # JPEG only; other formats ignore it
            im.load()  # decodes everything: a truncated file raises here
            if im.width * im.height > max_pixels:  # a decoder (HEIF) may learn the true size only now
                raise MediaError("decompression_bomb", f"the image decodes to {im.width}x{im.height} pixels; at most {max_pixels} are allowed")
            upright = ImageOps.exif_transpose(im)
            copy = jpeg(upright) if display else None
            thumbnail, thumb_width, thumb_height = jpeg_thumbnail(upright, thumbnail_edge)
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        raise MediaError("decompression_bomb", str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports corrupt data as any of these (SyntaxError from some format parsers).
        raise MediaError("undecodable", f"the image does not decode: {exc}") from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return ImageFacts(width, height, thumbnail, thumb_width, thumb_height, copy)


def jpeg_thumbnail(im: Image.Image, edge: int) -> tuple[bytes, int, int]:
    """``im`` as a JPEG whose longer edge is at most ``edge`` (never enlarged), transparency
    flattened onto white; with its width and height. Images and video posters alike."""
    thumb = _flatten(im)
    thumb.thumbnail((edge, edge))
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=80, optimize=True)
    return out.getvalue(), thumb.width, thumb.height


def jpeg(im: Image.Image) -> bytes:
    """``im`` whole, as a JPEG (transparency flattened onto white)."""
    out = io.BytesIO()
    _flatten(im).save(out, "JPEG", quality=85)
    return out.getvalue()


def _flatten(im: Image.Image) -> Image.Image:
    """An RGB image for JPEG: transparency composited over white, palettes expanded."""
    if im.mode in ("RGB", "L"):
        return im
    rgba = im.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white
