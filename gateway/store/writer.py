"""The Store: group commit in front of a blocking backend, with completions back on the Trio thread.

Writes never cost a thread hop each: ``submit`` puts the op on a queue that one dedicated writer
thread drains — every op waiting when the thread comes round goes into one ``apply_batch`` (one
transaction, one commit). The batch's results come back to Trio with one ``run_sync_soon`` and are
handed to each op's callback, in submission order, by the store's Trio task. Under load batches
grow by themselves.

When it is quiet, the thread hops are most of a message's cost (a wakeup of the writer thread, a
GIL hand-over, a wakeup of the event loop), so a backend whose small commits are cheap
(``inline_commit``: SQLite with synchronous=NORMAL) has its ops collected by the store task
instead, which commits them itself, as one batch, while the writer thread is idle and the batch is
small (``INLINE_BATCH``). Past that, or while the thread is still busy, they go to the thread, in
order. And when nothing else is pending and the op before was a while ago (``QUIET_GAP_S``), such
a backend's op (and any memory-backend op) is applied at once in ``submit``: no hop at all.

Completions are handed to callbacks between ``hold()`` and ``release()`` of ``output`` (the
transport's writer): the frames they queue are written once, at the end of the pass.

Reads of a blocking backend go to a few dedicated reader threads (``READ_THREADS``) over one
queue, and each result wakes its waiting task directly: no per-read thread hand-off through Trio's
thread cache and capacity limiter, and a fixed number of reader connections (each with its own
page cache) however many reads are waiting, as when thousands of clients resume at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from functools import partial
from typing import Any, Callable, Protocol

import outcome
import trio

from ..metrics import Stats
from ..model import AgentProfile, ApiKey, Attachment, Conversation, Page, Participant, Receipt, Record, StoredMessage, TenantSettings, WriteOp
from .base import StoreBackend, StoreError

log = logging.getLogger("kefu.store")

Callback = Callable[[object], None]
_STOP = object()
READ_THREADS = 2  # SQLite readers run side by side in WAL mode; the GIL makes more pointless
INLINE_BATCH = 8  # the most ops an inline-commit backend commits on the Trio thread at once
# An op of an inline-commit backend submitted with nothing pending, this long after the last op was
# applied or collected, is applied at once; closer together, ops are collected for the store task
# and applied as one batch (measured from the end of an apply: a commit's own time is no quiet).
QUIET_GAP_S = 50e-6


class Output(Protocol):
    """Where completions' frames go: held during a pass of completions, written on release."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


class NoOutput:
    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


class StoreClosed(StoreError):
    """The store is shutting down and takes no more writes."""


