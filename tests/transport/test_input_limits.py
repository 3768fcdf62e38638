"""What a peer may make the gateway hold and do, over real sockets: before authentication (bytes,
fragments, requests), floods of any kind of frame, and frames that never complete."""

from __future__ import annotations

import logging

import msgpack
import trio

from gateway.protocol.errors import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER

from ..support import connect, token
from ..test_errors_and_limits import close_code_after, raw_socket

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (all-zero mask) of at most 125 bytes."""
    assert len(payload) <= 125
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


PONG = frame(0xA, b"p" * 125)  # 131 bytes that a server takes without answering


async def unauthenticated(gw) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
    await stream.send_all(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream, head.split(b"\r\n\r\n", 1)[1]


async def held_reaches(gw, n: int) -> None:
    with trio.fail_after(5):
        while gw.node.preauth.held != n:
            await trio.sleep(0.01)


async def test_fragments_before_authentication_are_few(start_gateway):
    gw = await start_gateway()
    stream, rest = await unauthenticated(gw)
    await stream.send_all(frame(0x2, b"a", fin=False) + b"".join(frame(0x0, b"", fin=False) for _ in range(20)))
    assert await close_code_after(stream, rest) == CLOSE_POLICY_VIOLATION
    assert gw.node.stats.refused["too_many_fragments"] == 1
    with trio.fail_after(5):
        while gw.node.preauth.held:  # released when the connection ends
            await trio.sleep(0.01)


async def test_fragments_after_authentication_are_bounded_too(start_gateway):
    gw = await start_gateway(max_fragments=16)
    stream, rest = await raw_socket(gw, token("alice"))
    await stream.send_all(frame(0x2, b"a", fin=False) + b"".join(frame(0x0, b"b", fin=False) for _ in range(15)))
    await stream.send_all(frame(0x0, b"", fin=False))  # the 17th frame of one message
    assert await close_code_after(stream, rest) == CLOSE_POLICY_VIOLATION


async def test_too_much_input_before_authentication_closes(start_gateway):
    gw = await start_gateway(max_preauth_bytes=len(UPGRADE) + 3 * len(PONG))
    stream, rest = await unauthenticated(gw)
    await stream.send_all(PONG * 3)
    await held_reaches(gw, len(UPGRADE) + 3 * len(PONG))
    await stream.send_all(PONG)
    assert await close_code_after(stream, rest) == CLOSE_POLICY_VIOLATION
    assert gw.node.stats.refused["preauth_connection_bytes"] == 1
    await held_reaches(gw, 0)
    async with connect(gw.url, token("alice")) as client:  # the budget serves the next connection
        assert (await client.request("ping"))["t"] == "pong"


async def test_pending_connections_share_one_budget(start_gateway):
    total = 2 * len(UPGRADE) + 8 * len(PONG) + 100
    gw = await start_gateway(max_pending_bytes=total, max_preauth_bytes=len(UPGRADE) + 7 * len(PONG))
    first, _ = await unauthenticated(gw)
    await first.send_all(PONG * 7)
    second, rest = await unauthenticated(gw)
    await second.send_all(PONG)
    await held_reaches(gw, 2 * len(UPGRADE) + 8 * len(PONG))
    # Less than room for one more upgrade: a new connection is answered 503 before it is read.
    third = await trio.open_tcp_stream("127.0.0.1", gw.port)
    answer = b""
    with trio.fail_after(5):
        while chunk := await third.receive_some(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After" in answer
    assert gw.node.stats.refused["pending_budget"] == 1
    # A pending connection whose input would cross the total is closed with a retryable code.
    await second.send_all(PONG)
    assert await close_code_after(second, rest) == CLOSE_TRY_AGAIN_LATER
    assert gw.node.stats.refused["preauth_total_bytes"] == 1
    await first.aclose()
    await held_reaches(gw, 0)
    async with connect(gw.url, token("alice")) as client:
        assert (await client.request("ping"))["t"] == "pong"


async def test_requests_before_authentication_close_after_a_few(start_gateway, caplog):
    gw = await start_gateway()
    stream, rest = await unauthenticated(gw)
    caplog.set_level(logging.INFO, logger="kefu")
    await stream.send_all(b"".join(frame(0x2, msgpack.packb({"t": "ping", "id": i})) for i in range(100)))
    assert await close_code_after(stream, rest) == CLOSE_POLICY_VIOLATION
    assert gw.node.stats.errors["unauthenticated"] <= 10
    assert gw.node.stats.address_strikes["unauthenticated"] == 1  # a strike against its address
    lines = [r for r in caplog.records if "error unauthenticated" in r.getMessage()]
    assert len(lines) == 1  # once per connection, not once per frame


async def test_garbage_flood_is_metered_and_closed(start_gateway, caplog):
    gw = await start_gateway(rate_per_second=50.0, rate_burst=20, flood_close_after=40)
    caplog.set_level(logging.INFO, logger="kefu")
    stream, rest = await raw_socket(gw, token("alice"))
    garbage = frame(0x2, b"\xc1") + frame(0x1, b"text")  # undecodable binary, and text
    await stream.send_all(garbage * 2000)
    assert await close_code_after(stream, rest) == CLOSE_POLICY_VIOLATION
    stats = gw.node.stats
    assert stats.refused["flood"] == 1
    assert stats.address_strikes["flood"] == 1
    assert gw.node.server.connect_limit.strikes("127.0.0.1") == 1
    # Answered within the budget only: the burst, then about close_after refusals.
    assert stats.errors["bad_frame"] <= 20 + 2
    assert stats.errors["bad_frame"] + stats.errors["rate_limited"] <= 20 + 40 + 2
    assert len([r for r in caplog.records if "error bad_frame" in r.getMessage()]) == 1
    summary = [r.getMessage() for r in caplog.records if "errors sent on this connection" in r.getMessage()]
    assert summary and "bad_frame x" in summary[0]
    async with connect(gw.url, token("carol")) as other:  # nobody else is affected
        assert (await other.request("ping"))["t"] == "pong"


async def test_pings_count_against_the_rate(start_gateway):
    gw = await start_gateway(rate_per_second=10.0, rate_burst=5, flood_close_after=20)
    stream, rest = await raw_socket(gw, token("alice"))
    await stream.send_all(frame(0x9, b"x") * 500)
    assert await close_code_after(stream, rest) == CLOSE_POLICY_VIOLATION
    assert gw.node.stats.refused["flood"] == 1


async def test_a_frame_trickled_byte_by_byte_has_a_deadline(start_gateway):
    gw = await start_gateway(frame_timeout_s=0.3, idle_timeout_s=30.0)
    stream, rest = await raw_socket(gw, token("alice"))
    data = frame(0x2, msgpack.packb({"t": "ping", "id": 1, "pad": "x" * 80}))
    closed = None

    async def trickle():
        for byte in data[:-1]:
            try:
                await stream.send_all(bytes([byte]))
            except trio.BrokenResourceError:
                return
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        closed = await close_code_after(stream, rest)
        nursery.cancel_scope.cancel()
    assert closed == CLOSE_POLICY_VIOLATION
    assert gw.node.stats.refused["frame_timeout"] == 1


async def test_a_resume_cursor_past_the_end_is_refused_not_skipped(start_gateway):
    gw = await start_gateway()
    async with connect(gw.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        for i in range(5):
            await client.ok("send", conv=conv, cmid=f"a{i}", body={"kind": "text", "text": str(i)})
    async with connect(gw.url, token("alice")) as client:
        reply = await client.ok("resume", convs={conv: 10})
        assert reply["resumed"][conv] == {"error": "cursor_ahead", "last_seq": 5}
        async with connect(gw.url, token("alice"), resume={conv: 5}) as other:
            for i in range(5, 12):
                await other.ok("send", conv=conv, cmid=f"b{i}", body={"kind": "text", "text": str(i)})
        assert [f for f in await client.quiet(0.3) if f.get("t") == "msg"] == []  # not live: nothing half-delivered
        reply = await client.ok("resume", convs={conv: 5})
        assert reply["resumed"][conv]["complete"] is True
        got = [f["seq"] for f in client.buffer if f.get("t") == "msg"]
        assert got == list(range(6, 13))


async def test_integers_past_int64_are_bad_requests(start_gateway):
    gw = await start_gateway(store="sqlite")
    async with connect(gw.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        for request, fields in [
            ("history", {"conv": conv, "after": 1 << 63}),
            ("history", {"conv": conv, "before": 1 << 64 - 1}),
            ("receipt", {"conv": conv, "kind": "read", "seq": 1 << 63}),
            ("list", {"before": 1 << 63}),
            ("resume", {"convs": {conv: 1 << 63}}),
        ]:
            reply = await client.request(request, **fields)
            assert reply["t"] == "error" and reply["code"] == "bad_request" and reply["retryable"] is False, (request, reply)
        reply = await client.request("list", mine="yes")
        assert reply["code"] == "bad_request" and "`mine`" in reply["message"]


async def test_resolve_and_take_do_not_reveal_other_shoppers_conversations(start_gateway):
    gw = await start_gateway(routing="on")
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("mallory"), resume={}) as mallory:
        conv = (await alice.ok("open"))["conv"]["id"]
        for t in ("resolve", "take", "transfer"):
            theirs = await mallory.request(t, conv=conv, to_group="default")
            unknown = await mallory.request(t, conv="0" * 28, to_group="default")
            assert theirs["code"] == unknown["code"] and theirs["message"] == unknown["message"], (t, theirs, unknown)


def test_a_newline_in_a_user_id_cannot_forge_a_log_line():
    from gateway.logs import TextFormatter

    record = logging.LogRecord("kefu.node", logging.INFO, __file__, 1, "error %s", ("x\nFAKE 00:00 ERROR y",), None)
    record.user = "eve\r\nINFO kefu: forged"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\\n" in line


def test_tokens_with_control_characters_in_ids_are_invalid():
    import pytest

    from gateway.auth import Authenticator
    from gateway.protocol.errors import AuthError

    from ..support import SECRET

    auth = Authenticator(SECRET)
    with pytest.raises(AuthError) as info:
        auth.verify(token("eve\nINFO forged"))
    assert info.value.code == "token_invalid"
