"""The picows relay: the baseline's kefu.v1 subset on picows (a Cython WebSocket server) and uvloop.

The fastest Python peer the benchmark compares Kefu with (`docs/benchmarks.md`): where the
``websockets`` baseline runs a handler coroutine per connection, picows hands each frame to a
synchronous ``on_ws_frame`` callback and ``transport.send`` writes at once, with no task, future or
queue per frame. It keeps exactly the semantics of ``bench/baseline/relay.py`` (the same
``Conversation`` state), so the workloads' checks apply unchanged:

* ``hello`` after a token (HS256 JWT, ``?token=``) verified with PyJWT; a bad token gets an
  ``error`` ``token_invalid`` (``token_expired`` when it has expired) and close 4001;
* ``resume``, ``open``, ``join`` (with a ``joined`` notice), ``send`` -> ``ack`` with a gap-free
  per-conversation ``seq`` and ``cmid`` de-duplication, ``msg`` to every live connection of every
  member but the sending one.

Every write is synchronous, so frames to one connection go out in the order they are produced.

    python -m bench.baseline.picows_relay --port 0 --jwt-secret SECRET   # prints "  WebSocket: ws://…/ws"
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import secrets
import signal
from urllib.parse import parse_qs, urlsplit

import jwt
import msgpack
import uvloop
from picows import (WSCloseCode, WSListener, WSMsgType, WSUpgradeRequest, WSUpgradeResponse,
                    WSUpgradeResponseWithListener, ws_create_server)

from .relay import PROTOCOL, Conversation, RequestError, now_ms

_packb = msgpack.packb
_unpackb = msgpack.unpackb
_BINARY = WSMsgType.BINARY


class Session(WSListener):
    """One connection: its identity once the token is verified, and the frames it receives."""

    def __init__(self, relay: Relay, claims: dict | None, token_error: tuple[str, str]) -> None:
        super().__init__()
        self.relay = relay
        self.claims = claims
        self.token_error = token_error
        self.transport = None
        self.tenant = self.user = self.role = self.channel = ""
        self.live = False
        self.convs: set[str] = set()
        self.parts: list[bytes] | None = None

    def send(self, frame: bytes) -> None:
        self.transport.send(_BINARY, frame)

    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        claims = self.claims
        if claims is None:
            code, message = self.token_error
            self.send(_packb({"t": "error", "id": None, "code": code, "message": message, "retryable": False}))
            transport.send_close(4001, b"token_invalid")
            transport.disconnect()
            return
        self.tenant, self.user, self.role = claims["tenant"], claims["sub"], claims["role"]
        self.channel = claims.get("channel", "")
        self.relay.sessions.setdefault((self.tenant, self.user), set()).add(self)
        self.send(_packb({
            "t": "hello", "id": None, "protocol": PROTOCOL, "server": "picows", "session": f"p-{next(self.relay.ids)}",
            "server_time": now_ms(),
            "user": {"id": self.user, "tenant": self.tenant, "role": self.role, "channel": self.channel},
        }))

    def on_ws_frame(self, transport, frame) -> None:
        kind = frame.msg_type
        if kind == _BINARY:
            if frame.fin:
                self.request(frame.get_payload_as_bytes())
            else:
                self.parts = [frame.get_payload_as_bytes()]
        elif kind == WSMsgType.CONTINUATION and self.parts is not None:
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                data, self.parts = b"".join(self.parts), None
                self.request(data)
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def request(self, data: bytes) -> None:
        req: dict = {}
        try:
            req = _unpackb(data)
            handle = HANDLERS.get(req["t"])
            if handle is None:
                raise RequestError("unknown_type", f"unknown request type {req['t']!r}")
            handle(self.relay, self, req)
        except RequestError as exc:
            self.send(_packb({"t": "error", "id": req.get("id"), "code": exc.code, "message": str(exc), "retryable": False}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.send(_packb({"t": "error", "id": None, "code": "bad_request", "message": repr(exc), "retryable": False}))

    def on_ws_disconnected(self, transport) -> None:
        if self.claims is not None:
            self.relay.forget(self)


class Relay:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.convs: dict[str, Conversation] = {}
        self.user_convs: dict[tuple[str, str], set[str]] = {}
        self.sessions: dict[tuple[str, str], set[Session]] = {}
        self.ids = itertools.count(1)

    def listener(self, request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        """The upgrade: verify the token, answer 101 with the kefu.v1 subprotocol."""
        token = parse_qs(urlsplit(request.path.decode("latin-1")).query).get("token", [""])[0]
        claims, error = None, ("", "")
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], options={"require": ["exp", "sub", "tenant", "role"]})
        except jwt.InvalidTokenError as exc:
            error = ("token_expired" if isinstance(exc, jwt.ExpiredSignatureError) else "token_invalid", str(exc))
        response = WSUpgradeResponse.create_101_response(extra_headers={"Sec-WebSocket-Protocol": PROTOCOL})
        return WSUpgradeResponseWithListener(response, Session(self, claims, error))

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

    def do_resume(self, session: Session, req: dict) -> None:
        cursors = req.get("convs") or {}
        session.live = True
        resumed = {}
        for conv_id in self.user_convs.get((session.tenant, session.user), ()):
            conv = self.convs[conv_id]
            if conv.status == "open" and conv_id not in cursors:
                self.subscribe(session, conv)
        for conv_id, last in cursors.items():
            conv = self.convs.get(conv_id)
            if conv is None or conv.tenant != session.tenant or session.user not in conv.members:
                resumed[conv_id] = {"error": "not_found"}
                continue
            missed = conv.messages[last:]
            for frame in missed:
                session.send(frame)
            self.subscribe(session, conv)
            resumed[conv_id] = {"sent": len(missed), "complete": True, "last_seq": len(conv.messages)}
        session.send(_packb({"t": "ok", "id": req.get("id"), "resumed": resumed}))

    def do_open(self, session: Session, req: dict) -> None:
        if session.role != "shopper":
            raise RequestError("forbidden", "only shoppers open conversations")
        conv = Conversation(secrets.token_hex(12), session.tenant, session.user, session.channel, req.get("subject") or "")
        conv.members[session.user] = (session.role, conv.created_at)
        self.convs[conv.id] = conv
        self.user_convs.setdefault((session.tenant, session.user), set()).add(conv.id)
        for other in self.sessions.get((session.tenant, session.user), ()):
            if other.live or other is session:
                self.subscribe(other, conv)
        session.send(_packb({"t": "ok", "id": req.get("id"), "conv": conv.as_map(), "participants": conv.participants()}))

    def do_join(self, session: Session, req: dict) -> None:
        conv = self.conversation(session, req["conv"])
        if session.user not in conv.members:
            if session.role == "shopper":
                raise RequestError("not_found", "no such conversation")
            if conv.status != "open":
                raise RequestError("conversation_closed", "the conversation is closed")
            joined_at = now_ms()
            conv.members[session.user] = (session.role, joined_at)
            self.user_convs.setdefault((session.tenant, session.user), set()).add(conv.id)
            notice = _packb({"t": "joined", "conv": conv.id, "user": session.user, "role": session.role, "ts": joined_at})
            for other in conv.live:
                if other.user != session.user:
                    other.send(notice)
        self.subscribe(session, conv)
        session.send(_packb({"t": "ok", "id": req.get("id"), "conv": conv.as_map(), "participants": conv.participants()}))

    def do_send(self, session: Session, req: dict) -> None:
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
            session.send(_packb({"t": "ack", "id": req.get("id"), "conv": conv.id, "cmid": cmid, "seq": seq, "ts": ts, "dup": True}))
            return
        seq, ts = len(conv.messages) + 1, now_ms()
        frame = _packb({"t": "msg", "conv": conv.id, "seq": seq, "cmid": cmid, "from": session.user, "role": session.role, "ts": ts, "body": body})
        conv.messages.append(frame)
        conv.cmids[cmid] = (seq, ts)
        for other in conv.live:
            if other is not session:
                other.send(frame)
        session.send(_packb({"t": "ack", "id": req.get("id"), "conv": conv.id, "cmid": cmid, "seq": seq, "ts": ts, "dup": False}))


HANDLERS = {"resume": Relay.do_resume, "open": Relay.do_open, "join": Relay.do_join, "send": Relay.do_send}


async def run(host: str, port: int, secret: str) -> None:
    relay = Relay(secret)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    server = await ws_create_server(relay.listener, host, port, backlog=4096, max_frame_size=65536,
                                    websocket_handshake_timeout=30)
    bound = server.sockets[0].getsockname()[1]
    print("picows relay (picows + uvloop) listening", flush=True)
    print(f"  WebSocket: ws://{host}:{bound}/ws  (subprotocol {PROTOCOL})", flush=True)
    try:
        await stop
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline.picows_relay", description="The kefu.v1 relay on picows and uvloop.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--jwt-secret", required=True)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(run(args.host, args.port, args.jwt_secret))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
