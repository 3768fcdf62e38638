"""One WebSocket connection's socket I/O: a reader loop, a bounded outbox, coalesced writes.

Each connection has exactly one task, its reader. Nothing is written from that task per frame:
``push`` appends ready frame bytes to the outbox and marks the connection dirty; the node's single
``Writer`` task then joins every connection's queued frames into one ``send`` (after a whole read
chunk or a whole fan-out has been processed). Only a connection whose socket buffer is full gets a
drain task of its own, until it has caught up. Past ``max_outbox_bytes`` a connection is a slow
consumer: its outbox is dropped and it is closed with CLOSE_SLOW_CONSUMER (it resumes from the store).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Awaitable, Callable

import trio
from trio.lowlevel import notify_closing, wait_readable, wait_writable

from ..metrics import Stats
from ..protocol.errors import CLOSE_SLOW_CONSUMER
from ..protocol.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, FrameError, encode_close, encode_frame, parse_close_payload

log = logging.getLogger("kefu.connection")

RECV_BYTES = 256 * 1024
CLOSE_WAIT_S = 1.0  # how long a closing connection may take to flush its close frame


class Connection:
    """Socket, outbox and per-connection protocol state (set by the node once authenticated)."""

    __slots__ = (
        "sock", "id", "peer", "writer", "outbox", "outbox_bytes", "blocked", "closing", "closed",
        "created", "last_recv", "last_ping", "identity", "user_key", "convs", "guards", "live",
        "tokens", "token_time", "violations",
    )

    def __init__(self, sock: socket.socket, conn_id: str, peer: str, writer: Writer) -> None:
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
        self.identity: Any = None  # auth.Identity once authenticated
        self.user_key: tuple[str, str] = ("", "")
        self.convs: list[str] = []  # conversations delivered to this connection (a list: 150 B less than a set)
        self.guards: dict[str, int] = {}  # conv -> highest seq already sent by a resume
        self.live = False  # resumed: receives live traffic
        self.tokens = 0.0  # rate limit bucket, refilled at token_time
        self.token_time = self.created
        self.violations = 0  # consecutive requests refused by the rate limit

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


class Writer:
    """The node's one write task: flushes every dirty connection's outbox with one send each."""

    def __init__(self, stats: Stats, max_outbox_bytes: int) -> None:
        self.stats = stats
        self.max_outbox_bytes = max_outbox_bytes
        self._dirty: list[Connection] = []
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if len(self._dirty) == 1:
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                dirty, self._dirty = self._dirty, []
                for conn in dirty:
                    if conn.outbox and not conn.blocked:
                        self.flush(conn)

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
) -> None:
    """Read until the peer or the server closes (``data``: bytes already received): feed the frame
    decoder with every chunk and hand each binary message to ``on_message`` (awaited only when it
    returns an awaitable); text messages, which kefu.v1 does not use, to ``on_text``."""
    sock = conn.sock
    while True:
        if data:
            stats.bytes_in += len(data)
            try:
                messages = decoder.feed(data)
            except FrameError as exc:
                log.info("protocol error %d: %s", exc.code, exc.reason, extra=conn.log_extra)
                conn.close(exc.code, exc.reason)
                return
            for opcode, payload in messages:
                if conn.closing:
                    return
                if opcode == OP_BINARY:
                    stats.frames_in += 1
                    pending = on_message(conn, payload)
                    if pending is not None:
                        await pending
                        pending = None  # a finished coroutine kept alive costs an idle connection ~300 B
                elif opcode == OP_PING:
                    conn.push(encode_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    _answer_close(conn, payload)
                    return
                elif opcode != OP_PONG:
                    stats.frames_in += 1
                    on_text(conn)
            messages = payload = data = None  # nothing of this chunk stays referenced while idle
        if conn.closing:
            return
        try:
            await wait_readable(sock)
        except trio.ClosedResourceError:  # close() from another task
            return
        try:
            data = sock.recv(RECV_BYTES)
        except BlockingIOError:
            data = b""
            continue
        except OSError:
            return
        if not data:
            return
        conn.last_recv = time.monotonic()


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
            while True:
                await wait_readable(sock)
                if not sock.recv(RECV_BYTES):
                    break
        except OSError:
            pass
    conn.closed = True
    conn.outbox = []
    conn.outbox_bytes = 0
    notify_closing(conn.sock)
    conn.sock.close()
