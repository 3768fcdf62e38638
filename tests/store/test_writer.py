"""The Store: group commit in front of a backend, completions in order on the Trio thread."""

from __future__ import annotations

import threading

import pytest
import trio

from gateway.metrics import Stats
from gateway.model import AppendMessage, Appended, Conversation, CreateConversation
from gateway.store import MemoryBackend, SqliteBackend, StoreError
from gateway.store import writer as writer_module
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


async def test_many_concurrent_reads_are_answered_by_the_reader_threads(nursery, backend):
    store, _ = await started(nursery, backend)
    for i in range(50):
        await store.execute(AppendMessage("c", f"m{i}", "u", "shopper", b"\xa0"))
    pages: dict[int, list[int]] = {}

    async def read(after: int) -> None:
        page = await store.read_messages("c", after=after, limit=5)
        pages[after] = [m.seq for m in page.messages]

    with trio.fail_after(10):
        async with trio.open_nursery() as readers:
            for after in range(50):
                readers.start_soon(read, after)
    assert pages == {after: list(range(after + 1, min(after + 5, 50) + 1)) for after in range(50)}
    if backend.blocking:  # a fixed set of reader connections, however many reads were waiting
        assert len(backend._readers) <= writer_module.READ_THREADS
    assert await store.get_conversation("missing") is None


class FailingReads(SqliteBackend):
    def get_conversation(self, conv_id):
        if conv_id == "boom":
            raise StoreError("read failed")
        return super().get_conversation(conv_id)


async def test_a_failing_read_raises_in_its_task_and_reads_go_on(nursery, tmp_path):
    store, _ = await started(nursery, FailingReads(tmp_path / "db.sqlite3"))
    with pytest.raises(StoreError, match="read failed"):
        await store.get_conversation("boom")
    assert (await store.get_conversation("c")).id == "c"


async def test_a_cancelled_read_finishes_then_sees_the_cancellation(nursery, tmp_path):
    store, _ = await started(nursery, SqliteBackend(tmp_path / "db.sqlite3"))
    got = []
    with trio.move_on_after(0) as scope:  # already cancelled when the read starts
        got.append(await store.get_conversation("c"))  # not cancellable: its answer comes back
        await trio.sleep(0)  # the next checkpoint delivers the cancellation
        got.append("not reached")
    assert scope.cancelled_caught and [conv.id for conv in got] == ["c"]
    assert (await store.get_conversation("c")).id == "c"  # the reader thread is still serving


async def test_reads_after_shutdown_are_refused_by_the_backend(tmp_path):
    backend = SqliteBackend(tmp_path / "db.sqlite3")
    async with trio.open_nursery() as nursery:
        store, _ = await started(nursery, backend)
        assert (await store.get_conversation("c")).id == "c"
        nursery.cancel_scope.cancel()
    with pytest.raises(StoreError):
        await store.get_conversation("c")


class ThreadRecording(SqliteBackend):
    """SQLite that records which thread ran each commit, and how many ops it held."""

    def __init__(self, path, synchronous="NORMAL") -> None:
        super().__init__(path, synchronous)
        self.commits: list[tuple[str, int]] = []

    def apply_batch(self, ops):
        self.commits.append((threading.current_thread().name, len(ops)))
        return super().apply_batch(ops)


def append(i: int) -> AppendMessage:
    return AppendMessage("c", f"m{i}", "u", "shopper", b"\xa0")


async def test_a_quiet_op_on_an_inline_commit_backend_is_committed_on_the_trio_thread(nursery, tmp_path):
    backend = ThreadRecording(tmp_path / "db.sqlite3")
    assert backend.inline_commit
    store, _ = await started(nursery, backend)
    backend.commits.clear()
    for i in range(3):
        result = await store.execute(append(i))
        assert result.message.seq == i + 1
    assert backend.commits == [(threading.current_thread().name, 1)] * 3  # no hop to the writer thread


async def test_a_burst_on_an_inline_commit_backend_goes_to_the_writer_thread_in_order(nursery, tmp_path):
    backend = ThreadRecording(tmp_path / "db.sqlite3")
    store, stats = await started(nursery, backend)
    backend.commits.clear()
    results: list[Appended] = []
    for i in range(500):
        store.submit(append(i), results.append)
    await store.drained()
    for i in range(500, 503):  # quiet again: inline again, after everything before it
        store.submit(append(i), results.append)
        await store.drained()
    assert [r.message.seq for r in results] == list(range(1, 504))
    threads = {name for name, _ in backend.commits}
    assert threads == {"kefu-store-writer", threading.current_thread().name}
    assert any(name == "kefu-store-writer" and n > writer_module.INLINE_BATCH for name, n in backend.commits)  # the burst: to the thread
    assert backend.commits[-3:] == [(threading.current_thread().name, 1)] * 3
    assert len(backend.commits) < 500 / 10 + 3  # group commit held


async def test_fsynced_commits_never_run_on_the_trio_thread(nursery, tmp_path):
    backend = ThreadRecording(tmp_path / "db.sqlite3", synchronous="FULL")
    assert not backend.inline_commit
    store, _ = await started(nursery, backend)
    backend.commits.clear()
    for i in range(3):
        await store.execute(append(i))
    assert {name for name, _ in backend.commits} == {"kefu-store-writer"}


async def test_a_quiet_memory_op_completes_inside_submit_and_a_burst_is_batched(nursery):
    store, stats = await started(nursery, MemoryBackend())
    await trio.sleep(0.01)  # quiet
    results: list[Appended] = []
    store.submit(append(0), results.append)
    assert [r.message.seq for r in results] == [1]  # applied at once: no hop to the store task
    for i in range(1, 100):  # back to back: collected for the store task
        store.submit(append(i), results.append)
    assert len(results) < 100
    await store.drained()
    assert [r.message.seq for r in results] == list(range(1, 101))


async def test_a_completion_that_submits_again_keeps_the_submission_order(nursery, backend):
    store, _ = await started(nursery, backend)
    submitted: list[str] = []
    completed: list[str] = []

    def submit(i: int, then=None) -> None:
        submitted.append(f"m{i}")

        def done(result) -> None:
            completed.append(result.message.cmid)
            if then is not None:
                then()

        store.submit(append(i), done)

    await trio.sleep(0.01)  # quiet: the memory backend applies m0 inside submit, m99 comes before m1
    submit(0, then=lambda: submit(99))  # a completion that submits again
    submit(1)
    await store.drained()
    assert completed == submitted and sorted(completed) == ["m0", "m1", "m99"]
