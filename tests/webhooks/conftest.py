"""A real HTTP receiver for webhooks: it records every POST and answers what the test asks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.server import serve_http


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    got: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses to answer, in order; then 200
    hold: trio.Event | None = None  # while set and not yet fired, answers wait for it
    arrived: trio.Event = field(default_factory=trio.Event)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` POSTs received (waiting for them)."""
        with trio.fail_after(timeout):
            while len(self.got) < count:
                self.arrived = trio.Event()
                await self.arrived.wait()
        return self.got[:count]

    def events(self, path: str | None = None) -> list[str]:
        return [r.doc["event"] for r in self.got if path is None or r.path == path]


@pytest.fixture
async def receiver(nursery) -> Receiver:
    box = Receiver()

    async def hook(request: Request) -> Response:
        body = await request.body()
        box.got.append(Received(request.url.path, dict(request.headers), body))
        box.arrived.set()
        if box.hold is not None:
            await box.hold.wait()
        status = box.answers.pop(0) if box.answers else 200
        return Response(b"thanks", status_code=status)

    app = Starlette(routes=[Route("/{name}", hook, methods=["POST"])])
    port = await nursery.start(serve_http, app, "127.0.0.1", 0)
    box.url = f"http://127.0.0.1:{port}"
    return box
