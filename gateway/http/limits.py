"""Per API key request rates: each key has a token bucket, charged by the same rule as a
WebSocket connection's frames (``gateway.protocol.admission.charge_frame``), so one runaway
backend cannot monopolise the store. Sans-IO, with the clock passed in."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from ..protocol.admission import ADMIT, charge_frame, retry_after_ms

MAX_KEYS = 10_000  # buckets remembered; the least recently used is forgotten past it (it refills)


@dataclass(slots=True)
class KeyBucket:
    tokens: float
    token_time: float
    violations: float = 0.0


class KeyRates:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        """``rate`` requests a second per key, ``burst`` at once; ``rate`` 0: no limit."""
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, KeyBucket] = OrderedDict()

    def admit(self, key_id: str) -> int | None:
        """None when the key may make a request now, else the milliseconds until it may."""
        if not self.rate:
            return None
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = KeyBucket(self.burst, now)
            if len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key_id)
        if charge_frame(bucket, now, self.rate, self.burst, float("inf")) == ADMIT:
            return None
        return retry_after_ms(bucket, self.rate)
