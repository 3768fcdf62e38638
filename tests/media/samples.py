"""Test media made in the test run: Pillow images, WAVs from the ``wave`` module, MP4/M4A
containers built box by box (enough for a player's header parse and mutagen's duration; no codec
data, so nothing can decode a frame of them), and real videos encoded by PyAV. Also the hostile
ones: bombs, truncations, disguises."""

from __future__ import annotations

import io
import struct
import wave
import zlib

import av
import numpy as np
from PIL import Image

ORIENTATION = 0x0112


def jpeg(width: int = 64, height: int = 48, *, orientation: int | None = None, halves: bool = False) -> bytes:
    """A JPEG; with ``halves`` the left half is red and the right half blue (to see rotations)."""
    im = Image.new("RGB", (width, height), (0, 160, 0))
    if halves:
        im.paste((255, 0, 0), (0, 0, width // 2, height))
        im.paste((0, 0, 255), (width // 2, 0, width, height))
    out = io.BytesIO()
    if orientation is None:
        im.save(out, "JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        im.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def png(width: int = 40, height: int = 30, mode: str = "RGBA") -> bytes:
    im = Image.new(mode, (width, height), (10, 20, 30, 0) if mode == "RGBA" else 0)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def gif(width: int = 20, height: int = 20) -> bytes:
    out = io.BytesIO()
    Image.new("P", (width, height), 3).save(out, "GIF")
    return out.getvalue()


def webp(width: int = 20, height: int = 20) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, "WEBP")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels; a few hundred bytes on the wire."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024, 9)  # the first rows; a decoder would ask for far more
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def wav(seconds: float = 1.5, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))
    return out.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def mp4(duration_ms: int = 10_000, *, brand: bytes = b"isom", media_bytes: int = 64 * 1024) -> bytes:
    """An ISO BMFF file: ftyp, moov with an mvhd stating the duration, and an mdat of
    ``media_bytes`` patterned bytes (so that ranges of it are recognisable)."""
    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0x200) + brand + (b"mp41" if brand == b"isom" else b""))
    timescale = 1000
    mvhd = _box(
        b"mvhd",
        struct.pack(">B3xIIII", 0, 0, 0, timescale, duration_ms)  # version 0, times, timescale, duration
        + struct.pack(">IH10x", 0x00010000, 0x0100)  # rate 1.0, volume 1.0, reserved
        + struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)  # unity matrix
        + b"\x00" * 24  # pre-defined
        + struct.pack(">I", 2),  # next track id
    )
    moov = _box(b"moov", mvhd)
    mdat = _box(b"mdat", bytes(i % 251 for i in range(media_bytes)))
    return ftyp + moov + mdat


def video(width: int = 64, height: int = 48, *, seconds: float = 1.5, fmt: str = "mp4", codec: str = "mpeg4",
          colour: tuple[int, int, int] = (200, 30, 30), left: tuple[int, int, int] | None = None) -> bytes:
    """A real video encoded by PyAV (FFmpeg always has mpeg4; WebM takes libvpx), 10 frames a
    second of one ``colour``: a poster of it has that colour (its left half ``left``, if given)."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        picture = Image.new("RGB", (width, height), colour)
        if left is not None:
            picture.paste(left, (0, 0, width // 2, height))
        frame = av.VideoFrame.from_image(picture)
        for _ in range(round(seconds * 10)):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def rotated(clip: bytes, degrees: int) -> bytes:
    """An MP4 from :func:`video` whose track says "show me turned ``degrees`` clockwise" (90 or
    270), as a phone writes portrait video: the tkhd box's display matrix, in 16.16 fixed point."""
    at = clip.index(b"tkhd")
    version = clip[at + 4]
    matrix = at + 8 + (32 if version == 1 else 20) + 16  # after version/flags, times and duration, then reserved..volume
    one, w = 0x00010000, 0x40000000
    minus = (-one) & 0xFFFFFFFF
    values = {90: (0, one, 0, minus, 0, 0, 0, 0, w), 270: (0, minus, 0, one, 0, 0, 0, 0, w)}[degrees]
    return clip[:matrix] + struct.pack(">9I", *values) + clip[matrix + 36:]


def m4a(duration_ms: int = 4_000) -> bytes:
    return mp4(duration_ms, brand=b"M4A ", media_bytes=1024)


def webm() -> bytes:
    """An EBML header with the webm doctype: what filetype recognises (no duration to read)."""
    doctype = b"\x42\x82\x84webm"
    header = b"\x42\x86\x81\x01" + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(header)]) + header + b"\x00" * 64


def recorded_webm(seconds: float = 2.0) -> bytes:
    """Opus in WebM written as a browser's MediaRecorder writes it: live, so with no duration in
    its header (PyAV's matroska muxer with ``live``)."""
    out = io.BytesIO()
    tone = (np.sin(np.arange(960) / 10) * 3000).astype("int16").reshape(1, -1)
    with av.open(out, "w", format="webm", options={"live": "1"}) as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        for start in range(0, int(seconds * 48000), 960):
            frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 64 + b"This program cannot be run in DOS mode."
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 57
HTML = b"<!DOCTYPE html>\n<html><body><script>fetch('/v1/me')</script></body></html>\n"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
TEXT = "退货地址：上海市黄浦区人民大道 120 号\nreturn address\n".encode()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def avif(width: int = 64, height: int = 48) -> bytes:
    """An AVIF, encoded by Pillow itself (libavif), the left half red and the right half blue."""
    return _encoded(width, height, "AVIF")


def heic(width: int = 64, height: int = 48, *, brand: bytes = b"heic") -> bytes:
    """A HEIC (HEVC-coded HEIF, as an iPhone takes), encoded by pillow-heif; halves as in avif().
    ``brand``: the ftyp box's major brand (``heix``: 10-bit HEVC, as some cameras write)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    data = _encoded(width, height, "HEIF")
    assert data[4:12] == b"ftypheic"
    return data[:8] + brand + data[12:]


def _encoded(width: int, height: int, fmt: str) -> bytes:
    im = Image.new("RGB", (width, height), (255, 0, 0))
    im.paste((0, 0, 255), (width // 2, 0, width, height))
    out = io.BytesIO()
    im.save(out, fmt, quality=90)
    return out.getvalue()
