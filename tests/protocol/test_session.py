"""Per-connection session state, driven with explicit times: no sockets, no sleeps."""

from __future__ import annotations

import pytest

from gateway.auth import Identity
from gateway.protocol.errors import RequestError
from gateway.protocol.session import ADMITTED, FLOOD, RatePolicy, Session

POLICY = RatePolicy(rate=10.0, burst=3, flood_after=5)
ALICE = Identity("t1", "alice", "shopper", "app", "Alice", expires_at=1000)


def authenticated(now: float = 0.0) -> Session:
    s = Session()
    s.authenticate(ALICE, now, POLICY)
    return s


def test_the_burst_is_admitted_then_refused_with_the_time_to_wait():
    s = authenticated()
    assert [s.take(0.0, POLICY) for _ in range(3)] == [ADMITTED] * 3
    assert s.take(0.0, POLICY) == 100  # one token at 10/s: 100 ms
    assert s.take(0.05, POLICY) == 50  # half refilled meanwhile
    assert s.take(0.1, POLICY) == ADMITTED  # and now one whole token
    assert s.violations == 0


def test_a_run_of_refusals_is_a_flood():
    s = authenticated()
    for _ in range(3):
        s.take(0.0, POLICY)
    answers = [s.take(0.0, POLICY) for _ in range(5)]
    assert answers[:4] == [100] * 4 and answers[4] == FLOOD
    assert s.violations == 5


def test_the_budget_refills_up_to_the_burst_only():
    s = authenticated()
    assert [s.take(3600.0, POLICY) for _ in range(4)][-1] == 100  # an hour idle still gives 3


def test_authentication_is_overdue_without_a_token_in_time_or_after_expiry():
    s = Session()
    assert s.overdue(now=4.0, wall=0, created=0.0, handshake_timeout_s=5.0) is None
    missing = s.overdue(now=6.0, wall=0, created=0.0, handshake_timeout_s=5.0)
    assert missing is not None and missing.code == "token_missing"
    s.authenticate(ALICE, 6.0, POLICY)
    assert s.overdue(now=100.0, wall=999.0, created=0.0, handshake_timeout_s=5.0) is None
    assert s.overdue(now=100.0, wall=1001.0, created=0.0, handshake_timeout_s=5.0).code == "token_expired"


def test_a_refresh_extends_the_same_user_and_refuses_another():
    s = authenticated()
    later = Identity("t1", "alice", "shopper", "app", "Alice", expires_at=5000)
    s.refresh(later)
    assert s.overdue(now=0, wall=4000.0, created=0, handshake_timeout_s=5) is None
    for other in (Identity("t1", "mallory", "shopper", "app", "M", 9999), Identity("t1", "alice", "agent", "web", "A", 9999), Identity("t2", "alice", "shopper", "app", "A", 9999)):
        with pytest.raises(RequestError) as refused:
            s.refresh(other)
        assert refused.value.code == "already_authenticated"
    assert s.identity is later


def test_a_session_is_authenticated_once():
    s = authenticated()
    with pytest.raises(RequestError):
        s.authenticate(ALICE, 1.0, POLICY)
    assert s.user_key == ("t1", "alice") and s.tokens == 3.0
