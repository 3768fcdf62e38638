"""The HTTP upgrade: pure decisions, then the same rules over a real socket."""

from __future__ import annotations

import h11
import pytest
import trio

from gateway.transport.handshake import Refuse, Upgrade, decide

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"keep-alive, Upgrade"), (b"sec-websocket-key", KEY), (b"sec-websocket-version", b"13")]


def request(target=b"/ws", headers=UPGRADE, method=b"GET", extra=()):
    return h11.Request(method=method, target=target, headers=[*headers, *extra])


def test_accepts_an_upgrade_with_the_rfc_accept_key():
    d = decide(request(), None, True)
    assert isinstance(d, Upgrade)
    assert dict(d.response)[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert d.subprotocol is None and d.token is None


def test_negotiates_kefu_v1_and_refuses_other_subprotocols():
    d = decide(request(extra=[(b"sec-websocket-protocol", b"chat, kefu.v1")]), None, True)
    assert isinstance(d, Upgrade) and d.subprotocol == "kefu.v1"
    assert (b"sec-websocket-protocol", b"kefu.v1") in d.response
    other = decide(request(extra=[(b"sec-websocket-protocol", b"mqtt")]), None, True)
    assert isinstance(other, Refuse) and other.status == 400


def test_token_from_query_or_bearer_header():
    assert decide(request(target=b"/ws?token=abc"), None, True).token == "abc"
    assert decide(request(target=b"/?access_token=xyz"), None, True).token == "xyz"
    assert decide(request(extra=[(b"authorization", b"Bearer t0k")]), None, True).token == "t0k"


@pytest.mark.parametrize(
    "req, status",
    [
        (request(method=b"POST"), 405),
        (request(headers=UPGRADE[:1]), 426),
        (request(target=b"/elsewhere"), 404),
        (request(headers=[h for h in UPGRADE if h[0] != b"sec-websocket-version"] + [(b"sec-websocket-version", b"8")]), 426),
        (request(headers=[h for h in UPGRADE if h[0] != b"sec-websocket-key"]), 400),
    ],
)
def test_refusals(req, status):
    d = decide(req, None, True)
    assert isinstance(d, Refuse) and d.status == status


def test_origin_allow_list():
    allowed = frozenset({"https://shop.example"})
    assert isinstance(decide(request(extra=[(b"origin", b"https://shop.example")]), allowed, True), Upgrade)
    refused = decide(request(extra=[(b"origin", b"https://evil.example")]), allowed, True)
    assert isinstance(refused, Refuse) and refused.status == 403


def test_health_paths():
    assert decide(request(target=b"/healthz", headers=[(b"host", b"x")]), None, False).status == 200
    assert decide(request(target=b"/readyz", headers=[(b"host", b"x")]), None, False).status == 503
    assert decide(request(target=b"/readyz", headers=[(b"host", b"x")]), None, True).status == 200


async def http(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(raw)
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(4096):
            data += chunk
    return data


async def test_over_a_socket(start_gateway):
    gw = await start_gateway(allowed_origins="https://shop.example")
    assert (await http(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 200")
    assert (await http(gw.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 426")
    evil = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + KEY
    evil += b"\r\nSec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n\r\n"
    assert (await http(gw.port, evil)).startswith(b"HTTP/1.1 403")
    assert (await http(gw.port, b"\x16\x03\x01 not http at all\r\n\r\n")) == b""  # closed, nothing else
    assert gw.node.stats.handshakes_failed["403"] == 1 and gw.node.stats.handshakes_failed["426"] == 1


async def test_a_silent_client_is_dropped_after_the_handshake_timeout(start_gateway):
    gw = await start_gateway(handshake_timeout_s=0.3)
    stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
    with trio.fail_after(5):
        assert await stream.receive_some(10) == b""
