"""The WebSocket server: listener, accept loop, HTTP upgrade, one reader per connection, heartbeat.

It owns sockets and timers and nothing else: every binary message goes to the request handlers
(``ws_handlers.RequestHandlers``), which own what a request means. Quiet connections are parked
(``connection.ParkingLot``) and woken on input.
"""

from __future__ import annotations

import errno
import itertools
import logging
import secrets
import socket
import time
from typing import Any, Awaitable

import h11
import trio
from trio.lowlevel import wait_readable

from ..config import Config
from ..http.health import Check
from ..logs import PEER_LINES, escape
from ..metrics import Stats
from ..protocol.admission import PreAuthBudget
from ..protocol.connect_limit import ConnectLimit, retry_after_s
from ..protocol.errors import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER
from ..protocol.frames import OP_PING, FrameDecoder, FrameError, encode_frame
from . import handshake
from .connection import RECV_BYTES, Connection, ParkingLot, Writer, decode_chunk, dispatch, finish, read_frames
from .ws_handlers import RequestHandlers

log = logging.getLogger("kefu.server")

PING_FRAME = encode_frame(OP_PING, b"")
# What accept() may fail with: out of descriptors or memory (pause, then accept again), or the one
# pending connection failed before it was taken (skip it) — the errno names trio's own listener uses.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_IGNORABLE_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
        "EOPNOTSUPP", "ENETUNREACH",
    ) if hasattr(errno, name)
)
PREAUTH_MAX_FRAGMENTS = 8  # frames one message may come in before authentication
BUSY_RESPONSE = (  # to a connection refused before anything of it is read
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\nConnection: close\r\n\r\nserver busy\n"
)
CONNECT_RATE_BODY = b"too many new connections from this address\n"


def connect_rate_response(retry_after: int) -> bytes:
    """The answer to a connection over its address's rate, sent before anything of it is read."""
    return (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: %d\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (retry_after, len(CONNECT_RATE_BODY), CONNECT_RATE_BODY)
    )


class WebSocketServer:
    def __init__(self, config: Config, stats: Stats, handlers: RequestHandlers, preauth: PreAuthBudget) -> None:
        """``preauth``: what connections may send before they authenticate (shared with the
        request handlers, which release a connection's share when it authenticates)."""
        self.config = config
        self.stats = stats
        self.handlers = handlers
        self.preauth = preauth
        self.connect_limit = ConnectLimit(config.connect_rate_per_address, config.connect_burst_per_address, config.connect_addresses)
        stats.connect_addresses = lambda: len(self.connect_limit.table)
        handlers.on_abuse = self._strike
        self.burst = float(config.limits.rate_burst)
        self.max_frame_bytes = config.limits.max_frame_bytes
        self.writer = Writer(stats, config.max_outbox_bytes)
        self.lot = ParkingLot(self._resume_reader, config.park_after_s, self._parked_input)
        self.parking = config.park_after_s > 0 and ParkingLot.available
        self.connections: set[Connection] = set()
        self.sessions: dict[str, Connection] = {}  # the same connections by id (a message's origin)
        self.ready = False  # answers upgrades (else 503: starting or draining)
        self.checks: list[Check] = []  # the shared store's and bus's health, for /readyz (set by the node)
        self.port = 0
        self.nursery: trio.Nursery | None = None  # the connections' readers, while serving
        self._allowed_origins = config.csv("allowed_origins")
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._accepting: trio.CancelScope | None = None
        self._closed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until ``close_connections`` has finished; ``task_status`` gets the port."""
        listener = listen(self.config.host, self.config.port, reuse_port=self.config.workers > 1)
        self.port = listener.getsockname()[1]
        async with trio.open_nursery() as system:
            await system.start(self.writer.run)
            if self.parking:
                await system.start(self.lot.run)
            system.start_soon(self._heartbeat)
            async with trio.open_nursery() as connections:
                self.nursery = connections
                self._accepting = trio.CancelScope()
                connections.start_soon(self._accept_loop, listener, connections, self._accepting)
                task_status.started(self.port)
                await self._closed.wait()
                connections.cancel_scope.cancel()
            system.cancel_scope.cancel()

    def stop_accepting(self) -> None:
        self.ready = False
        if self._accepting is not None:
            self._accepting.cancel()

    async def close_connections(self, code: int, reason: str, timeout_s: float) -> None:
        """Close every connection with ``code``, wait up to ``timeout_s`` for them to finish,
        then stop serving (``run`` returns)."""
        for conn in list(self.connections):
            conn.close(code, reason)
        with trio.move_on_after(timeout_s):
            while self.connections:
                await trio.sleep(0.01)
        self._closed.set()

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
                            if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                                log.error("accept failed: %s; pausing accepts", exc)
                                self.stats.handshakes_failed["fd_limit"] += 1
                                await trio.sleep(0.1)
                                break
                            if exc.errno in ACCEPT_IGNORABLE_ERRNOS:  # that one connection failed
                                self.stats.handshakes_failed["accept_error"] += 1
                                continue
                            raise
                        sock.setblocking(False)
                        wait = self.connect_limit.admit(addr[0], time.monotonic()) if self.connect_limit.rate else 0.0
                        if wait:
                            self._refuse_connect_rate(sock, addr[0], wait)
                            continue
                        if not self.preauth.admit():
                            self._refuse_busy(sock)
                            continue
                        try:
                            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        except OSError:  # reset by the peer between accept and here
                            sock.close()
                            continue
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

    def _refuse_connect_rate(self, sock: socket.socket, host: str, wait: float) -> None:
        """A new connection over its address's rate: 429 with Retry-After, nothing of it parsed."""
        self.stats.refused["connect_rate"] += 1
        self.stats.handshakes_failed["connect_rate"] += 1
        more = PEER_LINES.allow()
        if more is not None:
            log.warning(
                "new connections from %s over %g/s (strikes %d): refused 429%s",
                escape(host), self.connect_limit.rate, self.connect_limit.strikes(host), more,
            )
        try:
            sock.send(connect_rate_response(retry_after_s(wait)))
            sock.recv(4096)  # what already came, so that closing does not reset before the answer is read
        except OSError:
            pass
        sock.close()

    def _strike(self, conn: Connection, reason: str) -> None:
        """``conn`` is closed for abuse: a strike against its address (``ConnectLimit``)."""
        self.stats.address_strikes[reason] += 1
        self.connect_limit.strike(conn.peer.rsplit(":", 1)[0], time.monotonic())

    async def _heartbeat(self) -> None:
        """One task for every connection's timers: ping the quiet, close the idle, and those whose
        session says authentication is overdue (no token in time, or the token expired), and those
        whose frame under way takes longer than the frame timeout."""
        cfg = self.config
        tick = max(0.05, min(cfg.heartbeat_s, cfg.idle_timeout_s, cfg.handshake_timeout_s, cfg.frame_timeout_s) / 4)
        while True:
            await trio.sleep(tick)
            conns = list(self.connections)
            for start in range(0, len(conns), HEARTBEAT_SLICE):
                # a slice at a time: 15,000 connections checked at once would stall every message
                # behind them for tens of milliseconds
                if start:
                    await trio.sleep(0)
                self._check_timers(conns[start : start + HEARTBEAT_SLICE], time.monotonic(), time.time())

    def _check_timers(self, conns: list[Connection], now: float, wall: float) -> None:
        cfg = self.config
        for conn in conns:
            if conn.closed:  # finished while the heartbeat let other tasks run
                continue
            quiet = now - conn.last_recv
            if conn.partial_since and now - conn.partial_since > cfg.frame_timeout_s:
                self.stats.refused["frame_timeout"] += 1
                log.info("frame not completed within %.0f s, closing", cfg.frame_timeout_s, extra=conn.log_extra)
                conn.close(CLOSE_POLICY_VIOLATION, "frame not completed in time")
                self._strike(conn, "frame_timeout")
                continue
            overdue = conn.overdue(now, wall, conn.created, cfg.handshake_timeout_s)
            if overdue is not None:
                self.handlers.refuse(conn, overdue, None)
            elif conn.identity is None:
                continue
            elif quiet > cfg.idle_timeout_s:
                log.info("idle timeout after %.0f s", quiet, extra=conn.log_extra)
                conn.close(CLOSE_GOING_AWAY, "idle timeout")
            elif quiet > cfg.heartbeat_s and now - conn.last_ping > cfg.heartbeat_s:
                conn.last_ping = now
                conn.push(PING_FRAME)

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
        conn = Connection(sock, f"{self._prefix}-{next(self._ids)}", peer, self.writer, self.lot if self.parking else None)
        conn.created = accepted  # one handshake timeout for the upgrade and the authentication together
        conn.preauth_bytes = charged[0]
        conn.tokens = self.burst  # every frame counts, from the first
        self.connections.add(conn)
        self.sessions[conn.id] = conn
        self.stats.connections_opened += 1
        if token is not None:
            try:
                self.handlers.authenticate(conn, token, None)
            except Exception:
                log.exception("connection failed", extra=conn.log_extra)
                conn.close(CLOSE_INTERNAL_ERROR, "internal error")
            token = None
        await self._read(conn, data)

    def _decoder(self, conn: Connection) -> Any:
        cfg = self.config
        if conn.identity is None:  # small limits until it authenticates (then raised by the handlers)
            decoder = conn.decoder = FrameDecoder(min(self.max_frame_bytes, cfg.max_preauth_bytes), max_fragments=min(PREAUTH_MAX_FRAGMENTS, cfg.max_fragments))
            return decoder
        return FrameDecoder(self.max_frame_bytes, max_fragments=cfg.max_fragments)

    async def _read(
        self,
        conn: Connection,
        data: bytes = b"",
        decoder: Any = None,
        pending: Awaitable[None] | None = None,
        messages: list[tuple[int, bytes]] | None = None,
        start: int = 0,
    ) -> None:
        """A connection's reader task, from its upgrade or from the parking lot, until it closes
        (then it is forgotten and finished here) or is parked again (then it lives on). ``decoder``,
        ``pending``, ``messages``, ``start``: a chunk the lot began to serve (``_parked_input``)."""
        parked = False
        handlers = self.handlers
        decoder = decoder or self._decoder(conn)
        try:
            parked = await read_frames(
                conn, decoder, data, handlers.on_frame, handlers.on_text, self.stats,
                handlers.on_control, self._on_preauth_input, pending=pending, messages=messages, start=start,
            )
        except Exception:
            log.exception("connection failed", extra=conn.log_extra)
            conn.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            if not parked:
                if conn.closing:
                    self._strike_frame_error(conn, decoder)
                self._forget(conn)
                with trio.CancelScope(shield=True):
                    await finish(conn)

    def _parked_input(self, conn: Connection) -> None:
        """The parking lot's callback for a parked connection with input. Whole messages that
        need no waiting are served here, in the lot's task, and the connection stays parked: no
        reader task is started and no socket changes epoll set (in chat traffic most messages
        arrive on a parked connection). Anything else gets a reader task, handed what was read."""
        if conn.identity is None or conn.closing:
            self.stats.parked_inputs["reader"] += 1
            self.lot.unpark(conn)
            return
        try:
            data = conn.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:  # the reader meets the error (or the end) again and finishes the connection
            self.stats.parked_inputs["reader"] += 1
            self.lot.unpark(conn)
            return
        if not data:
            self.stats.parked_inputs["reader"] += 1
            self.lot.unpark(conn)
            return
        conn.last_recv = time.monotonic()
        handlers = self.handlers
        try:
            decoder = self._decoder(conn)
            messages = decode_chunk(conn, decoder, data, self.stats)
            if messages is None:  # a frame error: closing (close() unparked it for a reader)
                self._strike_frame_error(conn, decoder)
                return
            pending, start = dispatch(conn, messages, 0, handlers.on_frame, handlers.on_text, self.stats, handlers.on_control)
        except Exception:
            log.exception("connection failed", extra=conn.log_extra)
            conn.close(CLOSE_INTERNAL_ERROR, "internal error")
            return
        assert self.nursery is not None
        if not conn.parked:  # closed meanwhile: close() started a reader, which finishes it
            if pending is not None:  # what the request started still completes (as in a reader)
                self.nursery.start_soon(_completion, pending)
            return
        if pending is None and start >= len(messages) and decoder.at_rest:
            self.stats.parked_inputs["served"] += 1
            return
        self.stats.parked_inputs["reader"] += 1
        self.lot.leave(conn)
        self.nursery.start_soon(self._read, conn, b"", decoder, pending, messages, start)

    def _strike_frame_error(self, conn: Connection, decoder: FrameDecoder) -> None:
        """A connection closed for a message in too many fragments is closed for abuse (a failed
        decoder raises its error again when fed)."""
        try:
            decoder.feed(b"")
        except FrameError as exc:
            if exc.code == CLOSE_POLICY_VIOLATION:
                self._strike(conn, "too_many_fragments")

    def _forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.sessions.pop(conn.id, None)
        if conn.error_counts is not None:
            repeated = {code: n for code, n in conn.error_counts.items() if n > 1}
            if repeated and PEER_LINES.allow() is not None:
                log.info("errors sent on this connection: %s", ", ".join(f"{c} x{n}" for c, n in sorted(repeated.items())), extra=conn.log_extra)
        if conn.identity is None:
            self.preauth.release(conn.preauth_bytes)
            conn.preauth_bytes = 0
            return
        self.handlers.forget(conn)

    def _on_preauth_input(self, conn: Connection, n: int) -> bool:
        """Charge a chunk read before authentication; refuse a connection past its or the total budget."""
        refused = self.preauth.charge(conn.preauth_bytes, n)
        if refused is None:
            conn.preauth_bytes += n
            return True
        self.stats.refused[refused] += 1
        if PEER_LINES.allow() is not None:
            log.info("input before authentication refused: %s", refused, extra=conn.log_extra)
        if refused == PreAuthBudget.TOTAL:
            conn.close(CLOSE_TRY_AGAIN_LATER, "server busy: retry later")
        else:
            conn.close(CLOSE_POLICY_VIOLATION, "too much input before authentication")
            self._strike(conn, refused)
        return False

    def _resume_reader(self, conn: Connection) -> None:
        """The parking lot's callback: input (or a close) for a parked connection."""
        assert self.nursery is not None
        try:
            self.nursery.start_soon(self._read, conn)
        except RuntimeError:  # the server has stopped serving connections: no reader to finish it
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
        decision = handshake.decide(request, self._allowed_origins, self.ready, self.checks)
        limit = self.config.max_connections
        if isinstance(decision, handshake.Upgrade) and limit and len(self.connections) >= limit:
            decision = handshake.Refuse(503, "connection limit reached")
        leftover = await handshake.respond(sock, http, decision)
        if isinstance(decision, handshake.Refuse):
            if decision.status >= 400:
                self.stats.handshakes_failed[str(decision.status)] += 1
            return None, b""
        return decision, leftover


async def _completion(pending: Awaitable[None]) -> None:
    try:
        await pending
    except Exception:
        log.exception("request of a closing connection failed")


HEARTBEAT_SLICE = 1000  # connections the heartbeat checks before it lets other tasks run


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; ``reuse_port``: several worker processes bind the same port and the
    kernel spreads new connections over them (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock
