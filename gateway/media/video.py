"""A video's poster: its first frame, decoded with PyAV (FFmpeg), as a JPEG thumbnail.

An agent's workspace shows a video as a still before it plays. Decoding is bounded: the frame
size the stream declares is checked against the image pixel limit before any frame is decoded
(the same rule as images, so a clip cannot be a decompression bomb), and at most
:data:`MAX_PACKETS` packets are read, never the whole file. A video PyAV cannot open or decode
simply has no poster: it is still a video (its bytes were sniffed as one), only not one we can
show as a still. PyAV also reads durations mutagen cannot (WebM), from the container's header, or,
where the header has none (what a browser's MediaRecorder writes), from the end of the last packet
(:func:`played_ms`: packets are read, never decoded).

A phone records portrait video as landscape frames with a rotation in the container (the MP4
track's display matrix). The poster is turned upright, and the width and height reported are the
upright ones, as an image's EXIF orientation is applied (a player shows the clip that way too).
That rotation comes with the first decoded frame: a video without a poster keeps its coded size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import BinaryIO

import av

from PIL import Image

from .images import jpeg_thumbnail

#: Packets of the video stream read while looking for a first frame: enough for a decoder that
#: needs a few packets before it outputs one, never the whole file.
MAX_PACKETS = 16
#: How much FFmpeg may read to identify the streams (bytes), and how much of the media it may
#: analyse (microseconds): the container's header is at the start of every file we accept.
_OPEN_OPTIONS = {"probesize": str(1 << 20), "analyzeduration": str(1_000_000)}


@dataclass(frozen=True, slots=True)
class VideoFacts:
    width: int | None  # the stream's frame size, when it declares one
    height: int | None
    duration_ms: int | None  # from the container (or the stream), when it states one
    poster: bytes | None  # a JPEG of the first frame; None when it could not or may not be decoded
    oversized: bool = False  # the frame size is over the pixel limit: no frame was decoded


def inspect_video(source: BinaryIO, *, max_pixels: int, thumbnail_edge: int) -> VideoFacts | None:
    """The facts PyAV reads from ``source``, or None when it cannot open it as a video."""
    source.seek(0)
    try:
        container = av.open(source, "r", options=_OPEN_OPTIONS)
    except (av.FFmpegError, ValueError, OSError, EOFError):
        return None
    try:
        with container:
            duration = _duration_ms(container)
            stream = next(iter(container.streams.video), None)
            if stream is None:
                return VideoFacts(None, None, duration, None)
            width, height = stream.codec_context.width, stream.codec_context.height
            if width <= 0 or height <= 0:
                return VideoFacts(None, None, duration, None)
            if width * height > max_pixels:
                return VideoFacts(width, height, duration, None, oversized=True)
            stream.thread_type = "SLICE"  # no frame threading: one frame in flight, its memory only
            stream.codec_context.thread_count = 1
            frame = _first_frame(container, stream, max_pixels)
            if frame is None:
                return VideoFacts(width, height, duration, None)
            rotation = round(getattr(frame, "rotation", 0) or 0) % 360  # counterclockwise, as FFmpeg's display matrix says
            if rotation in (90, 270):
                width, height = height, width
            poster = jpeg_thumbnail(upright(frame.to_image(), rotation), thumbnail_edge)[0]
            return VideoFacts(width, height, duration, poster)
    except (av.FFmpegError, ValueError, OSError, EOFError, MemoryError):
        return None


def upright(image: Image.Image, rotation: int) -> Image.Image:
    """``image`` turned by ``rotation`` degrees counterclockwise (0, 90, 180 or 270; others as 0)."""
    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}.get(rotation)
    return image if turn is None else image.transpose(turn)


def _first_frame(container, stream, max_pixels: int):
    """The stream's first decodable frame within MAX_PACKETS packets, or None."""
    for count, packet in enumerate(container.demux(stream), 1):
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError):
            frames = []
        for frame in frames:
            if frame.width * frame.height > max_pixels:  # a stream whose frames outgrow its header
                return None
            return frame
        if count >= MAX_PACKETS:
            return None
    try:  # a very short clip: the decoder may still hold its only frame
        for frame in stream.codec_context.decode(None):
            if frame.width * frame.height <= max_pixels:
                return frame
    except (av.FFmpegError, ValueError):
        pass
    return None


def played_ms(source: BinaryIO) -> int | None:
    """How long an audio or video file plays: its header's duration, else the end of its last
    packet (a recorded WebM states none). None when PyAV cannot open it or finds no timing."""
    source.seek(0)
    try:
        with av.open(source, options=_OPEN_OPTIONS) as container:
            stated = _duration_ms(container)
            if stated is not None:
                return stated
            end = 0.0
            for packet in container.demux():  # uploads are bounded (MiB): reading them is cheap, decoding is skipped
                if packet.pts is not None and packet.time_base:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    except (av.FFmpegError, ValueError, OverflowError):
        return None
    return round(end * 1000) if math.isfinite(end) and end > 0 else None


def _duration_ms(container) -> int | None:
    if container.duration is not None and container.duration > 0:  # in av.time_base units (µs)
        return round(container.duration / 1000)
    for stream in container.streams:
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
            if math.isfinite(seconds) and seconds > 0:
                return round(seconds * 1000)
    return None
