"""Envelopes of kefu.v1: decode and validate client requests, encode server frames.

Pure functions over bytes and dicts, no I/O: the connection layer hands a binary message's payload
to ``decode_request`` and gets back a validated request map or a ``RequestError`` that names the
problem. Validation keeps the request as the decoded dict (no per-request objects on the hot path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from ..model import Conversation, Participant, StoredMessage
from .errors import RequestError

PROTOCOL = "kefu.v1"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a client may send; announced in hello so clients can check before sending."""

    max_frame_bytes: int = 64 * 1024
    max_text_chars: int = 5000
    max_id_chars: int = 128
    max_meta_bytes: int = 4096
    rate_per_second: float = 50.0
    rate_burst: int = 100
    history_page: int = 200

    def as_map(self) -> dict[str, Any]:
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_text_chars": self.max_text_chars,
            "max_id_chars": self.max_id_chars,
            "rate_per_second": self.rate_per_second,
            "rate_burst": self.rate_burst,
            "history_page": self.history_page,
        }


# ---- decoding ------------------------------------------------------------------------------------

_unpackb = msgpack.unpackb
_packb = msgpack.packb


def decode_request(payload: bytes) -> dict[str, Any]:
    """One msgpack map with a string ``t``; anything else raises RequestError (bad_frame/bad_request)."""
    try:
        req = _unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, UnicodeDecodeError…)
        raise RequestError("bad_frame", f"frame is not valid msgpack: {type(exc).__name__}") from None
    if type(req) is not dict:
        raise RequestError("bad_frame", f"frame must be a msgpack map, got {type(req).__name__}")
    t = req.get("t")
    if type(t) is not str:
        raise RequestError("bad_request", "field `t` (request type) must be a string", id=_request_id(req))
    return req


def request_id(req: dict[str, Any]) -> int | str | None:
    """The client's request id, when it is a usable one (int or short str)."""
    return _request_id(req)


def _request_id(req: dict[str, Any]) -> int | str | None:
    rid = req.get("id")
    if type(rid) is int or (type(rid) is str and len(rid) <= 128):
        return rid
    return None


# ---- field checks: each names the field in its error ---------------------------------------------


def need_str(req: dict[str, Any], key: str, limit: int, *, optional: bool = False, empty: bool = False) -> str | None:
    v = req.get(key)
    if v is None and optional:
        return None
    if type(v) is not str:
        raise RequestError("bad_request", f"field `{key}` must be a string")
    if not v and not empty:
        raise RequestError("bad_request", f"field `{key}` must not be empty")
    if len(v) > limit:
        raise RequestError("too_large", f"field `{key}` is longer than {limit} characters")
    return v


def need_int(req: dict[str, Any], key: str, *, optional: bool = False, minimum: int = 0) -> int | None:
    v = req.get(key)
    if v is None and optional:
        return None
    if type(v) is not int:
        raise RequestError("bad_request", f"field `{key}` must be an integer")
    if v < minimum:
        raise RequestError("bad_request", f"field `{key}` must be >= {minimum}")
    return v


def need_bool(req: dict[str, Any], key: str) -> bool:
    v = req.get(key)
    if type(v) is not bool:
        raise RequestError("bad_request", f"field `{key}` must be a boolean")
    return v


def need_map(req: dict[str, Any], key: str, *, optional: bool = False) -> dict[str, Any] | None:
    v = req.get(key)
    if v is None and optional:
        return None
    if type(v) is not dict:
        raise RequestError("bad_request", f"field `{key}` must be a map")
    return v


def need_choice(req: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    v = req.get(key)
    if v not in choices or type(v) is not str:
        raise RequestError("bad_request", f"field `{key}` must be one of {', '.join(choices)}")
    return v


# ---- message bodies -------------------------------------------------------------------------------

BODY_KINDS = ("text", "image", "video", "voice", "file", "location")
_URL_LIMIT = 2048


def _url(body: dict[str, Any]) -> None:
    url = need_str(body, "url", _URL_LIMIT)
    assert url is not None
    if not (url.startswith("https://") or url.startswith("http://")):
        raise RequestError("bad_request", "field `url` must be an http(s) URL")


def _number(body: dict[str, Any], key: str, lo: float, hi: float, *, optional: bool = False) -> None:
    v = body.get(key)
    if v is None and optional:
        return
    if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
        raise RequestError("bad_request", f"field `{key}` must be a number in [{lo}, {hi}]")


def validate_body(body: dict[str, Any], limits: Limits) -> None:
    """Check a message body's kind and the fields that kind needs; other fields pass through."""
    kind = need_choice(body, "kind", BODY_KINDS)
    if kind == "text":
        need_str(body, "text", limits.max_text_chars)
        return
    if kind == "location":
        _number(body, "lat", -90, 90)
        _number(body, "lng", -180, 180)
        need_str(body, "name", 256, optional=True, empty=True)
        return
    _url(body)
    if kind in ("video", "voice"):
        _number(body, "duration_ms", 0, 24 * 3600 * 1000, optional=kind == "video")
    if kind == "file":
        need_str(body, "name", 256)
    _number(body, "size", 0, 1 << 40, optional=True)


# ---- encoding server frames ---------------------------------------------------------------------


def pack(frame: dict[str, Any]) -> bytes:
    return _packb(frame, use_bin_type=True)


def encode_message(m: StoredMessage) -> bytes:
    """A delivery frame for ``m``: its packed body is spliced in rather than decoded and re-packed."""
    head = _packb(
        {"t": "msg", "conv": m.conv_id, "seq": m.seq, "cmid": m.cmid, "from": m.sender, "role": m.sender_role, "ts": m.ts},
        use_bin_type=True,
    )
    # head is a fixmap of 7 entries (0x87); make it 8 and append the "body" key with the raw value.
    return b"\x88" + head[1:] + b"\xa4body" + m.body


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

