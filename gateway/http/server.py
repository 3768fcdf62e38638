"""Serve the ASGI application with Hypercorn's Trio worker, inside the gateway's own Trio run.

Hypercorn accepts through ``trio.serve_listeners``, which pauses accepting when file descriptors
run out (EMFILE, ENFILE, ENOMEM, ENOBUFS) instead of spinning, and lets every other accept error
propagate.
"""

from __future__ import annotations

import logging
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

log = logging.getLogger("kefu.http")

REQUEST_HEAD_BYTES = 16 * 1024


async def serve_http(app, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on (host, port) until cancelled; ``task_status.started`` gets the bound port."""
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("kefu.http.server")
    config.h11_max_incomplete_size = REQUEST_HEAD_BYTES
    config.include_server_header = False
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config))
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
