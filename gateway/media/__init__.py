"""Rich media: uploads checked on their bytes, blobs stored atomically, authorised downloads.

One concept per module: kinds (limits and allowed types), sniffing (content type from the bytes),
images (Pillow facts and thumbnails), video (posters and durations with PyAV), durations
(mutagen), inspection (all of these, off the event loop), blobs (the blob-store contract and its
filesystem default), uploads (the way in), access (who may upload, fetch and delete), signing
(short-lived URLs), ranges (HTTP Range), downloads (a download's status, headers and body), bodies
(message bodies that carry an attachment), service (all of it as the HTTP API calls it), recalls
(a recalled message's attachment deleted), stats (metrics), errors (the codes).
"""

from importlib import import_module
from typing import Any

# Imported on first use (PEP 562), so that ``gateway.config`` can read ``media.kinds`` without
# loading Pillow, PyAV and the service: ``kefu --version`` and ``kefu token`` stay quick.
_WHERE = {
    "check_delete": "access", "check_download": "access", "check_present": "access", "check_upload": "access",
    "BlobNotFound": "blobs", "BlobStore": "blobs", "FilesystemBlobStore": "blobs",
    "Download": "downloads",
    "MEDIA_ERRORS": "errors", "MediaError": "errors",
    "Inspection": "inspection", "Inspector": "inspection", "inspect": "inspection",
    "UPLOAD_KINDS": "kinds", "MediaLimits": "kinds",
    "ByteRange": "ranges", "parse_range": "ranges",
    "Media": "service",
    "RecalledAttachments": "recalls",
    "VARIANTS": "signing", "UrlSigner": "signing",
    "MediaCollector": "stats", "MediaStats": "stats",
    "Uploads": "uploads", "blob_key": "uploads", "thumbnail_key": "uploads",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


__all__ = [
    "MEDIA_ERRORS", "UPLOAD_KINDS", "VARIANTS", "BlobNotFound", "BlobStore", "ByteRange", "Download", "FilesystemBlobStore",
    "Inspection", "Inspector", "Media", "MediaCollector", "MediaError", "MediaLimits", "MediaStats", "UrlSigner", "Uploads",
    "blob_key", "check_delete", "check_download", "check_present", "check_upload", "inspect", "parse_range", "thumbnail_key",
]
