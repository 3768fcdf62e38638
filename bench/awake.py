"""``--awake``: keep every core from idling while the bench runs, at the lowest priority there is.

On this virtual machine a core that goes idle halts, and waking it for the next packet costs from
tens of microseconds to several milliseconds (see the TCP echo floor of the latency workload). A
spinner per core under SCHED_IDLE runs only when nothing else wants the core, so the server and the
generator lose (almost) no CPU to it and their CPU time is not counted with it, but a core is never
halted when a packet arrives. It models a machine that is busy with other work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

MAX_S = 3 * 3600  # a spinner never outlives this, whatever happens to the bench

_SPIN = f"""
import os, time
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
parent, end = os.getppid(), time.monotonic() + {MAX_S}
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(100000):
        pass
"""


@contextmanager
def keep_awake(enabled: bool, cpus: list[int] | None = None) -> Iterator[list[int]]:
    """Run one SCHED_IDLE spinner per core (pids yielded) while the block runs; none when disabled."""
    if not enabled:
        yield []
        return
    cores = cpus if cpus is not None else sorted(os.sched_getaffinity(0))
    procs = []
    try:
        for core in cores:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _SPIN], preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
