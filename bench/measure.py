"""What a worker records while it runs: sequence checks, latencies, counts over time.

Everything here is plain data that crosses the process boundary as picklable dicts, and is merged
by the coordinator (``merge_*``). Times are ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock
for every process of the machine, so a timestamp written into a message body by one process can be
subtracted from the arrival time in another.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from typing import Any

BIN_S = 0.1  # width of a throughput-over-time bin
MAX_GAP = 1_000_000  # a jump this far ahead is not a gap but a broken sequence number

monotonic_ns = time.monotonic_ns


class SeqTracker:
    """One connection's view of one conversation: every sequence number 1, 2, 3, … exactly once and
    in increasing order (acks of its own messages and deliveries of the others' together).

    A number that arrives after a higher one is out of order; one that arrives twice is duplicated;
    one that never arrives by ``finish(last)`` is lost. Memory is bounded by the gaps."""

    __slots__ = ("next", "missing", "duplicated", "out_of_order", "broken")

    def __init__(self, after: int = 0) -> None:
        self.next = after + 1
        self.missing: set[int] | None = None
        self.duplicated = 0
        self.out_of_order = 0
        self.broken = 0

    def see(self, seq: int) -> None:
        nxt = self.next
        if seq == nxt:
            self.next = nxt + 1
        elif seq > nxt:
            if seq - nxt > MAX_GAP:
                self.broken += 1
                return
            if self.missing is None:
                self.missing = set()
            self.missing.update(range(nxt, seq))
            self.next = seq + 1
        elif self.missing and seq in self.missing:
            self.missing.discard(seq)
            self.out_of_order += 1
        else:
            self.duplicated += 1

    @property
    def last(self) -> int:
        """The highest number seen (the cursor a resume starts from when nothing is missing)."""
        return self.next - 1

    @property
    def contiguous(self) -> int:
        """The highest number below which nothing is missing."""
        if self.missing:
            return min(self.missing) - 1
        return self.next - 1

    def finish(self, last: int) -> dict[str, int]:
        """The counters once everything up to ``last`` should have arrived."""
        lost = len(self.missing or ()) + max(0, last - (self.next - 1))
        return {
            "lost": lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "unexpected": max(0, (self.next - 1) - last) + self.broken,
        }


def empty_checks() -> dict[str, Any]:
    return {"lost": 0, "duplicated": 0, "out_of_order": 0, "unexpected": 0, "errors": {}, "closed": 0, "unanswered": 0}


def add_checks(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    for key, value in part.items():
        if key == "errors":
            errors = Counter(total.get("errors") or {})
            errors.update(value)
            total["errors"] = dict(errors)
        else:
            total[key] = total.get(key, 0) + value
    return total


def failed(checks: dict[str, Any]) -> bool:
    """A run with any lost, duplicated, out-of-order or unexpected number, error frame, unexpected
    close or unanswered request is failed."""
    return any(checks.get(k) for k in ("lost", "duplicated", "out_of_order", "unexpected", "closed", "unanswered")) or bool(checks.get("errors"))


class Latencies:
    """Latency samples in microseconds (uint32), recorded only inside the measurement window."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples = array("I")

    def add_ns(self, ns: int) -> None:
        us = ns // 1000
        self.samples.append(us if 0 <= us < 0xFFFFFFFF else 0xFFFFFFFE)

    def dump(self) -> bytes:
        return self.samples.tobytes()


class Series:
    """Counts per BIN_S bin since ``start_ns`` (for throughput over time)."""

    __slots__ = ("start", "bins")

    def __init__(self, start_ns: int) -> None:
        self.start = start_ns
        self.bins: list[int] = []

    def add(self, now_ns: int, n: int = 1) -> None:
        i = int((now_ns - self.start) / (BIN_S * 1e9))
        if i < 0:
            return
        bins = self.bins
        if i >= len(bins):
            bins.extend([0] * (i + 1 - len(bins)))
        bins[i] += n


# ---- merging in the coordinator ------------------------------------------------------------------


def merge_latencies(dumps: list[bytes]) -> "Any":
    """All workers' samples as one numpy array of microseconds."""
    import numpy as np

    parts = [np.frombuffer(d, dtype=np.uint32) for d in dumps if d]
    if not parts:
        return np.zeros(0, dtype=np.uint32)
    return np.concatenate(parts)


def percentiles(samples: "Any") -> dict[str, float | None]:
    """p50, p99, p99.9 (and max, mean, count) in milliseconds."""
    import numpy as np

    if len(samples) == 0:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None, "mean_ms": None}
    p50, p99, p999 = np.percentile(samples, [50, 99, 99.9])
    return {
        "count": int(len(samples)),
        "p50_ms": round(float(p50) / 1000, 4),
        "p99_ms": round(float(p99) / 1000, 4),
        "p999_ms": round(float(p999) / 1000, 4),
        "max_ms": round(float(samples.max()) / 1000, 4),
        "mean_ms": round(float(samples.mean()) / 1000, 4),
    }


def merge_series(series: list[list[int]]) -> list[int]:
    total: list[int] = []
    for bins in series:
        if len(bins) > len(total):
            total.extend([0] * (len(bins) - len(total)))
        for i, n in enumerate(bins):
            total[i] += n
    return total
