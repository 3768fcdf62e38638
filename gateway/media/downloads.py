"""A download's answer: status, headers and body of one variant of an attachment, with ranges.

Framework-free: the HTTP endpoint turns a :class:`Download` into its response. The body is read
from the blob store in worker threads, a chunk at a time, so a large video never sits in memory.
Headers keep a browser from treating an upload as anything but what its bytes were found to be:
``nosniff``, a sandboxing Content-Security-Policy, and files offered as downloads, not pages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import AsyncIterator
from urllib.parse import quote

import trio

log = logging.getLogger("kefu.media")

from ..model import Attachment
from .blobs import BlobNotFound, BlobStore
from .errors import MediaError
from .images import THUMBNAIL_TYPE
from .kinds import NEEDS_DISPLAY_COPY
from .ranges import parse_range, unsatisfiable_content_range
from .uploads import blob_key, display_key, thumbnail_key

CHUNK = 256 * 1024
_INLINE_KINDS = ("image", "video", "voice")


@dataclass
class Download:
    status: int  # 200 or 206
    headers: dict[str, str]
    key: str
    start: int
    length: int
    blobs: BlobStore = field(repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        offset, end = self.start, self.start + self.length
        while offset < end:
            try:
                data = await trio.to_thread.run_sync(self.blobs.read, self.key, offset, min(CHUNK, end - offset))
            except BlobNotFound:  # deleted while it was being sent (its uploader, a recall): the body ends short
                log.info("blob %s deleted during its download, at byte %d of %d", self.key, offset - self.start, self.length)
                return
            if not data:  # the blob shrank under us: end the body short rather than spin
                return
            offset += len(data)
            yield data


def has_display_copy(attachment: Attachment) -> bool:
    """Whether ``variant=display`` is a JPEG made at upload rather than the original itself."""
    return attachment.kind == "image" and attachment.content_type in NEEDS_DISPLAY_COPY


def plan_download(attachment: Attachment, variant: str, range_header: str | None, blobs: BlobStore, display_size: int | None = None) -> Download:
    """What to send for ``variant`` of ``attachment``; raises MediaError (not_found,
    range_not_satisfiable, whose 416 response needs ``unsatisfiable_headers``).

    ``display`` is what a browser can show: the original, or for a type browsers do not show
    (HEIC) the JPEG made at upload, whose size the caller reads from the blob store
    (``display_size``; None: it is missing)."""
    if variant == "thumbnail":
        if attachment.thumbnail_size is None:
            raise MediaError("not_found", "this attachment has no thumbnail")
        key, size, content_type = thumbnail_key(attachment.id), attachment.thumbnail_size, THUMBNAIL_TYPE
    elif variant == "display" and has_display_copy(attachment):
        if display_size is None:
            raise MediaError("not_found", "this attachment has no display copy")
        key, size, content_type = display_key(attachment.id), display_size, THUMBNAIL_TYPE
    else:
        key, size, content_type = blob_key(attachment.id), attachment.size, attachment.content_type
    headers = {
        "content-type": content_type,
        "accept-ranges": "bytes",
        "cache-control": "private, max-age=86400, immutable",
        "etag": f'"{attachment.id}-{variant}"',
        "x-content-type-options": "nosniff",
        "content-security-policy": "default-src 'none'; sandbox",
        "content-disposition": _disposition(attachment, variant),
    }
    wanted = parse_range(range_header, size)
    if wanted is None:
        headers["content-length"] = str(size)
        return Download(200, headers, key, 0, size, blobs)
    headers["content-length"] = str(wanted.length)
    headers["content-range"] = wanted.content_range(size)
    return Download(206, headers, key, wanted.start, wanted.length, blobs)


def unsatisfiable_headers(attachment: Attachment, variant: str, display_size: int | None = None) -> dict[str, str]:
    if variant == "thumbnail":
        size = attachment.thumbnail_size
    elif variant == "display" and has_display_copy(attachment):
        size = display_size
    else:
        size = attachment.size
    return {"content-range": unsatisfiable_content_range(size or 0), "accept-ranges": "bytes"}


def _disposition(attachment: Attachment, variant: str) -> str:
    how = "inline" if variant == "thumbnail" or attachment.kind in _INLINE_KINDS else "attachment"
    name = attachment.name or attachment.id
    if variant == "thumbnail":
        name = f"{name}.thumbnail.jpg"
    elif variant == "display" and has_display_copy(attachment):
        name = f"{name}.jpg"
    ascii_name = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;' else "_" for ch in name)
    return f"{how}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
