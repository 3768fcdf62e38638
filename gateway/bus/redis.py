"""The Redis bus: gateway processes (on one host or many) tell each other what they committed
through Redis pub/sub.

One channel carries every event (``kefu:bus`` unless named otherwise); each event is one msgpack
array ``[kind, node, *args]`` of plain data. Each process holds two connections: a publisher and a
subscriber, both plain Trio TCP streams with RESP parsed by ``hiredis.Reader`` (no general Redis
client: redis-py does not run on Trio, and coredis through anyio publishes several times slower
than this pipelined writer — bench/bus_publish.py, docs/scaling.md).

Publishing never waits: ``publish_*`` appends the encoded PUBLISH to a buffer that a writer task
sends, many commands per write (pipelining). Commands stay in the buffer until Redis has answered
them, so a connection lost mid-way is re-established and the unanswered commands are sent again:
delivery is at least once, in order per process, and nodes drop a message whose seq they have
delivered already (``Node.on_message``). While Redis is away publishes are buffered up to
``max_buffer`` bytes; past it a publish raises ``BusError`` (counted; the data is durable and
clients get it on resume).

Pub/sub keeps nothing for a subscriber that was away. After the subscriber connection is
re-established the bus calls ``handler.on_resync()``: the node then reads from the store whatever
its conversations missed (``Node.on_resync``), so a Redis blip leaves no silent gap.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from dataclasses import astuple
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import hiredis
import msgpack
import trio

from ..model import Conversation
from .base import BusError, BusHandler

log = logging.getLogger("kefu.bus.redis")

_MESSAGE, _EVENT, _CONVERSATION, _MEMBERSHIP, _USER = range(5)
_RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0)  # reconnect back-off, the last repeated
_READ_BYTES = 256 * 1024
START_TIMEOUT_S = 10.0


def command(*parts: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RedisAddress:
    """Where Redis is, from a ``redis://[[user]:password@]host[:port][/db]`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"not a redis:// URL: {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self.db = int(path) if path else 0

    def hello(self, name: str) -> list[bytes]:
        """The commands a fresh connection sends first (AUTH, SELECT, CLIENT SETNAME), as RESP."""
        commands = []
        if self.password is not None:
            auth = (self.user.encode(), self.password.encode()) if self.user else (self.password.encode(),)
            commands.append(command(b"AUTH", *auth))
        if self.db:
            commands.append(command(b"SELECT", str(self.db).encode()))
        commands.append(command(b"CLIENT", b"SETNAME", name.encode()))  # CLIENT LIST tells who is who
        return commands

    async def connect(self, name: str) -> trio.SocketStream:
        stream = await trio.open_tcp_stream(self.host, self.port)
        try:
            hello = self.hello(name)
            await stream.send_all(b"".join(hello))
            reader = hiredis.Reader()
            for _ in hello:
                reply = await read_reply(stream, reader)
                if isinstance(reply, hiredis.ReplyError):
                    raise BusError(f"redis refused: {reply}")
        except BaseException:
            await stream.aclose()
            raise
        return stream


async def read_reply(stream: trio.SocketStream, reader: hiredis.Reader) -> Any:
    while True:
        reply = reader.gets()
        if reply is not False:
            return reply
        data = await stream.receive_some(_READ_BYTES)
        if not data:
            raise trio.BrokenResourceError("redis closed the connection")
        reader.feed(data)


