"""Message bodies that carry an attachment: the server, not the sender, states the file's facts.

A client sends ``{"kind": "image", "attachment": "<id>"}`` (envelope validation has checked the
shape). Before the message is stored the attachment must exist, not deleted, in the same
conversation and be of the message's kind (a ``file`` message may carry any attachment); then its
facts, as read from the bytes at upload, replace whatever the sender wrote in their place.
"""

from __future__ import annotations

from typing import Any

from ..model import Attachment, Conversation
from ..protocol.errors import RequestError

MEDIA_KINDS = ("image", "video", "voice", "file")
#: Body fields the server fills in from the attachment (a sender's values are dropped), and
#: ``url``: a body with an attachment links to nothing else (a receiver could render a link).
FACTS = ("size", "type", "w", "h", "duration_ms", "thumbnail", "url")


def attachment_id(body: dict[str, Any]) -> str | None:
    """The attachment a validated body carries, or None (text, location, or a URL body)."""
    if "attachment" in body and body.get("kind") in MEDIA_KINDS:
        return body.get("attachment")
    return None


def with_facts(body: dict[str, Any], attachment: Attachment | None, conv: Conversation) -> dict[str, Any]:
    """``body`` with the attachment's facts; raises RequestError when it may not carry it."""
    if attachment is None or attachment.tenant != conv.tenant or attachment.conv_id != conv.id:
        raise RequestError("not_found", "no such attachment in this conversation: upload it to this conversation first")
    if attachment.deleted_at is not None:
        raise RequestError("not_found", f"attachment {attachment.id} was deleted")
    kind = body["kind"]
    if kind != "file" and attachment.kind != kind:
        raise RequestError("bad_request", f"attachment {attachment.id} is of kind {attachment.kind}, not {kind}")
    out = {k: v for k, v in body.items() if k not in FACTS}
    out["size"] = attachment.size
    out["type"] = attachment.content_type
    if attachment.width is not None and attachment.height is not None:
        out["w"], out["h"] = attachment.width, attachment.height
    if attachment.duration_ms is not None:
        out["duration_ms"] = attachment.duration_ms
    out["thumbnail"] = attachment.thumbnail_size is not None
    if not out.get("name") and attachment.name:
        out["name"] = attachment.name
    return out
