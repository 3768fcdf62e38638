"""Locust: shoppers and agents speaking kefu.v1 (msgpack over WebSocket) to a running gateway.

Users are gevent-friendly: each holds a ``websocket-client`` connection (binary frames; sockets are
patched by locust's gevent) and one reader greenlet that resolves replies by request id and queues
deliveries. Nothing here invents requests the gateway does not have.

* ``Shopper``: goes live (``resume``), ``open``s a conversation and publishes its id to the agents
  of this locust process (a gevent queue), asks a few questions — each ``send`` timed to its
  ``ack`` — and waits for each answer; its last message thanks the agent, who closes the
  conversation; then it starts another.
* ``Agent``: goes live (``resume``), lists its own open conversations (``list``: an agent without
  supervisor rights sees only conversations it takes part in), takes new conversation ids from the
  queue and ``join``s them (an agent may join any open conversation of its tenant given the id),
  answers each question with a quick reply and ``close``s the conversation once the shopper says
  thanks (or has been silent for 20 s).

Reported as locust requests (type ``WS``): each request by its type (``resume``, ``open``, ``join``,
``list``, ``close``) from send to reply, ``send→ack`` from send to ack, and ``deliver
agent→shopper`` / ``deliver shopper→agent`` from the sender's send (a timestamp in the message
body) to the receiver's delivery. An ``error`` frame is a failure named by its code (``error
not_found: …``); an answer that never comes is a ``timeout`` failure.

Tokens are minted here with the gateway's secret: ``KEFU_JWT_SECRET`` (as given to ``kefu serve
--jwt-secret``) or, failing that, the development secret in ``KEFU_DATA_DIR`` (default ``./data``).

    KEFU_JWT_SECRET=… locust -f bench/locustfile.py --headless -u 100 -r 20 -t 60s --host ws://127.0.0.1:8700
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
import msgpack
import websocket
from gevent.event import AsyncResult
from gevent.queue import Empty, Queue
from locust import User, between, constant, events, task
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.auth import mint_token  # noqa: E402

TENANT = os.environ.get("KEFU_BENCH_TENANT", "locust")
REPLY_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 60.0
AGENT_CAPACITY = 8  # conversations one agent handles at once
STALE_S = 20.0  # an agent closes a conversation whose shopper has been silent this long
THANKS = "谢谢，没有其他问题了"
QUESTIONS = ["你好，我的订单什么时候发货？", "可以改一下收货地址吗？", "这件有没有大一码的？", "能开发票吗？", "退货运费谁出？"]
QUICK_REPLIES = ["您好，今天下午就会发货哦", "可以的，请把新地址发给我", "有的，已经为您备注", "可以开，请提供抬头", "质量问题运费由我们承担"]

# Shoppers publish the conversations they open; agents of the same locust process take them.
OPEN_CONVERSATIONS: Queue = Queue()


def _secret() -> str:
    secret = os.environ.get("KEFU_JWT_SECRET")
    if secret:
        return secret
    path = Path(os.environ.get("KEFU_DATA_DIR", "./data")) / "dev-secret"
    if path.exists():
        return path.read_text().strip()
    raise StopUser(f"no token secret: set KEFU_JWT_SECRET (or KEFU_DATA_DIR with a dev-secret, looked in {path})")


class KefuError(Exception):
    """An ``error`` frame: locust groups failures by this message (the error code first)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = frame.get("code")


