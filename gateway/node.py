"""The node: one gateway process. It wires listener, hub, store, bus and metrics, and serves requests.

Request handlers are plain methods: a handler that needs no I/O (``send`` once the conversation is
cached, ``typing``, ``receipt``, ``ping``) runs synchronously inside the connection's read loop and
returns None, so a pipelined burst of sends costs no task switch each; the store acks them later, in
order, through callbacks. Handlers that must read the store (``open``, ``join``, ``resume``, …) are
coroutines: the read loop awaits them, so one connection's requests are handled in order.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import secrets
import socket
import time
from dataclasses import replace
from typing import Any, Awaitable, Callable

import h11
import trio
from trio.lowlevel import wait_readable

from . import __version__
from .auth import Authenticator, Identity
from .bus import Bus, LocalBus
from .config import Config
from .hub import ConvState, Hub
from .metrics import Stats
from .model import (
    CLOSED,
    OPEN,
    RECEIPT_KINDS,
    AddParticipant,
    Appended,
    Conversation,
    CreateConversation,
    Participant,
    Receipt,
    RemoveParticipant,
    SetReceipt,
    SetStatus,
    AppendMessage,
    StoredMessage,
)
from .protocol import admission
from .protocol import envelope as env
from .protocol.errors import (
    AUTH_ERRORS,
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TRY_AGAIN_LATER,
    AuthError,
    RequestError,
)
from .protocol.frames import OP_BINARY, OP_PING, FrameDecoder, encode_frame
from .store.base import NotFound, StoreDamaged, StoreError
from .store.writer import Store
from .transport import handshake
from .transport.connection import Connection, ParkingLot, Writer, finish, read_frames

log = logging.getLogger("kefu.node")

PING_FRAME = encode_frame(OP_PING, b"")
CATCHUP_PAGE = 500
CATCHUP_LIMIT = 2000  # messages one resume sends per conversation; past it the client resumes again
MAX_RESUME_CONVS = 1000
MAX_LIST = 100
PREAUTH_MAX_FRAGMENTS = 8  # frames one message may come in before authentication
PREAUTH_MAX_REFUSED = 8  # requests refused before authentication (unauthenticated, bad_frame…) before closing
BUSY_RESPONSE = (  # to a connection refused before anything of it is read
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\nConnection: close\r\n\r\nserver busy\n"
)


def now_ms() -> int:
    return int(time.time() * 1000)


_conversation_counter = itertools.count()


def new_conversation_id() -> str:
    """Time-ordered (also within one millisecond, in this process) and unguessable: 12 hex digits
    of milliseconds, 4 of a counter, 12 of randomness."""
    return f"{now_ms():012x}{next(_conversation_counter) & 0xFFFF:04x}{secrets.token_hex(6)}"


def frame(payload: dict[str, Any]) -> bytes:
    return encode_frame(OP_BINARY, env.pack(payload))


class Node:
    def __init__(
        self,
        config: Config,
        store: Store,
        authenticator: Authenticator,
        *,
        stats: Stats,
        bus: Bus | None = None,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.stats = stats
        self.store = store
        self.auth = authenticator
        self.bus: Bus = bus if bus is not None else LocalBus()
        self.hub = Hub()
        self.routing: Any = None  # gateway.routing.service.RoutingService, when routing is on
        self.writer = Writer(self.stats, config.max_outbox_bytes)
        self.lot = ParkingLot(self._resume_reader, config.park_after_s)
        self._parking = config.park_after_s > 0 and ParkingLot.available
        self.connections: set[Connection] = set()
        self.ready = False
        self.draining = False
        self.port = 0
        self._allowed_origins = config.csv("allowed_origins")
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._stop = trio.Event()
        self._done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._rate = config.rate_per_second
        self.preauth = admission.PreAuthBudget(config.max_pending_bytes, config.max_preauth_bytes)
        stats.preauth_bytes = lambda: self.preauth.held
        self._handlers: dict[str, Callable[[Connection, dict[str, Any]], Awaitable[None] | None]] = {
            "send": self._send,
            "receipt": self._receipt,
            "typing": self._typing,
            "ping": self._ping,
            "open": self._open,
            "join": self._join,
            "leave": self._leave,
            "close": self._close_conversation,
            "list": self._list,
            "history": self._history,
            "resume": self._resume,
            "auth": self._auth_again,
        }

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; then drain gracefully. ``task_status.started`` gets the bound port."""
        listener = _listen(self.config.host, self.config.port)
        self.port = listener.getsockname()[1]
        async with trio.open_nursery() as system:
            await system.start(self.store.run)
            await system.start(self.writer.run)
            if self._parking:
                await system.start(self.lot.run)
            await system.start(self.bus.run, self)
            if self.routing is not None:  # after the store (it restores from it), before accepting
                await system.start(self.routing.run)
            system.start_soon(self._heartbeat)
            async with trio.open_nursery() as connections:
                self._nursery = connections
                accept_scope = trio.CancelScope()
                connections.start_soon(self._accept_loop, listener, connections, accept_scope)
                self.ready = True
                task_status.started(self.port)
                await self._stop.wait()
                await self._drain(accept_scope)
            system.cancel_scope.cancel()
        self._done.set()

    def stop(self) -> None:
        """Begin a graceful shutdown (see ``_drain``); ``run`` returns when it is done."""
        self._stop.set()

    async def stopped(self) -> None:
        await self._done.wait()

    async def _drain(self, accept_scope: trio.CancelScope) -> None:
        """Stop accepting, make every write durable, tell clients to reconnect elsewhere."""
        log.info("shutting down: %d connections", len(self.connections))
        self.ready = False
        self.draining = True
        accept_scope.cancel()
        with trio.move_on_after(self.config.shutdown_timeout_s / 2) as scope:
            await self.store.drained()
        if scope.cancelled_caught:
            log.warning("store did not drain in time; unacked sends will be retried by clients")
        for conn in list(self.connections):
            conn.close(CLOSE_SERVICE_RESTART, "server restart")
        with trio.move_on_after(self.config.shutdown_timeout_s / 2):
            while self.connections:
                await trio.sleep(0.01)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _accept_loop(self, listener: socket.socket, nursery: trio.Nursery, scope: trio.CancelScope) -> None:
        with scope:
            try:
                while True:
                    await wait_readable(listener)
                    for _ in range(256):
                        try:
                            sock, addr = listener.accept()
                        except BlockingIOError:
                            break
                        except OSError as exc:
                            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                                log.error("accept failed: %s; pausing accepts", exc)
                                self.stats.handshakes_failed["fd_limit"] += 1
                                await trio.sleep(0.1)
                                break
                            raise
                        sock.setblocking(False)
                        if not self.preauth.admit():
                            self._refuse_busy(sock)
                            continue
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        nursery.start_soon(self._serve_socket, sock, f"{addr[0]}:{addr[1]}")
            finally:
                trio.lowlevel.notify_closing(listener)
                listener.close()

    def _refuse_busy(self, sock: socket.socket) -> None:
        """Connections that have not authenticated hold all they may: answer 503 without reading."""
        self.stats.refused["pending_budget"] += 1
        self.stats.handshakes_failed["busy"] += 1
        try:
            sock.send(BUSY_RESPONSE)
        except OSError:
            pass
        sock.close()

    async def _heartbeat(self) -> None:
        """One task for every connection's timers: ping the quiet, close the idle and the unauthenticated."""
        cfg = self.config
        tick = max(0.05, min(cfg.heartbeat_s, cfg.idle_timeout_s, cfg.handshake_timeout_s, cfg.frame_timeout_s) / 4)
        while True:
            await trio.sleep(tick)
            now, wall = time.monotonic(), time.time()
            for conn in list(self.connections):
                quiet = now - conn.last_recv
                if conn.identity is None:
                    if conn.partial_since and now - conn.partial_since > cfg.frame_timeout_s:
                        self.stats.refused["frame_timeout"] += 1
                        conn.close(CLOSE_POLICY_VIOLATION, "frame not completed in time")
                    elif now - conn.created > cfg.handshake_timeout_s:
                        self._refuse(conn, AuthError("token_missing", "no auth frame within the handshake timeout"), None)
                elif conn.partial_since and now - conn.partial_since > cfg.frame_timeout_s:
                    self.stats.refused["frame_timeout"] += 1
                    log.info("frame not completed within %.0f s, closing", cfg.frame_timeout_s, extra=conn.log_extra)
                    conn.close(CLOSE_POLICY_VIOLATION, "frame not completed in time")
                elif wall > conn.identity.expires_at:
                    self._refuse(conn, AuthError("token_expired", "the token expired: reconnect with a new one, or send `auth` with a fresh token before expiry"), None)
                elif quiet > cfg.idle_timeout_s:
                    log.info("idle timeout after %.0f s", quiet, extra=conn.log_extra)
                    conn.close(CLOSE_GOING_AWAY, "idle timeout")
                elif quiet > cfg.heartbeat_s and now - conn.last_ping > cfg.heartbeat_s:
                    conn.last_ping = now
                    conn.push(PING_FRAME)

    # ---- connections --------------------------------------------------------------------------

    async def _serve_socket(self, sock: socket.socket, peer: str) -> None:
        """One connection: HTTP upgrade, then frames until it closes (one task, one frame chain)."""
        accepted = time.monotonic()
        upgrade, data = None, b""
        charged = [0]  # bytes of the upgrade request, charged to the pre-auth budget
        try:
            with trio.move_on_after(self.config.handshake_timeout_s):
                upgrade, data = await self._handshake(sock, charged)
        except OSError:
            upgrade = None
        if upgrade is None:
            self.preauth.release(charged[0])
            sock.close()
            return
        token, upgrade = upgrade.token, None
        conn = Connection(sock, f"{self._prefix}-{next(self._ids)}", peer, self.writer, self.lot if self._parking else None)
        conn.created = accepted  # one handshake timeout for the upgrade and the authentication together
        conn.preauth_bytes = charged[0]
        conn.tokens = float(self.limits.rate_burst)  # every frame counts, from the first
        self.connections.add(conn)
        self.stats.connections_opened += 1
        if token is not None:
            try:
                self._authenticate(conn, token, None)
            except Exception:
                log.exception("connection failed", extra=conn.log_extra)
                conn.close(CLOSE_INTERNAL_ERROR, "internal error")
            token = None
        await self._read(conn, data)

    async def _read(self, conn: Connection, data: bytes = b"") -> None:
        """A connection's reader task, from its upgrade or from the parking lot, until it closes
        (then it is forgotten and finished here) or is parked again (then it lives on)."""
        parked = False
        if conn.identity is None:  # small limits until it authenticates (then raised by _authenticate)
            decoder = conn.decoder = FrameDecoder(min(self.limits.max_frame_bytes, self.config.max_preauth_bytes), max_fragments=min(PREAUTH_MAX_FRAGMENTS, self.config.max_fragments))
        else:
            decoder = FrameDecoder(self.limits.max_frame_bytes, max_fragments=self.config.max_fragments)
        try:
            parked = await read_frames(conn, decoder, data, self.on_frame, self._on_text, self.stats, self._on_control, self._on_preauth_input)
        except Exception:
            log.exception("connection failed", extra=conn.log_extra)
            conn.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            if not parked:
                self._forget(conn)
                with trio.CancelScope(shield=True):
                    await finish(conn)

    def _resume_reader(self, conn: Connection) -> None:
        """The parking lot's callback: input (or a close) for a parked connection."""
        assert self._nursery is not None
        try:
            self._nursery.start_soon(self._read, conn)
        except RuntimeError:  # the node has stopped serving connections: no reader to finish it
            self._forget(conn)
            conn.closed = True
            conn.sock.close()

    async def _handshake(self, sock: socket.socket, charged: list[int]) -> tuple[handshake.Upgrade | None, bytes]:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=handshake.MAX_REQUEST_BYTES)

        def charge(n: int) -> bool:
            refused = self.preauth.charge(charged[0], n)
            if refused is not None:
                self.stats.refused[refused] += 1
                return False
            charged[0] += n
            return True

        request = await handshake.read_request(sock, http, charge)
        if request is None:
            self.stats.handshakes_failed["bad_request"] += 1
            return None, b""
        decision = handshake.decide(request, self._allowed_origins, self.ready)
        limit = self.config.max_connections
        if isinstance(decision, handshake.Upgrade) and limit and len(self.connections) >= limit:
            decision = handshake.Refuse(503, "connection limit reached")
        leftover = await handshake.respond(sock, http, decision)
        if isinstance(decision, handshake.Refuse):
            if decision.status >= 400:
                self.stats.handshakes_failed[str(decision.status)] += 1
            return None, b""
        return decision, leftover

    def _forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn.error_counts is not None:
            repeated = {code: n for code, n in conn.error_counts.items() if n > 1}
            if repeated:
                log.info("errors sent on this connection: %s", ", ".join(f"{c} x{n}" for c, n in sorted(repeated.items())), extra=conn.log_extra)
        if conn.identity is None:
            self.preauth.release(conn.preauth_bytes)
            conn.preauth_bytes = 0
            return
        if conn.live and not any(c.live for c in self.hub.connections_of(*conn.user_key) if c is not conn):
            self._presence(conn, online=False)  # while conn.convs still lists the conversations
        self.hub.remove_connection(conn)
        self.stats.connections[conn.identity.role] -= 1
        if self.routing is not None:
            self.routing.on_disconnected(conn.identity)
        log.debug("closed", extra=conn.log_extra)

    # ---- requests -----------------------------------------------------------------------------

    def on_frame(self, conn: Connection, payload: bytes) -> Awaitable[None] | None:
        """Handle one binary message: rate-limit, decode, authenticate, dispatch."""
        verdict = admission.charge_frame(conn, conn.last_recv, self._rate, self.limits.rate_burst, self.config.flood_close_after) if self._rate else admission.ADMIT
        try:
            req = env.decode_request(payload)
        except RequestError as exc:
            if verdict == admission.ADMIT:
                self._error(conn, exc, exc.extra.pop("id", None))
            else:
                self._over_rate(conn, verdict, None)
            return None
        if verdict != admission.ADMIT:
            self._over_rate(conn, verdict, env.request_id(req))
            return None
        t = req["t"]
        if conn.identity is None:
            if t == "auth":
                return self._auth_frame(conn, req)
            self._error(conn, RequestError("unauthenticated", "authenticate first: send `auth` with a token"), env.request_id(req))
            self._refused_before_auth(conn)
            return None
        handler = self._handlers.get(t)
        if handler is None:
            self._error(conn, RequestError("unknown_type", f"unknown request type {t[:32]!r}"), env.request_id(req))
            return None
        try:
            pending = handler(conn, req)
        except RequestError as exc:
            self._error(conn, exc, env.request_id(req))
            return None
        except Exception:
            log.exception("request %r failed", t, extra=conn.log_extra)
            self._error(conn, RequestError("internal", "internal error"), env.request_id(req))
            return None
        if pending is not None:
            return self._guarded(conn, req, pending)
        return None

    async def _guarded(self, conn: Connection, req: dict[str, Any], pending: Awaitable[None]) -> None:
        try:
            await pending
        except RequestError as exc:
            self._error(conn, exc, env.request_id(req))
        except StoreDamaged as exc:
            log.error("store damaged on %r: %s", req["t"], exc, extra=conn.log_extra)
            self._error(conn, RequestError("storage_damaged", "the server's storage is damaged; an operator has been alerted"), env.request_id(req))
        except StoreError as exc:
            log.warning("store error on %r: %s", req["t"], exc, extra=conn.log_extra)
            self._error(conn, RequestError("unavailable", "storage unavailable, retry"), env.request_id(req))
        except Exception:
            log.exception("request %r failed", req["t"], extra=conn.log_extra)
            self._error(conn, RequestError("internal", "internal error"), env.request_id(req))

    def _on_text(self, conn: Connection) -> None:
        verdict = admission.charge_frame(conn, conn.last_recv, self._rate, self.limits.rate_burst, self.config.flood_close_after)
        if verdict != admission.ADMIT:
            self._over_rate(conn, verdict, None)
            return
        self._error(conn, RequestError("bad_frame", "kefu.v1 uses binary frames: send msgpack in a binary message"), None)
        if conn.identity is None:
            self._refused_before_auth(conn)

    def _on_control(self, conn: Connection) -> bool:
        """A ping or pong counts against the rate like any frame; a refused ping is not answered."""
        verdict = admission.charge_frame(conn, conn.last_recv, self._rate, self.limits.rate_burst, self.config.flood_close_after)
        if verdict == admission.ADMIT:
            return True
        self._over_rate(conn, verdict, None)
        return False

    def _on_preauth_input(self, conn: Connection, n: int) -> bool:
        """Charge a chunk read before authentication; refuse a connection past its or the total budget."""
        refused = self.preauth.charge(conn.preauth_bytes, n)
        if refused is None:
            conn.preauth_bytes += n
            return True
        self.stats.refused[refused] += 1
        log.info("input before authentication refused: %s", refused, extra=conn.log_extra)
        if refused == admission.PreAuthBudget.TOTAL:
            conn.close(CLOSE_TRY_AGAIN_LATER, "server busy: retry later")
        else:
            conn.close(CLOSE_POLICY_VIOLATION, "too much input before authentication")
        return False

    def _refused_before_auth(self, conn: Connection) -> None:
        """Before authentication a client has nothing to send but `auth`: a few mistakes, then close."""
        counts = conn.error_counts or {}
        if sum(counts.values()) >= PREAUTH_MAX_REFUSED:
            self.stats.refused["unauthenticated"] += 1
            conn.close(CLOSE_POLICY_VIOLATION, "authenticate first")

    def _over_rate(self, conn: Connection, verdict: int, rid: int | str | None) -> None:
        """A frame over the connection's rate: refuse it (a request hears ``rate_limited``), or
        close the connection once its excess says it floods."""
        self.stats.rate_limited += 1
        self.stats.refused["rate_limited"] += 1
        if verdict == admission.CLOSE:
            self.stats.refused["flood"] += 1
            log.warning("flood: %.0f frames over the rate limit, closing", conn.violations, extra=conn.log_extra)
            conn.close(CLOSE_POLICY_VIOLATION, "flood over the rate limit")
            return
        retry_ms = admission.retry_after_ms(conn, self._rate)
        self._error(conn, RequestError("rate_limited", "over the message rate limit", retry_after_ms=retry_ms), rid)

    def _error(self, conn: Connection, exc: RequestError, rid: int | str | None) -> None:
        """Send an error frame. Each code is logged once per connection; repeats are counted and
        summed up in one line when the connection ends."""
        self.stats.errors[exc.code] += 1
        counts = conn.error_counts
        if counts is None:
            counts = conn.error_counts = {}
        seen = counts.get(exc.code, 0)
        counts[exc.code] = seen + 1
        if not seen:
            log.info("error %s: %s", exc.code, exc.message, extra=conn.log_extra)
        conn.push(encode_frame(OP_BINARY, env.error_frame(exc.code, exc.message, exc.retryable, rid, **exc.extra)))

    def _ok(self, conn: Connection, req: dict[str, Any], **fields: Any) -> None:
        conn.push(frame({"t": "ok", "id": env.request_id(req), **fields}))

    # ---- authentication -----------------------------------------------------------------------

    def _auth_frame(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        if not self._authenticate(conn, req.get("token"), env.request_id(req)):
            return None
        if "resume" in req:
            return self._guarded(conn, req, self._resume(conn, {"t": "resume", "id": env.request_id(req), "convs": req["resume"]}))
        return None

    def _auth_again(self, conn: Connection, req: dict[str, Any]) -> None:
        """A fresh token for the same user extends the connection past the old token's expiry."""
        try:
            identity = self.auth.verify(req.get("token"))
        except AuthError as exc:
            raise RequestError("bad_request", f"token refresh refused: {exc.code}: {exc.message}") from None
        old = conn.identity
        if (identity.tenant, identity.user, identity.role) != (old.tenant, old.user, old.role):
            raise RequestError("already_authenticated", "this connection is authenticated as another user")
        conn.identity = identity
        self._ok(conn, req, expires_at=identity.expires_at)

    def _authenticate(self, conn: Connection, token: object, rid: int | str | None) -> bool:
        try:
            identity = self.auth.verify(token)
        except AuthError as exc:
            self._refuse(conn, exc, rid)
            return False
        user_key = (identity.tenant, identity.user)
        if len(self.hub.connections_of(*user_key)) >= self.config.max_connections_per_user:
            log.warning("too many connections for user", extra={**conn.log_extra, "tenant": identity.tenant, "user": identity.user})
            conn.close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections for this user")
            return False
        conn.identity = identity
        conn.user_key = user_key
        self.preauth.release(conn.preauth_bytes)
        conn.preauth_bytes = 0
        if conn.decoder is not None:
            conn.decoder.set_limits(self.limits.max_frame_bytes, self.config.max_fragments)
            conn.decoder = None
        self.hub.add_connection(conn)
        self.stats.connections[identity.role] += 1
        if self.routing is not None:
            self.routing.on_connected(identity)
        log.debug("authenticated", extra=conn.log_extra)
        conn.push(frame(self._hello(conn, identity, rid)))
        return True

    def _refuse(self, conn: Connection, exc: AuthError, rid: int | str | None) -> None:
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

    # ---- conversation access ------------------------------------------------------------------

    async def _fetch(self, conv_id: str) -> tuple[Conversation, list[Participant]] | None:
        conv = await self.store.get_conversation(conv_id)
        if conv is None:
            return None
        return conv, await self.store.participants(conv_id)

    async def _state(self, conn: Connection, conv_id: str) -> ConvState:
        """The conversation, if it exists in the caller's tenant (else not_found, never forbidden:
        other tenants' ids are not revealed)."""
        state = self.hub.get(conv_id) or await self.hub.load(conv_id, self._fetch)
        if state is None or state.conv.tenant != conn.identity.tenant:
            raise RequestError("not_found", "no such conversation")
        return state

    def _check_member(self, conn: Connection, state: ConvState) -> None:
        if conn.identity.user not in state.members:
            if conn.identity.role == "shopper":  # a shopper may not learn that others' conversations exist
                raise RequestError("not_found", "no such conversation")
            raise RequestError("forbidden", "you are not a participant of this conversation: join it first")

    def _check_reader(self, conn: Connection, state: ConvState) -> None:
        """Participants read; a supervisor reads every conversation of the tenant."""
        if conn.identity.role != "supervisor":
            self._check_member(conn, state)

    @staticmethod
    def _conv_id(req: dict[str, Any]) -> str:
        conv_id = env.need_str(req, "conv", env.ID_CHARS)
        assert conv_id is not None
        return conv_id

    # ---- send ---------------------------------------------------------------------------------

    def _send(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        conv_id, cmid, body = env.send_fields(req, self.limits)
        if self.draining:
            raise RequestError("unavailable", "server restarting: resend after reconnecting")
        state = self.hub.get(conv_id)
        if state is None:
            return self._send_after_load(conn, req, conv_id, cmid, body)
        return self._submit_send(conn, req, state, cmid, body)

    async def _send_after_load(self, conn: Connection, req: dict[str, Any], conv_id: str, cmid: str, body: bytes) -> None:
        state = await self._state(conn, conv_id)
        pending = self._submit_send(conn, req, state, cmid, body)
        if pending is not None:
            await pending

    def _submit_send(self, conn: Connection, req: dict[str, Any], state: ConvState, cmid: str, body: bytes) -> Awaitable[None] | None:
        """Store a checked send (``body`` packed); its ``durable`` callback acks it to the sender and
        fans it out, in the order of the store's commits."""
        identity = conn.identity
        if state.conv.tenant != identity.tenant:
            raise RequestError("not_found", "no such conversation")
        if identity.user not in state.members or state.conv.status != OPEN:
            return self._resend_or_refuse(conn, req, state, cmid)
        rid = env.request_id(req)
        received = time.perf_counter()
        stats = self.stats
        conv_id = state.conv.id

        def durable(result: object) -> None:
            state.inflight -= 1
            if type(result) is not Appended:
                self._error(conn, _store_failure(result), rid)
                self.hub.release(state)
                return
            m = result.message
            conn.push(env.ack_frame(rid, conv_id, cmid, m.seq, m.ts, result.duplicate))
            stats.ack_latency.observe(time.perf_counter() - received)
            if result.duplicate:
                stats.messages_duplicate += 1
            else:
                stats.messages_accepted += 1
                self.bus.publish_message(conv_id, m.seq, env.message_frame(m), conn)
                if self.routing is not None:
                    self.routing.on_message(state, m)
            self.hub.release(state)

        state.inflight += 1
        self.store.submit(AppendMessage(conv_id, cmid, identity.user, identity.role, body), durable)
        if self.store.overloaded:
            return self.store.wait_capacity()
        return None

    async def _resend_or_refuse(self, conn: Connection, req: dict[str, Any], state: ConvState, cmid: str) -> None:
        """A send the conversation no longer takes (closed, or the sender left) may still be the
        resend of one stored before: that gets its original ack, as every resend does."""
        stored = await self.store.find_message(state.conv.id, conn.identity.user, cmid)
        if stored is not None:
            conn.push(env.ack_frame(env.request_id(req), stored.conv_id, cmid, stored.seq, stored.ts, True))
            self.stats.messages_duplicate += 1
            return
        self._check_member(conn, state)
        raise RequestError("conversation_closed", "the conversation is closed")

    # ---- bus handler: what every node does with committed events ------------------------------

    def on_message(self, conv_id: str, seq: int, frame_bytes: bytes, origin: Connection | None) -> None:
        started = time.perf_counter()
        self.stats.messages_delivered += self.hub.deliver(conv_id, seq, frame_bytes, origin)
        self.stats.fanout_latency.observe(time.perf_counter() - started)

    def on_event(self, conv_id: str, frame_bytes: bytes, skip_user: str | None) -> None:
        self.stats.events_delivered += self.hub.broadcast(conv_id, frame_bytes, skip_user)

    def on_conversation(self, conv: Conversation) -> None:
        state = self.hub.get(conv.id)
        if state is not None:
            state.conv = conv

    def on_membership(self, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        state = self.hub.get(conv_id)
        if state is None:
            conns = [c for c in self.hub.connections_of(tenant, user) if c.live]
            if joined and conns and self._nursery is not None:
                self._nursery.start_soon(self._subscribe_later, conv_id, conns)
            return
        if joined:
            state.members[user] = role
            for conn in self.hub.connections_of(tenant, user):
                if conn.live:
                    self.hub.subscribe(conn, state)
        else:
            state.members.pop(user, None)
            for conn in list(self.hub.connections_of(tenant, user)):
                self.hub.unsubscribe(conn, conv_id)

    async def _subscribe_later(self, conv_id: str, conns: list[Connection]) -> None:
        state = await self.hub.load(conv_id, self._fetch)
        if state is None:
            return
        for conn in conns:
            if not conn.closed and conn.identity.tenant == state.conv.tenant and conn.identity.user in state.members:
                self.hub.subscribe(conn, state)

    def _presence(self, conn: Connection, *, online: bool) -> None:
        identity = conn.identity
        for conv_id in list(conn.convs):
            payload = {"t": "presence", "conv": conv_id, "user": identity.user, "role": identity.role, "online": online}
            self.bus.publish_event(conv_id, frame(payload), identity.user)

    # ---- the other requests -------------------------------------------------------------------

    def _ping(self, conn: Connection, req: dict[str, Any]) -> None:
        conn.push(frame({"t": "pong", "id": env.request_id(req), "server_time": now_ms()}))

    def _typing(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        conv_id = self._conv_id(req)
        on = env.need_bool(req, "on")
        state = self.hub.get(conv_id)
        if state is None:
            return self._typing_after_load(conn, conv_id, on)
        self._announce_typing(conn, state, on)
        return None

    async def _typing_after_load(self, conn: Connection, conv_id: str, on: bool) -> None:
        self._announce_typing(conn, await self._state(conn, conv_id), on)

    def _announce_typing(self, conn: Connection, state: ConvState, on: bool) -> None:
        if conn.identity.tenant != state.conv.tenant:
            raise RequestError("not_found", "no such conversation")
        self._check_member(conn, state)
        user = conn.identity.user
        self.bus.publish_event(state.conv.id, frame({"t": "typing", "conv": state.conv.id, "user": user, "on": on}), user)

    def _receipt(self, conn: Connection, req: dict[str, Any]) -> Awaitable[None] | None:
        conv_id = self._conv_id(req)
        kind = env.need_choice(req, "kind", RECEIPT_KINDS)
        seq = env.need_int(req, "seq", minimum=1)
        state = self.hub.get(conv_id)
        if state is None:
            return self._receipt_after_load(conn, req, conv_id, kind, seq)
        self._submit_receipt(conn, req, state, kind, seq)
        return None

    async def _receipt_after_load(self, conn: Connection, req: dict[str, Any], conv_id: str, kind: str, seq: int) -> None:
        self._submit_receipt(conn, req, await self._state(conn, conv_id), kind, seq)

    def _submit_receipt(self, conn: Connection, req: dict[str, Any], state: ConvState, kind: str, seq: int) -> None:
        if state.conv.tenant != conn.identity.tenant:
            raise RequestError("not_found", "no such conversation")
        self._check_member(conn, state)
        if seq > state.last_seq:
            raise RequestError("bad_request", f"field `seq` is past the conversation's last message ({state.last_seq})")
        rid = env.request_id(req)
        user = conn.identity.user
        conv_id = state.conv.id

        def durable(result: object) -> None:
            state.inflight -= 1
            if type(result) is not Receipt:
                self._error(conn, _store_failure(result), rid)
            else:
                if state.receipts is None:
                    state.receipts = {}
                if result.seq == seq and state.receipts.get((user, kind), 0) < seq:  # raised: tell everybody, own devices too
                    state.receipts[(user, kind)] = seq
                    payload = {"t": "receipt", "conv": conv_id, "user": user, "kind": kind, "seq": seq}
                    self.bus.publish_event(conv_id, frame(payload), None)
                if rid is not None:
                    conn.push(frame({"t": "ok", "id": rid, "seq": result.seq}))
            self.hub.release(state)

        state.inflight += 1
        self.store.submit(SetReceipt(Receipt(conv_id, user, kind, seq)), durable)

    async def _open(self, conn: Connection, req: dict[str, Any]) -> None:
        identity = conn.identity
        if identity.role != "shopper":
            raise RequestError("forbidden", "only shoppers open conversations")
        subject = env.need_str(req, "subject", 200, optional=True, empty=True) or ""
        if self.draining:
            raise RequestError("unavailable", "server restarting")
        now = now_ms()
        conv = Conversation(new_conversation_id(), identity.tenant, identity.user, identity.channel, OPEN, now, subject)
        me = Participant(conv.id, identity.user, identity.role, now)
        conv = await self.store.execute(CreateConversation(conv, (me,)))
        state = self.hub.add(conv, [me])
        self.hub.subscribe(conn, state)  # live or not, the opener hears its conversation
        self.bus.publish_membership(conv.id, identity.tenant, identity.user, identity.role, True)  # and every live device
        log.info("conversation %s opened", conv.id, extra=conn.log_extra)
        if self.routing is not None:
            self.routing.on_opened(state, identity)
        self._ok(conn, req, conv=env.conversation_map(conv), participants=[env.participant_map(me)])

    async def _join(self, conn: Connection, req: dict[str, Any]) -> None:
        identity = conn.identity
        state = await self._state(conn, self._conv_id(req))
        if identity.user not in state.members:
            if identity.role == "shopper":
                raise RequestError("not_found", "no such conversation")
            if state.conv.status != OPEN:
                raise RequestError("conversation_closed", "the conversation is closed")
            await self.add_member(state, identity.user, identity.role, identity.name)
        self.hub.subscribe(conn, state)
        participants = await self.store.participants(state.conv.id)
        self._ok(conn, req, conv=env.conversation_map(replace(state.conv, last_seq=state.last_seq)), participants=[env.participant_map(p) for p in participants])

    async def _leave(self, conn: Connection, req: dict[str, Any]) -> None:
        identity = conn.identity
        state = await self._state(conn, self._conv_id(req))
        self._check_member(conn, state)
        if identity.user == state.conv.customer:
            raise RequestError("forbidden", "the customer cannot leave their conversation; close it instead")
        await self.remove_member(state, identity.user, identity.role)
        self._ok(conn, req)

    async def _close_conversation(self, conn: Connection, req: dict[str, Any]) -> None:
        state = await self._state(conn, self._conv_id(req))
        self._check_reader(conn, state)
        if state.conv.status != CLOSED:
            if self.routing is not None:
                await self.routing.close(state, conn.identity)
            else:
                await self.update_conversation(state, conn.identity.user, status=CLOSED)
        self._ok(conn, req, conv=env.conversation_map(state.conv))

    # ---- conversation changes shared with the routing service ----------------------------------

    async def add_member(self, state: ConvState, user: str, role: str, name: str) -> None:
        """Make ``user`` a participant (durably), subscribe their live devices, tell the others."""
        if user in state.members:
            return
        state.inflight += 1
        try:
            p = await self.store.execute(AddParticipant(Participant(state.conv.id, user, role, now_ms())))
        finally:
            state.inflight -= 1
        self.bus.publish_membership(state.conv.id, state.conv.tenant, user, role, True)
        notice = {"t": "joined", "conv": state.conv.id, "user": user, "role": role, "name": name, "ts": p.joined_at}
        self.bus.publish_event(state.conv.id, frame(notice), user)

    async def remove_member(self, state: ConvState, user: str, role: str) -> None:
        if user not in state.members:
            return
        state.inflight += 1
        try:
            await self.store.execute(RemoveParticipant(state.conv.id, user))
        finally:
            state.inflight -= 1
        notice = {"t": "left", "conv": state.conv.id, "user": user, "role": role, "ts": now_ms()}
        self.bus.publish_event(state.conv.id, frame(notice), None)
        self.bus.publish_membership(state.conv.id, state.conv.tenant, user, role, False)

    async def update_conversation(self, state: ConvState, by: str, **changes: str) -> Conversation:
        """Store status/stage/assignee/group changes and tell the participants (a ``conv`` frame)."""
        state.inflight += 1
        try:
            conv = await self.store.execute(SetStatus(state.conv.id, **changes))
        finally:
            state.inflight -= 1
        self.bus.publish_conversation(conv)
        self.bus.publish_event(conv.id, frame({"t": "conv", "conv": env.conversation_map(conv), "by": by}), None)
        self.hub.release(state)
        return conv

    async def post(self, state: ConvState, sender: str, role: str, body: dict[str, Any]) -> StoredMessage:
        """Append a message on behalf of the server (bot answers, lifecycle events) and deliver it
        like any other: durable first, then to every participant's connections."""
        state.inflight += 1
        try:
            result = await self.store.execute(AppendMessage(state.conv.id, f"srv-{secrets.token_hex(8)}", sender, role, env.pack(body)))
        finally:
            state.inflight -= 1
        m = result.message
        self.stats.messages_accepted += 1
        self.bus.publish_message(state.conv.id, m.seq, env.message_frame(m), None)
        self.hub.release(state)
        return m

    def push_to_user(self, tenant: str, user: str, payload: dict[str, Any]) -> int:
        """Send a frame to every local connection of a user (assignment offers, queue snapshots)."""
        data = frame(payload)
        conns = self.hub.connections_of(tenant, user)
        for conn in conns:
            conn.push(data)
        return len(conns)

    async def conversation(self, conv_id: str) -> ConvState | None:
        return self.hub.get(conv_id) or await self.hub.load(conv_id, self._fetch)

    async def _list(self, conn: Connection, req: dict[str, Any]) -> None:
        identity = conn.identity
        limit = env.need_int(req, "limit", optional=True, minimum=1) or 50
        limit = min(limit, MAX_LIST)
        before = env.need_int(req, "before", optional=True)
        before_id = None
        cursor = env.need_str(req, "cursor", 200, optional=True)
        if cursor is not None:  # "<created_at>.<id>" of the last conversation of the previous page
            at, _, before_id = cursor.partition(".")
            if not at.isdigit() or not before_id:
                raise RequestError("bad_request", "field `cursor` must be a `next` value from a previous `list` reply")
            before = int(at)
        status = req.get("status")
        if status is not None and status not in (OPEN, CLOSED):
            raise RequestError("bad_request", "field `status` must be one of open, closed")
        mine = env.need_optional_bool(req, "mine")
        everyone = identity.role == "supervisor" and not mine
        convs = await self.store.list_conversations(
            identity.tenant, user=None if everyone else identity.user, status=status, before=before, before_id=before_id, limit=limit + 1
        )
        page, more = convs[:limit], len(convs) > limit
        cursor_next = f"{page[-1].created_at}.{page[-1].id}" if more else None
        self._ok(conn, req, convs=[env.conversation_map(c) for c in page], more=more, next=cursor_next)

    async def _history(self, conn: Connection, req: dict[str, Any]) -> None:
        state = await self._state(conn, self._conv_id(req))
        self._check_reader(conn, state)
        after = env.need_int(req, "after", optional=True) or 0
        before = env.need_int(req, "before", optional=True, minimum=1)
        limit = min(env.need_int(req, "limit", optional=True, minimum=1) or self.limits.history_page, self.limits.history_page)
        page = await self.store.read_messages(state.conv.id, after=after, before=before, limit=limit)
        # One reply must not make its reader a slow consumer: past a byte budget, keep the messages
        # nearest the cursor the client pages from and say there is more.
        backwards = before is not None and not after
        kept: list[StoredMessage] = []
        more, size, budget = page.more, 0, self.config.max_outbox_bytes // 4
        for m in reversed(page.messages) if backwards else page.messages:
            size += len(m.body) + 128
            if size > budget and kept:
                more = True
                break
            kept.append(m)
        messages = kept[::-1] if backwards else kept
        receipts = [{"user": r.user, "kind": r.kind, "seq": r.seq} for r in await self.store.receipts(state.conv.id)]
        self._ok(conn, req, conv=state.conv.id, messages=[env.message_map(m) for m in messages], more=more, receipts=receipts)

    async def _resume(self, conn: Connection, req: dict[str, Any]) -> None:
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
        mine = await self.store.list_conversations(identity.tenant, user=identity.user, status=OPEN, limit=MAX_RESUME_CONVS)
        for conv in mine:
            if conv.id not in cursors:
                state = self.hub.get(conv.id) or await self.hub.load(conv.id, self._fetch)
                if state is not None and not conn.closed:
                    self.hub.subscribe(conn, state)
        resumed: dict[str, Any] = {}
        for conv_id, last in cursors.items():
            try:
                state = await self._state(conn, conv_id)
                self._check_reader(conn, state)
            except RequestError as exc:
                resumed[conv_id] = {"error": exc.code}
                continue
            if last > state.last_seq:  # never silently skip what will be stored under these seqs
                resumed[conv_id] = {"error": "cursor_ahead", "last_seq": state.last_seq}
                continue
            resumed[conv_id] = await self._catch_up(conn, state, last)
        if first_live:
            self._presence(conn, online=True)
        self._ok(conn, req, resumed=resumed)

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
                page = await self.store.read_messages(conv_id, after=after, limit=CATCHUP_PAGE)
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
        return {"sent": sent, "complete": complete, "last_seq": state.last_seq}


def _store_failure(result: object) -> RequestError:
    if isinstance(result, NotFound):
        return RequestError("not_found", "no such conversation")
    if isinstance(result, StoreDamaged):
        log.error("store damaged: %s", result)
        return RequestError("storage_damaged", "the server's storage is damaged; an operator has been alerted")
    log.warning("store failure: %s", result)
    return RequestError("unavailable", "storage unavailable: retry with the same cmid")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock

