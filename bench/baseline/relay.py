"""The baseline relay: the kefu.v1 subset the workloads use, written the way a typical Python
developer would — the ``websockets`` package on asyncio with uvloop, everything in memory.

It is what the benchmark compares Kefu with, so it is deliberately plain: one handler coroutine per
connection (``async for data in websocket``), msgpack in and out, replies with ``await
websocket.send``, fan-out with ``websockets.broadcast`` (the documented way to send one message to
many connections). It keeps the semantics the workloads check, no more:

* ``hello`` after a token (HS256 JWT, ``?token=``) is verified with PyJWT (a bad one: ``error``
  ``token_invalid``, or ``token_expired``, and close 4001, as Kefu does);
* ``resume`` goes live: subscribes the user's open conversations and first sends what each listed
  conversation holds after the given sequence number;
* ``open`` (shoppers) and ``join`` (agents, supervisors), with a ``joined`` notice to the others;
* ``send`` -> ``ack`` with a gap-free per-conversation ``seq``; a repeated ``cmid`` gets the original
  ack (``dup``) and is not delivered again; ``msg`` goes to every live connection of every member but
  the sending one.

Frames for one connection are always written in the order they are produced: a delivery is
broadcast before the sender is acked, and a resume writes the missed messages and subscribes in one
step, without awaiting in between (``broadcast`` writes synchronously).

Not implemented (the workloads do not use them): history, list, close, receipts, typing, presence,
rate limits, persistence. Unknown requests get ``error`` ``unknown_type``.

    python -m bench.baseline --port 0 --jwt-secret SECRET   # prints "  WebSocket: ws://…/ws"
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import secrets
import signal
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import msgpack
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

PROTOCOL = "kefu.v1"


def now_ms() -> int:
    return int(time.time() * 1000)


class Conversation:
    def __init__(self, conv_id: str, tenant: str, customer: str, channel: str, subject: str) -> None:
        self.id = conv_id
        self.tenant = tenant
        self.customer = customer
        self.channel = channel
        self.subject = subject
        self.status = "open"
        self.created_at = now_ms()
        self.members: dict[str, tuple[str, int]] = {}  # user -> (role, joined_at)
        self.messages: list[bytes] = []  # packed msg frames; seq n is messages[n - 1]
        self.cmids: dict[str, tuple[int, int]] = {}  # cmid -> (seq, ts)
        self.live: set[Session] = set()  # connections receiving live deliveries

    def as_map(self) -> dict:
        return {
            "id": self.id, "tenant": self.tenant, "customer": self.customer, "channel": self.channel,
            "status": self.status, "subject": self.subject, "created_at": self.created_at, "last_seq": len(self.messages),
        }

    def participants(self) -> list[dict]:
        return [{"user": u, "role": r, "joined_at": t} for u, (r, t) in self.members.items()]


class Session:
    def __init__(self, ws: ServerConnection, claims: dict) -> None:
        self.ws = ws
        self.tenant: str = claims["tenant"]
        self.user: str = claims["sub"]
        self.role: str = claims["role"]
        self.channel: str = claims["channel"]
        self.live = False
        self.convs: set[str] = set()


class RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Relay:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.convs: dict[str, Conversation] = {}
        self.user_convs: dict[tuple[str, str], set[str]] = {}  # (tenant, user) -> conversations
        self.sessions: dict[tuple[str, str], set[Session]] = {}  # (tenant, user) -> connections
        self.ids = itertools.count(1)

    async def handler(self, ws: ServerConnection) -> None:
        token = parse_qs(urlsplit(ws.request.path).query).get("token", [""])[0]
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], options={"require": ["exp", "sub", "tenant", "role"]})
        except jwt.InvalidTokenError as exc:
            code = "token_expired" if isinstance(exc, jwt.ExpiredSignatureError) else "token_invalid"
            await ws.send(msgpack.packb({"t": "error", "id": None, "code": code, "message": str(exc), "retryable": False}))
            await ws.close(4001, "token_invalid")
            return
        session = Session(ws, claims)
        self.sessions.setdefault((session.tenant, session.user), set()).add(session)
        try:
            await ws.send(msgpack.packb({
                "t": "hello", "id": None, "protocol": PROTOCOL, "server": "baseline", "session": f"b-{next(self.ids)}",
                "server_time": now_ms(),
                "user": {"id": session.user, "tenant": session.tenant, "role": session.role, "channel": session.channel},
            }))
            async for data in ws:
                try:
                    req = msgpack.unpackb(data)
                    t = req["t"]
                    handle = self.handlers.get(t)
                    if handle is None:
                        raise RequestError("unknown_type", f"unknown request type {t!r}")
                    await handle(self, session, req)
                except RequestError as exc:
                    await ws.send(msgpack.packb({"t": "error", "id": req.get("id"), "code": exc.code, "message": str(exc), "retryable": False}))
                except (KeyError, TypeError, ValueError) as exc:
                    await ws.send(msgpack.packb({"t": "error", "id": None, "code": "bad_request", "message": repr(exc), "retryable": False}))
        except ConnectionClosed:
            pass
        finally:
            self.forget(session)

    def forget(self, session: Session) -> None:
        for conv_id in session.convs:
            conv = self.convs.get(conv_id)
            if conv is not None:
                conv.live.discard(session)
        mine = self.sessions.get((session.tenant, session.user))
        if mine is not None:
            mine.discard(session)
            if not mine:
                del self.sessions[(session.tenant, session.user)]

    def subscribe(self, session: Session, conv: Conversation) -> None:
        conv.live.add(session)
        session.convs.add(conv.id)

    def conversation(self, session: Session, conv_id: str) -> Conversation:
        conv = self.convs.get(conv_id)
        if conv is None or conv.tenant != session.tenant:
            raise RequestError("not_found", "no such conversation")
        return conv

    # ---- requests -------------------------------------------------------------------------------

    async def do_resume(self, session: Session, req: dict) -> None:
        cursors = req.get("convs") or {}
        session.live = True
        resumed = {}
        for conv_id in self.user_convs.get((session.tenant, session.user), ()):
            conv = self.convs[conv_id]
            if conv.status != "open" or conv_id in cursors:
                continue
            self.subscribe(session, conv)
        for conv_id, last in cursors.items():
            conv = self.convs.get(conv_id)
            if conv is None or conv.tenant != session.tenant or session.user not in conv.members:
                resumed[conv_id] = {"error": "not_found"}
                continue
            missed = conv.messages[last:]
            for frame in missed:  # written now, in order, before any live delivery
                broadcast((session.ws,), frame)
            self.subscribe(session, conv)
            resumed[conv_id] = {"sent": len(missed), "complete": True, "last_seq": len(conv.messages)}
        await session.ws.send(msgpack.packb({"t": "ok", "id": req.get("id"), "resumed": resumed}))

    async def do_open(self, session: Session, req: dict) -> None:
        if session.role != "shopper":
            raise RequestError("forbidden", "only shoppers open conversations")
        conv = Conversation(secrets.token_hex(12), session.tenant, session.user, session.channel, req.get("subject") or "")
        conv.members[session.user] = (session.role, conv.created_at)
        self.convs[conv.id] = conv
        self.user_convs.setdefault((session.tenant, session.user), set()).add(conv.id)
        for other in self.sessions.get((session.tenant, session.user), ()):
            if other.live or other is session:
                self.subscribe(other, conv)
        await session.ws.send(msgpack.packb({"t": "ok", "id": req.get("id"), "conv": conv.as_map(), "participants": conv.participants()}))

    async def do_join(self, session: Session, req: dict) -> None:
        conv = self.conversation(session, req["conv"])
        if session.user not in conv.members:
            if session.role == "shopper":
                raise RequestError("not_found", "no such conversation")
            if conv.status != "open":
                raise RequestError("conversation_closed", "the conversation is closed")
            joined_at = now_ms()
            conv.members[session.user] = (session.role, joined_at)
            self.user_convs.setdefault((session.tenant, session.user), set()).add(conv.id)
            notice = msgpack.packb({"t": "joined", "conv": conv.id, "user": session.user, "role": session.role, "ts": joined_at})
            broadcast([s.ws for s in conv.live if s.user != session.user], notice)
        self.subscribe(session, conv)
        await session.ws.send(msgpack.packb({"t": "ok", "id": req.get("id"), "conv": conv.as_map(), "participants": conv.participants()}))

    async def do_send(self, session: Session, req: dict) -> None:
        conv = self.conversation(session, req["conv"])
        if session.user not in conv.members:
            raise RequestError("forbidden", "not a participant")
        if conv.status != "open":
            raise RequestError("conversation_closed", "the conversation is closed")
        cmid, body = req["cmid"], req["body"]
        if type(cmid) is not str or type(body) is not dict:
            raise RequestError("bad_request", "cmid must be a string and body a map")
        known = conv.cmids.get(cmid)
        if known is not None:
            seq, ts = known
            await session.ws.send(msgpack.packb({"t": "ack", "id": req.get("id"), "conv": conv.id, "cmid": cmid, "seq": seq, "ts": ts, "dup": True}))
            return
        seq, ts = len(conv.messages) + 1, now_ms()
        frame = msgpack.packb({"t": "msg", "conv": conv.id, "seq": seq, "cmid": cmid, "from": session.user, "role": session.role, "ts": ts, "body": body})
        conv.messages.append(frame)
        conv.cmids[cmid] = (seq, ts)
        broadcast([s.ws for s in conv.live if s is not session], frame)
        await session.ws.send(msgpack.packb({"t": "ack", "id": req.get("id"), "conv": conv.id, "cmid": cmid, "seq": seq, "ts": ts, "dup": False}))

    handlers = {"resume": do_resume, "open": do_open, "join": do_join, "send": do_send}


async def run(host: str, port: int, secret: str) -> None:
    relay = Relay(secret)
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    # backlog as Kefu's listener (the asyncio default of 100 would drop reconnect storms' SYNs)
    async with serve(relay.handler, host, port, subprotocols=[PROTOCOL], max_size=65536, backlog=4096) as server:
        bound = server.sockets[0].getsockname()[1]
        print("baseline relay (websockets + uvloop) listening", flush=True)
        print(f"  WebSocket: ws://{host}:{bound}/ws  (subprotocol {PROTOCOL})", flush=True)
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description="The baseline kefu.v1 relay (websockets on uvloop).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--jwt-secret", required=True)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(run(args.host, args.port, args.jwt_secret))
    return 0