class KefuSocket:
    """One kefu.v1 connection of a locust user: requests timed as locust requests, deliveries queued."""

    def __init__(self, user: User, role: str) -> None:
        self.user = user
        self.role = role
        self.user_id = f"{role}-{uuid.uuid4().hex[:12]}"
        self.ids = itertools.count(1)
        self.pending: dict[int, AsyncResult] = {}
        self.deliveries: Queue = Queue()  # msg frames of other participants
        self.events: Queue = Queue()  # conv (status changes), joined, left
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.closed = False

    def _fire(self, name: str, started: float, length: int = 0, exception: Exception | None = None) -> None:
        self.user.environment.events.request.fire(
            request_type="WS", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exception, context={},
        )

    def connect(self) -> dict[str, Any]:
        base = self.user.host.rstrip("/")
        url = base if base.endswith("/ws") else base + "/ws"
        token = mint_token(_secret(), tenant=TENANT, user=self.user_id, role=self.role, channel="web" if self.role == "agent" else "app")
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(f"{url}?token={token}", subprotocols=["kefu.v1"], timeout=REPLY_TIMEOUT_S)
            opcode, data = self.ws.recv_data()
            hello = msgpack.unpackb(data)
            if hello.get("t") != "hello":
                raise KefuError(hello)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to locust
            self._fire("connect", started, exception=exc)
            raise StopUser() from exc
        self._fire("connect", started, len(data))
        self.ws.settimeout(None)
        self.reader = gevent.spawn(self._read)
        return hello

    def _read(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode != websocket.ABNF.OPCODE_BINARY:
                    continue
                frame = msgpack.unpackb(data)
                waiter = self.pending.pop(frame.get("id"), None) if frame.get("id") is not None else None
                if waiter is not None:
                    waiter.set((frame, len(data)))
                    continue
                t = frame.get("t")
                if t == "msg":
                    body = frame.get("body") or {}
                    if "t0" in body:
                        latency_ms = max(0.0, time.time() * 1000 - body["t0"])
                        direction = "agent→shopper" if self.role == "shopper" else "shopper→agent"
                        self.user.environment.events.request.fire(
                            request_type="WS", name=f"deliver {direction}", response_time=latency_ms,
                            response_length=len(data), exception=None, context={},
                        )
                    self.deliveries.put(frame)
                elif t in ("conv", "joined", "left"):
                    self.events.put(frame)
                elif t == "error":
                    self.user.environment.events.request.fire(
                        request_type="WS", name="unsolicited error", response_time=0, response_length=len(data),
                        exception=KefuError(frame), context={},
                    )
        except Exception:  # noqa: BLE001 - the connection is gone; waiters learn it below
            pass
        finally:
            self.closed = True
            for waiter in self.pending.values():
                waiter.set(({"t": "error", "code": "connection_closed", "message": "the connection closed"}, 0))
            self.pending.clear()

    def request(self, t: str, name: str | None = None, **fields: Any) -> dict[str, Any] | None:
        """Send one request and wait for its reply; reported to locust as ``name`` (default ``t``).
        Returns the reply, or None after reporting a failure."""
        if self.closed or self.ws is None:
            raise StopUser()
        rid = next(self.ids)
        waiter = AsyncResult()
        self.pending[rid] = waiter
        started = time.perf_counter()
        try:
            self.ws.send(msgpack.packb({"t": t, "id": rid, **fields}), opcode=websocket.ABNF.OPCODE_BINARY)
            frame, length = waiter.get(timeout=REPLY_TIMEOUT_S)
        except gevent.Timeout:
            self.pending.pop(rid, None)
            self._fire(name or t, started, exception=TimeoutError(f"no reply within {REPLY_TIMEOUT_S:.0f} s"))
            return None
        except Exception as exc:  # noqa: BLE001
            self.pending.pop(rid, None)
            self._fire(name or t, started, exception=exc)
            raise StopUser() from exc
        if frame.get("t") == "error":
            self._fire(name or t, started, length, KefuError(frame))
            if frame.get("code") == "connection_closed":
                raise StopUser()
            return None
        self._fire(name or t, started, length)
        return frame

    def send_text(self, conv: str, text: str) -> dict[str, Any] | None:
        body = {"kind": "text", "text": text, "t0": int(time.time() * 1000)}
        return self.request("send", name="send→ack", conv=conv, cmid=uuid.uuid4().hex[:16], body=body)

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close(timeout=2)
            except Exception:  # noqa: BLE001
                pass
        if self.reader is not None:
            self.reader.kill(block=False)


def _wait_for(queue: Queue, timeout: float, match) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            frame = queue.get(timeout=left)
        except Empty:
            return None
        if match(frame):
            return frame


class Shopper(User):
    """Opens a conversation, asks, waits for each answer, thanks, and starts over."""

    weight = 4
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.kefu = KefuSocket(self, "shopper")
        self.kefu.connect()
        self.kefu.request("resume", convs={})

    def on_stop(self) -> None:
        self.kefu.close()

    @task
    def conversation(self) -> None:
        opened = self.kefu.request("open", subject=random.choice(["发货", "退换货", "发票", "尺码"]))
        if opened is None:
            return
        conv = opened["conv"]["id"]
        OPEN_CONVERSATIONS.put(conv)
        questions = random.sample(QUESTIONS, random.randint(1, 3)) + [THANKS]
        for text in questions:
            if self.kefu.send_text(conv, text) is None:
                return
            started = time.perf_counter()
            answer = _wait_for(self.kefu.deliveries, ANSWER_TIMEOUT_S, lambda f: f.get("conv") == conv)
            if answer is None:
                self.kefu._fire("answer", started, exception=TimeoutError(f"no agent answer within {ANSWER_TIMEOUT_S:.0f} s"))
                return
            gevent.sleep(random.uniform(0.5, 2.0))  # reading, typing
        _wait_for(self.kefu.events, 10, lambda f: f.get("t") == "conv" and f["conv"]["id"] == conv)


class Agent(User):
    """Joins open conversations (up to a capacity), answers with quick replies, closes resolved ones."""

    weight = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        self.kefu = KefuSocket(self, "agent")
        self.kefu.connect()
        self.kefu.request("resume", convs={})
        mine = self.kefu.request("list", status="open", limit=50)
        self.active: set[str] = set()
        self.last_heard: dict[str, float] = {}  # conv -> when the shopper last wrote
        self.handled: dict[str, int] = {}  # conv -> highest seq answered or seen from history
        self.backlog: list[dict[str, Any]] = []  # questions asked before this agent joined
        for c in (mine or {}).get("convs", []):
            self.take(c["id"], joined=True)

    def take(self, conv: str, *, joined: bool = False) -> None:
        """Join (unless already a participant) and read what the shopper asked before."""
        if not joined and self.kefu.request("join", conv=conv) is None:
            return
        self.active.add(conv)
        self.last_heard[conv] = time.monotonic()
        history = self.kefu.request("history", conv=conv, after=0)
        messages = (history or {}).get("messages", [])
        last_own = max((m["seq"] for m in messages if m["from"] == self.kefu.user_id), default=0)
        self.handled[conv] = last_own
        self.backlog.extend(m for m in messages if m["from"] != self.kefu.user_id and m["seq"] > last_own)

    def on_stop(self) -> None:
        self.kefu.close()

    def close(self, conv: str) -> None:
        self.kefu.request("close", conv=conv)
        self.active.discard(conv)
        self.last_heard.pop(conv, None)

    @task
    def work(self) -> None:
        now = time.monotonic()
        for conv in [c for c, t in self.last_heard.items() if now - t > STALE_S]:
            self.close(conv)  # the shopper left without saying thanks
        if len(self.active) < AGENT_CAPACITY:
            try:
                conv = OPEN_CONVERSATIONS.get_nowait()
            except Empty:
                conv = None
            if conv is not None:
                self.take(conv)
        if self.backlog:
            question = self.backlog.pop(0)
        else:
            try:
                question = self.kefu.deliveries.get(timeout=0.5)
            except Empty:
                return
        conv = question["conv"]
        if conv not in self.active or question["seq"] <= self.handled.get(conv, 0):
            return  # a conversation already closed, or a question seen both in history and live
        self.handled[conv] = question["seq"]
        self.last_heard[conv] = time.monotonic()
        gevent.sleep(random.uniform(0.2, 1.0))  # picking a quick reply
        text = (question.get("body") or {}).get("text", "")
        if text == THANKS:
            self.kefu.send_text(conv, "不客气，祝您购物愉快！")
            self.close(conv)
        else:
            self.kefu.send_text(conv, random.choice(QUICK_REPLIES))


@events.test_stop.add_listener
def _report_queue(environment, **kwargs) -> None:
    left = OPEN_CONVERSATIONS.qsize()
    if left:
        print(f"{left} conversations were still waiting for an agent at the end", file=sys.stderr)
