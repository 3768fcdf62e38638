"""The kinds of attachment, each with its size limit and the content types it accepts.

A location is a message kind with no upload (its coordinates travel in the message body), so it
has no rule here. Content types are the ones :mod:`gateway.media.sniffing` reads from the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MediaError

UPLOAD_KINDS = ("image", "video", "voice", "file")

# HEIC is what iPhones take photos in; AVIF what newer Android phones and browsers save.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/avif"})
VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime", "video/webm"})
# Browsers record voice as WebM (which filetype names video/webm) or Ogg; phones as M4A or AMR.
VOICE_TYPES = frozenset({"audio/mp4", "audio/ogg", "audio/mpeg", "audio/wav", "audio/amr", "audio/aac", "video/webm"})
DOCUMENT_TYPES = frozenset({
    "application/pdf",
    "application/zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "text/plain",
})

# Image types most browsers cannot show (HEIC: Safari only): such an upload also gets a JPEG of the
# whole image, its "display" variant, so that an agent's browser can open it.
NEEDS_DISPLAY_COPY = frozenset({"image/heic"})

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class KindRule:
    kind: str
    max_bytes: int
    content_types: frozenset[str]
    max_duration_ms: int | None = None  # video and voice: refused when longer (when it can be read)


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Per-kind limits; the defaults suit a chat (photos, short clips, voice notes, documents)."""

    image_bytes: int = 10 * MiB
    video_bytes: int = 50 * MiB
    voice_bytes: int = 5 * MiB
    file_bytes: int = 20 * MiB
    image_pixels: int = 40_000_000  # width x height; more is refused as a decompression bomb
    video_ms: int = 5 * 60 * 1000
    voice_ms: int = 3 * 60 * 1000
    thumbnail_edge: int = 320  # the longer edge of a thumbnail, in pixels

    def rule(self, kind: str) -> KindRule:
        """The rule of ``kind``; an unknown kind (location included) is ``unknown_kind``."""
        if kind == "image":
            return KindRule(kind, self.image_bytes, IMAGE_TYPES)
        if kind == "video":
            return KindRule(kind, self.video_bytes, VIDEO_TYPES, self.video_ms)
        if kind == "voice":
            return KindRule(kind, self.voice_bytes, VOICE_TYPES, self.voice_ms)
        if kind == "file":
            # A file may be any document, or a picture or recording sent as a file (not shown inline).
            return KindRule(kind, self.file_bytes, DOCUMENT_TYPES | IMAGE_TYPES | VOICE_TYPES | VIDEO_TYPES)
        raise MediaError("unknown_kind", f"kind must be one of {', '.join(UPLOAD_KINDS)}")

    @property
    def largest(self) -> int:
        return max(self.image_bytes, self.video_bytes, self.voice_bytes, self.file_bytes)
