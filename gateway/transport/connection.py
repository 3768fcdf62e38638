"""One WebSocket connection's socket I/O: a reader loop, a bounded outbox, coalesced writes.

Each connection has exactly one task, its reader. Nothing is written from that task per frame:
``push`` appends ready frame bytes to the outbox and marks the connection dirty; the node's single
``Writer`` task then joins every connection's queued frames into one ``send`` (after a whole read
chunk or a whole fan-out has been processed). Only a connection whose socket buffer is full gets a
drain task of its own, until it has caught up. Past ``max_outbox_bytes`` a connection is a slow
consumer: its outbox is dropped and it is closed with CLOSE_SLOW_CONSUMER (it resumes from the store).

A connection quiet for a while is *parked*: its reader task ends, and the node's ``ParkingLot``
watches its socket in an epoll set of its own. A waiting task with its chain of suspended frames is
about half of what an idle connection costs (~3 KB); a parked one costs its ``Connection`` and
socket. Input for a parked connection is served by the lot's task itself when it is whole messages
that need no waiting (a quiet shopper's next message, a pong): the connection stays parked, and
waking it costs no task and no epoll re-registration. Anything else (a close, a request that
waits, a frame cut across reads) gets a new reader task.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections import deque
from typing import Any, Awaitable, Callable

import trio
from trio.lowlevel import notify_closing, wait_readable, wait_writable

from ..logs import PEER_LINES
from ..metrics import Stats
from ..protocol.errors import CLOSE_SLOW_CONSUMER
from ..protocol.session import Session
from ..protocol.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, FrameError, encode_close, encode_frame, parse_close_payload

log = logging.getLogger("kefu.connection")

RECV_BYTES = 256 * 1024
PREAUTH_RECV_BYTES = 16 * 1024  # smaller reads before authentication: what a peer makes us hold
CLOSE_WAIT_S = 1.0  # how long a closing connection may take to flush its close frame
# What a closing connection's input may still be read, waiting for the peer's close: a client
# answers our close frame at once, so past this the peer is flooding and the socket is just closed.
FINISH_DRAIN_BYTES = 4096


class Connection(Session):
    """Socket, outbox and subscriptions; the protocol session state (authentication, rate budget)
    is the ``Session`` it extends."""

    __slots__ = (
        "sock", "id", "peer", "writer", "outbox", "outbox_bytes", "blocked", "closing", "closed",
        "created", "last_recv", "last_ping", "convs", "guards", "lot", "parked", "park_requested",
        "preauth_bytes", "decoder", "partial_since", "error_counts",
    )

    def __init__(self, sock: socket.socket, conn_id: str, peer: str, writer: Writer, lot: ParkingLot | None = None) -> None:
        Session.__init__(self)
        self.sock = sock
        self.id = conn_id
        self.peer = peer
        self.writer = writer
        self.outbox: list[bytes] = []
        self.outbox_bytes = 0
        self.blocked = False  # a drain task owns the socket's write side
        self.closing = False  # a close frame is queued: nothing more is queued
        self.closed = False  # the reader has finished
        self.created = self.last_recv = self.last_ping = time.monotonic()
        self.convs: list[str] = []  # conversations delivered to this connection (a list: 150 B less than a set)
        self.guards: dict[str, int] = {}  # conv -> highest seq already sent by a resume
        self.token_time = self.created
        self.preauth_bytes = 0  # bytes received before authenticating, charged to the PreAuthBudget
        self.decoder: Any = None  # the frame decoder, until authentication raises its limits
        self.partial_since = 0.0  # when the decoder last left rest (a frame or message under way)
        self.error_counts: dict[str, int] | None = None  # error codes sent, for one log line each
        self.lot = lot  # where the connection is parked when quiet (None: never parked)
        self.parked = False  # no reader task: the lot watches the socket
        self.park_requested = False  # the reader parks when its wait for input is interrupted

    @property
    def log_extra(self) -> dict[str, str]:
        """Context for log lines, built when a line is logged (not kept: memory per idle connection)."""
        extra = {"conn": self.id, "peer": self.peer}
        if self.identity is not None:
            extra.update(tenant=self.identity.tenant, user=self.identity.user, role=self.identity.role)
        return extra

    def push(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; it is written with everything else queued."""
        if self.closing:
            return
        outbox = self.outbox
        if not outbox and not self.blocked:
            self.writer.mark(self)
        outbox.append(frame)
        self.outbox_bytes += len(frame)
        if self.outbox_bytes > self.writer.max_outbox_bytes:
            self.writer.stats.slow_consumer_disconnects += 1
            log.warning("slow consumer: %d bytes queued, closing", self.outbox_bytes, extra=self.log_extra)
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer", discard=True)

    def close(self, code: int, reason: str = "", *, discard: bool = False) -> None:
        """Queue a close frame (after what is queued, unless ``discard``) and stop the reader.
        Callable from any task; ``finish`` then flushes, waits for the peer's close and closes."""
        if self.closing:
            return
        if discard:
            # Keep a partly written head: cutting a frame short would corrupt the stream.
            self.outbox = self.outbox[:1] if self.blocked else []
            self.outbox_bytes = sum(len(b) for b in self.outbox)
        self.push(encode_close(code, reason))
        self.closing = True
        self.writer.stats.closes[code] += 1
        # Wake the reader if it waits for input (it sees ``closing`` and stops). A drain task
        # waiting to write wakes too and simply waits again. Cheaper than a cancel scope per
        # connection, which would cost idle connections memory.
        notify_closing(self.sock)
        if self.parked:  # no reader to wake: the lot starts one, which finishes the connection
            assert self.lot is not None
            self.lot.unpark(self)

    def request_park(self) -> None:
        """Ask the reader to park the connection once it waits for input (``ParkingLot.park``)."""
        if not (self.parked or self.closing or self.park_requested):
            self.park_requested = True
            notify_closing(self.sock)  # the reader's wait_readable raises ClosedResourceError


