"""Worker processes that inspect and store uploads, at a lower CPU priority than the gateway's event loop.

Why processes: Pillow and mutagen hold the GIL for much of their work, so inspection in a thread
competes with the event loop that carries every message (measured: text acks 6-9x slower while
uploads ran). In a process of its own, niced (``WORKER_NICENESS``), inspection only uses CPU the
event loop leaves over, and the kernel prefers the loop whenever both want a core (``SCHED_IDLE``:
see :func:`lower_priority`), with an exception that ``cpus`` (:func:`keep_to`) avoids. The worker
also writes the upload to the blob store, so that the gateway's own threads do not copy megabytes
on the event loop's core.

How: each worker inspects one upload at a time. The spool file goes to it as a file descriptor
(``SCM_RIGHTS`` over the worker's socket pair): no byte is copied, the worker reads the same file.
The :class:`~gateway.media.inspection.Inspection` comes back pickled (a thumbnail is a few KB).
The parent's side of an exchange runs in a Trio worker thread, so the event loop never blocks.

Failure: a worker that dies while it inspects (the kernel's OOM killer, a crash in a decoder) fails
only that upload (``WorkerDied``: the upload is refused ``inspection_failed``); the next upload gets
a new worker. A worker found dead before it is given a job is replaced without the upload noticing.

Workers are forked from a fork server that has imported the inspection code once, so a new worker
costs a fork (milliseconds), not an interpreter start; they start on first use.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any, BinaryIO, Callable

import trio

log = logging.getLogger("kefu.media")

WORKER_NICENESS = 10  # added to the gateway's niceness: inspection yields the CPU to the event loop
JOIN_TIMEOUT_S = 2.0


class WorkerDied(Exception):
    """The worker process ended while it held the job (killed, or crashed)."""


class WorkerUnavailable(Exception):
    """The worker could not be handed the job (it had ended before): the job never ran."""


Work = Callable[[tuple, BinaryIO], tuple]  # (job, the file) -> the reply; a module-level function


def worker_context(work: Work) -> Any:
    """The multiprocessing context workers start from: a fork server (no fork of the threaded
    gateway itself) that imports ``work``'s module once, or spawn where there is none."""
    try:
        context = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    context.set_forkserver_preload([work.__module__])
    return context


def serve(conn: Connection, niceness: int, work: Work, cpus: frozenset[int] | None = None) -> None:
    """A worker's life: jobs from ``conn``, ``work``'s answers back, until the gateway closes its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the gateway, which stops its workers
    lower_priority(niceness)
    if cpus:
        keep_to(cpus)
    while True:
        try:
            job = conn.recv()
            fd = reduction.recv_handle(conn)
        except (EOFError, OSError):
            return
        with os.fdopen(fd, "rb") as source:
            reply = work(job, source)
        conn.send(reply)


def lower_priority(niceness: int) -> None:
    """Make the calling process yield its core to the gateway: ``SCHED_IDLE`` where the kernel has
    it, so that the event loop preempts a worker the moment it wakes (a niced worker still runs out
    its time slice first: measured, text acks waited up to 7 ms behind one); and ``niceness`` too,
    which is what counts where SCHED_IDLE is not available. Lowering one's own priority needs no
    privilege; a refusal leaves the worker at the gateway's priority."""
    try:
        os.nice(niceness)
    except OSError:
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        pass


def keep_to(cpus: frozenset[int]) -> None:
    """Run the calling process on ``cpus`` only (which may lie outside the gateway's own).

    Why: on a core it shares with the event loop, even a ``SCHED_IDLE`` worker delays the loop.
    A worker that has slept (waiting for its next job, or for the disk) comes back with its
    fair-scheduling lag reset, and the kernel may then pick it over the woken loop and let it run
    to the next timer tick: perf showed the loop's wakeups up to 3 ms late on this account (see
    docs/benchmarks.md). Cores of its own for the workers leave the loop's core to the loop."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError) as exc:  # not Linux, or a cpuset forbids them all: stay where it is
        log.warning("media inspection worker %d could not be kept to CPUs %s: %s", os.getpid(), sorted(cpus), exc)


class Worker:
    """One worker process and the gateway's end of its socket pair."""

    def __init__(self, context: Any, niceness: int, work: Work, cpus: frozenset[int] | None = None) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=serve, args=(child, niceness, work, cpus), name="kefu-media-inspection", daemon=True)
        self.process.start()
        child.close()
        self.sent = False  # the current job was handed over (tests wait for it)

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def exchange(self, job: tuple, fd: int) -> tuple:
        """Hand over ``job`` and the file ``fd``, wait for the answer (blocking: run in a thread)."""
        self.sent = False
        try:
            self.conn.send(job)
            reduction.send_handle(self.conn, fd, self.pid)
        except OSError as exc:
            raise WorkerUnavailable(str(exc)) from None
        self.sent = True
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerDied(str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        """Close the socket (the worker sees the end and exits); wait for it briefly, then kill."""
        self.conn.close()
        self.process.join(JOIN_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(JOIN_TIMEOUT_S)


class InspectionPool:
    """At most ``size`` worker processes, each inspecting one upload at a time with ``work``, on
    ``cpus`` (None: wherever the gateway runs)."""

    def __init__(self, size: int, work: Work, *, niceness: int = WORKER_NICENESS, cpus: frozenset[int] | None = None) -> None:
        self.size = max(1, size)
        self.work = work
        self.niceness = niceness
        self.cpus = cpus
        self.limiter = trio.CapacityLimiter(self.size)
        self.idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self.started = 0  # workers started, replacements included
        self.died = 0  # workers that ended while inspecting
        self.closed = False
        self._context: Any = None

    async def run(self, job: tuple, fd: int) -> tuple:
        """Inspect with a worker: ``work(job, the file fd refers to)`` runs there.
        Returns its reply; raises WorkerDied when the worker ended during the job."""
        async with self.limiter:
            for _ in range(2):  # a second worker when the first had ended before the job
                worker = await self._take()
                self.busy.add(worker)
                try:
                    reply = await trio.to_thread.run_sync(worker.exchange, job, fd)
                except WorkerUnavailable:
                    await trio.to_thread.run_sync(worker.close)
                    continue
                except WorkerDied:
                    self.died += 1
                    await trio.to_thread.run_sync(worker.close)
                    raise
                finally:
                    self.busy.discard(worker)
                if self.closed:
                    await trio.to_thread.run_sync(worker.close)
                else:
                    self.idle.append(worker)
                return reply
        raise WorkerDied("no worker could be started")

    async def _take(self) -> Worker:
        while self.idle:
            worker = self.idle.pop()
            if worker.process.is_alive():
                return worker
            log.warning("media inspection worker %d had ended (exit code %s): replaced", worker.pid, worker.process.exitcode)
            await trio.to_thread.run_sync(worker.close)
        if self._context is None:
            self._context = worker_context(self.work)
        try:
            worker = await trio.to_thread.run_sync(Worker, self._context, self.niceness, self.work, self.cpus)
        except OSError as exc:  # out of processes or memory: this upload fails, the next one tries again
            raise WorkerDied(f"could not start a worker: {exc}") from None
        self.started += 1
        return worker

    def close(self) -> None:
        """Stop the idle workers; busy ones are stopped when their upload's inspection ends."""
        self.closed = True
        idle, self.idle = self.idle, []
        for worker in idle:
            worker.close()
