"""Serve the ASGI application with Hypercorn's Trio worker, inside the gateway's own Trio run.

Hypercorn accepts through ``trio.serve_listeners``, which pauses accepting when file descriptors
run out (EMFILE, ENFILE, ENOMEM, ENOBUFS) instead of spinning, and lets every other accept error
propagate.

Uploads arrive in megabytes, and Hypercorn reads 64 KiB per receive: each read costs the event loop
a pass through h11, the ASGI queue and the application. Reads of ``READ_BYTES`` cut the gateway's
CPU per uploaded MB by a tenth to a third (docs/benchmarks.md, "2026-12-07 (fourth session)"). Hypercorn
has no setting for it, only a module constant that it reads on every receive, which
:func:`read_size` sets. ``APP_QUEUE`` keeps what one request may hold in memory at about what it
was: at most ``READ_BYTES x (APP_QUEUE + 1)`` (1.25 MiB) of body is read ahead of the application.
"""

from __future__ import annotations

import logging
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve, tcp_server

log = logging.getLogger("kefu.http")

REQUEST_HEAD_BYTES = 16 * 1024
READ_BYTES = 256 * 1024
APP_QUEUE = 4  # body chunks Hypercorn queues for the application (its default: 10)


def read_size(size: int = READ_BYTES) -> int:
    """Make Hypercorn's Trio server read ``size`` bytes at a time; returns the size it now reads
    (its own default if this Hypercorn no longer has the constant)."""
    if isinstance(getattr(tcp_server, "MAX_RECV", None), int):
        tcp_server.MAX_RECV = size
    else:
        log.warning("this Hypercorn has no tcp_server.MAX_RECV: HTTP bodies are read at its own size")
    return getattr(tcp_server, "MAX_RECV", 0)


async def serve_http(app, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on (host, port) until cancelled; ``task_status.started`` gets the bound port."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("kefu.http.server")
    config.h11_max_incomplete_size = REQUEST_HEAD_BYTES
    config.max_app_queue_size = APP_QUEUE
    read_size()
    config.include_server_header = False
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config))
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
