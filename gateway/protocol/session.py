"""Per-connection session state of kefu.v1: authentication, token refresh and expiry, rate budget.

Sans-IO: no sockets, no Trio, no clock of its own. Every method that depends on time takes the
time (``now``: monotonic seconds of the frame being handled; ``wall``: Unix seconds), so tests
drive it with plain numbers, and it answers with decisions the transport carries out (send an
error, close with a code). ``transport.connection.Connection`` extends it with the socket side, so
a connection carries this state without a second object (memory per idle connection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import AuthError, RequestError

# Answers of Session.take (an int, not an object: it runs for every request)
ADMITTED = 0
FLOOD = -1  # too many refusals in a row: close the connection (1008); > 0: refused, retry after this many ms


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The token bucket every connection of a node shares: ``rate`` requests per second (0: no
    limit), up to ``burst`` at once; ``flood_after`` refusals in a row close the connection."""

    rate: float
    burst: int
    flood_after: int


class Session:
    __slots__ = ("identity", "user_key", "tokens", "token_time", "violations", "live")

    def __init__(self) -> None:
        self.identity: Any = None  # auth.Identity once authenticated
        self.user_key: tuple[str, str] = ("", "")
        self.tokens = 0.0  # rate budget, refilled at token_time
        self.token_time = 0.0
        self.violations = 0  # requests refused by the rate limit in a row
        self.live = False  # resumed: receives live traffic

    # ---- authentication -----------------------------------------------------------------------

    def authenticate(self, identity: Any, now: float, policy: RatePolicy) -> None:
        """The connection is ``identity``'s from now on, with a full rate budget."""
        if self.identity is not None:
            raise RequestError("already_authenticated", "this connection is authenticated already")
        self.identity = identity
        self.user_key = (identity.tenant, identity.user)
        self.tokens = float(policy.burst)
        self.token_time = now

    def refresh(self, identity: Any) -> None:
        """A fresh token for the same user extends the connection past the old token's expiry."""
        old = self.identity
        if (identity.tenant, identity.user, identity.role) != (old.tenant, old.user, old.role):
            raise RequestError("already_authenticated", "this connection is authenticated as another user")
        self.identity = identity

    def overdue(self, now: float, wall: float, created: float, handshake_timeout_s: float) -> AuthError | None:
        """Why the connection must close for authentication now, if it must: no token within the
        handshake timeout, or the token expired (not refreshed in time)."""
        identity = self.identity
        if identity is None:
            if now - created > handshake_timeout_s:
                return AuthError("token_missing", "no auth frame within the handshake timeout")
            return None
        if wall > identity.expires_at:
            return AuthError("token_expired", "the token expired: reconnect with a new one, or send `auth` with a fresh token before expiry")
        return None

    # ---- rate budget --------------------------------------------------------------------------

    def take(self, now: float, policy: RatePolicy) -> int:
        """Spend one request of the budget, refilled up to ``now``: ``ADMITTED``, ``FLOOD``
        (close), or the milliseconds after which a retry would be admitted. A mild excess is an
        error the client may retry; a long run of refusals is a flood."""
        tokens = min(policy.burst, self.tokens + (now - self.token_time) * policy.rate)
        self.token_time = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            self.violations = 0
            return ADMITTED
        self.tokens = tokens
        self.violations += 1
        if self.violations >= policy.flood_after:
            return FLOOD
        return max(1, math.ceil((1.0 - tokens) / policy.rate * 1000))
