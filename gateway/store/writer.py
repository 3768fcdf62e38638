"""The Store: group commit in front of a blocking backend, with completions back on the Trio thread.

Writes never cost a thread hop each: ``submit`` puts the op on a queue that one dedicated writer
thread drains — every op waiting when the thread comes round goes into one ``apply_batch`` (one
transaction, one commit). The batch's results come back to Trio with one ``run_sync_soon`` and are
handed to each op's callback, in submission order, by one Trio task. Under load batches grow by
themselves; at one message in flight the latency is one commit plus two cheap hand-offs.

Reads of a blocking backend go to a few dedicated reader threads (``READ_THREADS``) over one
queue, and each result wakes its waiting task directly: no per-read thread hand-off through Trio's
thread cache and capacity limiter, and a fixed number of reader connections (each with its own
page cache) however many reads are waiting, as when thousands of clients resume at once.

A memory backend (``blocking = False``) is applied inline by the same Trio task, with the same
batching, so both paths share every line that matters; its reads run inline too.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from functools import partial
from typing import Any, Callable

import outcome
import trio

from ..metrics import Stats
from ..model import AgentProfile, ApiKey, Attachment, Conversation, Page, Participant, Receipt, Record, StoredMessage, TenantSettings, WriteOp
from .base import StoreBackend, StoreError

log = logging.getLogger("kefu.store")

Callback = Callable[[object], None]
_STOP = object()
READ_THREADS = 2  # SQLite readers run side by side in WAL mode; the GIL makes more pointless


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
        self._idle = trio.Event()
        self._idle.set()
        self._capacity = trio.Event()
        self._capacity.set()
        # blocking backends: the writer thread's queue, and completed batches coming back
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done_send, self._done_recv = trio.open_memory_channel[tuple[list, list, float]](math.inf)
        self._thread: threading.Thread | None = None
        # blocking backends: reads waiting for a reader thread, as (call, waiting Trio task)
        self._read_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._readers: list[threading.Thread] = []
        # inline (memory) backend: ops waiting for the next pass of the completion task
        self._inline: list[tuple[WriteOp, Callback]] = []
        self._inline_wake = trio.Event()

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
            if self.backend.blocking:
                async for batch, results, seconds in self._done_recv:
                    self._complete(batch, results, seconds)
            else:
                while True:
                    await self._inline_wake.wait()
                    self._run_inline()
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
            # the writer finished every op queued before _STOP; deliver what came back
            while True:
                try:
                    batch, results, seconds = self._done_recv.receive_nowait()
                except trio.WouldBlock:
                    break
                self._complete(batch, results, seconds)
            await trio.to_thread.run_sync(self.backend.close)
        else:
            self._run_inline()
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
        if self._pending == 1:
            self._idle = trio.Event()
        if self._pending >= self._max_pending and self._capacity.is_set():
            self._capacity = trio.Event()
        if self.backend.blocking:
            self._queue.put((op, callback))
        else:
            self._inline.append((op, callback))
            self._inline_wake.set()

    async def execute(self, op: WriteOp) -> Any:
        """Submit and wait for the result; raise it if it is an error."""
        done = trio.Event()
        box: list[object] = []

        def finished(result: object) -> None:
            box.append(result)
            done.set()

        self.submit(op, finished)
        await done.wait()
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def drained(self) -> None:
        """Wait until every write submitted so far has completed."""
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
                token.run_sync_soon(self._done_send.send_nowait, (batch, results, seconds))
            except trio.RunFinishedError:
                return

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

    def _run_inline(self) -> None:
        self._inline_wake = trio.Event()
        while self._inline:
            batch, self._inline = self._inline[: self._max_batch], self._inline[self._max_batch :]
            results, seconds = self._apply(self.backend.apply_batch, batch)
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
        if self._pending == 0:
            self._idle.set()

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
