"""Problem documents and the refusal log's budget (gateway/http/problems.py), with a fake clock."""

from __future__ import annotations

import logging

from gateway.http.problems import Problem, RefusalLog


def test_a_problem_carries_the_protocol_code_and_rfc_9457_members():
    doc = Problem("too_large", "the body is larger than 10 bytes").body("/v1/agents")
    assert doc == {
        "type": "urn:kefu:error:too_large", "title": "Content Too Large", "status": 413, "detail": "the body is larger than 10 bytes",
        "instance": "/v1/agents", "code": "too_large", "retryable": False,
    }
    assert Problem("unavailable", "x").body("/")["retryable"] is True


def test_the_refusal_log_keeps_to_its_budget_and_says_what_it_left_out(caplog):
    caplog.set_level(logging.INFO, logger="kefu.http")
    now = [0.0]
    refusals = RefusalLog(per_second=2, clock=lambda: now[0])
    problem = Problem("unauthenticated", "unknown or revoked API key")
    for _ in range(5):
        refusals.log(problem, "GET", "/v1/agents")
    assert len(caplog.records) == 2 and refusals.suppressed == 3
    now[0] = 1.0
    refusals.log(problem, "GET", "/v1/agents")
    assert len(caplog.records) == 3 and "(3 more refusals not logged)" in caplog.records[-1].getMessage()
    assert refusals.suppressed == 0