class ParkingLot:
    """Quiet connections without a reader task: one epoll set, watched by one task, that starts a
    reader again (``resume(conn)``) for each socket that becomes readable or is closed.

    Which connections are quiet: every reader that starts waiting for input says so (``waiting``,
    a deque append); a sweep every ``park_after_s / 2`` takes the waits older than ``park_after_s``
    and asks the connections that have received nothing since to park. No timer per connection,
    no scan of every connection."""

    available = hasattr(select, "epoll")  # Linux; elsewhere connections are simply never parked

    def __init__(
        self, resume: Callable[[Connection], None], park_after_s: float, on_input: Callable[[Connection], None] | None = None
    ) -> None:
        """``resume(conn)`` starts a reader task for ``conn``; ``on_input(conn)``, when given, is
        called instead of ``unpark`` for a parked connection with input: it may serve the input
        itself and leave the connection parked (``ParkingLot`` only watches)."""
        self._resume = resume
        self._on_input = on_input
        self.park_after_s = park_after_s
        self._epoll: select.epoll | None = None  # while run() runs
        self._parked: dict[int, Connection] = {}
        self._waits: deque[tuple[float, Connection]] = deque()

    def waiting(self, conn: Connection) -> None:
        """``conn``'s reader waits for input, with nothing received since ``conn.last_recv``."""
        self._waits.append((conn.last_recv, conn))

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, conn: Connection) -> None:
        assert self._epoll is not None, "parking before ParkingLot.run"
        fd = conn.sock.fileno()
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        self._parked[fd] = conn
        conn.parked = True

    def unpark(self, conn: Connection) -> None:
        """Hand a parked connection back to a new reader task."""
        if self.leave(conn):
            self._resume(conn)

    def leave(self, conn: Connection) -> bool:
        """Stop watching ``conn`` (the caller gives it a reader); False if it was not parked."""
        fd = conn.sock.fileno()
        if self._parked.pop(fd, None) is None:
            return False
        if self._epoll is not None:
            self._epoll.unregister(fd)
        conn.parked = False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        epoll = self._epoll = select.epoll()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep)
                task_status.started()
                while True:
                    await wait_readable(epoll)
                    on_input = self._on_input or self.unpark
                    for fd, _ in epoll.poll(0, 256):
                        conn = self._parked.get(fd)
                        if conn is not None:
                            on_input(conn)
        finally:
            self._epoll = None
            notify_closing(epoll)
            epoll.close()

    async def _sweep(self) -> None:
        waits, park_after = self._waits, self.park_after_s
        while True:
            await trio.sleep(park_after / 2)
            horizon = time.monotonic() - park_after
            asked = 0
            while waits and waits[0][0] <= horizon:
                since, conn = waits.popleft()
                if conn.last_recv == since:  # nothing received since it began to wait
                    conn.request_park()
                    asked += 1
                    if asked % 1000 == 0:  # thousands at once (after a storm): let messages through
                        await trio.sleep(0)


