"""Envelopes of kefu.v1: decode and validate client requests, encode server frames.

Pure functions over bytes and dicts, no I/O: the connection layer hands a binary message's payload
to ``decode_request`` and gets back a validated request map or a ``RequestError`` that names the
problem. Validation keeps the request as the decoded dict (no per-request objects on the hot path).

The message path (``decode_request``, ``send_fields``, ``validate_body``, the ``ack`` and ``msg``
frames) has two twins: ``gateway._envelope_c``, compiled from ``native/envelope.pyx``, used whenever
it is built, and :mod:`gateway.protocol._envelope_py`, used otherwise or when
``KEFU_PUREPYTHON=1``; :data:`IMPLEMENTATION` says which (see :mod:`gateway._native`). The frames
of other replies, which are not per message, are built here from maps.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .. import _native
from ..model import Conversation, Participant, StoredMessage
from .frames import OP_BINARY, encode_frame
from .fields import ID_CHARS, MAX_INT, Limits, need_bool, need_choice, need_int, need_map, need_optional_bool, need_str, request_id

__all__ = [
    "BODY_KINDS", "ID_CHARS", "IMPLEMENTATION", "MAX_INT", "PROTOCOL", "Limits", "ack_frame", "conversation_map",
    "decode_request", "encode_message", "error_frame", "event_frame", "message_frame", "message_map", "need_bool",
    "need_choice", "need_int", "need_map", "need_optional_bool", "need_str", "pack", "participant_map", "request_id",
    "send_fields", "validate_body",
]

PROTOCOL = "kefu.v1"

_impl = _native.load("envelope")
if _impl is None:
    from . import _envelope_py as _impl

    IMPLEMENTATION = "python"
else:
    IMPLEMENTATION = "native"

BODY_KINDS: tuple[str, ...] = _impl.BODY_KINDS
decode_request = _impl.decode_request
send_fields = _impl.send_fields
validate_body = _impl.validate_body
encode_message = _impl.encode_message
message_frame = _impl.message_frame
ack_frame = _impl.ack_frame
del _impl

_unpackb = msgpack.unpackb
_packb = msgpack.packb


# ---- encoding server frames ---------------------------------------------------------------------


def pack(frame: dict[str, Any]) -> bytes:
    return _packb(frame, use_bin_type=True)


def event_frame(payload: dict[str, Any]) -> bytes:
    """A server frame (an event or a reply) as a whole binary WebSocket frame, ready to queue."""
    return encode_frame(OP_BINARY, _packb(payload, use_bin_type=True))


def message_map(m: StoredMessage) -> dict[str, Any]:
    """A message as a map, for history pages (decoded body)."""
    return {
        "conv": m.conv_id,
        "seq": m.seq,
        "cmid": m.cmid,
        "from": m.sender,
        "role": m.sender_role,
        "ts": m.ts,
        "body": _unpackb(m.body, raw=False),
    }


def jsonable(value: Any) -> Any:
    """A decoded msgpack value as JSON can carry it: binary as text (what is not UTF-8 replaced),
    map keys as strings. The REST API and webhooks show message bodies so."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def conversation_map(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "tenant": c.tenant,
        "customer": c.customer,
        "channel": c.channel,
        "status": c.status,
        "subject": c.subject,
        "created_at": c.created_at,
        "last_seq": c.last_seq,
        "stage": c.stage,
        "assignee": c.assignee,
        "group": c.group,
    }


def participant_map(p: Participant) -> dict[str, Any]:
    return {"user": p.user, "role": p.role, "joined_at": p.joined_at}


def error_frame(code: str, message: str, retryable: bool, rid: int | str | None, **extra: object) -> bytes:
    return pack({"t": "error", "id": rid, "code": code, "message": message, "retryable": retryable, **extra})

