"""Why an upload or a download was refused: a stable code, an HTTP status, a message.

Clients switch on the code; never rename one. docs/media.md lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaErrorCode:
    code: str
    status: int
    meaning: str


MEDIA_ERRORS: dict[str, MediaErrorCode] = {
    e.code: e
    for e in (
        MediaErrorCode("unknown_kind", 400, "The kind is not one of image, video, voice, file (a location has no upload)."),
        MediaErrorCode("empty_file", 400, "The upload has no bytes."),
        MediaErrorCode("file_too_large", 413, "The upload is over its kind's size limit."),
        MediaErrorCode("unsupported_type", 415, "The bytes are not one of the kind's allowed content types (the name and declared type are ignored)."),
        MediaErrorCode("undecodable", 422, "The bytes claim an allowed type but do not decode (truncated or corrupt)."),
        MediaErrorCode("decompression_bomb", 422, "The image declares more pixels than allowed."),
        MediaErrorCode("inspection_failed", 422, "The upload could not be inspected: the worker process inspecting it died (the file exhausted its memory or crashed a decoder). Other uploads are not affected; retrying the same file is unlikely to help."),
        MediaErrorCode("too_long", 422, "The video or voice message plays longer than its kind allows."),
        MediaErrorCode("incomplete_upload", 400, "The request body ended before its declared length, or the client went away."),
        MediaErrorCode("not_found", 404, "No such attachment (or not one you may see)."),
        MediaErrorCode("forbidden", 403, "You may not fetch (or delete) this attachment."),
        MediaErrorCode("attachment_deleted", 410, "The attachment was deleted: its bytes are gone for good (messages that carried it keep its id)."),
        MediaErrorCode("bad_signature", 403, "The signed URL was altered or signed with another key."),
        MediaErrorCode("url_expired", 403, "The signed URL has expired: ask for a new one."),
        MediaErrorCode("range_not_satisfiable", 416, "The requested byte range starts past the end of the attachment."),
        MediaErrorCode("storage_failed", 503, "The blob store could not store the upload (a full disk, an unreachable store): nothing was kept; retry later."),
        MediaErrorCode("busy", 503, "Too many uploads in progress or waiting to be inspected: retry shortly."),
    )
}


class MediaError(Exception):
    """A refused upload or download; ``status`` is the HTTP status to answer with."""

    def __init__(self, code: str, message: str) -> None:
        assert code in MEDIA_ERRORS, code
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def detail(self) -> str:
        """The message, under the name problem details (and the HTTP side's refusal log) use."""
        return self.message

    @property
    def status(self) -> int:
        return MEDIA_ERRORS[self.code].status

    def as_map(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