class Store:
    def __init__(self, backend: StoreBackend, stats: Stats, *, max_batch: int = 1000, max_pending: int = 50_000) -> None:
        self.backend = backend
        self._stats = stats
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending = 0
        self._accepting = False
        self._idle: trio.Event | None = None  # made by ``drained`` when it must wait (not per op)
        self._capacity = trio.Event()
        self._capacity.set()
        self.output: Output = NoOutput()
        # blocking backends: the writer thread's queue, the ops on it or in its hands, and
        # completed batches coming back (appended by run_sync_soon, completed by the store task)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._in_thread = 0
        self._returned: deque[tuple[list, list, float]] = deque()
        self._thread: threading.Thread | None = None
        self._inline_commits = not backend.blocking or bool(getattr(backend, "inline_commit", False))
        # blocking backends: reads waiting for a reader thread, as (call, waiting Trio task)
        self._read_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._readers: list[threading.Thread] = []
        # ops waiting for the next pass of the store task (the memory backend's, and small
        # batches of an inline-commit backend's), and that task's wakeup
        self._inline: list[tuple[WriteOp, Callback]] = []
        self._wake = trio.Event()
        self._last_applied = 0.0  # when the last op was applied at once, or collected

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the backend and serve completions until cancelled; then refuse new writes, finish
        the ones queued, stop the writer thread and close the backend."""
        if self.backend.blocking:
            await trio.to_thread.run_sync(self.backend.open)
            token = trio.lowlevel.current_trio_token()
            self._thread = threading.Thread(target=self._writer_main, args=(token,), name="kefu-store-writer", daemon=True)
            self._thread.start()
            self._readers = [
                threading.Thread(target=self._reader_main, args=(token,), name=f"kefu-store-reader-{i}", daemon=True)
                for i in range(READ_THREADS)
            ]
            for reader in self._readers:
                reader.start()
        else:
            self.backend.open()
        self._accepting = True
        log.info("store open: %s (%s)", type(self.backend).__name__, self.backend.durability)
        try:
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                self.output.hold()
                try:
                    self._pass()
                finally:
                    self.output.release()
        finally:
            with trio.CancelScope(shield=True):
                await self._shutdown()

    async def _shutdown(self) -> None:
        self._accepting = False
        if self._readers:  # the reads queued so far are answered first; later ones use a worker thread
            readers, self._readers = self._readers, []
            for _ in readers:
                self._read_queue.put(_STOP)
            for reader in readers:
                await trio.to_thread.run_sync(reader.join)
        if self.backend.blocking and self._thread is not None:
            self._queue.put(_STOP)
            await trio.to_thread.run_sync(self._thread.join)
            # the writer finished every op queued before _STOP; deliver what came back, then
            # commit what was collected for an inline commit (the thread is gone: here)
            self._complete_returned()
            self._apply_collected(on_thread=False)
            await trio.to_thread.run_sync(self.backend.close)
        else:
            self._apply_collected(on_thread=False)
            self.backend.close()
        log.info("store closed")

    # ---- writes -------------------------------------------------------------------------------

    @property
    def overloaded(self) -> bool:
        return self._pending >= self._max_pending

    async def wait_capacity(self) -> None:
        """Wait while too many writes are pending: readers stop reading, TCP pushes back."""
        while self._pending >= self._max_pending:
            await self._capacity.wait()

    def submit(self, op: WriteOp, callback: Callback) -> None:
        """Queue ``op``; ``callback(result)`` runs later on the Trio thread with the op's result
        (or a StoreError instance). Ops complete in submission order."""
        if not self._accepting:
            callback(StoreClosed("the store is closed"))
            return
        self._pending += 1
        self._stats.store_pending = self._pending
        if self._pending >= self._max_pending and self._capacity.is_set():
            self._capacity = trio.Event()
        if not self._inline_commits:
            self._in_thread += 1
            self._queue.put((op, callback))
            return
        now = time.perf_counter()
        if self._pending == 1 and now - self._last_applied >= QUIET_GAP_S:
            # nothing else in flight, nothing just before: apply it now, no hop to any task
            self._apply_now([(op, callback)])
            return
        self._last_applied = now
        self._inline.append((op, callback))
        self._wake.set()

    async def execute(self, op: WriteOp, observe: Callback | None = None) -> Any:
        """Submit and wait for the result; raise it if it is an error. ``observe(result)`` is
        called with it too, on the Trio thread, even when the waiting task was cancelled meanwhile."""
        done = trio.Event()
        box: list[object] = []

        def finished(result: object) -> None:
            box.append(result)
            done.set()
            if observe is not None:
                observe(result)

        self.submit(op, finished)
        await done.wait()
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def drained(self) -> None:
        """Wait until every write submitted so far has completed."""
        while self._pending:
            if self._idle is None:
                self._idle = trio.Event()
            await self._idle.wait()

    def _writer_main(self, token: trio.lowlevel.TrioToken) -> None:
        get, get_nowait, apply_batch = self._queue.get, self._queue.get_nowait, self.backend.apply_batch
        stop = False
        while not stop:
            item = get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            results, seconds = self._apply(apply_batch, batch)
            try:
                token.run_sync_soon(self._returned_from_thread, (batch, results, seconds))
            except trio.RunFinishedError:
                return

    def _returned_from_thread(self, done: tuple[list, list, float]) -> None:
        """On the Trio thread (run_sync_soon): a batch the writer thread committed."""
        self._returned.append(done)
        self._wake.set()

    @staticmethod
    def _apply(apply_batch: Callable[[list[WriteOp]], list[object]], batch: list) -> tuple[list[object], float]:
        started = time.perf_counter()
        try:
            results = apply_batch([op for op, _ in batch])
        except StoreError as exc:  # the backend says why (unavailable, damaged): no traceback needed
            log.error("store batch of %d failed: %s", len(batch), exc)
            results = [exc] * len(batch)
            return results, time.perf_counter() - started
        except Exception as exc:  # the commit failed: no op of the batch is durable
            log.exception("store batch of %d failed", len(batch))
            results = [exc if isinstance(exc, StoreError) else StoreError(f"store write failed: {exc}")] * len(batch)
        return results, time.perf_counter() - started

    def _pass(self) -> None:
        """One pass of the store task: batches back from the writer thread first (they were
        submitted first), then what was collected since the last pass."""
        self._complete_returned()
        self._apply_collected(on_thread=self._thread is not None)

    def _complete_returned(self) -> None:
        returned = self._returned
        while returned:
            batch, results, seconds = returned.popleft()
            self._in_thread -= len(batch)
            self._complete(batch, results, seconds)

    def _apply_collected(self, *, on_thread: bool) -> None:
        """Apply the ops collected for the store task, in order: inline, or for an inline-commit
        backend whose writer thread is busy or whose batch is large, on the writer thread (the
        callbacks of a pass may collect more ops, which this applies too)."""
        while self._inline:
            if on_thread and (self._in_thread or len(self._inline) > INLINE_BATCH):
                collected, self._inline = self._inline, []
                self._in_thread += len(collected)
                for item in collected:
                    self._queue.put(item)
                return
            batch, self._inline = self._inline[: self._max_batch], self._inline[self._max_batch :]
            self._apply_now(batch)

    def _apply_now(self, batch: list[tuple[WriteOp, Callback]]) -> None:
        results, seconds = self._apply(self.backend.apply_batch, batch)
        self._last_applied = time.perf_counter()  # a submit right after this one is not quiet
        self._complete(batch, results, seconds)

    def _complete(self, batch: list, results: list[object], seconds: float) -> None:
        self._stats.commit_latency.observe(seconds)
        self._stats.commit_batch.observe(len(batch))
        for (_, callback), result in zip(batch, results):
            try:
                callback(result)
            except Exception:  # one broken callback must not strand the others
                log.exception("store completion callback failed")
        self._pending -= len(batch)
        self._stats.store_pending = self._pending
        if self._pending < self._max_pending:
            self._capacity.set()
        if self._pending == 0 and self._idle is not None:
            self._idle.set()
            self._idle = None

    # ---- reads --------------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.backend.blocking:
            return fn(*args, **kwargs)
        call = partial(fn, *args, **kwargs)
        if not self._readers:  # before run() or after shutdown: the backend answers (or refuses)
            return await trio.to_thread.run_sync(call)
        self._read_queue.put((call, trio.lowlevel.current_task()))
        # Like trio.to_thread.run_sync (not cancellable): a cancelled reader waits for its read,
        # which is short, and then sees the cancellation at its next checkpoint. The reader thread
        # reschedules the task with the call's outcome, which this returns or raises.
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def _reader_main(self, token: trio.lowlevel.TrioToken) -> None:
        get, reschedule = self._read_queue.get, trio.lowlevel.reschedule
        while True:
            item = get()
            if item is _STOP:
                return
            call, task = item
            result = outcome.capture(call)
            try:
                token.run_sync_soon(reschedule, task, result)
            except trio.RunFinishedError:
                return

    async def get_conversation(self, conv_id: str) -> Conversation | None:
        return await self._read(self.backend.get_conversation, conv_id)

    async def list_conversations(self, tenant: str, **kwargs: Any) -> list[Conversation]:
        return await self._read(self.backend.list_conversations, tenant, **kwargs)

    async def in_stages(self, stages: tuple[str, ...], **kwargs: Any) -> list[Conversation]:
        return await self._read(self.backend.in_stages, stages, **kwargs)

    async def participants(self, conv_id: str) -> list[Participant]:
        return await self._read(self.backend.participants, conv_id)

    async def read_messages(self, conv_id: str, **kwargs: Any) -> Page:
        return await self._read(self.backend.read_messages, conv_id, **kwargs)

    async def find_message(self, conv_id: str, sender: str, cmid: str) -> StoredMessage | None:
        return await self._read(self.backend.find_message, conv_id, sender, cmid)

    async def receipts(self, conv_id: str) -> list[Receipt]:
        return await self._read(self.backend.receipts, conv_id)

    async def api_key(self, key_id: str) -> ApiKey | None:
        return await self._read(self.backend.api_key, key_id)

    async def api_keys(self, tenant: str) -> list[ApiKey]:
        return await self._read(self.backend.api_keys, tenant)

    async def agents(self, tenant: str | None = None) -> list[AgentProfile]:
        return await self._read(self.backend.agents, tenant)

    async def tenant_settings(self, tenant: str | None = None) -> list[TenantSettings]:
        return await self._read(self.backend.tenant_settings, tenant)

    async def tags(self, conv_id: str) -> tuple[str, ...]:
        return await self._read(self.backend.tags, conv_id)

    async def get_attachment(self, attachment_id: str) -> Attachment | None:
        return await self._read(self.backend.get_attachment, attachment_id)

    async def record(self, tenant: str, kind: str, key: str) -> Record | None:
        return await self._read(self.backend.record, tenant, kind, key)

    async def records(self, tenant: str, kind: str, **kwargs: Any) -> list[Record]:
        return await self._read(self.backend.records, tenant, kind, **kwargs)

    async def ping(self) -> None:
        """One round trip to a networked backend (its ``ping``); nothing for the others.
        Raises StoreError when it does not answer."""
        ping = getattr(self.backend, "ping", None)
        if ping is not None:
            await self._read(ping)
