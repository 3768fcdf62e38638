"""Satisfaction: a survey on resolve, an answer of 1-5 with a comment stored with the conversation
and shown in the customer's context, counted once (a second answer replaces the first); an
unanswered survey expires."""

from __future__ import annotations

import trio

from ..support import connect, token
from .conftest import events
from .test_context import settled


async def resolved_conversation(gw, shopper, agent) -> str:
    conv = (await shopper.ok("open"))["conv"]["id"]
    await agent.ok("status", status="online")
    await settled(agent, await agent.next("assigned"))
    early = await shopper.request("rate", conv=conv, score=5)
    assert early["t"] == "error" and early["code"] == "forbidden" and "no survey" in early["message"]
    await agent.ok("resolve", conv=conv)
    return conv


async def test_a_survey_round_trip_counts_the_answer_once(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        async with connect(gw.url, token("u1", customer="c1"), resume={}) as shopper, connect(gw.url, token("a1", "agent"), resume={}) as agent, \
                connect(gw.url, token("u2"), resume={}) as stranger:
            conv = await resolved_conversation(gw, shopper, agent)
            survey = (await events(shopper, conv, "survey"))[0]
            assert survey["scale"] == 5 and survey["expires_at"] > 0
            assert (await shopper.ok("rate", conv=conv, score=3, comment="有点慢"))["csat"]["score"] == 3
            assert (await agent.next("rated", conv=conv))["score"] == 3
            bad = await shopper.request("rate", conv=conv, score=6)
            assert bad["t"] == "error" and bad["code"] == "bad_request"
            assert (await stranger.request("rate", conv=conv, score=1))["code"] == "not_found"
            assert (await agent.request("rate", conv=conv, score=1))["code"] == "forbidden"
            second = (await shopper.ok("rate", conv=conv, score=5))["csat"]
            assert (second["score"], second["comment"]) == (5, "")

            facts = (await desk.get(f"/v1/conversations/{conv}/workspace")).json()
            assert facts["satisfaction"]["score"] == 5 and facts["satisfaction"]["comment"] == ""  # replaced, not added to
            past = (await desk.get("/v1/customers/c1/context")).json()["context"]["conversations"]
            assert [(c["id"], c["satisfaction"]["score"]) for c in past] == [(conv, 5)]
            asked = await agent.ok("context", conv=conv)
            assert asked["satisfaction"]["score"] == 5


async def test_an_unanswered_survey_expires(desk):
    gw = desk.gateway
    workspace = gw.node.workspace
    now = [1_800_000_000.0]
    workspace.clock = lambda: now[0]
    with trio.fail_after(20):
        async with connect(gw.url, token("u1"), resume={}) as shopper, connect(gw.url, token("a1", "agent"), resume={}) as agent:
            conv = await resolved_conversation(gw, shopper, agent)
            survey = (await events(shopper, conv, "survey"))[0]
            assert survey["expires_at"] == int((now[0] + workspace.survey_ttl_s) * 1000)
            now[0] += workspace.survey_ttl_s + 1
            late = await shopper.request("rate", conv=conv, score=4)
            assert late["t"] == "error" and late["code"] == "forbidden" and "expired" in late["message"]
            assert (await desk.get(f"/v1/conversations/{conv}/workspace")).json()["satisfaction"] is None
