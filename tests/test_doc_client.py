"""A client written from docs/protocol.md alone, run against a real gateway process.

This test checks that the protocol document is enough to build a working client. Everything
below (frame shapes, the resume algorithm, error codes, close codes) comes from
``docs/protocol.md``. Nothing was taken from the gateway's source. The client is written on the
``websockets`` asyncio package and runs inside ``asyncio.run`` from a plain synchronous test,
so pytest-trio's ``trio_mode`` does not take it over.

Section references (``§6.2`` and so on) point into docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[1]
SECRET = "doc-client-secret-0123456789abcdef"
TENANT = "demo"
SUBPROTOCOL = "kefu.v1"
TIMEOUT = 5.0  # every network wait is bounded by this (seconds)

# Reply frame types that carry the request `id` (§3.3, §5).
REPLY_TYPES = {"hello", "ok", "ack", "error", "pong"}


# ---------------------------------------------------------------------------------------------
# The gateway process and tokens (§2.1, §2.3: `kefu serve` prints the URL, `kefu token` mints)
# ---------------------------------------------------------------------------------------------


class Gateway:
    def __init__(self, data_dir: Path) -> None:
        self.log_path = data_dir / "gateway.stderr.log"
        self._stderr = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "gateway", "serve",
                "--store", "sqlite", "--data-dir", str(data_dir),
                "--routing", "off", "--port", "0", "--metrics-port", "-1",
                "--jwt-secret", SECRET,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = self._wait_for_url()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 20
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"gateway printed no WebSocket URL; stdout: {seen}; {self.stderr()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"gateway exited early: {seen}; {self.stderr()}")
            seen.append(line)
            # "  WebSocket: ws://127.0.0.1:PORT/ws  (subprotocol kefu.v1)"
            if line.strip().startswith("WebSocket:"):
                return line.split("WebSocket:", 1)[1].split()[0]

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if not self._stderr.closed:
            self._stderr.close()


def mint_tokens(specs: dict[str, dict[str, str]]) -> dict[str, str]:
    """Mint tokens with the documented CLI (`kefu token`, §2.3), all in parallel."""
    procs = {}
    for key, spec in specs.items():
        argv = [sys.executable, "-m", "gateway", "token", "--jwt-secret", SECRET, "--tenant", TENANT,
                "--user", spec["user"], "--role", spec["role"], "--channel", spec["channel"]]
        if "name" in spec:
            argv += ["--name", spec["name"]]
        procs[key] = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tokens = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        tokens[key] = out.strip().splitlines()[-1].strip()
        assert tokens[key].count(".") == 2, out
    return tokens


@pytest.fixture
def gateway(tmp_path: Path):
    gw = Gateway(tmp_path)
    try:
        yield gw
    finally:
        gw.kill()  # no-op when the test already terminated it


# ---------------------------------------------------------------------------------------------
# The client (written from the document)
# ---------------------------------------------------------------------------------------------


class KefuError(Exception):
    def __init__(self, frame: dict) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code = frame.get("code")


class ConnectionLost(Exception):
    pass


class KefuClient:
    """One device of one user.

    State kept as §6.1 says: ``cursor[conv]`` (highest seq such that every message 1..seq is
    held) and ``pending`` (sends not yet acked, with conv, cmid and body). A client object
    survives reconnects: each (re)connection is a new *session* of the same device.
    """

    def __init__(self, url: str, token: str, label: str) -> None:
        self.url = url
        self.token = token
        self.label = label
        self.ws: ClientConnection | None = None
        self.hello: dict | None = None
        self.session_no = 0
        # §6.1 client state
        self.cursor: dict[str, int] = {}
        self.pending: dict[str, dict] = {}  # cmid -> {"conv", "body"}, insertion = creation order
        self.messages: dict[tuple[str, int], dict] = {}  # (conv, seq) -> message; §6.2 "store by (conv, seq)"
        self.done: dict[str, int] = {}  # cmid -> seq of our own sends known to be stored
        # observations for the test
        self.log: list[tuple[int, dict]] = []  # (session, msg frame) in arrival order
        self.acks: list[tuple[int, dict]] = []  # (session, ack frame) in arrival order
        self.arrivals: list[tuple[int, str, str, int]] = []  # (session, "msg"/"ack", conv, seq)
        self.events: list[dict] = []  # pushed frames other than msg (joined, receipt, presence, ...)
        self.stray: list[dict] = []  # replies with no (known) id, e.g. bad_frame errors
        self.anomalies: list[str] = []  # gaps / repeats seen on a live connection
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._next_id = 0
        self._waiters: dict[Any, asyncio.Queue] = {}
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Condition()
        self._closed = asyncio.Event()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        assert self.hello is not None
        return self.hello["user"]["id"]

    def new_id(self) -> int:
        self._next_id += 1  # an increasing int per connection is simplest (§3.3)
        return self._next_id

    async def _open_socket(self, *, token_in: str | None) -> None:
        """WebSocket upgrade (§2.2): offer kefu.v1, no compression, accept big server messages."""
        url = self.url
        headers = {}
        if token_in == "query":
            url = f"{self.url}?token={self.token}"
        elif token_in == "access_token":
            url = f"{self.url}?access_token={self.token}"
        elif token_in == "header":
            headers["Authorization"] = f"Bearer {self.token}"
        self.ws = await asyncio.wait_for(
            connect(
                url,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                additional_headers=headers,
                compression=None,  # §2.2: no extensions
                max_size=None,  # §3.1: server messages are not bounded by max_frame_bytes
                open_timeout=TIMEOUT,
                close_timeout=2,
            ),
            TIMEOUT,
        )
        assert self.ws.subprotocol == SUBPROTOCOL, self.ws.subprotocol
        self.session_no += 1
        self._closed = asyncio.Event()
        self.close_code = self.close_reason = None
        self._waiters = {}
        self._next_id = 0
        self._reader = asyncio.create_task(self._read_loop(self.ws, self.session_no))

    async def _read_loop(self, ws: ClientConnection, session: int) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    self.anomalies.append(f"text message from server: {raw!r}")  # §3.1: server sends binary
                    continue
                frame = msgpack.unpackb(raw)
                await self._dispatch(frame, session)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason
            for q in self._waiters.values():
                q.put_nowait(ConnectionLost(f"{self.label}: connection closed ({ws.close_code})"))
            self._closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _dispatch(self, frame: dict, session: int) -> None:
        t = frame.get("t")
        if t == "msg":
            self._on_msg(frame, session)
        elif t in REPLY_TYPES:
            if t == "ack":
                self._on_ack(frame, session)
            rid = frame.get("id")
            if rid is not None and rid in self._waiters:
                # the reply plus how many msg frames had arrived when it did (catch-up boundary)
                self._waiters[rid].put_nowait((frame, len(self.log)))
            elif t == "hello" and rid is None and None in self._waiters:
                self._waiters[None].put_nowait((frame, len(self.log)))
            else:
                self.stray.append(frame)
        else:
            # receipt, typing, presence, joined, left, conv, or unknown types (ignored per the
            # forward-compatibility rule, but kept for inspection)
            self.events.append(frame)
        async with self._changed:
            self._changed.notify_all()

    def _advance(self, conv: str) -> None:
        cur = self.cursor.get(conv, 0)
        while (conv, cur + 1) in self.messages:
            cur += 1
        self.cursor[conv] = cur

    def _on_msg(self, m: dict, session: int) -> None:
        """§6.2 step 2: store it, advance the cursor, settle a matching pending send."""
        conv, seq = m["conv"], m["seq"]
        cur = self.cursor.get(conv, 0)
        if seq <= cur or (conv, seq) in self.messages:
            self.anomalies.append(f"{self.label}: msg {conv}#{seq} repeated (cursor {cur})")
        elif seq != cur + 1:
            self.anomalies.append(f"{self.label}: msg {conv}#{seq} after cursor {cur}: gap")
        self.messages[(conv, seq)] = m
        self._advance(conv)
        self.log.append((session, m))
        self.arrivals.append((session, "msg", conv, seq))
        # "A msg whose from is you ... match it to your pending sends by cmid" (§5.2)
        if self.hello and m["from"] == self.user_id and m["cmid"] in self.pending:
            if self.pending[m["cmid"]]["conv"] == conv:
                del self.pending[m["cmid"]]
                self.done[m["cmid"]] = seq

    def _on_ack(self, a: dict, session: int) -> None:
        """§6.2 step 4: store the message, drop it from pending, advance the cursor."""
        conv, seq, cmid = a["conv"], a["seq"], a["cmid"]
        self.acks.append((session, a))
        cur = self.cursor.get(conv, 0)
        if not a["dup"]:
            if seq <= cur or (conv, seq) in self.messages:
                self.anomalies.append(f"{self.label}: ack {conv}#{seq} for an already held seq (cursor {cur})")
            elif seq != cur + 1:
                self.anomalies.append(f"{self.label}: ack {conv}#{seq} after cursor {cur}: gap")
            self.arrivals.append((session, "ack", conv, seq))
        sent = self.pending.pop(cmid, None)
        if (conv, seq) not in self.messages:
            self.messages[(conv, seq)] = {
                "conv": conv, "seq": seq, "cmid": cmid, "from": self.user_id,
                "role": self.hello["user"]["role"] if self.hello else None,
                "ts": a["ts"], "body": sent["body"] if sent else None,
            }
        self.done[cmid] = seq
        self._advance(conv)

    async def _write(self, frame: dict) -> None:
        if self.ws is None:
            raise ConnectionLost(f"{self.label}: not connected")
        # one msgpack map per binary message (§3.2); keys are str
        await asyncio.wait_for(self.ws.send(msgpack.packb(frame, use_bin_type=True)), TIMEOUT)

    async def write_raw(self, data: bytes | str) -> None:
        """Write arbitrary bytes / text (to provoke the documented errors)."""
        assert self.ws is not None
        await asyncio.wait_for(self.ws.send(data), TIMEOUT)

    async def request(self, frame: dict, *, replies: int = 1) -> list[tuple[dict, int]]:
        """Send a request with a fresh `id`, return its reply(ies) matched by `id` (§3.3)."""
        rid = frame.setdefault("id", self.new_id())
        q: asyncio.Queue = asyncio.Queue()
        self._waiters[rid] = q
        try:
            await self._write(frame)
            out = []
            for _ in range(replies):
                item = await asyncio.wait_for(q.get(), TIMEOUT)
                if isinstance(item, Exception):
                    raise item
                out.append(item)
                if item[0]["t"] == "error":
                    raise KefuError(item[0])
            return out
        finally:
            self._waiters.pop(rid, None)

    async def call(self, frame: dict) -> dict:
        return (await self.request(frame))[0][0]

    async def expect_error(self, frame: dict) -> dict:
        with pytest.raises(KefuError) as info:
            await self.call(frame)
        return info.value.frame

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(_wait(), TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.label}: timed out waiting for {what}") from None

    async def wait_msg(self, conv: str, seq: int) -> dict:
        await self.wait_until(lambda: (conv, seq) in self.messages, f"message {conv}#{seq}")
        return self.messages[(conv, seq)]

    # -- connecting (§2.4, §2.6, §6.2) -------------------------------------------------------

    async def connect(self, *, token_in: str = "query") -> dict:
        """Token at the handshake; the server sends `hello` with `id: nil` first (§2.4)."""
        q: asyncio.Queue = asyncio.Queue()
        await self._open_socket(token_in=token_in)
        self._waiters[None] = q
        try:
            item = await asyncio.wait_for(q.get(), TIMEOUT)
        finally:
            self._waiters.pop(None, None)
        if isinstance(item, Exception):
            raise item
        self.hello = item[0]
        assert self.hello["t"] == "hello" and self.hello["id"] is None
        return self.hello

    async def connect_with_auth_frame(self) -> tuple[dict, dict, list[dict]]:
        """Connect without a token, then `auth` with `resume` in one round trip (§4.1)."""
        await self._open_socket(token_in=None)
        start = len(self.log)
        replies = await self.request(
            {"t": "auth", "token": self.token, "resume": dict(self.cursor)}, replies=2
        )
        (hello, _), (ok, at) = replies
        assert hello["t"] == "hello", hello
        assert ok["t"] == "ok" and ok["id"] == hello["id"], ok
        self.hello = hello
        catch_up = [m for _, m in self.log[start:at]]
        await self._after_resume(ok)
        return hello, ok, catch_up

    async def resume(self) -> tuple[dict, list[dict]]:
        """Go live (§2.6, §4.2): `resume` with the cursors; returns the `ok` and the catch-up."""
        start = len(self.log)
        [(ok, at)] = await self.request({"t": "resume", "convs": dict(self.cursor)})
        catch_up = [m for _, m in self.log[start:at]]
        await self._after_resume(ok)
        return ok, catch_up

    async def _after_resume(self, ok: dict) -> None:
        """§6.2 step 3: loop on complete:false, drop conversations answered with an error."""
        for conv, entry in ok["resumed"].items():
            if "error" in entry:
                self.cursor.pop(conv, None)
                continue
            while not entry["complete"]:
                [(again, _)] = await self.request({"t": "resume", "convs": {conv: self.cursor[conv]}})
                entry = again["resumed"][conv]

    async def resend_pending(self) -> list[dict]:
        """§6.2 step 4: resend every pending send with its original cmid and body."""
        acks = []
        for cmid, p in list(self.pending.items()):
            acks.append(await self.call({"t": "send", "conv": p["conv"], "cmid": cmid, "body": p["body"]}))
        return acks

    async def reconnect(self) -> tuple[dict, list[dict], list[dict]]:
        """Run the whole §6.2 algorithm on a new connection."""
        hello, ok, catch_up = await self.connect_with_auth_frame()
        acks = await self.resend_pending()
        return ok, catch_up, acks

    def drop(self) -> None:
        """Lose the connection abruptly: no close handshake, nothing more is read."""
        assert self.ws is not None and self._reader is not None
        self._reader.cancel()
        self.ws.transport.abort()
        self.ws = None

    async def close(self) -> None:
        if self.ws is not None:
            await asyncio.wait_for(self.ws.close(), TIMEOUT)
            await asyncio.wait_for(self._closed.wait(), TIMEOUT)
            self.ws = None

    async def wait_closed(self) -> None:
        await asyncio.wait_for(self._closed.wait(), TIMEOUT)

    # -- messages (§4.9) ----------------------------------------------------------------------

    def compose(self, conv: str, body: dict) -> str:
        """Create the cmid when the user presses send (§6.1) and keep the send pending."""
        cmid = f"{self.label}-{uuid.uuid4()}"
        self.pending[cmid] = {"conv": conv, "body": body}
        return cmid

    async def send(self, conv: str, body: dict) -> dict:
        cmid = self.compose(conv, body)
        return await self.call({"t": "send", "conv": conv, "cmid": cmid, "body": body})

    async def send_many(self, conv: str, bodies: list[dict]) -> list[dict]:
        """Pipeline several sends (written in this order), then collect the acks by id."""
        ids, queues = [], []
        for body in bodies:
            cmid = self.compose(conv, body)
            rid = self.new_id()
            q: asyncio.Queue = asyncio.Queue()
            self._waiters[rid] = q
            ids.append(rid)
            queues.append(q)
            await self._write({"t": "send", "id": rid, "conv": conv, "cmid": cmid, "body": body})
        acks = []
        try:
            for q in queues:
                item = await asyncio.wait_for(q.get(), TIMEOUT)
                if isinstance(item, Exception):
                    raise item
                if item[0]["t"] == "error":
                    raise KefuError(item[0])
                acks.append(item[0])
        finally:
            for rid in ids:
                self._waiters.pop(rid, None)
        return acks

    async def send_and_lose_ack(self, conv: str, body: dict) -> str:
        """Write a send but stop reading first, so this connection never sees the ack."""
        assert self._reader is not None
        self._reader.cancel()
        cmid = self.compose(conv, body)
        await self._write({"t": "send", "id": self.new_id(), "conv": conv, "cmid": cmid, "body": body})
        return cmid


# ---------------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------------


TEXT_1 = "你好，我的快递什么时候到？"
IMAGE = {"kind": "image", "url": "https://cdn.example.com/p/123.jpg", "size": 48213, "w": 800, "h": 600}
LOCATION = {"kind": "location", "lat": 31.2304, "lng": 121.4737, "name": "上海市黄浦区人民广场"}
PASS_THROUGH = {"kind": "text", "text": "在吗", "meta": {"order": "20231111-1"}, "raw": b"\x01\x02"}


def text(s: str) -> dict:
    return {"kind": "text", "text": s}


def resumed_entry(ok: dict, conv: str) -> dict:
    entry = ok["resumed"][conv]
    return {k: entry.get(k) for k in ("sent", "complete", "last_seq")}


async def check_delivered(ack: dict, sender: KefuClient, body: dict, receivers: list[KefuClient]) -> None:
    """The sender's connection got `ack`; every other live connection gets the same `msg`."""
    assert ack["t"] == "ack" and ack["dup"] is False, ack
    assert isinstance(ack["seq"], int) and isinstance(ack["ts"], int)
    for r in receivers:
        m = await r.wait_msg(ack["conv"], ack["seq"])
        assert m["t"] == "msg"
        assert m["cmid"] == ack["cmid"], (r.label, m, ack)
        assert m["from"] == sender.user_id
        assert m["role"] == sender.hello["user"]["role"]
        assert m["ts"] == ack["ts"]  # §4.0: the same value the sender's ack has
        assert m["body"] == body, (m["body"], body)


