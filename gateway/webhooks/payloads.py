"""What a webhook says and how it is signed: events, payloads, signatures, URLs. No I/O.

Every stored message becomes one event: ``message.created`` for what people and bots write,
``conversation.<event>`` for routing's system events (``assigned``, ``resolved``…), which are
stored in the transcript too, and ``message.recalled`` for the event a recall appends. Opening, closing and a satisfaction rating are events of their own.

A delivery is signed as Stripe's are: ``kefu-signature: t=<unix seconds>,v1=<hex>``, the hex being
HMAC-SHA256 under the webhook's secret of ``"<t>." + body``. The receiver recomputes it, compares
in constant time and refuses old timestamps, which stops replays (:func:`verify` does all three).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from ..model import StoredMessage
from ..protocol import envelope as env

#: Routing's and the workspace's system events (``{"kind": "event", "event": …}`` in a transcript).
SYSTEM_EVENTS = ("queued", "assigned", "requeued", "transferred", "resolved", "survey")
EVENTS = (
    "message.created",
    "message.recalled",
    "conversation.opened",
    "conversation.closed",
    "conversation.rated",
    *(f"conversation.{e}" for e in SYSTEM_EVENTS),
)
ALL = "*"
MAX_URL_CHARS = 2000
SIGNATURE_TOLERANCE_S = 300


class WebhookError(ValueError):
    """A webhook's URL or events are not acceptable; the message says why."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def check_events(events: list[str]) -> tuple[str, ...]:
    """The events a webhook subscribes to, checked (``*``: all of them)."""
    if not events:
        raise WebhookError("subscribe to at least one event (or `*` for all)")
    unknown = sorted(set(events) - set(EVENTS) - {ALL})
    if unknown:
        raise WebhookError(f"unknown events {', '.join(unknown)}; known: {', '.join(EVENTS)}, or `*`")
    return tuple(dict.fromkeys(events))


def check_url(url: str, *, allow_private: bool) -> str:
    """An http(s) URL with a host; a literal private, loopback or link-local address is refused
    unless ``allow_private`` (names are checked when they are resolved, at each delivery)."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookError(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise WebhookError("the URL must not hold spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise WebhookError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise WebhookError("the URL must not hold credentials: receivers check the signature instead")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url  # a name
    if not allow_private and not is_public(address):
        raise WebhookError(f"{address} is not a public address (the gateway allows those only with --webhooks-allow-private yes)")
    return url


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may be sent to ``address``: not loopback, private, link-local (cloud
    metadata services live there), multicast, reserved or unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def message_event(m: StoredMessage) -> tuple[str, dict[str, Any]]:
    """The event a stored message is, and the message as the REST API shows it (``message_map``:
    ``conv``, ``seq``, ``cmid``, ``from``, ``role``, ``ts``, the body decoded)."""
    message = env.jsonable(env.message_map(m))
    body = message["body"]
    name = "message.created"
    if m.sender_role == "system" and type(body) is dict and body.get("kind") == "event":
        if body.get("event") in SYSTEM_EVENTS:
            name = f"conversation.{body['event']}"
        elif body.get("event") == "recalled":  # its body names the seq taken back
            name = "message.recalled"
    return name, message


def payload(event_id: str, name: str, tenant: str, data: dict[str, Any], *, now_ms: int | None = None) -> bytes:
    """The JSON body of one event (UTF-8, Chinese as is)."""
    doc = {"id": event_id, "event": name, "tenant": tenant, "created_at": now_ms if now_ms is not None else int(time.time() * 1000), "data": data}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``kefu-signature`` header's value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None, tolerance_s: int = SIGNATURE_TOLERANCE_S) -> bool:
    """What a receiver does: True if ``header`` signs ``body`` under ``secret`` and is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = signature(secret, body, timestamp).rsplit("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))
