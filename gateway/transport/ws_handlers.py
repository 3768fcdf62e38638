"""The kefu.v1 requests over WebSocket: decode → conversation service → encode, nothing more.

``on_frame`` handles one binary message: charge it to the connection's rate budget (the session
state of ``gateway.protocol.session``, by ``protocol.admission``'s rules), decode, authenticate,
dispatch. A handler that needs no I/O (``send`` once the
conversation is cached, ``typing``, ``receipt``, ``ping``) runs synchronously inside the
connection's read loop and returns None, so a pipelined burst of sends costs no task switch each;
the store acks them later, in order, through callbacks. Handlers that must read the store
(``open``, ``join``, ``resume``, …) return a coroutine: the read loop awaits it, so one
connection's requests are handled in order. Who may do what is the service's business.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

import trio

from .. import __version__
from ..auth import Authenticator, Identity
from ..config import Config
from ..conversations.service import CATCHUP_PAGE, MAX_SUBJECT_CHARS, ConversationService, now_ms
from ..hub import ConvState, Hub
from ..logs import PEER_LINES
from ..media import bodies as media_bodies
from ..metrics import Stats
from ..model import Appended, Receipt, RECEIPT_KINDS
from ..protocol import envelope as env
from ..protocol.admission import PreAuthBudget, charge_frame
from ..protocol.errors import (
    AUTH_ERRORS,
    CLOSE_AUTH_FAILED,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_MANY_CONNECTIONS,
    AuthError,
    RequestError,
)
from ..protocol.frames import OP_BINARY, encode_frame
from ..protocol.session import ADMIT, CLOSE, RatePolicy
from ..store.base import StoreDamaged, StoreError
from .connection import Connection

log = logging.getLogger("kefu.ws")

CATCHUP_LIMIT = 2000  # messages one resume sends per conversation; past it the client resumes again
MAX_RESUME_CONVS = 1000
PREAUTH_MAX_REFUSED = 8  # requests refused before authentication (unauthenticated, bad_frame…) before closing

Handler = Callable[[Connection, dict[str, Any]], Awaitable[None] | None]
# What other services (routing) add: (principal, request) -> the reply's fields, or an awaitable of them
Request = Callable[[Identity, dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]


class ConnectionHooks:
    """What else wants to know when a user's connection comes or goes (routing: agent presence)."""

    def on_connected(self, identity: Identity) -> None: ...

    def on_disconnected(self, identity: Identity) -> None: ...


