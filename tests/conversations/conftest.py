from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from gateway.bus import LocalBus
from gateway.conversations.service import ConversationService
from gateway.hub import Hub
from gateway.metrics import Stats
from gateway.protocol.fields import Limits
from gateway.store import MemoryBackend, SqliteBackend
from gateway.store.writer import Store


@dataclass
class Recorder:
    """A bus handler that keeps every event (to check what the service published)."""

    events: list[tuple] = field(default_factory=list)

    def on_message(self, *args): self.events.append(("message", *args))
    def on_event(self, *args): self.events.append(("event", *args))
    def on_conversation(self, *args): self.events.append(("conversation", *args))
    def on_membership(self, *args): self.events.append(("membership", *args))
    def on_user(self, *args): self.events.append(("user", *args))

    def of(self, kind: str) -> list[tuple]:
        return [e[1:] for e in self.events if e[0] == kind]


@pytest.fixture(params=["memory", "sqlite"])
async def service(request, nursery, tmp_path):
    """A conversation service over a running store and a local bus, with no sockets anywhere."""
    return await start_service(nursery, request.param, tmp_path)


@pytest.fixture
async def memory_service(nursery, tmp_path):
    """The same on the memory store only (authorization does not depend on the store)."""
    return await start_service(nursery, "memory", tmp_path)


async def start_service(nursery, kind: str, tmp_path) -> ConversationService:
    stats = Stats()
    backend = MemoryBackend() if kind == "memory" else SqliteBackend(tmp_path / "db.sqlite3")
    store = Store(backend, stats)
    await nursery.start(store.run)
    bus = LocalBus()
    recorder = Recorder()
    await nursery.start(bus.run, recorder)
    svc = ConversationService(store, Hub(), bus, stats, node_id="node-a", limits=Limits(history_page=50), reply_bytes=1 << 20)
    svc.recorder = recorder  # type: ignore[attr-defined]
    return svc


async def settle(pending) -> None:
    """Await what a hot-path call returned, if anything."""
    if pending is not None:
        await pending


async def completed(start) -> object:
    """Call a hot-path method whose result comes through ``done``; return that result."""
    got: list[object] = []
    done = trio.Event()

    def callback(result: object) -> None:
        got.append(result)
        done.set()

    await settle(start(callback))
    with trio.fail_after(5):
        await done.wait()
    return got[0]
