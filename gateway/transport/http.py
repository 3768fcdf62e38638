"""The operations port: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz``.

Served from the Trio loop itself, not a thread: if the loop is stuck, health checks say so.
One request per connection is all scrapers and probes need.
"""

from __future__ import annotations

import logging
import socket
from typing import Callable

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from trio.lowlevel import notify_closing, wait_readable

from ..build import health_line
from .connection import send_all
from .handshake import MAX_REQUEST_BYTES, read_request

log = logging.getLogger("kefu.http")


def _response(http: h11.Connection, status: int, body: bytes, content_type: str) -> bytes:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    return http.send(h11.Response(status_code=status, headers=headers)) + http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())


def answer(path: str, registry: CollectorRegistry, ready: Callable[[], bool]) -> tuple[int, bytes, str]:
    if path == "/metrics":
        return 200, generate_latest(registry), CONTENT_TYPE_LATEST
    if path == "/healthz":
        return 200, (health_line() + "\n").encode(), "text/plain"
    if path == "/readyz":
        return (200, b"ready\n", "text/plain") if ready() else (503, b"not ready\n", "text/plain")
    return 404, b"not found\n", "text/plain"


async def serve_ops(
    host: str,
    port: int,
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the operations endpoints on (host, port); ``task_status.started`` gets the bound port."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    listener.setblocking(False)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(listener.getsockname()[1])
            while True:
                await wait_readable(listener)
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, OSError):
                    continue
                sock.setblocking(False)
                nursery.start_soon(_serve_one, sock, registry, ready)
    finally:
        notify_closing(listener)
        listener.close()


async def _serve_one(sock: socket.socket, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
    try:
        with trio.move_on_after(10):
            http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
            request = await read_request(sock, http)
            if request is None:
                return
            path = request.target.decode("latin-1").split("?", 1)[0]
            status, body, content_type = answer(path, registry, ready)
            if request.method == b"HEAD":
                body = b""
            await send_all(sock, _response(http, status, body, content_type))
    except OSError:
        pass
    except Exception:
        log.exception("operations request failed")
    finally:
        sock.close()
