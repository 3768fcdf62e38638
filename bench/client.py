"""A kefu.v1 client for the generator: one WebSocket connection, msgpack frames, two transports.

``Link`` is what the workloads use. It opens a WebSocket (token in the query string, subprotocol
``kefu.v1``), reads ``hello``, and then hands every decoded frame to ``on_frame`` — except replies
to requests made with ``request()``, which resolve that call's future. Sends are fire-and-forget
(``send``), so a workload drives its own window of unacknowledged messages from ``on_frame``.

Two transports behind the same interface (``--client``):

* ``picows`` (default): a Cython WebSocket client for asyncio. Frames arrive in a synchronous
  ``on_ws_frame`` callback, with no task, future or queue per frame; this is why it is the default —
  ``python -m bench clients`` measures it against ``websockets`` (see docs/benchmarks.md).
* ``websockets``: the asyncio client of the ``websockets`` package; a reader task per connection.

Both run on uvloop. Everything here runs inside one worker process's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import Any, Callable

import msgpack

CLIENTS = ("picows", "websockets")
PROTOCOL = "kefu.v1"

_packb = msgpack.packb
_unpackb = msgpack.unpackb


class LinkClosed(Exception):
    """The connection closed (or never opened); ``code`` is the close code when one was received."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ServerError(Exception):
    """A request was answered with an ``error`` frame."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = frame.get("code")
        self.frame = frame


def _ignore(frame: dict[str, Any]) -> None:
    pass


if hasattr(asyncio, "timeout"):  # 3.11: a deadline on the current task, no task per wait
    _timeout = asyncio.timeout
else:  # pragma: no cover - 3.10
    import contextlib

    @contextlib.asynccontextmanager
    async def _timeout(delay: float):
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        handle = loop.call_later(delay, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError() from None
        finally:
            handle.cancel()


class Link:
    """One kefu.v1 connection. Subclasses provide the transport (``_connect``, ``send_bytes``, ``abort``)."""

    def __init__(self) -> None:
        self.on_frame: Callable[[dict[str, Any]], None] = _ignore
        self.on_close: Callable[[Link], None] | None = None
        self.hello: dict[str, Any] | None = None
        self.closed = False
        self.close_code: int | None = None  # the server's close code, when it sent one
        self._ids = itertools.count(1_000_000_000)  # request() ids; workloads use small ids for sends
        self._pending: dict[int, asyncio.Future] = {}
        self._hello: asyncio.Future | None = None

    # ---- the transport-independent part --------------------------------------------------------

    async def open(self, url: str, token: str, *, local_addr: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Connect, authenticate with ``token`` and return the ``hello`` frame."""
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        target = f"{url}?token={token}"
        async with _timeout(timeout):
            await self._connect(target, local_addr)
            self.hello = await self._hello
        return self.hello

    def send(self, frame: dict[str, Any]) -> None:
        self.send_bytes(_packb(frame))

    async def request(self, t: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its ``ok``/``ack``; an ``error`` raises ServerError."""
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self.send_bytes(_packb({"t": t, "id": rid, **fields}))
            async with _timeout(timeout):
                reply = await fut
        finally:
            self._pending.pop(rid, None)
        if reply.get("t") == "error":
            raise ServerError(reply)
        return reply

    def _payload(self, payload: bytes | memoryview) -> None:
        frame = _unpackb(payload)
        if self._pending:
            fut = self._pending.get(frame.get("id"))
            if fut is not None:
                if not fut.done():
                    fut.set_result(frame)
                return
        if self.hello is None and self._hello is not None and not self._hello.done():
            if frame.get("t") == "hello":
                self._hello.set_result(frame)
            else:
                self._hello.set_exception(ServerError(frame) if frame.get("t") == "error" else LinkClosed(f"expected hello, got {frame!r}"))
            return
        self.on_frame(frame)

    def _closed(self, code: int | None) -> None:
        if self.closed:
            return
        self.closed = True
        if code is not None:
            self.close_code = code
        error = LinkClosed("connection closed", self.close_code)
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(error)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        if self.on_close is not None:
            self.on_close(self)

    # ---- transport ------------------------------------------------------------------------------

    async def _connect(self, target: str, local_addr: str | None) -> None:
        raise NotImplementedError

    def send_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the TCP connection at once: no close handshake, as a lost network would."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close politely (close handshake) and wait, briefly, for the server to finish."""
        raise NotImplementedError


# ---- picows ----------------------------------------------------------------------------------------

try:
    import picows
    from picows import WSListener, WSMsgType

    class _PicowsListener(WSListener):
        __slots__ = ("link", "parts")

        def __init__(self, link: PicowsLink) -> None:
            self.link = link
            self.parts: list[bytes] | None = None

        def on_ws_frame(self, transport, frame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.BINARY:
                if frame.fin:
                    self.link._payload(frame.get_payload_as_memoryview())
                else:
                    self.parts = [frame.get_payload_as_bytes()]
            elif kind == WSMsgType.CONTINUATION and self.parts is not None:
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    data, self.parts = b"".join(self.parts), None
                    self.link._payload(data)
            elif kind == WSMsgType.CLOSE:
                code = int(frame.get_close_code()) if frame.payload_size >= 2 else None
                self.link.close_code = code
                transport.send_close(frame.get_close_code() if code is not None else picows.WSCloseCode.OK)
                transport.disconnect()

        def on_ws_disconnected(self, transport) -> None:
            self.link._closed(None)

    class PicowsLink(Link):
        def __init__(self) -> None:
            super().__init__()
            self.transport = None

        async def _connect(self, target: str, local_addr: str | None) -> None:
            kwargs: dict[str, Any] = {}
            if local_addr:
                kwargs["local_addr"] = (local_addr, 0)
            try:
                self.transport, _ = await picows.ws_connect(
                    lambda: _PicowsListener(self),
                    target,
                    extra_headers={"Sec-WebSocket-Protocol": PROTOCOL},
                    websocket_handshake_timeout=30,
                    max_redirects=0,
                    **kwargs,
                )
            except (OSError, picows.WSError) as exc:
                self._closed(None)
                raise LinkClosed(f"connect failed: {exc}") from exc
            sock = self.transport.underlying_transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send_bytes(self, data: bytes) -> None:
            if not self.closed:
                self.transport.send(WSMsgType.BINARY, data)

        def abort(self) -> None:
            if self.transport is not None and not self.closed:
                self.transport.underlying_transport.abort()

        async def close(self) -> None:
            if self.transport is None or self.closed:
                return
            self.transport.send_close(picows.WSCloseCode.OK)
            try:
                await asyncio.wait_for(self.transport.wait_disconnected(), 2.0)
            except asyncio.TimeoutError:
                self.transport.disconnect(graceful=False)

except ImportError:  # pragma: no cover - picows is in the bench extra
    PicowsLink = None  # type: ignore[assignment,misc]


# ---- websockets ------------------------------------------------------------------------------------


class WebsocketsLink(Link):
    def __init__(self) -> None:
        super().__init__()
        self.ws = None
        self._reader: asyncio.Task | None = None

    async def _connect(self, target: str, local_addr: str | None) -> None:
        from websockets.asyncio.client import connect

        kwargs: dict[str, Any] = {}
        if local_addr:
            kwargs["local_addr"] = (local_addr, 0)
        try:
            self.ws = await connect(
                target, subprotocols=[PROTOCOL], compression=None, max_size=None, ping_interval=None,
                open_timeout=30, **kwargs,
            )
        except (OSError, Exception) as exc:
            self._closed(None)
            raise LinkClosed(f"connect failed: {exc}") from exc
        sock = self.ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        ws = self.ws
        try:
            async for message in ws:
                if type(message) is bytes:
                    self._payload(message)
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            self._closed(rcvd.code if rcvd is not None else None)

    def send_bytes(self, data: bytes) -> None:
        # The send path of websockets is a coroutine; its write happens synchronously when the
        # transport is not paused, so scheduling it keeps frames in order.
        if not self.closed:
            ws = self.ws
            ws.protocol.send_binary(data)
            ws.send_data()

    def abort(self) -> None:
        if self.ws is not None and not self.closed:
            self.ws.transport.abort()

    async def close(self) -> None:
        if self.ws is None or self.closed:
            return
        try:
            await asyncio.wait_for(self.ws.close(), 2.0)
        except (asyncio.TimeoutError, Exception):
            self.ws.transport.abort()


def link_class(client: str) -> type[Link]:
    if client == "picows":
        if PicowsLink is None:
            raise SystemExit("picows is not installed: pip install -e '.[bench]'")
        return PicowsLink
    if client == "websockets":
        return WebsocketsLink
    raise ValueError(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")
