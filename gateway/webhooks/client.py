"""The HTTP/1.1 client webhook deliveries use: h11 over Trio streams, connections kept alive per
origin (scheme, host, port), TLS with the system's certificate authorities.

Why not httpx, which the rest of the gateway uses for its rare outbound calls: deliveries run on
the event loop that carries the messages, one POST per event, and on Trio (through anyio) one
httpx POST costs about 750 µs of CPU, against about 150 µs here (docs/benchmarks.md, "webhooks").
h11 does the protocol (parsing, framing, keep-alive rules); this module only moves bytes.
"""

from __future__ import annotations

import ssl
from collections import deque
from urllib.parse import quote, urlsplit

import h11
import trio

READ_BYTES = 64 * 1024
URL_SAFE = "/%:@!$&'()*+,;=-._~?"  # what stays as it is in a path or query (RFC 3986); "%" keeps encoded URLs as given


class Unreachable(Exception):
    """No answer could be had: the connection failed, broke, or the answer was not HTTP."""


class HttpConnection:
    """One connection to a receiver, kept alive between POSTs while both sides allow it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def exchange(self, request: h11.Request, body: bytes, max_answer_bytes: int) -> tuple[int, bool]:
        """Send one request; returns (status, whether the connection may carry another). The
        answer's body is read and dropped (up to ``max_answer_bytes``; past that, not reusable)."""
        conn = self.h11
        await self.stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        status, read = 0, 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(READ_BYTES)
                conn.receive_data(data)  # b"": the peer closed (h11 then raises or says ConnectionClosed)
                continue
            if type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                read += len(event.data)
                if read > max_answer_bytes:
                    return status, False
            elif type(event) is h11.EndOfMessage:
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                if reusable:
                    conn.start_next_cycle()
                return status, reusable
            elif type(event) is h11.ConnectionClosed:
                raise Unreachable("the receiver closed the connection before answering")

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)


class Client:
    """POSTs with kept-alive connections: at most ``max_idle`` idle ones per origin, ``max_idle_total``
    in all (each is a file descriptor)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 4, max_idle_total: int = 256,
                 max_answer_bytes: int = 64 * 1024, headers: dict[str, str] | None = None) -> None:
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.max_idle = max_idle
        self.max_idle_total = max_idle_total
        self.max_answer_bytes = max_answer_bytes
        self.headers = list((headers or {}).items())
        self._idle: dict[tuple[str, str, int, str], deque[HttpConnection]] = {}
        self._idle_count = 0

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float, *, address: str | None = None) -> int:
        """POST ``body`` to ``url``; returns the status. Raises trio.TooSlowError past ``timeout_s``
        and Unreachable when there is no answer. A kept-alive connection the receiver had closed
        is replaced once, transparently. ``address``: connect there rather than where the URL's
        host resolves now (the Host header and TLS still name the host)."""
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, host, port, address or "")
        # the request line is ASCII: a Chinese path is sent percent-encoded, an IDN host in punycode
        target = quote(parts.path or "/", safe=URL_SAFE) + (f"?{quote(parts.query, safe=URL_SAFE)}" if parts.query else "")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]" + ("" if parts.port is None else f":{parts.port}")
        request = h11.Request(
            method="POST", target=target,
            headers=[("host", host_header), *self.headers, *headers.items(), ("content-length", str(len(body)))],
        )
        with trio.fail_after(timeout_s):
            while True:
                conn = self._take(origin)
                fresh = conn is None
                if conn is None:
                    conn = await self._connect(scheme, host, port, address)
                try:
                    status, reusable = await conn.exchange(request, body, self.max_answer_bytes)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, Unreachable) as exc:
                    await conn.close()
                    if fresh:
                        raise Unreachable(f"{type(exc).__name__}: {exc}") from None
                    continue  # a kept-alive connection the receiver closed meanwhile: once more, anew
                except BaseException:
                    await conn.close()  # cancelled or timed out mid-exchange: its state is unknown
                    raise
                if reusable and self._give_back(origin, conn):
                    return status
                await conn.close()
                return status

    async def _connect(self, scheme: str, host: str, port: int, address: str | None) -> HttpConnection:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(address or host, port)
        except OSError as exc:
            raise Unreachable(f"cannot connect to {host}:{port}: {exc}") from None
        if scheme == "https":
            tls = trio.SSLStream(stream, self.ssl_context, server_hostname=host, https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as exc:
                await trio.aclose_forcefully(stream)
                raise Unreachable(f"TLS with {host}:{port} failed: {exc}") from None
            stream = tls
        return HttpConnection(stream)

    def _take(self, origin: tuple[str, str, int, str]) -> HttpConnection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        self._idle_count -= 1
        return idle.pop()

    def _give_back(self, origin: tuple[str, str, int, str], conn: HttpConnection) -> bool:
        """Keep ``conn`` for the origin's next POST; False when enough are kept already."""
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= self.max_idle or self._idle_count >= self.max_idle_total:
            return False
        idle.append(conn)
        self._idle_count += 1
        return True

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                await idle.pop().close()
        self._idle.clear()
        self._idle_count = 0
