"""Test clients and helpers: real WebSocket clients (trio-websocket) against a real gateway."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import msgpack
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from gateway.auth import mint_token

SECRET = "test-secret-that-is-long-enough-for-hs256"


def token(user: str, role: str = "shopper", tenant: str = "shop1", channel: str = "app", **kw: Any) -> str:
    return mint_token(SECRET, tenant=tenant, user=user, role=role, channel=channel, **kw)


class Client:
    """A kefu.v1 client: frames are msgpack maps; frames not asked for yet wait in ``buffer``."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.buffer: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send_message(data)

    async def send(self, t: str, **fields: Any) -> int:
        rid = next(self._ids)
        await self.ws.send_message(msgpack.packb({"t": t, "id": rid, **fields}))
        return rid

    async def recv(self) -> dict[str, Any]:
        if self.buffer:
            return self.buffer.pop(0)
        return msgpack.unpackb(await self.ws.get_message(), raw=False)

    async def next(self, t: str | None = None, **match: Any) -> dict[str, Any]:
        """The first frame of type ``t`` whose fields equal ``match``; others stay buffered."""
        for i, f in enumerate(self.buffer):
            if (t is None or f.get("t") == t) and all(f.get(k) == v for k, v in match.items()):
                return self.buffer.pop(i)
        while True:
            f = msgpack.unpackb(await self.ws.get_message(), raw=False)
            if (t is None or f.get("t") == t) and all(f.get(k) == v for k, v in match.items()):
                return f
            self.buffer.append(f)

    async def request(self, t: str, **fields: Any) -> dict[str, Any]:
        """Send a request and return its answer (ok, ack or error)."""
        rid = await self.send(t, **fields)
        return await self.next(id=rid)

    async def ok(self, t: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(t, **fields)
        assert reply["t"] in ("ok", "ack"), reply
        return reply

    async def closed(self) -> int:
        """Wait for the server to close; return the close code. Frames read meanwhile are buffered."""
        try:
            while True:
                self.buffer.append(msgpack.unpackb(await self.ws.get_message(), raw=False))
        except ConnectionClosed as exc:
            return exc.reason.code

    async def quiet(self, seconds: float = 0.2) -> list[dict[str, Any]]:
        """Everything that arrives within ``seconds`` (to check nothing unexpected does)."""
        got = list(self.buffer)
        self.buffer.clear()
        with trio.move_on_after(seconds):
            while True:
                got.append(msgpack.unpackb(await self.ws.get_message(), raw=False))
        return got


@asynccontextmanager
async def connect(url: str, tok: str | None = None, *, resume: dict | None = None, hello: bool = True) -> AsyncIterator[Client]:
    """Connect (token at the handshake), read hello, and go live with ``resume`` unless it is None
    and ``hello`` is False."""
    target = url if tok is None else f"{url}?token={tok}"
    async with open_websocket_url(target, subprotocols=["kefu.v1"]) as ws:
        client = Client(ws)
        if tok is not None and hello:
            first = await client.recv()
            assert first["t"] == "hello", first
            client.hello = first
            if resume is not None:
                await client.ok("resume", convs=resume)
        yield client


class GatewayThread:
    """A gateway running in a thread of its own (its own ``trio.run``), for tests whose examples
    each run in a fresh Trio loop (hypothesis with pytest-trio) but should share one server: one
    start instead of one per example, and a server that must survive every example in turn.

    ``with GatewayThread(config) as running:``; ``running`` is the ``gateway.app.Running``, whose
    counters may be read from the test's thread."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.running: Any = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.failure: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="gateway", daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        if not self._started.wait(30) or self.running is None:
            raise RuntimeError(f"the gateway thread did not start: {self.failure!r}")
        return self.running

    def __exit__(self, *exc_info: object) -> None:
        assert self.token is not None
        trio.from_thread.run_sync(self.running.node.stop, trio_token=self.token)
        self._thread.join(30)
        if self.failure is not None:
            raise RuntimeError("the gateway thread failed") from self.failure

    def _main(self) -> None:
        from gateway.app import serve

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self.running = await nursery.start(serve, self.config)
                self._started.set()

        try:
            trio.run(main)
        except BaseException as exc:  # reported by __enter__ or __exit__
            self.failure = exc
        finally:
            self._started.set()


def once_per_run(tmp_path_factory: Any, name: str, make: Any) -> Any:
    """``make(folder)``'s JSON-able result, made once per test run however many xdist workers ask:
    the first to take the lock makes it and leaves it beside the workers' own temporary folders,
    the others wait and read it. For a module fixture that costs a benchmark run, which each worker
    would otherwise pay again for its share of the module's tests."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    found = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if found.exists():
            return json.loads(found.read_text())
        result = make(tmp_path_factory.mktemp(name))
        found.write_text(json.dumps(result))
        return result
