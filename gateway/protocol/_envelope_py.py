"""Envelopes of the message path: decode and validate requests, build ack and delivery frames.

The pure-Python twin of ``native/envelope.pyx`` (built as ``gateway._envelope_c``); import these
from :mod:`gateway.protocol.envelope`, which picks the twin. Both give the same results and raise
the same :class:`~gateway.protocol.errors.RequestError` (code and message) for the same input; the
differential tests in ``tests/protocol/test_envelope_native.py`` hold them to it.

Pure functions over bytes and dicts, no I/O. Validation keeps a request as its decoded dict (no
per-request objects); the frames for the two messages every send produces, the sender's ``ack``
and everyone else's ``msg``, come out as complete WebSocket frames, ready for every outbox.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from ..model import StoredMessage
from ._frames_py import OP_BINARY, encode_frame
from .errors import RequestError
from .fields import ID_CHARS, Limits, need_choice, need_map, need_str, request_id

__all__ = ["BODY_KINDS", "ack_frame", "decode_request", "encode_message", "message_frame", "send_fields", "validate_body"]

_unpackb = msgpack.unpackb
_packb = msgpack.packb

BODY_KINDS = ("text", "image", "video", "voice", "file", "location")
_URL_LIMIT = 2048
_ADDRESS_LIMIT = 512


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
        raise RequestError("bad_request", "field `t` (request type) must be a string", id=request_id(req))
    return req


# ---- message bodies ------------------------------------------------------------------------------


def _url(body: dict[str, Any]) -> None:
    url = need_str(body, "url", _URL_LIMIT)
    assert url is not None
    if not (url.startswith("https://") or url.startswith("http://")):
        raise RequestError("bad_request", "field `url` must be an http(s) URL")


def _number(body: dict[str, Any], key: str, lo: int, hi: int, *, optional: bool = False) -> None:
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
        need_str(body, "address", _ADDRESS_LIMIT, optional=True, empty=True)
        return
    if body.get("attachment") is not None:
        # An uploaded file: the server fills in its facts (gateway.media.bodies); what the sender
        # adds is still checked, so a body is valid or not whatever the server later replaces.
        need_str(body, "attachment", ID_CHARS)
        if kind in ("video", "voice"):
            _number(body, "duration_ms", 0, 24 * 3600 * 1000, optional=True)
        if kind == "file":
            need_str(body, "name", 256, optional=True)
        _number(body, "size", 0, 1 << 40, optional=True)
        return
    _url(body)
    if kind in ("video", "voice"):
        _number(body, "duration_ms", 0, 24 * 3600 * 1000, optional=kind == "video")
    if kind == "file":
        need_str(body, "name", 256)
    _number(body, "size", 0, 1 << 40, optional=True)


def send_fields(req: dict[str, Any], limits: Limits) -> tuple[str, str, bytes]:
    """A ``send`` request's conversation id, client message id and body, checked in that order; the
    body comes back packed, as it is stored and spliced into every delivery."""
    conv_id = need_str(req, "conv", ID_CHARS)
    cmid = need_str(req, "cmid", ID_CHARS)
    body = need_map(req, "body")
    assert conv_id is not None and cmid is not None and body is not None
    validate_body(body, limits)
    return conv_id, cmid, _packb(body, use_bin_type=True)


# ---- server frames ---------------------------------------------------------------------------------


def encode_message(m: StoredMessage) -> bytes:
    """A delivery's msgpack payload for ``m``: its packed body is spliced in rather than decoded and
    re-packed."""
    head = _packb(
        {"t": "msg", "conv": m.conv_id, "seq": m.seq, "cmid": m.cmid, "from": m.sender, "role": m.sender_role, "ts": m.ts},
        use_bin_type=True,
    )
    # head is a fixmap of 7 entries (0x87); make it 8 and append the "body" key with the raw value.
    return b"\x88" + head[1:] + b"\xa4body" + m.body


def message_frame(m: StoredMessage) -> bytes:
    """The complete WebSocket frame delivering ``m``: built once, queued to every recipient."""
    return encode_frame(OP_BINARY, encode_message(m))


def ack_frame(rid: int | str | None, conv_id: str, cmid: str, seq: int, ts: int, dup: bool) -> bytes:
    """The complete WebSocket frame acknowledging a stored message to its sender."""
    return encode_frame(
        OP_BINARY,
        _packb({"t": "ack", "id": rid, "conv": conv_id, "cmid": cmid, "seq": seq, "ts": ts, "dup": dup}, use_bin_type=True),
    )
