"""Rich media: uploads checked on their bytes, blobs stored atomically, authorised downloads.

One concept per module: kinds (limits and allowed types), sniffing (content type from the bytes),
images (Pillow facts and thumbnails), video (posters and durations with PyAV), durations
(mutagen), inspection (all of these, off the event loop), blobs (the blob-store contract and its
filesystem default), uploads (the way in), access (who may upload, fetch and delete), signing
(short-lived URLs), ranges (HTTP Range), downloads (a download's status, headers and body), bodies
(message bodies that carry an attachment), service (all of it as the HTTP API calls it), stats
(metrics), errors (the codes).
"""

from .access import check_delete, check_download, check_present, check_upload
from .blobs import BlobNotFound, BlobStore, FilesystemBlobStore
from .downloads import Download
from .errors import MEDIA_ERRORS, MediaError
from .inspection import Inspection, Inspector, inspect
from .kinds import UPLOAD_KINDS, MediaLimits
from .ranges import ByteRange, parse_range
from .service import Media
from .signing import VARIANTS, UrlSigner
from .stats import MediaCollector, MediaStats
from .uploads import Uploads, blob_key, thumbnail_key

__all__ = [
    "MEDIA_ERRORS", "UPLOAD_KINDS", "VARIANTS", "BlobNotFound", "BlobStore", "ByteRange", "Download", "FilesystemBlobStore",
    "Inspection", "Inspector", "Media", "MediaCollector", "MediaError", "MediaLimits", "MediaStats", "UrlSigner", "Uploads",
    "blob_key", "check_delete", "check_download", "check_present", "check_upload", "inspect", "parse_range", "thumbnail_key",
]