class RedisBus:
    """A Bus over Redis pub/sub for one node (one ``run`` at a time)."""

    crosses_processes = True  # the node orders, deduplicates and gap-fills what arrives

    def __init__(self, url: str, *, channel: str = "kefu:bus", max_buffer: int = 16 * 1024 * 1024) -> None:
        self.address = RedisAddress(url)
        self.url = url
        self.channel = channel.encode()
        #: this bus's connections are named NAME-pub and NAME-sub in Redis (CLIENT LIST)
        self.name = f"kefu-{secrets.token_hex(4)}"
        self.max_buffer = max_buffer
        self._prefix = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(self.channel), self.channel)
        # Commands written or to write, oldest first, until Redis answers them
        self._unanswered: deque[bytes] = deque()
        self._written = 0  # how many of _unanswered have been sent on the current connection
        self._buffered = 0  # bytes in _unanswered
        self._wake = trio.Event()
        self._running = False
        self._closed = False
        self.publisher_up = False
        self.subscriber_up = False
        self.reconnects = 0  # connections re-established after a loss (both connections)
        self.published = 0
        self.received = 0

    # ---- health -------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self.publisher_up and self.subscriber_up

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def describe(self) -> str:
        state = "up" if self.healthy else f"down (publisher {'up' if self.publisher_up else 'down'}, subscriber {'up' if self.subscriber_up else 'down'})"
        return f"redis {self.address.host}:{self.address.port} {state}"

    # ---- running ------------------------------------------------------------------------------

    async def run(self, handler: BusHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect both connections, then deliver events to ``handler`` until cancelled; lost
        connections are re-established (``handler.on_resync`` after the subscriber's)."""
        if self._running:
            raise RuntimeError("a RedisBus serves one node")
        self._running = True
        node_id = getattr(handler, "id", None)
        if isinstance(node_id, str):
            self.name = f"kefu-{node_id}"
        try:
            async with trio.open_nursery() as nursery:
                subscribed = trio.Event()
                nursery.start_soon(self._subscriber, handler, subscribed)
                nursery.start_soon(self._publisher)
                with trio.move_on_after(START_TIMEOUT_S) as waiting:  # Redis must answer when the gateway starts
                    await subscribed.wait()
                    while not self.publisher_up:
                        await trio.sleep(0.01)
                if waiting.cancelled_caught:
                    nursery.cancel_scope.cancel()
                else:
                    task_status.started()
            if waiting.cancelled_caught:
                raise BusError(f"redis {self.address.host}:{self.address.port} did not answer within {START_TIMEOUT_S:g} s")
        finally:
            self._running = False
            self.publisher_up = self.subscriber_up = False

    def close(self) -> None:
        self._closed = True

    # ---- publishing ---------------------------------------------------------------------------

    def publish_message(self, node: str, conv_id: str, seq: int, frame: bytes, origin: str | None) -> None:
        self._publish([_MESSAGE, node, conv_id, seq, frame, origin])

    def publish_event(self, node: str, conv_id: str, frame: bytes, skip_user: str | None = None) -> None:
        self._publish([_EVENT, node, conv_id, frame, skip_user])

    def publish_conversation(self, node: str, conv: Conversation) -> None:
        self._publish([_CONVERSATION, node, *astuple(conv)])

    def publish_membership(self, node: str, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        self._publish([_MEMBERSHIP, node, conv_id, tenant, user, role, joined])

    def publish_user(self, node: str, tenant: str, user: str, frame: bytes) -> None:
        self._publish([_USER, node, tenant, user, frame])

    def _publish(self, event: list) -> None:
        if self._closed:
            raise BusError("bus closed")
        if not self._running:
            return  # no node attached: nobody to tell
        if self._buffered >= self.max_buffer:
            raise BusError(f"redis bus buffer full ({self._buffered} bytes unanswered): Redis down or too slow")
        payload = msgpack.packb(event, use_bin_type=True)
        cmd = self._prefix + b"$%d\r\n%s\r\n" % (len(payload), payload)
        self._unanswered.append(cmd)
        self._buffered += len(cmd)
        self._wake.set()

    async def _publisher(self) -> None:
        attempt = 0
        while True:
            try:
                stream = await self.address.connect(self.name + "-pub")
            except (OSError, trio.BrokenResourceError, BusError) as exc:
                log.warning("redis publisher: cannot connect (%s); retrying", exc)
                await trio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1
                continue
            self._written = 0  # everything unanswered is sent again on the new connection
            self.publisher_up = True
            attempt = 0
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(self._until_lost, self._read_answers, stream, nursery.cancel_scope)
                nursery.start_soon(self._until_lost, self._write_commands, stream, nursery.cancel_scope)
            self.publisher_up = False
            self.reconnects += 1

    async def _until_lost(self, fn, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        """Run one side of the publisher connection; when either ends, both do."""
        try:
            await fn(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("redis publisher connection lost (%s); %d commands to send again", exc, len(self._unanswered))
        finally:
            scope.cancel()

    async def _write_commands(self, stream: trio.SocketStream) -> None:
        while True:
            if self._written == len(self._unanswered):
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            batch = b"".join(itertools.islice(self._unanswered, self._written, None))
            self._written = len(self._unanswered)
            await stream.send_all(batch)

    async def _read_answers(self, stream: trio.SocketStream) -> None:
        reader = hiredis.Reader()
        while True:
            data = await stream.receive_some(_READ_BYTES)
            if not data:
                raise trio.BrokenResourceError("redis closed the publisher connection")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                cmd = self._unanswered.popleft()
                self._written -= 1
                self._buffered -= len(cmd)
                self.published += 1
                if isinstance(reply, hiredis.ReplyError):
                    log.error("redis refused a publish: %s", reply)

    # ---- receiving ----------------------------------------------------------------------------

    async def _subscriber(self, handler: BusHandler, subscribed: trio.Event) -> None:
        attempt = 0
        first = True
        dispatch = self._dispatcher(handler)
        while True:
            try:
                stream = await self.address.connect(self.name + "-sub")
            except (OSError, trio.BrokenResourceError, BusError) as exc:
                log.warning("redis subscriber: cannot connect (%s); retrying", exc)
                await trio.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1
                continue
            attempt = 0
            try:
                async with stream:
                    reader = hiredis.Reader()
                    await stream.send_all(command(b"SUBSCRIBE", self.channel))
                    reply = await read_reply(stream, reader)
                    if not (isinstance(reply, list) and reply[0] == b"subscribe"):
                        raise trio.BrokenResourceError(f"unexpected answer to SUBSCRIBE: {reply!r}")
                    self.subscriber_up = True
                    subscribed.set()
                    if not first:
                        log.info("redis subscriber re-established: filling gaps from the store")
                        handler.on_resync()
                    first = False
                    while True:
                        data = await stream.receive_some(_READ_BYTES)
                        if not data:
                            raise trio.BrokenResourceError("redis closed the subscriber connection")
                        reader.feed(data)
                        while (reply := reader.gets()) is not False:
                            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                                self.received += 1
                                dispatch(reply[2])
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.warning("redis subscriber connection lost (%s); reconnecting", exc)
            self.subscriber_up = False
            self.reconnects += 1

    @staticmethod
    def _dispatcher(handler: BusHandler) -> Callable[[bytes], None]:
        def dispatch(payload: bytes) -> None:
            try:
                event = msgpack.unpackb(payload, raw=False)
                kind = event[0]
                if kind == _MESSAGE:
                    handler.on_message(*event[1:])
                elif kind == _EVENT:
                    handler.on_event(*event[1:])
                elif kind == _CONVERSATION:
                    handler.on_conversation(event[1], Conversation(*event[2:]))
                elif kind == _MEMBERSHIP:
                    handler.on_membership(*event[1:])
                elif kind == _USER:
                    handler.on_user(*event[1:])
                else:
                    log.error("unknown bus event kind %r", kind)
            except Exception:  # one bad event must not stop the node hearing the rest
                log.exception("bus event could not be handled")

        return dispatch


