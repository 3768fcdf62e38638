"""``kefu serve --workers N``: N gateway processes on one host, sharing the WebSocket port.

One process is a single Trio thread, so it uses one core. The supervisor (the process the operator
starts) runs no gateway itself: it starts N workers — ``kefu serve`` again, with the same flags
and ``KEFU_WORKER_INDEX`` set — each binding the same port with SO_REUSEPORT, so the kernel
spreads new connections over them. The workers share nothing in memory: they need a shared store
(PostgreSQL) and bus (Redis), which ``Config.problems`` insists on. Each worker's HTTP side
(metrics, health, REST API) listens on ``--metrics-port`` + its index, so each can be scraped.

The supervisor forwards SIGTERM and SIGINT to every worker (each drains as a single gateway does)
and exits when they have; a worker that dies otherwise is started again after a pause.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from .config import Config

log = logging.getLogger("kefu.workers")

ENV_INDEX = "KEFU_WORKER_INDEX"
RESTART_PAUSE_S = (0.5, 1.0, 2.0, 5.0)  # after a worker's 1st, 2nd, ... unexpected exit in a row


def index() -> int | None:
    """This process's worker index, or None when it was not started by a supervisor."""
    value = os.environ.get(ENV_INDEX)
    return int(value) if value is not None and value.isdigit() else None


def node_id(worker: int | None) -> str:
    """A node id that is unique in a cluster and says where the process runs: host, a random part
    (a restarted process is a new node), and the worker index."""
    host = socket.gethostname().split(".")[0][:24] or "kefu"
    return f"{host}-{secrets.token_hex(3)}" + (f"-w{worker}" if worker is not None else "")


def reserve_port(host: str) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket on a free port: the port the workers will share,
    held so that no other program takes it meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def supervise(config: Config, argv: list[str]) -> int:
    """Run ``config.workers`` workers until SIGTERM/SIGINT; returns the exit status."""
    reserved = None
    port = config.port
    if port == 0:
        reserved = reserve_port(config.host)
        port = reserved.getsockname()[1]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start(i: int) -> subprocess.Popen:
        metrics_port = config.metrics_port + i if config.metrics_port > 0 else config.metrics_port
        # flags given last win (argparse), so every worker gets the shared port and its own HTTP port
        args = [sys.executable, "-m", "gateway", *argv, "--port", str(port), "--metrics-port", str(metrics_port)]
        return subprocess.Popen(args, env={**os.environ, ENV_INDEX: str(i)})

    workers = {i: start(i) for i in range(config.workers)}
    failures = dict.fromkeys(workers, 0)
    log.info("supervising %d workers on port %d", config.workers, port)
    try:
        while not stopping:
            time.sleep(0.1)
            for i, proc in list(workers.items()):
                code = proc.poll()
                if code is None or stopping:
                    continue
                pause = RESTART_PAUSE_S[min(failures[i], len(RESTART_PAUSE_S) - 1)]
                failures[i] += 1
                log.error("worker %d exited with %s; starting it again in %.1f s", i, code, pause)
                time.sleep(pause)
                workers[i] = start(i)
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + config.shutdown_timeout_s + 5
        for proc in workers.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time: killing it", proc.pid)
                proc.kill()
                proc.wait()
        if reserved is not None:
            reserved.close()
    log.info("all workers stopped")
    return 0
