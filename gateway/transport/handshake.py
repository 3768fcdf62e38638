"""The HTTP side of a connection: the WebSocket upgrade (RFC 6455 §4.2) and plain health checks.

``decide`` is pure — request in, decision out — so every rule is testable without sockets;
``read_request`` and ``respond`` are the I/O around it, on h11.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import h11
from trio.lowlevel import wait_readable
from wsproto.utilities import generate_accept_token

from ..http.health import Check, probe
from ..protocol.envelope import PROTOCOL
from .connection import send_all

MAX_REQUEST_BYTES = 16 * 1024
WS_PATHS = ("/ws", "/")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Accept: switch to WebSocket. ``token`` came from the query string or Authorization header."""

    response: list[tuple[bytes, bytes]]
    subprotocol: str | None
    token: str | None
    origin: str | None
    user_agent: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer with a plain HTTP response and close."""

    status: int
    reason: str  # the body, and the label of the handshake-failure metric
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _headers(request: h11.Request) -> dict[bytes, list[bytes]]:
    headers: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def _tokens(values: list[bytes]) -> list[str]:
    return [t.strip().lower() for v in values for t in v.decode("latin-1").split(",") if t.strip()]


def decide(request: h11.Request, allowed_origins: frozenset[str] | None, ready: bool, checks: Sequence[Check] = ()) -> Upgrade | Refuse:
    """What to answer to ``request``: the rules of the upgrade, the origin allow-list, health paths
    (``checks``: the shared store's and bus's health, for ``/readyz``)."""
    target = request.target.decode("latin-1")
    parts = urlsplit(target)
    headers = _headers(request)
    health = probe(parts.path, ready, checks)
    if health is not None:
        return Refuse(*health)
    if request.method != b"GET":
        return Refuse(405, "method not allowed", ((b"allow", b"GET"),))
    if "websocket" not in _tokens(headers.get(b"upgrade", [])) or "upgrade" not in _tokens(headers.get(b"connection", [])):
        if parts.path not in WS_PATHS:
            return Refuse(404, "not found")
        return Refuse(426, "WebSocket upgrade required", ((b"upgrade", b"websocket"),))
    if parts.path not in WS_PATHS:
        return Refuse(404, "not found")
    if headers.get(b"sec-websocket-version") != [b"13"]:
        return Refuse(426, "unsupported WebSocket version", ((b"sec-websocket-version", b"13"),))
    keys = headers.get(b"sec-websocket-key", [])
    if len(keys) != 1 or len(keys[0]) != 24:
        return Refuse(400, "missing or invalid Sec-WebSocket-Key")
    origin = headers.get(b"origin", [b""])[0].decode("latin-1") or None
    if allowed_origins is not None and origin is not None and origin not in allowed_origins:
        return Refuse(403, "origin not allowed")
    offered = _tokens(headers.get(b"sec-websocket-protocol", []))
    if offered and PROTOCOL not in offered:
        return Refuse(400, f"unsupported subprotocol: this server speaks {PROTOCOL}")
    token = None
    query = parse_qs(parts.query)
    for name in ("token", "access_token"):
        if query.get(name):
            token = query[name][0]
    for value in headers.get(b"authorization", []):
        scheme, _, credentials = value.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            token = credentials.strip()
    response = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(keys[0])),
    ]
    subprotocol = PROTOCOL if offered else None
    if subprotocol:
        response.append((b"sec-websocket-protocol", subprotocol.encode()))
    user_agent = headers.get(b"user-agent", [b""])[0].decode("latin-1")[:200]
    return Upgrade(response, subprotocol, token, origin, user_agent)


async def read_request(sock, conn: h11.Connection, charge: Callable[[int], bool] | None = None) -> h11.Request | None:
    """The request head, or None when the peer closed or sent something that is not HTTP/1.1, or
    ``charge(n)`` refused the next ``n`` bytes read (the pre-auth budget is spent)."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if isinstance(event, h11.Request):
            return event
        if event is not h11.NEED_DATA:
            return None
        await wait_readable(sock)
        try:
            data = sock.recv(MAX_REQUEST_BYTES)
        except BlockingIOError:
            continue
        except OSError:
            return None
        if charge is not None and not charge(len(data)):
            return None
        conn.receive_data(data)
        if not data:
            return None


async def respond(sock, conn: h11.Connection, decision: Upgrade | Refuse) -> bytes:
    """Send the answer; for an upgrade return the bytes the client sent after its request."""
    if isinstance(decision, Upgrade):
        await send_all(sock, conn.send(h11.InformationalResponse(status_code=101, headers=decision.response, reason=b"Switching Protocols")))
        return conn.trailing_data[0]
    body = (decision.reason + "\n").encode()
    headers = [*decision.headers, (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    data = conn.send(h11.Response(status_code=decision.status, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await send_all(sock, data)
    return b""
