"""The backing services as tests need to break them without disturbing anyone else using the real
ones: a TCP proxy the test cuts and restores (PostgreSQL "goes down" for the gateway behind it),
and a redis-server of the test's own that it kills and starts again."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import pytest
import trio


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._scope: trio.CancelScope | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Forward until cancelled; ``down()`` and ``up()`` in between."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._serve)
            task_status.started()
            await trio.sleep_forever()

    async def _serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            async with trio.open_nursery() as conns:
                conns.start_soon(trio.serve_listeners, self._forward, listeners)
                task_status.started()

    async def _forward(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()
            return
        async with client, server:
            async with trio.open_nursery() as pipes:
                pipes.start_soon(self._pipe, client, server, pipes.cancel_scope)
                pipes.start_soon(self._pipe, server, client, pipes.cancel_scope)

    @staticmethod
    async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            async for data in src:
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()

    def down(self) -> None:
        """Reset every connection and refuse new ones."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def up(self) -> None:
        await self._nursery.start(self._serve)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own, so that restarting it disturbs nobody else."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.kill()
