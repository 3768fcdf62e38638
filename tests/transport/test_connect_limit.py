"""New connections per source address, over real sockets: refused with 429 before the upgrade is
read, other addresses unaffected, strikes for connections closed for abuse, a bounded table."""

from __future__ import annotations

import logging

import trio

from gateway.protocol.errors import CLOSE_POLICY_VIOLATION

from ..support import connect, token
from ..test_errors_and_limits import close_code_after
from .test_input_limits import UPGRADE, frame

SLOW = 0.001  # connections a second: no token comes back during a test


async def upgrade_from(gw, source: str, tok: str | None = None) -> tuple[trio.SocketStream, bytes, bytes]:
    """Connect from the loopback address ``source`` and send an upgrade: the response head and
    what came after it."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", gw.port))
    stream = trio.SocketStream(sock)
    request = UPGRADE if tok is None else UPGRADE.replace(b"GET /ws ", b"GET /ws?token=" + tok.encode() + b" ")
    try:
        await stream.send_all(request)
    except trio.BrokenResourceError:  # refused and closed before the request was written
        pass
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return stream, head, rest


async def test_connections_over_the_address_rate_get_429_and_other_addresses_do_not(start_gateway, caplog):
    gw = await start_gateway(connect_rate_per_address=SLOW, connect_burst_per_address=2)
    caplog.set_level(logging.INFO, logger="kefu")
    held = []
    for _ in range(2):
        stream, head, _ = await upgrade_from(gw, "127.0.0.1")
        assert head.startswith(b"HTTP/1.1 101"), head
        held.append(stream)
    stream, head, body = await upgrade_from(gw, "127.0.0.1")
    assert head.startswith(b"HTTP/1.1 429"), head
    retry_after = [line for line in head.split(b"\r\n") if line.lower().startswith(b"retry-after:")]
    assert len(retry_after) == 1 and int(retry_after[0].split(b":")[1]) >= 1
    assert b"too many new connections" in body
    assert [r for r in caplog.records if "new connections from 127.0.0.1" in r.getMessage() and "refused 429" in r.getMessage()]
    assert gw.node.stats.refused["connect_rate"] == 1
    assert gw.registry.get_sample_value("kefu_handshakes_failed_total", {"reason": "connect_rate"}) == 1
    assert gw.registry.get_sample_value("kefu_input_refused_total", {"reason": "connect_rate"}) == 1
    # Another address has its own bucket: it upgrades, authenticates and is served.
    stream, head, rest = await upgrade_from(gw, "127.0.0.2", token("bob"))
    assert head.startswith(b"HTTP/1.1 101"), head
    await stream.send_all(frame(0x8, b"\x03\xe8"))  # close 1000: the server answers with its close
    assert await close_code_after(stream, rest) == 1000
    assert gw.node.stats.refused["connect_rate"] == 1


async def test_a_connection_closed_for_abuse_halves_its_address_bucket(start_gateway):
    gw = await start_gateway(connect_rate_per_address=SLOW, connect_burst_per_address=8)
    stream, head, rest = await upgrade_from(gw, "127.0.0.3")
    assert head.startswith(b"HTTP/1.1 101")
    await stream.send_all(frame(0x2, b"a", fin=False) + b"".join(frame(0x0, b"", fin=False) for _ in range(20)))
    assert await close_code_after(stream, rest) == CLOSE_POLICY_VIOLATION
    with trio.fail_after(5):
        while not gw.node.stats.address_strikes["too_many_fragments"]:
            await trio.sleep(0.01)
    assert gw.node.server.connect_limit.strikes("127.0.0.3") == 1
    assert gw.registry.get_sample_value("kefu_address_strikes_total", {"reason": "too_many_fragments"}) == 1
    # 7 tokens were left of 8; the strike cut the bucket to 4.
    answers = [(await upgrade_from(gw, "127.0.0.3"))[1][:12] for _ in range(5)]
    assert answers == [b"HTTP/1.1 101"] * 4 + [b"HTTP/1.1 429"]
    assert gw.node.server.connect_limit.strikes("127.0.0.1") == 0
    async with connect(gw.url, token("alice")) as client:  # 127.0.0.1 is not struck
        assert (await client.request("ping"))["t"] == "pong"


async def test_the_address_table_stays_bounded(start_gateway):
    gw = await start_gateway(connect_addresses=3)
    for i in range(2, 9):
        stream, head, _ = await upgrade_from(gw, f"127.0.0.{i}")
        assert head.startswith(b"HTTP/1.1 101")
        await stream.aclose()
        assert len(gw.node.server.connect_limit.table) <= 3
    assert gw.registry.get_sample_value("kefu_connect_limit_addresses") == 3


async def test_zero_rate_admits_every_connection(start_gateway):
    gw = await start_gateway(connect_rate_per_address=0, connect_burst_per_address=1)
    for _ in range(3):
        stream, head, _ = await upgrade_from(gw, "127.0.0.1")
        assert head.startswith(b"HTTP/1.1 101")
        await stream.aclose()
    assert gw.node.stats.refused["connect_rate"] == 0
    assert not gw.node.server.connect_limit.table
