"""Per API key request rates (gateway/http/limits.py): the bucket with a fake clock, then over HTTP."""

from __future__ import annotations

import trio

from gateway.http.limits import KeyRates

from .conftest import client, new_key, problem


def test_each_key_has_its_own_bucket_that_refills_at_the_rate():
    now = [0.0]
    rates = KeyRates(rate=2, burst=3, clock=lambda: now[0])
    assert [rates.admit("a") for _ in range(3)] == [None, None, None]
    assert rates.admit("a") == 500  # half a second to the next token
    assert rates.admit("b") is None
    now[0] = 0.5
    assert rates.admit("a") is None and rates.admit("a") == 500
    assert all(KeyRates(0, 0).admit("a") is None for _ in range(1000))


async def test_a_key_over_its_rate_gets_429_and_others_do_not(start_gateway):
    gw = await start_gateway(api_rate_per_second=0.1)  # a burst of 2, then one every 10 s
    with trio.fail_after(10):
        async with client(gw, await new_key(gw)) as busy, client(gw, await new_key(gw)) as other:
            assert [(await busy.get("/v1/agents")).status_code for _ in range(2)] == [200, 200]
            refused = await busy.get("/v1/agents")
            doc = problem(refused, 429, "rate_limited")
            assert doc["retryable"] is True and doc["retry_after_ms"] > 0 and int(refused.headers["retry-after"]) >= 1
            assert (await other.get("/v1/agents")).status_code == 200
    assert gw.registry.get_sample_value("kefu_http_refusals_total", {"code": "rate_limited", "status": "429"}) == 1
