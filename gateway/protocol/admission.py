"""What a peer may cost before and after it authenticates: sans-IO, with the clock passed in.

Two rules, both decided here and applied by the transport:

* **Input before authentication.** A connection that has not authenticated may send at most
  ``per_connection`` bytes (its upgrade request and its ``auth`` frame), and all such connections
  together at most ``total`` bytes. Everything a pending connection holds (h11's buffer, the frame
  decoder's partial frame and message, the chunk being read) came from those bytes, so memory held
  before authentication is bounded by ``total`` whatever peers send. Past the total, a new
  connection is refused before anything of it is read, and a pending one that would cross it is
  closed with a retryable code.
* **Frames after (and before) authentication.** Every inbound frame, valid or not, takes a token
  from the connection's bucket (``rate`` per second, ``burst`` at once). A refused frame adds one
  to the connection's *excess*, which drains by one per second; at ``close_after`` the connection
  is closed as a flood. The excess does not reset when tokens come back, so a steady flood just
  above the rate is closed too, while a client that bursts now and then is forgiven.
"""

from __future__ import annotations

import math
from typing import Protocol

ADMIT = 0  # take the frame
REFUSE = 1  # drop it (answer ``rate_limited`` if it was a request)
CLOSE = 2  # the connection floods: close it (1008)

EXCESS_FORGIVEN_PER_S = 1.0
ADMISSION_ROOM = 256  # bytes of the pre-auth budget that must be free to admit a new connection


class Bucket(Protocol):
    """The per-connection state ``charge_frame`` reads and updates (``Connection`` has it)."""

    tokens: float
    token_time: float
    violations: float


def charge_frame(state: Bucket, now: float, rate: float, burst: float, close_after: float) -> int:
    """Take one token for one inbound frame at time ``now`` (monotonic seconds); ADMIT, REFUSE or
    CLOSE. ``rate`` 0 means no limit."""
    if not rate:
        return ADMIT
    elapsed = now - state.token_time
    if elapsed < 0.0:
        elapsed = 0.0
    state.token_time = now
    tokens = state.tokens + elapsed * rate
    if tokens > burst:
        tokens = burst
    excess = state.violations
    if excess:
        excess -= elapsed * EXCESS_FORGIVEN_PER_S
        if excess < 0.0:
            excess = 0.0
    if tokens >= 1.0:
        state.tokens = tokens - 1.0
        state.violations = excess
        return ADMIT
    state.tokens = tokens
    state.violations = excess + 1.0
    return CLOSE if state.violations >= close_after else REFUSE


def retry_after_ms(state: Bucket, rate: float) -> int:
    """Milliseconds until the bucket holds a whole token again."""
    return max(1, math.ceil((1.0 - state.tokens) / rate * 1000)) if rate else 0


class PreAuthBudget:
    """Bytes received from connections that have not authenticated yet (see the module doc).

    The transport calls ``admit`` before reading a new connection, ``charge`` for every chunk a
    pending connection reads, and ``release`` once it authenticates or closes."""

    OK = None
    CONNECTION = "preauth_connection_bytes"  # this connection sent too much before authenticating
    TOTAL = "preauth_total_bytes"  # all pending connections together hold too much: retry later

    def __init__(self, total: int, per_connection: int) -> None:
        self.total = total
        self.per_connection = per_connection
        self.held = 0

    def admit(self) -> bool:
        """Whether a new connection may be read at all: the budget has room for its upgrade request."""
        return self.held + ADMISSION_ROOM <= self.total

    def charge(self, already: int, n: int) -> str | None:
        """Account ``n`` more bytes for a connection that has ``already`` been charged; None when
        allowed (the caller adds ``n`` to what it was charged), else the reason it is not."""
        if already + n > self.per_connection:
            return self.CONNECTION
        if self.held + n > self.total:
            return self.TOTAL
        self.held += n
        return None

    def release(self, charged: int) -> None:
        self.held -= charged
