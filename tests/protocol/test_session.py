"""Per-connection session state, driven with explicit times: no sockets, no sleeps."""

from __future__ import annotations

import pytest

from gateway.auth import Identity
from gateway.protocol.errors import RequestError
from gateway.protocol.session import ADMIT, CLOSE, REFUSE, RatePolicy, Session

POLICY = RatePolicy(rate=10.0, burst=3, flood_after=5)
ALICE = Identity("t1", "alice", "shopper", "app", "Alice", expires_at=1000)


def authenticated(now: float = 0.0) -> Session:
    s = Session(burst=POLICY.burst)
    s.token_time = now
    s.authenticate(ALICE)
    return s


def test_the_burst_is_admitted_then_refused_with_the_time_to_wait():
    s = authenticated()
    assert [s.charge(0.0, POLICY) for _ in range(3)] == [ADMIT] * 3
    assert s.charge(0.0, POLICY) == REFUSE
    assert s.retry_after_ms(POLICY) == 100  # one token at 10/s
    assert s.charge(0.05, POLICY) == REFUSE and s.retry_after_ms(POLICY) == 50  # half refilled meanwhile
    assert s.charge(0.1, POLICY) == ADMIT  # and now one whole token


def test_a_steady_excess_is_a_flood_even_as_tokens_come_back():
    s = authenticated()
    for _ in range(3):
        s.charge(0.0, POLICY)
    verdicts = []
    now = 0.0
    for _ in range(40):  # 20 frames a second against a rate of 10: every other one refused
        now += 0.05
        verdicts.append(s.charge(now, POLICY))
    assert CLOSE in verdicts  # the excess drains 1/s, slower than it grows


def test_a_burst_now_and_then_is_forgiven():
    s = authenticated()
    for second in range(20):
        for _ in range(4):  # one over the burst, once a second
            verdict = s.charge(float(second), POLICY)
        assert verdict == REFUSE
    assert s.violations < POLICY.flood_after


def test_the_budget_refills_up_to_the_burst_only():
    s = authenticated()
    assert [s.charge(3600.0, POLICY) for _ in range(4)][-1] == REFUSE  # an hour idle still gives 3


def test_authentication_is_overdue_without_a_token_in_time_or_after_expiry():
    s = Session(burst=3)
    assert s.overdue(now=4.0, wall=0, created=0.0, handshake_timeout_s=5.0) is None
    missing = s.overdue(now=6.0, wall=0, created=0.0, handshake_timeout_s=5.0)
    assert missing is not None and missing.code == "token_missing"
    s.authenticate(ALICE)
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


def test_a_session_is_authenticated_once_and_keeps_its_budget():
    s = Session(burst=3)
    s.charge(0.0, POLICY)
    s.authenticate(ALICE)
    with pytest.raises(RequestError):
        s.authenticate(ALICE)
    assert s.user_key == ("t1", "alice") and s.tokens == 2.0  # the auth frame was charged like any other
