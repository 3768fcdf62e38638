"""The Store: group commit in front of a backend, completions in order on the Trio thread."""

from __future__ import annotations

import pytest
import trio

from gateway.metrics import Stats
from gateway.model import AppendMessage, Appended, Conversation, CreateConversation
from gateway.store import MemoryBackend, SqliteBackend, StoreError
from gateway.store.writer import Store, StoreClosed


class FailingCommits(SqliteBackend):
    """SQLite whose next commit fails (as a full disk would make it)."""

    fail_next = False

    def apply_batch(self, ops):
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        return super().apply_batch(ops)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    return MemoryBackend() if request.param == "memory" else FailingCommits(tmp_path / "db.sqlite3")


async def started(nursery, backend, **kw) -> tuple[Store, Stats]:
    stats = Stats()
    store = Store(backend, stats, **kw)
    await nursery.start(store.run)
    await store.execute(CreateConversation(Conversation("c", "t", "u", "app", "open", 1)))
    return store, stats


async def test_a_burst_is_committed_in_a_few_batches_and_completes_in_order(nursery, backend):
    store, stats = await started(nursery, backend)
    results: list[Appended] = []
    for i in range(3000):
        store.submit(AppendMessage("c", f"m{i}", "u", "shopper", b"\xa0"), results.append)
    with trio.fail_after(10):
        await store.drained()
    assert [r.message.seq for r in results] == list(range(1, 3001))
    assert [r.message.cmid for r in results] == [f"m{i}" for i in range(3000)]
    assert stats.commit_batch.count < 3000 / 10  # many ops share a transaction
    assert stats.store_pending == 0


async def test_backpressure_flag_and_capacity(nursery, backend):
    store, _ = await started(nursery, backend, max_pending=10)
    done = []
    for i in range(25):
        store.submit(AppendMessage("c", f"m{i}", "u", "shopper", b"\xa0"), done.append)
    assert store.overloaded
    with trio.fail_after(10):
        await store.wait_capacity()
    assert not store.overloaded
    await store.drained()
    assert len(done) == 25


async def test_a_failed_commit_fails_every_op_of_its_batch_and_the_store_goes_on(nursery, tmp_path):
    backend = FailingCommits(tmp_path / "db.sqlite3")
    store, _ = await started(nursery, backend)
    backend.fail_next = True
    with pytest.raises(StoreError):
        await store.execute(AppendMessage("c", "lost", "u", "shopper", b"\xa0"))
    appended = await store.execute(AppendMessage("c", "kept", "u", "shopper", b"\xa0"))
    assert appended.message.seq == 1  # the failed batch consumed no number


async def test_after_shutdown_writes_are_refused_and_queued_ones_finish(tmp_path):
    backend = SqliteBackend(tmp_path / "db.sqlite3")
    results = []
    async with trio.open_nursery() as nursery:
        store, _ = await started(nursery, backend)
        for i in range(500):
            store.submit(AppendMessage("c", f"m{i}", "u", "shopper", b"\xa0"), results.append)
        nursery.cancel_scope.cancel()  # shutdown with writes queued
    assert [r.message.seq for r in results] == list(range(1, 501))
    late = []
    store.submit(AppendMessage("c", "late", "u", "shopper", b"\xa0"), late.append)
    assert isinstance(late[0], StoreClosed)
