"""The admission rules without sockets or sleeps: the clock is passed in."""

from __future__ import annotations

from gateway.protocol.admission import ADMIT, CLOSE, REFUSE, PreAuthBudget, charge_frame, retry_after_ms


class State:
    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.token_time = 0.0
        self.violations = 0.0


def run(state: State, times: list[float], rate: float = 10.0, burst: float = 5.0, close_after: float = 20.0) -> list[int]:
    return [charge_frame(state, t, rate, burst, close_after) for t in times]


def test_burst_then_rate():
    state = State(5.0)
    assert run(state, [0.0] * 6) == [ADMIT] * 5 + [REFUSE]
    assert run(state, [0.1]) == [ADMIT]  # one token back after 1/rate
    assert retry_after_ms(state, 10.0) == 100


def test_steady_flood_just_above_the_rate_is_closed():
    # 12 frames a second against a rate of 10: refills keep coming, but the excess is never reset.
    state = State(5.0)
    verdicts = run(state, [i / 12 for i in range(12 * 60)])
    assert CLOSE in verdicts
    closed_at = verdicts.index(CLOSE) / 12
    assert 5 < closed_at < 30  # ~1 net excess a second against close_after 20 (2/s refused, 1/s forgiven)


def test_occasional_bursts_are_forgiven():
    state = State(5.0)
    for minute in range(10):  # a burst of 15 once a minute: 10 refused each time, never closed
        verdicts = run(state, [minute * 60.0] * 15)
        assert verdicts.count(REFUSE) == 10 and CLOSE not in verdicts


def test_no_rate_admits_everything():
    state = State(0.0)
    assert run(state, [0.0] * 1000, rate=0.0) == [ADMIT] * 1000


def test_clock_going_back_does_not_mint_tokens():
    state = State(0.0)
    state.token_time = 10.0
    assert run(state, [5.0]) == [REFUSE]


def test_preauth_budget_per_connection_and_total():
    budget = PreAuthBudget(total=1000, per_connection=600)
    assert budget.admit()
    assert budget.charge(0, 600) is None
    assert budget.charge(600, 1) == PreAuthBudget.CONNECTION
    assert budget.charge(0, 400) is None
    assert budget.held == 1000 and not budget.admit()
    assert budget.charge(0, 1) == PreAuthBudget.TOTAL
    budget.release(600)
    assert budget.held == 400 and budget.admit()
