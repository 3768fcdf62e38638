"""Test clients and helpers: real WebSocket clients (trio-websocket) against a real gateway."""

from __future__ import annotations

import itertools
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