class Writer:
    """The node's one write task: flushes every dirty connection's outbox with one send each.

    Under load that task runs after a whole batch of readers and completions, so each connection
    gets one ``send`` for everything queued for it meanwhile. When it is quiet, waking the task is
    a hop that costs more than the ``send``: a reader that got one message, and the store's pass
    of completions, ``hold()`` the writer while they work and ``release()`` it after, which writes
    what they queued right there."""

    def __init__(self, stats: Stats, max_outbox_bytes: int) -> None:
        self.stats = stats
        self.max_outbox_bytes = max_outbox_bytes
        self._dirty: list[Connection] = []
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._holds = 0

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if len(self._dirty) == 1 and not self._holds:
            self._wake.set()

    def hold(self) -> None:
        """Queue what is pushed from now on without waking the write task (until ``release``)."""
        self._holds += 1

    def release(self) -> None:
        """End a ``hold``: write every dirty connection's outbox now."""
        self._holds -= 1
        if not self._holds and self._dirty:
            self.flush_dirty()

    def flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            if conn.outbox and not conn.blocked:
                self.flush(conn)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                self.flush_dirty()

    def flush(self, conn: Connection) -> None:
        outbox = conn.outbox
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        self.stats.frames_out += len(outbox)
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # peer gone: the reader sees it too and cleans up
            outbox.clear()
            conn.outbox_bytes = 0
            return
        self.stats.bytes_out += sent
        if sent == len(data):
            outbox.clear()
            conn.outbox_bytes = 0
            return
        conn.outbox = [memoryview(data)[sent:]]  # type: ignore[list-item]
        conn.outbox_bytes = len(data) - sent
        conn.blocked = True
        assert self._nursery is not None
        self._nursery.start_soon(self._drain, conn)

    async def _drain(self, conn: Connection) -> None:
        """Write a connection's outbox as its socket accepts it; frames queued meanwhile join in."""
        try:
            while conn.outbox and not conn.closed:
                try:
                    await wait_writable(conn.sock)
                except trio.ClosedResourceError:  # close() woke the reader; the close frame is still to go
                    continue
                outbox = conn.outbox
                data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
                try:
                    sent = conn.sock.send(data)
                except BlockingIOError:
                    continue
                self.stats.bytes_out += sent
                self.stats.frames_out += len(outbox) - 1
                conn.outbox = [memoryview(data)[sent:]] if sent < len(data) else []  # type: ignore[list-item]
                conn.outbox_bytes = len(data) - sent
        except OSError:
            conn.outbox = []
            conn.outbox_bytes = 0
        finally:
            conn.blocked = False


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` completely, waiting for the socket as needed (handshake and close paths)."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await wait_writable(sock)
            continue
        view = view[sent:]


async def read_frames(
    conn: Connection,
    decoder: Any,
    data: bytes,
    on_message: Callable[[Connection, bytes], Awaitable[None] | None],
    on_text: Callable[[Connection], None],
    stats: Stats,
    on_control: Callable[[Connection], bool] | None = None,
    on_preauth_input: Callable[[Connection, int], bool] | None = None,
    *,
    pending: Awaitable[None] | None = None,
    messages: list[tuple[int, bytes]] | None = None,
    start: int = 0,
) -> bool:
    """Read until the peer or the server closes (``data``: bytes already received): feed the frame
    decoder with every chunk and hand each binary message to ``on_message`` (awaited only when it
    returns an awaitable); text messages, which kefu.v1 does not use, to ``on_text``.

    Returns True when the connection was parked instead (``Connection.request_park`` while this
    waited for input with the decoder at rest): the caller's task ends, the connection lives on.

    ``on_control(conn)`` is asked before a ping is answered (False: drop it, the peer floods);
    ``on_preauth_input(conn, n)`` is asked for every chunk read before authentication (False: the
    connection was refused and is closing). ``pending``, ``messages`` and ``start``: where
    ``dispatch`` stopped in a chunk the parking lot began to serve (this awaits ``pending``, then
    goes on from ``messages[start]``)."""
    sock = conn.sock
    if data:
        messages, start = decode_chunk(conn, decoder, data, stats), 0
        if messages is None:
            return False
    while True:
        while True:
            if pending is not None:
                await pending
                pending = None  # a finished coroutine kept alive costs an idle connection ~300 B
            if conn.closing:
                return False
            if messages is None or start >= len(messages):
                break
            pending, start = dispatch(conn, messages, start, on_message, on_text, stats, on_control)
        messages = data = None  # nothing of this chunk stays referenced while idle
        if conn.park_requested:  # asked while this task was busy: park now
            if _park(conn, decoder):
                return True
        if conn.lot is not None:
            conn.lot.waiting(conn)
        try:
            await wait_readable(sock)
        except trio.ClosedResourceError:  # close() or request_park() from another task
            if conn.closing:
                return False
            if _park(conn, decoder):
                return True
            continue  # in the middle of a message: stay
        try:
            data = sock.recv(RECV_BYTES if conn.identity is not None else PREAUTH_RECV_BYTES)
        except BlockingIOError:
            continue
        except OSError:
            return False
        if not data:
            return False
        conn.last_recv = time.monotonic()
        if conn.identity is None and on_preauth_input is not None and not on_preauth_input(conn, len(data)):
            return False
        messages, start = decode_chunk(conn, decoder, data, stats), 0
        if messages is None:
            return False


def decode_chunk(conn: Connection, decoder: Any, data: bytes, stats: Stats) -> list[tuple[int, bytes]] | None:
    """Feed a received chunk to ``conn``'s frame decoder: the messages it completes, or None after
    a frame error (the connection is closing with the error's code)."""
    stats.bytes_in += len(data)
    try:
        messages = decoder.feed(data)
    except FrameError as exc:
        stats.refused[FRAME_ERROR_REASONS.get(exc.code, "protocol_error")] += 1
        if PEER_LINES.allow() is not None:
            log.info("protocol error %d: %s", exc.code, exc.reason, extra=conn.log_extra)
        conn.close(exc.code, exc.reason)
        return None
    # A frame or message under way must complete within the frame timeout (heartbeat).
    if decoder.at_rest:
        conn.partial_since = 0.0
    elif not conn.partial_since:
        conn.partial_since = conn.last_recv
    return messages


def dispatch(
    conn: Connection,
    messages: list[tuple[int, bytes]],
    start: int,
    on_message: Callable[[Connection, bytes], Awaitable[None] | None],
    on_text: Callable[[Connection], None],
    stats: Stats,
    on_control: Callable[[Connection], bool] | None = None,
) -> tuple[Awaitable[None] | None, int]:
    """Hand ``messages[start:]`` to their handlers in order, until one returns an awaitable or the
    connection closes. Returns that awaitable (or None) and the index of the next message.

    A chunk of one message is the quiet case: what it causes is written at once (``Writer.hold``)."""
    end = len(messages)
    writer = conn.writer if end == 1 else None
    for i in range(start, end):
        if conn.closing:
            return None, end
        opcode, payload = messages[i]
        if opcode == OP_BINARY:
            stats.frames_in += 1
            if writer is None:
                pending = on_message(conn, payload)
            else:
                writer.hold()
                try:
                    pending = on_message(conn, payload)
                finally:
                    writer.release()
            if pending is not None:
                return pending, i + 1
        elif opcode == OP_PING:
            if on_control is None or on_control(conn):
                conn.push(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            _answer_close(conn, payload)
            return None, end
        elif opcode == OP_PONG:
            if on_control is not None:
                on_control(conn)
        else:
            stats.frames_in += 1
            on_text(conn)
    return None, end


# Reasons of ``Stats.refused`` for the close codes of frame errors.
FRAME_ERROR_REASONS = {1002: "protocol_error", 1007: "invalid_utf8", 1008: "too_many_fragments", 1009: "message_too_big"}


def _park(conn: Connection, decoder: Any) -> bool:
    """Park ``conn`` if its decoder is between messages (a new one replaces it on resuming)."""
    conn.park_requested = False
    if decoder.at_rest and conn.lot is not None:
        conn.lot.park(conn)
        return True
    return False


def _answer_close(conn: Connection, payload: bytes) -> None:
    try:
        code, _ = parse_close_payload(payload)
    except FrameError as exc:
        conn.close(exc.code, exc.reason)
        return
    # Echo the peer's code (1005 "no code" may not be sent on the wire: answer 1000).
    conn.close(1000 if code in (1005, 1006, 1015) else code)


async def finish(conn: Connection) -> None:
    """After the reader has stopped: flush what is queued, let the peer read our close frame and
    answer it (the closing handshake; closing with unread input would reset the connection and
    lose the close frame), then close. Bounded by CLOSE_WAIT_S."""
    sock = conn.sock
    with trio.move_on_after(CLOSE_WAIT_S):
        while conn.outbox or conn.blocked:
            if not conn.blocked:
                conn.writer.flush(conn)
            if conn.outbox or conn.blocked:
                await trio.sleep(0.005)
        try:
            sock.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < FINISH_DRAIN_BYTES:  # a peer that keeps sending (a flood) is not waited for
                await wait_readable(sock)
                data = sock.recv(FINISH_DRAIN_BYTES)
                if not data:
                    break
                drained += len(data)
        except (OSError, trio.ClosedResourceError):
            # ClosedResourceError: another task closed the connection meanwhile (a slow consumer,
            # the heartbeat, a drain), which wakes every wait on the socket: it is closing anyway.
            pass
    conn.closed = True
    conn.outbox = []
    conn.outbox_bytes = 0
    notify_closing(conn.sock)
    conn.sock.close()