class RequestHandlers:
    def __init__(
        self, config: Config, service: ConversationService, hub: Hub, authenticator: Authenticator, stats: Stats, preauth: PreAuthBudget
    ) -> None:
        """``preauth``: the transport's budget of input before authentication; a connection's
        share of it is released here when it authenticates."""
        self.config = config
        self.preauth = preauth
        self.limits = config.limits
        self.service = service
        self.hub = hub
        self.auth = authenticator
        self.stats = stats
        self.policy = RatePolicy(config.rate_per_second, self.limits.rate_burst, config.flood_close_after)
        self._rate, self._burst, self._flood_after = self.policy.rate, float(self.policy.burst), self.policy.flood_after  # per frame
        self.hooks: ConnectionHooks | None = None
        # The transport's strike against a peer's address when a connection is closed for abuse
        # (``ConnectLimit.strike``): its new connections are then admitted more slowly.
        self.on_abuse: Callable[[Connection, str], None] | None = None
        self.workspace: Any = None  # gateway.customers.WorkspaceService: customers and products of opened conversations
        self._handlers: dict[str, Handler] = {
            "send": self.send,
            "receipt": self.receipt,
            "typing": self.typing,
            "ping": self.ping,
            "open": self.open,
            "join": self.join,
            "leave": self.leave,
            "close": self.close,
            "recall": self.recall,
            "list": self.list,
            "history": self.history,
            "resume": self.resume,
            "auth": self.auth_again,
        }

    def register(self, requests: dict[str, Request]) -> None:
        """Serve more request types (routing's ``status``, ``take``, …), each answered with ``ok``."""
        for t, request in requests.items():
            if t in self._handlers:
                raise ValueError(f"request type {t!r} is served already")
            self._handlers[t] = self._answering(request)

    def _answering(self, request: Request) -> Handler:
        def handler(conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
            fields = request(conn.identity, req)
            if isinstance(fields, dict):
                self.ok(conn, req, **fields)
                return None
            return self._ok_after(conn, req, fields)

        return handler

    async def _ok_after(self, conn: Connection, req: dict[str, Any], pending: Awaitable[dict[str, Any]]) -> None:
        self.ok(conn, req, **await pending)

    # ---- frames in, frames out ----------------------------------------------------------------

    def on_frame(self, conn: Connection, payload: bytes) -> Awaitable[None] | None:
        """Handle one binary message: rate-limit, decode, authenticate, dispatch."""
        verdict = charge_frame(conn, conn.last_recv, self._rate, self._burst, self._flood_after) if self._rate else ADMIT
        try:
            req = env.decode_request(payload)
        except RequestError as exc:
            if verdict == ADMIT:
                self.error(conn, exc, exc.extra.pop("id", None))
            else:
                self._over_rate(conn, verdict, None)
            return None
        if verdict != ADMIT:
            self._over_rate(conn, verdict, env.request_id(req))
            return None
        t = req["t"]
        if conn.identity is None:
            if t == "auth":
                return self._auth_frame(conn, req)
            self.error(conn, RequestError("unauthenticated", "authenticate first: send `auth` with a token"), env.request_id(req))
            self._refused_before_auth(conn)
            return None
        handler = self._handlers.get(t)
        if handler is None:
            self.error(conn, RequestError("unknown_type", f"unknown request type {t[:32]!r}"), env.request_id(req))
            return None
        try:
            pending = handler(conn, req)
        except RequestError as exc:
            self.error(conn, exc, env.request_id(req))
            return None
        except Exception:
            log.exception("request %r failed", t, extra=conn.log_extra)
            self.error(conn, RequestError("internal", "internal error"), env.request_id(req))
            return None
        if pending is not None:
            return self._guarded(conn, req, pending)
        return None

    async def _guarded(self, conn: Connection, req: dict[str, Any], pending: Awaitable[None]) -> None:
        try:
            await pending
        except RequestError as exc:
            self.error(conn, exc, env.request_id(req))
        except StoreDamaged as exc:
            log.error("store damaged on %r: %s", req["t"], exc, extra=conn.log_extra)
            self.error(conn, RequestError("storage_damaged", "the server's storage is damaged; an operator has been alerted"), env.request_id(req))
        except StoreError as exc:
            log.warning("store error on %r: %s", req["t"], exc, extra=conn.log_extra)
            self.error(conn, RequestError("unavailable", "storage unavailable, retry"), env.request_id(req))
        except Exception:
            log.exception("request %r failed", req["t"], extra=conn.log_extra)
            self.error(conn, RequestError("internal", "internal error"), env.request_id(req))

    def on_text(self, conn: Connection) -> None:
        verdict = conn.charge(conn.last_recv, self.policy)
        if verdict != ADMIT:
            self._over_rate(conn, verdict, None)
            return
        self.error(conn, RequestError("bad_frame", "kefu.v1 uses binary frames: send msgpack in a binary message"), None)
        if conn.identity is None:
            self._refused_before_auth(conn)

    def on_control(self, conn: Connection) -> bool:
        """A ping or pong counts against the rate like any frame; a refused ping is not answered."""
        verdict = conn.charge(conn.last_recv, self.policy)
        if verdict == ADMIT:
            return True
        self._over_rate(conn, verdict, None)
        return False

    def _refused_before_auth(self, conn: Connection) -> None:
        """Before authentication a client has nothing to send but `auth`: a few mistakes, then close."""
        counts = conn.error_counts or {}
        if sum(counts.values()) >= PREAUTH_MAX_REFUSED:
            self.stats.refused["unauthenticated"] += 1
            conn.close(CLOSE_POLICY_VIOLATION, "authenticate first")
            if self.on_abuse is not None:
                self.on_abuse(conn, "unauthenticated")

    def _over_rate(self, conn: Connection, verdict: int, rid: int | str | None) -> None:
        """A frame over the connection's rate: refuse it (a request hears ``rate_limited``), or
        close the connection once its excess says it floods."""
        self.stats.rate_limited += 1
        self.stats.refused["rate_limited"] += 1
        if verdict == CLOSE:
            self.stats.refused["flood"] += 1
            more = PEER_LINES.allow()
            if more is not None:
                log.warning("flood: %.0f frames over the rate limit, closing%s", conn.violations, more, extra=conn.log_extra)
            conn.close(CLOSE_POLICY_VIOLATION, "flood over the rate limit")
            if self.on_abuse is not None:
                self.on_abuse(conn, "flood")
            return
        if rid is None:  # not a request it could match an answer to (garbage, text, a ping): dropped
            return
        retry_ms = conn.retry_after_ms(self.policy)
        self.error(conn, RequestError("rate_limited", "over the message rate limit", retry_after_ms=retry_ms), rid)

    def error(self, conn: Connection, exc: RequestError, rid: int | str | None) -> None:
        """Send an error frame. Each code is logged once per connection; repeats are counted and
        summed up in one line when the connection ends."""
        self.stats.errors[exc.code] += 1
        counts = conn.error_counts
        if counts is None:
            counts = conn.error_counts = {}
        seen = counts.get(exc.code, 0)
        counts[exc.code] = seen + 1
        if not seen:
            more = PEER_LINES.allow()
            if more is not None:
                log.info("error %s: %s%s", exc.code, exc.message, more, extra=conn.log_extra)
        conn.push(encode_frame(OP_BINARY, env.error_frame(exc.code, exc.message, exc.retryable, rid, **exc.extra)))

    def ok(self, conn: Connection, req: dict[str, Any], **fields: Any) -> None:
        conn.push(env.event_frame({"t": "ok", "id": env.request_id(req), **fields}))

    # ---- authentication -----------------------------------------------------------------------

    def _auth_frame(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        if not self.authenticate(conn, req.get("token"), env.request_id(req)):
            return None
        if "resume" in req:
            return self._guarded(conn, req, self.resume(conn, {"t": "resume", "id": env.request_id(req), "convs": req["resume"]}))
        return None

    def auth_again(self, conn: Connection, req: dict[str, Any]) -> None:
        try:
            identity = self.auth.verify(req.get("token"))
        except AuthError as exc:
            raise RequestError("bad_request", f"token refresh refused: {exc.code}: {exc.message}") from None
        conn.refresh(identity)
        self.ok(conn, req, expires_at=identity.expires_at)

    def authenticate(self, conn: Connection, token: object, rid: int | str | None) -> bool:
        """Verify a token (at the handshake or in an ``auth`` frame); on success say hello."""
        try:
            identity = self.auth.verify(token)
        except AuthError as exc:
            self.refuse(conn, exc, rid)
            return False
        if len(self.hub.connections_of(identity.tenant, identity.user)) >= self.config.max_connections_per_user:
            log.warning("too many connections for user", extra={**conn.log_extra, "tenant": identity.tenant, "user": identity.user})
            conn.close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections for this user")
            return False
        conn.authenticate(identity)
        self.preauth.release(conn.preauth_bytes)
        conn.preauth_bytes = 0
        if conn.decoder is not None:
            conn.decoder.set_limits(self.limits.max_frame_bytes, self.config.max_fragments)
            conn.decoder = None
        self.hub.add_connection(conn)
        self.stats.connections[identity.role] += 1
        if self.hooks is not None:
            self.hooks.on_connected(identity)
        log.debug("authenticated", extra=conn.log_extra)
        conn.push(env.event_frame(self._hello(conn, identity, rid)))
        return True

    def refuse(self, conn: Connection, exc: AuthError, rid: int | str | None) -> None:
        self.stats.auth_failures[exc.code] += 1
        log.info("auth failed: %s (%s)", exc.code, exc.message, extra=conn.log_extra)
        conn.push(encode_frame(OP_BINARY, env.error_frame(exc.code, exc.message, AUTH_ERRORS[exc.code].retryable, rid)))
        conn.close(CLOSE_AUTH_FAILED, exc.code)

    def _hello(self, conn: Connection, identity: Identity, rid: int | str | None) -> dict[str, Any]:
        return {
            "t": "hello",
            "id": rid,
            "protocol": env.PROTOCOL,
            "server": __version__,
            "session": conn.id,
            "server_time": now_ms(),
            "user": {"id": identity.user, "tenant": identity.tenant, "role": identity.role, "channel": identity.channel, "name": identity.name},
            "heartbeat_ms": int(self.config.heartbeat_s * 1000),
            "idle_timeout_ms": int(self.config.idle_timeout_s * 1000),
            "limits": self.limits.as_map(),
        }

    def forget(self, conn: Connection) -> None:
        """A closed connection: drop it from every index, tell who must know."""
        if conn.identity is None:
            return
        if conn.live and not any(c.live for c in self.hub.connections_of(*conn.user_key) if c is not conn):
            self.service.presence(conn.identity, list(conn.convs), online=False)  # while conn.convs still lists them
        self.hub.remove_connection(conn)
        self.stats.connections[conn.identity.role] -= 1
        if self.hooks is not None:
            self.hooks.on_disconnected(conn.identity)
        log.debug("closed", extra=conn.log_extra)

    # ---- requests -----------------------------------------------------------------------------

    def send(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        conv_id, cmid, body = env.send_fields(req, self.limits)
        rid = env.request_id(req)

        def done(result: object) -> None:
            if type(result) is Appended:
                m = result.message
                conn.push(env.ack_frame(rid, m.conv_id, cmid, m.seq, m.ts, result.duplicate))
            else:
                self.error(conn, result, rid)  # type: ignore[arg-type]

        if "attachment" in req["body"] and media_bodies.attachment_id(req["body"]) is not None:
            return self.service.send_attachment(conn.identity, conv_id, cmid, req["body"], done, conn.id)
        return self.service.send(conn.identity, conv_id, cmid, body, done, conn.id)

    def receipt(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        conv_id = _conv_id(req)
        kind = env.need_choice(req, "kind", RECEIPT_KINDS)
        seq = env.need_int(req, "seq", minimum=1)
        rid = env.request_id(req)

        def done(result: object) -> None:
            if type(result) is Receipt:
                if rid is not None:
                    conn.push(env.event_frame({"t": "ok", "id": rid, "seq": result.seq}))
            else:
                self.error(conn, result, rid)  # type: ignore[arg-type]

        return self.service.receipt(conn.identity, conv_id, kind, seq, done)

    def typing(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        conv_id = _conv_id(req)
        return self.service.typing(conn.identity, conv_id, env.need_bool(req, "on"))

    def ping(self, conn: Connection, req: dict[str, Any]) -> None:
        conn.push(env.event_frame({"t": "pong", "id": env.request_id(req), "server_time": now_ms()}))

    async def open(self, conn: Connection, req: dict[str, Any]) -> None:
        subject = env.need_str(req, "subject", MAX_SUBJECT_CHARS, optional=True, empty=True) or ""
        product = env.need_str(req, "product", 128, optional=True)
        workspace = self.workspace
        if workspace is None:
            opened = await self.service.open(conn.identity, subject, on_member=lambda state: self.hub.subscribe(conn, state))
            self.ok(conn, req, conv=env.conversation_map(opened.conv), participants=[env.participant_map(p) for p in opened.participants])
            return
        customer = await workspace.shopper(conn.identity) if conn.identity.role == "shopper" else {"id": ""}

        def member(state: ConvState) -> None:
            self.hub.subscribe(conn, state)
            workspace.opening(state.conv, customer, product)

        opened = await self.service.open(conn.identity, subject, on_member=member)
        participants = [env.participant_map(p) for p in opened.participants]
        self.ok(conn, req, conv=env.conversation_map(opened.conv), participants=participants, customer=customer["id"], product=product)
        await workspace.opened(opened.conv)

    async def join(self, conn: Connection, req: dict[str, Any]) -> None:
        joined = await self.service.join(conn.identity, _conv_id(req), on_member=lambda state: self.hub.subscribe(conn, state))
        self.ok(conn, req, conv=env.conversation_map(joined.conv), participants=[env.participant_map(p) for p in joined.participants])

    async def leave(self, conn: Connection, req: dict[str, Any]) -> None:
        await self.service.leave(conn.identity, _conv_id(req))
        self.ok(conn, req)

    async def close(self, conn: Connection, req: dict[str, Any]) -> None:
        conv = await self.service.close(conn.identity, _conv_id(req))
        self.ok(conn, req, conv=env.conversation_map(conv))

    async def recall(self, conn: Connection, req: dict[str, Any]) -> None:
        conv_id = _conv_id(req)
        m = await self.service.recall(conn.identity, conv_id, env.need_int(req, "seq", minimum=1))
        self.ok(conn, req, conv=conv_id, seq=m.seq)

    async def list(self, conn: Connection, req: dict[str, Any]) -> None:
        limit = env.need_int(req, "limit", optional=True, minimum=1) or 50
        before = env.need_int(req, "before", optional=True)
        cursor = env.need_str(req, "cursor", 200, optional=True)
        mine = bool(env.need_optional_bool(req, "mine"))
        listing = await self.service.list(conn.identity, status=req.get("status"), cursor=cursor, limit=limit, mine=mine, before=before)
        self.ok(conn, req, convs=[env.conversation_map(c) for c in listing.convs], more=listing.more, next=listing.next)

    async def history(self, conn: Connection, req: dict[str, Any]) -> None:
        conv_id = _conv_id(req)
        after = env.need_int(req, "after", optional=True) or 0
        before = env.need_int(req, "before", optional=True, minimum=1)
        limit = env.need_int(req, "limit", optional=True, minimum=1)
        page = await self.service.history(conn.identity, conv_id, after=after, before=before, limit=limit)
        receipts = [{"user": r.user, "kind": r.kind, "seq": r.seq} for r in page.receipts]
        self.ok(conn, req, conv=page.conv_id, messages=[env.message_map(m) for m in page.messages], more=page.more, receipts=receipts)

    async def resume(self, conn: Connection, req: dict[str, Any]) -> None:
        """Go live: subscribe every open conversation of the user, after sending each listed one's
        missed messages (seq > the given last seq) in order. See docs/protocol.md, "Resume"."""
        cursors = env.need_map(req, "convs", optional=True) or {}
        if len(cursors) > MAX_RESUME_CONVS:
            raise RequestError("too_large", f"at most {MAX_RESUME_CONVS} conversations per resume")
        for conv_id, last in cursors.items():
            if type(conv_id) is not str or type(last) is not int or last < 0 or last > env.MAX_INT:
                raise RequestError("bad_request", "field `convs` must map conversation ids to last sequence numbers (>= 0)")
        identity = conn.identity
        first_live = not conn.live and len([c for c in self.hub.connections_of(*conn.user_key) if c.live]) == 0
        conn.live = True
        for conv in await self.service.active(identity):
            if conv.id not in cursors:
                state = await self.service.load(conv.id)
                if state is not None and not conn.closed:
                    self.hub.subscribe(conn, state)
        resumed: dict[str, Any] = {}
        for conv_id, last in cursors.items():
            try:
                state = await self.service.access(identity, conv_id, "catch_up")
            except RequestError as exc:
                resumed[conv_id] = {"error": exc.code}
                continue
            if last > state.last_seq:  # never silently skip what will be stored under these seqs
                stored = await self.service.stored_last_seq(state, last)
                if last > stored:
                    resumed[conv_id] = {"error": "cursor_ahead", "last_seq": stored}
                    continue
            resumed[conv_id] = await self._catch_up(conn, state, last)
        if first_live:
            self.service.presence(identity, list(conn.convs), online=True)
        self.ok(conn, req, resumed=resumed)

    async def _catch_up(self, conn: Connection, state: ConvState, last: int) -> dict[str, Any]:
        """Send the stored messages after ``last`` page by page, each page once the connection's
        outbox has room (a long absence must not make a resuming client a slow consumer), then
        merge what was fanned out meanwhile and go live."""
        conv_id = state.conv.id
        self.hub.begin_catchup(conn, state, last)
        after, sent, complete = last, 0, True
        room = self.config.max_outbox_bytes // 2
        try:
            while True:
                page = await self.service.catch_up(conn.identity, state, after, CATCHUP_PAGE)
                for m in page.messages:
                    while conn.outbox_bytes > room and not conn.closing:
                        await trio.sleep(0.005)
                        conn.last_recv = time.monotonic()  # busy catching up, not idle
                    conn.push(env.message_frame(m))
                    after = conn.guards[conv_id] = m.seq
                sent += len(page.messages)
                if not page.more:
                    break
                if sent >= CATCHUP_LIMIT:
                    complete = False
                    break
        except BaseException:
            self.hub.unsubscribe(conn, conv_id)
            raise
        if complete:
            sent += self.hub.finish_catchup(conn, state)
        else:  # too far behind for one go: no live traffic until the client resumes from here
            self.hub.unsubscribe(conn, conv_id)
        return {"sent": sent, "complete": complete, "last_seq": max(state.last_seq, after)}


def _conv_id(req: dict[str, Any]) -> str:
    conv_id = env.need_str(req, "conv", env.ID_CHARS)
    assert conv_id is not None
    return conv_id

