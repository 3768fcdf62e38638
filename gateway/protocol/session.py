"""Per-connection session state of kefu.v1: authentication, token refresh and expiry, rate budget.

Sans-IO: no sockets, no Trio, no clock of its own. Every method that depends on time takes the
time (``now``: monotonic seconds of the frame being handled; ``wall``: Unix seconds), so tests
drive it with plain numbers, and it answers with decisions the transport carries out (send an
error, close with a code). ``transport.connection.Connection`` extends it with the socket side, so
a connection carries this state without a second object (memory per idle connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import admission
from .admission import ADMIT, CLOSE, REFUSE
from .errors import AuthError, RequestError

__all__ = ["ADMIT", "CLOSE", "REFUSE", "RatePolicy", "Session"]

@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The token bucket every connection of a node shares: ``rate`` frames per second (0: no
    limit), up to ``burst`` at once; an excess of ``flood_after`` refused frames (draining one per
    second) closes the connection (the rules are ``admission.charge_frame``'s)."""

    rate: float
    burst: int
    flood_after: int


class Session:
    __slots__ = ("identity", "user_key", "tokens", "token_time", "violations", "live")

    def __init__(self, burst: float = 0.0) -> None:
        self.identity: Any = None  # auth.Identity once authenticated
        self.user_key: tuple[str, str] = ("", "")
        self.tokens = float(burst)  # rate budget, refilled at token_time: every frame counts, from the first
        self.token_time = 0.0
        self.violations = 0.0  # the excess of refused frames, less one forgiven per second
        self.live = False  # resumed: receives live traffic

    # ---- authentication -----------------------------------------------------------------------

    def authenticate(self, identity: Any) -> None:
        """The connection is ``identity``'s from now on (its rate budget goes on as it was)."""
        if self.identity is not None:
            raise RequestError("already_authenticated", "this connection is authenticated already")
        self.identity = identity
        self.user_key = (identity.tenant, identity.user)

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

    def charge(self, now: float, policy: RatePolicy) -> int:
        """Charge one inbound frame received at ``now``: ADMIT, REFUSE (answer ``rate_limited``
        after ``retry_after_ms``) or CLOSE (a flood: close with 1008)."""
        return admission.charge_frame(self, now, policy.rate, policy.burst, policy.flood_after)

    def retry_after_ms(self, policy: RatePolicy) -> int:
        return admission.retry_after_ms(self, policy.rate)
