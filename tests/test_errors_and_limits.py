"""Bad input over real sockets: every documented error and close code, and nothing else harmed."""

from __future__ import annotations

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import serve
from gateway.store import SqliteBackend

from gateway.protocol.errors import (
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SERVICE_RESTART,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_MANY_CONNECTIONS,
    ERRORS,
)

from .conftest import make_config
from .protocol.test_envelope import msgpack_values
from .support import Client, GatewayThread, connect, token

TEXT = {"kind": "text", "text": "hi"}


async def error_for(client: Client, payload: bytes) -> dict:
    await client.send_raw(payload)
    frame = await client.next("error")
    assert frame["code"] in ERRORS and isinstance(frame["message"], str) and isinstance(frame["retryable"], bool)
    return frame


@pytest.mark.parametrize(
    "payload, code, words",
    [
        (b"\xc1", "bad_frame", "msgpack"),
        (msgpack.packb([1, 2, 3]), "bad_frame", "map"),
        (msgpack.packb({"t": "open"}) + b"\x00", "bad_frame", "msgpack"),
        (msgpack.packb({"id": 1}), "bad_request", "`t`"),
        (msgpack.packb({"t": "explode", "id": 7}), "unknown_type", "explode"),
        (msgpack.packb({"t": "send", "id": 2, "cmid": "x", "body": TEXT}), "bad_request", "`conv`"),
        (msgpack.packb({"t": "send", "id": 2, "conv": 5, "cmid": "x", "body": TEXT}), "bad_request", "`conv`"),
        (msgpack.packb({"t": "send", "id": 2, "conv": "c", "cmid": "x", "body": {"kind": "gif"}}), "bad_request", "`kind`"),
        (msgpack.packb({"t": "send", "id": 2, "conv": "c", "cmid": "x", "body": {"kind": "text", "text": "x" * 6000}}), "too_large", "`text`"),
        (msgpack.packb({"t": "send", "id": 2, "conv": "c", "cmid": "x", "body": {"kind": "location", "lat": 91, "lng": 0}}), "bad_request", "`lat`"),
        (msgpack.packb({"t": "send", "id": 2, "conv": "c", "cmid": "x", "body": {"kind": "image", "url": "ftp://x"}}), "bad_request", "`url`"),
        (msgpack.packb({"t": "typing", "id": 3, "conv": "c", "on": "yes"}), "bad_request", "`on`"),
        (msgpack.packb({"t": "auth", "id": 4, "token": "x"}), "bad_request", "refresh"),
        (msgpack.packb({"t": "auth", "id": 4, "token": token("mallory")}), "already_authenticated", "another user"),
    ],
)
async def test_malformed_requests_get_an_error_naming_the_problem(gateway, payload, code, words):
    async with connect(gateway.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        frame = await error_for(client, payload)
        assert frame["code"] == code and words in frame["message"], frame
        assert frame["id"] == _request_id(payload)
        # the connection is unharmed and so is stored data
        ack = await client.request("send", conv=conv, cmid="after", body=TEXT)
        assert ack["t"] == "ack" and ack["seq"] == 1


def _request_id(payload: bytes):
    try:
        request = msgpack.unpackb(payload)
    except Exception:
        return None
    return request.get("id") if isinstance(request, dict) else None


async def test_error_answers_carry_the_request_id(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as client:
        reply = await client.request("send", conv="nope", cmid="x", body=TEXT)
        assert reply == {**reply, "t": "error", "code": "not_found", "retryable": False}


async def test_text_frames_are_refused_with_an_error(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as client:
        await client.send_raw("hello")
        assert (await client.next("error"))["code"] == "bad_frame"
        assert (await client.request("ping"))["t"] == "pong"


async def test_requests_before_auth_are_refused_and_late_auth_closes(start_gateway):
    gw = await start_gateway(handshake_timeout_s=0.5)
    async with connect(gw.url) as client:
        assert (await client.request("open"))["code"] == "unauthenticated"
        error = await client.next("error")
        assert error["code"] == "token_missing"
        assert await client.closed() == CLOSE_AUTH_FAILED


@pytest.mark.parametrize(
    "bad_token, code",
    [
        ("not-a-jwt", "token_invalid"),
        (token("alice", ttl_s=-60), "token_expired"),
        (token("alice", tenant="other-shop"), "tenant_unknown"),
        ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsInRlbmFudCI6InNob3AxIiwicm9sZSI6InNob3BwZXIiLCJjaGFubmVsIjoiYXBwIiwiZXhwIjo0MTAyNDQ0ODAwfQ.", "token_algorithm"),
    ],
)
async def test_bad_tokens_get_an_error_then_close_4001(start_gateway, bad_token, code):
    gw = await start_gateway(tenants="shop1")
    for via_frame in (False, True):
        async with connect(gw.url, None if via_frame else bad_token, hello=False) as client:
            if via_frame:
                await client.send("auth", token=bad_token)
            error = await client.next("error")
            assert error["code"] == code
            assert await client.closed() == CLOSE_AUTH_FAILED
    assert gw.node.stats.auth_failures[code] == 2


async def test_oversized_frame_closes_1009_and_others_keep_going(start_gateway):
    gw = await start_gateway(max_frame_bytes=1024)
    async with connect(gw.url, token("bob", "agent"), resume={}) as bystander, connect(gw.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        await bystander.ok("join", conv=conv)
        await client.send_raw(msgpack.packb({"t": "ping", "pad": "x" * 2000}))
        assert await client.closed() == CLOSE_MESSAGE_TOO_BIG
        assert (await bystander.request("send", conv=conv, cmid="still", body=TEXT))["seq"] == 1


async def raw_socket(gw, tok):
    """A raw TCP client that did the upgrade by hand (to send frames no library would)."""
    stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
    await stream.send_all(
        b"GET /ws?token=" + tok.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream, head.split(b"\r\n\r\n", 1)[1]


async def close_code_after(stream, rest: bytes) -> int:
    data = rest
    with trio.fail_after(5):
        while True:
            # find a close frame (opcode 8) among the server frames
            while len(data) >= 2:
                length = data[1] & 0x7F
                start = 2 if length < 126 else 4 if length == 126 else 10
                if length == 126:
                    length = int.from_bytes(data[2:4], "big")
                elif length == 127:
                    length = int.from_bytes(data[2:10], "big")
                if len(data) < start + length:
                    break
                if data[0] & 0x0F == 8:
                    return int.from_bytes(data[start : start + 2], "big")
                data = data[start + length :]
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise AssertionError("closed without a close frame")
            data += chunk


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"\x82\x05hello", CLOSE_PROTOCOL_ERROR),  # unmasked client frame
        (b"\xc2\x80abcd", CLOSE_PROTOCOL_ERROR),  # RSV1 without an extension
        (b"\x83\x80abcd", CLOSE_PROTOCOL_ERROR),  # reserved opcode
        (b"\x81\x82\x00\x00\x00\x00\xc3\x28", CLOSE_INVALID_DATA),  # invalid UTF-8 text
    ],
)
async def test_protocol_violations_close_with_the_rfc_code(gateway, frame, code):
    stream, rest = await raw_socket(gateway, token("alice"))
    await stream.send_all(frame)
    assert await close_code_after(stream, rest) == code  # after the hello frame
    await stream.aclose()
    async with connect(gateway.url, token("alice")) as other:  # the process is unharmed
        assert (await other.request("ping"))["t"] == "pong"


async def test_rate_limit_errors_then_flood_closes_1008(start_gateway):
    gw = await start_gateway(rate_per_second=1.0, rate_burst=3, flood_close_after=10)
    async with connect(gw.url, token("alice")) as client:
        replies = [await client.request("ping") for _ in range(4)]
        assert [r["t"] for r in replies] == ["pong", "pong", "pong", "error"]
        assert replies[3]["code"] == "rate_limited" and replies[3]["retryable"] is True
        assert replies[3]["retry_after_ms"] > 0
        for _ in range(12):
            await client.send("ping")
        assert await client.closed() == CLOSE_POLICY_VIOLATION
    assert gw.node.stats.rate_limited >= 10


async def test_connections_per_user_are_limited(start_gateway):
    gw = await start_gateway(max_connections_per_user=2)
    async with connect(gw.url, token("alice")), connect(gw.url, token("alice")):
        async with connect(gw.url, token("alice"), hello=False) as third:
            assert await third.closed() == CLOSE_TOO_MANY_CONNECTIONS
        async with connect(gw.url, token("carol")):
            pass  # other users are unaffected


async def test_idle_connections_are_pinged_then_closed(start_gateway):
    gw = await start_gateway(heartbeat_s=0.2, idle_timeout_s=0.6)
    stream, rest = await raw_socket(gw, token("alice"))
    data = rest
    with trio.fail_after(5):
        while b"\x89\x00" not in data:  # a server ping
            data += await stream.receive_some(4096)
    assert await close_code_after(stream, data[data.index(b"\x89\x00") + 2 :]) == CLOSE_GOING_AWAY
    # a client that answers pings (trio-websocket does) stays
    async with connect(gw.url, token("carol")) as lively:
        await trio.sleep(1.0)
        assert (await lively.request("ping"))["t"] == "pong"


async def test_the_heartbeat_checks_every_connection_a_slice_at_a_time(start_gateway, monkeypatch):
    from gateway.transport import server as server_module

    monkeypatch.setattr(server_module, "HEARTBEAT_SLICE", 2)  # 5 connections: 3 slices
    gw = await start_gateway(heartbeat_s=0.2, idle_timeout_s=30)
    streams = [await raw_socket(gw, token(f"user{i}")) for i in range(5)]
    for stream, rest in streams:  # every one of them is pinged
        data = rest
        with trio.fail_after(5):
            while b"\x89\x00" not in data:
                data += await stream.receive_some(4096)
    for stream, _ in streams:
        await stream.aclose()


async def test_slow_consumer_is_closed_while_others_keep_their_pace(start_gateway):
    gw = await start_gateway(max_outbox_bytes=64 * 1024)
    async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("bob", "agent"), resume={}) as fast:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await fast.ok("join", conv=conv)
        # a raw client of the same user that never reads: its socket buffers fill, then its outbox
        stream, _ = await raw_socket(gw, token("alice"))
        await stream.send_all(_masked(msgpack.packb({"t": "resume", "id": 1, "convs": {}})))
        await trio.sleep(0.1)
        big = {"kind": "text", "text": "字" * 1600}
        sent = 0
        with trio.fail_after(20):
            while gw.node.stats.slow_consumer_disconnects == 0:
                for _ in range(50):
                    await fast.send("send", conv=conv, cmid=f"m{sent}", body=big)
                    sent += 1
                for _ in range(50):
                    await fast.next("ack")
                for _ in range(50):
                    await shopper.next("msg")  # the well-behaved shopper device keeps up
        assert gw.node.stats.closes[CLOSE_SLOW_CONSUMER] == 1
        assert (await fast.request("send", conv=conv, cmid="later", body=TEXT))["seq"] == sent + 1
        await stream.aclose()
    # the slow device resumes from the store without loss
    async with connect(gw.url, token("alice")) as again:
        result = await again.ok("resume", convs={conv: 0})
        assert result["resumed"][conv]["sent"] == sent + 1


def _masked(payload: bytes) -> bytes:
    header = bytes([0x82])
    n = len(payload)
    header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return header + b"\x00\x00\x00\x00" + payload


async def test_shutdown_acks_what_is_durable_then_closes_1012(start_gateway, tmp_path):
    gw = await start_gateway(store="sqlite")
    async with connect(gw.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        for i in range(50):
            await client.send("send", conv=conv, cmid=f"s{i}", body=TEXT)
        gw.node.stop()
        assert await client.closed() == CLOSE_SERVICE_RESTART
        acked = [f["seq"] for f in client.buffer if f["t"] == "ack"]
    with trio.fail_after(10):
        await gw.node.stopped()
    assert acked == list(range(1, len(acked) + 1))
    # everything acked is in the store a new gateway opens on the same data directory
    again = await start_gateway(store="sqlite")
    async with connect(again.url, token("alice")) as client:
        history = await client.ok("history", conv=conv, limit=100)
        assert [m["seq"] for m in history["messages"]][: len(acked)] == acked


REQUEST_TYPES = ["send", "open", "join", "leave", "close", "list", "history", "resume", "receipt", "typing", "ping", "auth", "zzz"]
requests = st.one_of(
    msgpack_values,
    st.fixed_dictionaries({"t": st.sampled_from(REQUEST_TYPES), "id": st.integers(0, 100)}, optional={
        "conv": msgpack_values, "cmid": msgpack_values, "body": msgpack_values, "seq": msgpack_values,
        "kind": msgpack_values, "on": msgpack_values, "convs": msgpack_values, "limit": msgpack_values,
        "before": msgpack_values, "after": msgpack_values, "status": msgpack_values, "subject": msgpack_values,
    }),
)


@pytest.fixture(scope="module")
def fuzzed_gateway(tmp_path_factory):
    """One gateway for every example of the test below: it must survive each of them in turn."""
    with GatewayThread(make_config(tmp_path_factory.mktemp("fuzzed"))) as running:
        yield running
    assert running.node.stats.closes.get(1011, 0) == 0  # no internal error ever closed a connection


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.one_of(st.binary(max_size=40), requests.map(msgpack.packb)))
async def test_any_frame_gets_a_reply_or_a_documented_error_and_the_connection_survives(fuzzed_gateway, payload):
    async with connect(fuzzed_gateway.url, token("fuzz"), resume={}) as client:
        await client.send_raw(payload)
        marker = await client.send("ping")
        replies = []
        with trio.fail_after(5):
            while True:
                frame = await client.recv()
                if frame.get("t") == "pong" and frame.get("id") == marker:
                    break
                replies.append(frame)
        for frame in replies:
            if frame["t"] == "error":
                assert frame["code"] in ERRORS, frame
    assert fuzzed_gateway.node.stats.closes.get(1011, 0) == 0  # no internal error ever closed a connection


class FailingCommits(SqliteBackend):
    """SQLite whose commits fail while ``failing`` is set (as a full disk would make them)."""

    failing = False

    def apply_batch(self, ops):
        if self.failing:
            raise OSError("disk full")
        return super().apply_batch(ops)


async def test_a_store_failure_is_a_retryable_error_and_the_retry_loses_nothing(nursery, tmp_path):
    backend = FailingCommits(tmp_path / "db.sqlite3")
    gw = await nursery.start(lambda task_status: serve(make_config(tmp_path), backend=backend, task_status=task_status))
    async with connect(gw.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        backend.failing = True
        error = await client.request("send", conv=conv, cmid="m1", body=TEXT)
        assert error["code"] == "unavailable" and error["retryable"] is True
        backend.failing = False
        ack = await client.request("send", conv=conv, cmid="m1", body=TEXT)
        assert (ack["t"], ack["seq"], ack["dup"]) == ("ack", 1, False)
    gw.node.stop()


async def test_a_handler_bug_is_an_internal_error_and_the_connection_survives(gateway):
    def broken(who, req):
        raise RuntimeError("a bug")

    gateway.node.handlers.register({"broken": broken})  # fault injection: no handler fails on purpose
    async with connect(gateway.url, token("alice"), resume={}) as client:
        error = await client.request("broken", conv="c", on=True)
        assert error["code"] == "internal" and error["retryable"] is True
        assert (await client.request("ping"))["t"] == "pong"


async def test_a_fresh_token_extends_the_connection_and_expiry_closes_it(start_gateway):
    gw = await start_gateway(heartbeat_s=0.1, idle_timeout_s=30)
    async with connect(gw.url, token("alice", ttl_s=1)) as client:
        refreshed = await client.ok("auth", token=token("alice", ttl_s=3600))
        assert refreshed["expires_at"] > 0
        await trio.sleep(1.5)  # past the first token's expiry: still open
        assert (await client.request("ping"))["t"] == "pong"
    async with connect(gw.url, token("alice", ttl_s=1)) as client:
        error = await client.next("error")
        assert error["code"] == "token_expired"
        assert await client.closed() == CLOSE_AUTH_FAILED


async def test_a_resend_after_the_conversation_closed_still_gets_its_original_ack(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        first = await client.ok("send", conv=conv, cmid="m1", body=TEXT)
        await client.ok("close", conv=conv)
        again = await client.request("send", conv=conv, cmid="m1", body=TEXT)
        assert (again["t"], again["seq"], again["dup"]) == ("ack", first["seq"], True)
        assert (await client.request("send", conv=conv, cmid="m2", body=TEXT))["code"] == "conversation_closed"


async def test_history_replies_stay_within_the_outbox_budget(start_gateway):
    gw = await start_gateway(max_outbox_bytes=256 * 1024)
    async with connect(gw.url, token("alice"), resume={}) as client:
        conv = (await client.ok("open"))["conv"]["id"]
        big = {"kind": "text", "text": "长" * 5000}  # ~15 KB each
        for i in range(40):
            await client.send("send", conv=conv, cmid=f"b{i}", body=big)
        for _ in range(40):
            await client.next("ack")
        newest = await client.ok("history", conv=conv, before=41, limit=200)
        seqs = [m["seq"] for m in newest["messages"]]
        assert newest["more"] is True and seqs == list(range(41 - len(seqs), 41)) and len(seqs) < 40
        oldest = await client.ok("history", conv=conv, after=0, limit=200)
        assert [m["seq"] for m in oldest["messages"]] == list(range(1, len(oldest["messages"]) + 1))