async def scenario(url: str, tokens: dict[str, str], gw: Gateway) -> None:
    alice = KefuClient(url, tokens["alice_app"], "alice-app")  # the shopper's phone
    alice_mini = KefuClient(url, tokens["alice_mini"], "alice-mini")  # the shopper's mini program
    bob = KefuClient(url, tokens["bob"], "bob-web")  # the agent's workspace
    bob_phone = KefuClient(url, tokens["bob"], "bob-phone")  # the agent's second device
    everyone = [alice, alice_mini, bob, bob_phone]

    # -- connect, hello, go live (§2.4-§2.6) -----------------------------------------------
    hello = await alice.connect(token_in="query")
    assert hello["protocol"] == SUBPROTOCOL
    # unknown fields must be ignored (Conventions), so compare only the documented ones
    assert {k: hello["user"][k] for k in ("id", "tenant", "role", "channel", "name")} == {
        "id": "alice", "tenant": TENANT, "role": "shopper", "channel": "app", "name": "小美"}
    limits = hello["limits"]
    assert isinstance(limits["max_frame_bytes"], int) and isinstance(limits["rate_per_second"], float)
    assert isinstance(hello["server_time"], int) and isinstance(hello["session"], str)
    ok, catch_up = await alice.resume()
    assert ok["t"] == "ok" and ok["resumed"] == {} and catch_up == []

    hello_mini, ok_mini, catch_up_mini = await alice_mini.connect_with_auth_frame()
    assert hello_mini["user"]["channel"] == "miniprogram"
    assert ok_mini["resumed"] == {} and catch_up_mini == []

    hello_bob = await bob.connect(token_in="header")
    assert {k: hello_bob["user"][k] for k in ("id", "tenant", "role", "channel", "name")} == {
        "id": "bob", "tenant": TENANT, "role": "agent", "channel": "web", "name": "客服小王"}
    await bob.resume()
    await bob_phone.connect(token_in="access_token")
    await bob_phone.resume()

    # -- the shopper opens, the agent joins (§4.3, §4.4) --------------------------------------
    opened = await alice.call({"t": "open", "subject": "订单 #20231111 物流"})
    conv = opened["conv"]
    C = conv["id"]
    assert conv["customer"] == "alice" and conv["channel"] == "app" and conv["status"] == "open"
    assert conv["subject"] == "订单 #20231111 物流" and conv["last_seq"] == 0
    assert [p["user"] for p in opened["participants"]] == ["alice"]
    for c in everyone:
        c.cursor[C] = 0  # §6.2 step 5: the cursor starts at the last_seq loaded up to

    joined = await bob.call({"t": "join", "conv": C})
    assert joined["conv"]["id"] == C and joined["conv"]["last_seq"] == 0
    assert [(p["user"], p["role"]) for p in joined["participants"]] == [("alice", "shopper"), ("bob", "agent")]
    for c in (alice, alice_mini):  # both of alice's devices are subscribed (§2.6) and see `joined`
        await c.wait_until(
            lambda c=c: any(e["t"] == "joined" and e["conv"] == C and e["user"] == "bob" for e in c.events),
            "joined",
        )
        j = next(e for e in c.events if e["t"] == "joined")
        assert j["role"] == "agent" and j["name"] == "客服小王" and isinstance(j["ts"], int)
        assert "id" not in j  # §5: frames without id have no id key

    # -- a conversation, one message at a time -----------------------------------------------
    expected_seq = 0
    script = [
        (alice, text(TEXT_1)),
        (bob, text("您好，这里是客服小王，请提供订单号。")),
        (alice_mini, IMAGE),  # the shopper's other device
        (alice, LOCATION),
        (bob_phone, PASS_THROUGH),  # the agent's other device; unknown fields pass through (§4.9)
        (alice, text("订单号 20231111-8888，麻烦您了 🙏")),
    ]
    for sender, body in script:
        ack = await sender.send(C, body)
        expected_seq += 1
        assert ack["seq"] == expected_seq and ack["conv"] == C, ack
        await check_delivered(ack, sender, body, [c for c in everyone if c is not sender])

    # -- pipelined traffic from both sides at once: one order for everybody (§1.3) -------------
    a_bodies = [text(f"顾客消息 {i}") for i in range(5)]
    b_bodies = [text(f"客服回复 {i}") for i in range(5)]
    a_acks, b_acks = await asyncio.gather(alice.send_many(C, a_bodies), bob.send_many(C, b_bodies))
    for acks, sender, bodies in ((a_acks, alice, a_bodies), (b_acks, bob, b_bodies)):
        seqs = [a["seq"] for a in acks]
        assert seqs == sorted(seqs), f"one sender's messages keep their send order: {seqs}"
        for a, body in zip(acks, bodies):
            await check_delivered(a, sender, body, [c for c in everyone if c is not sender])
    expected_seq += 10
    assert sorted(a["seq"] for a in a_acks + b_acks) == list(range(expected_seq - 9, expected_seq + 1))

    # -- the shopper's phone drops; the agent keeps writing -----------------------------------
    assert alice.cursor[C] == expected_seq and alice.pending == {}
    cursor_at_drop = alice.cursor[C]
    alice.drop()
    missed = [text("您的包裹已到达上海分拨中心。"), LOCATION | {"name": "上海分拨中心"},
              {"kind": "image", "url": "https://cdn.example.com/p/waybill.png", "size": 1024}]
    missed_acks = []
    for body in missed:
        ack = await bob.send(C, body)
        expected_seq += 1
        assert ack["seq"] == expected_seq
        await check_delivered(ack, bob, body, [alice_mini, bob_phone])  # alice's other device still live
        missed_acks.append(ack)
    # composed while offline: stays pending, resent after reconnecting (§6.1, §6.2 step 4)
    offline_body = text("我刚才掉线了，收到请回复")
    offline_cmid = alice.compose(C, offline_body)

    # -- reconnect and resume (§6.2, as in the worked example §6.3) ---------------------------
    ok, catch_up, resent = await alice.reconnect()
    assert list(ok["resumed"]) == [C], ok
    assert resumed_entry(ok, C) == {"sent": 3, "complete": True, "last_seq": expected_seq}, ok
    assert [m["seq"] for m in catch_up] == list(range(cursor_at_drop + 1, expected_seq + 1))
    assert [m["cmid"] for m in catch_up] == [a["cmid"] for a in missed_acks]
    assert [m["body"] for m in catch_up] == missed
    assert [m["ts"] for m in catch_up] == [a["ts"] for a in missed_acks]
    assert len(resent) == 1 and resent[0]["cmid"] == offline_cmid and resent[0]["dup"] is False
    expected_seq += 1
    assert resent[0]["seq"] == expected_seq
    await check_delivered(resent[0], alice, offline_body, [alice_mini, bob, bob_phone])
    assert alice.pending == {} and alice.cursor[C] == expected_seq

    # then live traffic on the resumed connection
    ack = await bob.send(C, text("收到，您的包裹明天送达。"))
    expected_seq += 1
    await check_delivered(ack, bob, text("收到，您的包裹明天送达。"), [alice, alice_mini, bob_phone])
    ack = await alice.send(C, text("谢谢！"))
    expected_seq += 1
    await check_delivered(ack, alice, text("谢谢！"), [alice_mini, bob, bob_phone])

    # -- a send whose ack is lost (§6.3) -----------------------------------------------------
    lost_body = text("请问可以改成周六送吗？")
    lost_cmid = await alice.send_and_lose_ack(C, lost_body)
    expected_seq += 1
    lost_seq = expected_seq
    lost_msg = await bob.wait_msg(C, lost_seq)  # it was stored ...
    assert lost_msg["cmid"] == lost_cmid
    alice.drop()  # ... but the phone goes away before reading the ack
    assert lost_cmid in alice.pending and alice.cursor[C] == lost_seq - 1

    ok, catch_up, resent = await alice.reconnect()
    assert resumed_entry(ok, C) == {"sent": 1, "complete": True, "last_seq": lost_seq}, ok
    # the catch-up holds the pending cmid: the send reached the server (§6.2 step 2) ...
    assert [(m["seq"], m["cmid"], m["from"]) for m in catch_up] == [(lost_seq, lost_cmid, "alice")]
    assert alice.done[lost_cmid] == lost_seq and alice.pending == {} and resent == []
    # ... and resending it anyway gives the original seq and ts with dup: true (§4.9, §6.3)
    dup = await alice.call({"t": "send", "conv": C, "cmid": lost_cmid, "body": lost_body})
    assert dup["t"] == "ack" and dup["dup"] is True, dup
    assert (dup["seq"], dup["ts"], dup["cmid"], dup["conv"]) == (lost_seq, lost_msg["ts"], lost_cmid, C)
    # a dup with another body is ignored as well
    dup2 = await alice.call({"t": "send", "conv": C, "cmid": lost_cmid, "body": text("重发")})
    assert dup2["dup"] is True and dup2["seq"] == lost_seq

    # live traffic after the resend: the next seq is lost_seq + 1, nothing was re-delivered
    ack = await bob.send(C, text("可以，已为您改约周六。"))
    expected_seq += 1
    assert ack["seq"] == lost_seq + 1
    await check_delivered(ack, bob, text("可以，已为您改约周六。"), [alice, alice_mini, bob_phone])

    # -- documented errors leave the connection usable (§3.2, §3.3, §9.1) ---------------------
    err = await alice.expect_error({"t": "frob"})
    assert err["code"] == "unknown_type" and err["retryable"] is False and isinstance(err["message"], str)
    assert isinstance(err["id"], int)  # the request id is echoed

    n_stray = len(alice.stray)
    await alice.write_raw(b"\xc1")  # not msgpack
    await alice.wait_until(lambda: len(alice.stray) > n_stray, "bad_frame for undecodable bytes")
    bad = alice.stray[-1]
    assert bad["t"] == "error" and bad["code"] == "bad_frame" and bad["id"] is None and bad["retryable"] is False

    await alice.write_raw(msgpack.packb([1, 2, 3]))  # msgpack, but not a map
    await alice.wait_until(lambda: len(alice.stray) > n_stray + 1, "bad_frame for a non-map")
    assert alice.stray[-1]["code"] == "bad_frame" and alice.stray[-1]["id"] is None

    await alice.write_raw("{\"t\": \"ping\"}")  # a text message
    await alice.wait_until(lambda: len(alice.stray) > n_stray + 2, "bad_frame for a text message")
    assert alice.stray[-1]["code"] == "bad_frame" and alice.stray[-1]["id"] is None

    err = await alice.expect_error({"t": "send", "conv": C, "cmid": "x", "body": {"kind": "gif"}})
    assert err["code"] == "bad_request"

    pong = await alice.call({"t": "ping"})
    assert pong["t"] == "pong" and isinstance(pong["server_time"], int)
    ack = await alice.send(C, text("好的，再见"))
    expected_seq += 1
    await check_delivered(ack, alice, text("好的，再见"), [alice_mini, bob, bob_phone])

    # -- receipts (§4.10): everyone subscribed sees it, the reader's own devices included -----
    r = await bob.call({"t": "receipt", "conv": C, "kind": "read", "seq": expected_seq})
    assert r["t"] == "ok" and r["seq"] == expected_seq
    for c in (alice, alice_mini, bob_phone):
        await c.wait_until(
            lambda c=c: any(e["t"] == "receipt" and e["user"] == "bob" and e["seq"] == expected_seq for e in c.events),
            "receipt",
        )

    # -- every connection saw every message exactly once, in the same order -------------------
    all_seqs = list(range(1, expected_seq + 1))
    reference = {seq: (m["cmid"], m["from"], m["ts"]) for (cv, seq), m in bob.messages.items() if cv == C}
    assert sorted(reference) == all_seqs
    for c in everyone:
        assert c.anomalies == [], c.anomalies
        view = {seq: (m["cmid"], m["from"], m["ts"]) for (cv, seq), m in c.messages.items() if cv == C}
        assert view == reference, c.label
        assert c.cursor[C] == expected_seq
        # per connection (session): arrivals (msg + own non-dup ack) strictly increasing
        for sess in {s for s, *_ in c.arrivals}:
            seqs = [seq for s, _, cv, seq in c.arrivals if s == sess and cv == C]
            assert seqs == sorted(set(seqs)), (c.label, sess, seqs)
        # nothing twice over the device's whole life (msg frames and non-dup acks together)
        counts = Counter(seq for _, _, cv, seq in c.arrivals if cv == C)
        assert sorted(counts) == all_seqs and set(counts.values()) == {1}, (c.label, counts)
        # the sending connection never gets its own message as `msg` (§1.4); a dup ack is for a
        # message sent by an earlier connection, which a catch-up legitimately delivers (§5.2)
        for sess, a in c.acks:
            if a["dup"]:
                continue
            assert not any(s == sess and m["cmid"] == a["cmid"] for s, m in c.log), (c.label, a)
    # the lost-ack message reached the agent exactly once
    assert sum(1 for _, m in bob.log if m["cmid"] == lost_cmid) == 1
    assert sum(1 for _, m in bob_phone.log if m["cmid"] == lost_cmid) == 1
    # alice kept a live device the whole time: no presence offline for her (§5.8)
    assert not any(e["t"] == "presence" and e["user"] == "alice" and not e["online"] for e in bob.events)

    # -- shutdown: SIGTERM closes every connection with 1012 "server restart" (§8.6, §9.3) ----
    await alice_mini.close()
    assert alice_mini.close_code == 1000
    loop = asyncio.get_running_loop()
    exit_code = loop.run_in_executor(None, gw.terminate)
    for c in (alice, bob, bob_phone):
        await c.wait_closed()
        assert (c.close_code, c.close_reason) == (1012, "server restart"), (c.label, c.close_code, c.close_reason)
    assert await asyncio.wait_for(exit_code, 20) == 0


def test_client_written_from_the_protocol_document(gateway: Gateway) -> None:
    tokens = mint_tokens({
        "alice_app": {"user": "alice", "role": "shopper", "channel": "app", "name": "小美"},
        "alice_mini": {"user": "alice", "role": "shopper", "channel": "miniprogram", "name": "小美"},
        "bob": {"user": "bob", "role": "agent", "channel": "web", "name": "客服小王"},
    })
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(scenario(gateway.url, tokens, gateway), 30))
    except BaseException:
        print(gateway.stderr(), file=sys.stderr)
        raise
    assert time.monotonic() - started < 20
    assert gateway.proc.returncode == 0
