"""/v1/reports/summary: topics, handoffs, response times, workload and satisfaction, from what a
real gateway stored of a bot conversation handed to an agent and one the bot handled alone."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import msgpack
import trio

from gateway.model import Conversation, StoredMessage
from gateway.reports import CONVERSION_WINDOW_MS, Reviewed, percentiles, summarize

from ...customers.conftest import desk, events  # noqa: F401  (desk: the fixture)
from ...customers.test_context import settled
from ...support import connect, token
from ..conftest import client, new_key, problem


async def bot_says(client, conv: str) -> dict:
    return (await client.next("msg", conv=conv, role="bot"))["body"]


async def test_a_report_of_a_handed_off_conversation_and_one_the_bot_handled(start_gateway):
    gw = await start_gateway(routing="on")  # the built-in bot, the sample shop
    with trio.fail_after(60):
        async with client(gw, await new_key(gw)) as admin, client(gw, await new_key(gw, scopes=("read",))) as reader, \
                connect(gw.url, token("a1", "agent", name="安妮"), resume={}) as agent:
            await agent.ok("status", status="online")
            async with connect(gw.url, token("s1", customer="c1"), resume={}) as s1:
                handed = (await s1.ok("open"))["conv"]["id"]
                await bot_says(s1, handed)
                await s1.ok("send", conv=handed, cmid="q1", body={"kind": "text", "text": "什么时候发货"})
                assert (await bot_says(s1, handed))["intent"] == "shipping_time"
                await s1.ok("send", conv=handed, cmid="q2", body={"kind": "text", "text": "转人工"})
                await settled(agent, await agent.next("assigned"))
                await agent.ok("send", conv=handed, cmid="r1", body={"kind": "text", "text": "您好，今天下午就发"})
                await agent.ok("resolve", conv=handed)
                await events(s1, handed, "survey")
                await s1.ok("rate", conv=handed, score=4)
            async with connect(gw.url, token("s2"), resume={}) as s2:
                alone = (await s2.ok("open"))["conv"]["id"]
                await bot_says(s2, alone)
                await s2.ok("send", conv=alone, cmid="q1", body={"kind": "text", "text": "怎么退货", "meta": {"product": "P1001"}})  # in view
                assert (await bot_says(s2, alone))["intent"] == "returns"
            assert (await admin.put(f"/v1/conversations/{handed}/tags", json={"tags": ["物流"]})).status_code == 200
            order = {"customer": "c1", "items": [{"product": "P1001", "quantity": 1}], "status": "paid", "created_at": int(time.time() * 1000)}
            assert (await admin.put("/v1/ingest/orders/A1", json=order)).status_code == 200  # c1 bought after talking to a1

            got = await reader.get("/v1/reports/summary")
            assert got.status_code == 200, got.text
            report = got.json()
            assert report["conversations"] == 2 and report["truncated"] is False
            assert sorted((t["intent"], t["count"]) for t in report["topics"]) == [("returns", 1), ("shipping_time", 1)]
            assert report["tags"] == [{"tag": "物流", "count": 1}]
            assert report["products"] == [{"product": "P1001", "conversations": 1}]
            assert report["bot"] == {"conversations": 2, "contained": 1}
            assert report["handoffs"] == {"asked_for_human": 1}
            assert report["first_response_ms"]["count"] == 1 and report["first_response_ms"]["p50"] >= 0
            assert report["wait_ms"]["count"] == 1
            [ann] = report["agents"]
            assert (ann["agent"], ann["assigned"], ann["messages"], ann["resolved"], ann["first_response_ms"]["count"]) == ("a1", 1, 1, 1, 1)
            assert ann["satisfaction"] == {"responses": 1, "average": 4.0}
            assert ann["conversion"] == report["conversion"] == {"served": 1, "converted": 1, "rate": 1.0}
            assert report["satisfaction"] == {"responses": 1, "average": 4.0, "by_score": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0}}
            [today] = report["days"]  # no business hours: the days are UTC's
            assert report["utc_offset_min"] == 0 and today["day"] == datetime.now(timezone.utc).date().isoformat()
            assert (today["conversations"], today["to_person"], today["contained"], today["first_response_ms"]["count"]) == (2, 1, 1, 1)
            assert today["satisfaction"] == {"responses": 1, "average": 4.0}

            earlier = (await reader.get("/v1/reports/summary", params={"since": 0, "until": report["since"]})).json()
            assert earlier["conversations"] == 0 and earlier["topics"] == [] and earlier["satisfaction"]["average"] is None
            problem(await reader.get("/v1/reports/summary", params={"since": 10, "until": 10}), 422, "bad_request")
            problem(await reader.get("/v1/reports/summary", params={"since": "yesterday"}), 422, "bad_request")
            async with client(gw, await new_key(gw, tenant="shop2", scopes=("read",))) as other:
                assert (await other.get("/v1/reports/summary")).json()["conversations"] == 0  # another tenant's report


async def test_a_supervisors_client_token_reads_its_tenants_report_and_no_other_token_does(start_gateway):
    """The console's Reports tab: a supervisor's token stands for a `read` key of its tenant on this
    operation only; agents, shoppers, bad tokens and other operations are refused."""
    gw = await start_gateway()
    with trio.fail_after(30):
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
        async with client(gw, token("boss", "supervisor")) as boss, client(gw, token("boss", "supervisor", tenant="shop2")) as elsewhere:
            mine = await boss.get("/v1/reports/summary")
            assert mine.status_code == 200 and mine.json()["conversations"] == 1
            assert (await elsewhere.get("/v1/reports/summary")).json()["conversations"] == 0  # its own tenant's, never another's
            problem(await boss.get("/v1/conversations"), 401, "unauthenticated")  # not an operation that takes tokens
            problem(await boss.get("/v1/reports/summary", params={"since": "yesterday"}), 422, "bad_request")
        for role in ("agent", "shopper", "bot"):
            async with client(gw, token("x", role)) as someone:
                assert role in problem(await someone.get("/v1/reports/summary"), 403, "forbidden")["detail"]
        for bad in (token("boss", "supervisor", ttl_s=-60), "not-a-token"):
            async with client(gw, bad) as stranger:
                problem(await stranger.get("/v1/reports/summary"), 401, "unauthenticated")


def test_percentiles_are_nearest_rank():
    assert percentiles([]) == {"count": 0, "p50": None, "p90": None}
    assert percentiles(list(range(10, 0, -1))) == {"count": 10, "p50": 5, "p90": 9}


def test_a_summary_of_nothing_is_empty_not_an_error():
    empty = summarize([], since=0, until=1)
    assert empty["conversations"] == 0 and empty["agents"] == [] and empty["first_response_ms"]["p50"] is None
    assert summarize(iter(()), since=0, until=1, truncated=True)["truncated"] is True


async def test_a_conversation_that_waited_in_the_queue_is_reported_once_with_its_reason(desk):
    gw = desk.gateway  # routing without a bot: conversations queue at once
    with trio.fail_after(30):
        async with connect(gw.url, token("s3"), resume={}) as shopper, connect(gw.url, token("b1", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            assert (await events(shopper, conv, "queued"))[0]["reason"] == "no_bot"
            await trio.sleep(0.3)  # waits in the queue (waited_s is rounded to 0.1 s)
            await agent.ok("status", status="online")
            await settled(agent, await agent.next("assigned"))
            assert "reason" not in (await events(shopper, conv, "assigned"))[0]  # the queued event said why
            await agent.ok("send", conv=conv, cmid="r1", body={"kind": "text", "text": "您好"})
            report = (await desk.get("/v1/reports/summary")).json()
            always = {"utc_offset_min": 480, "days": [0, 1, 2, 3, 4, 5, 6], "open": "00:00", "close": "24:00"}
            assert (await desk.put("/v1/business-hours", json=always)).status_code == 200
            assert (await desk.get("/v1/reports/summary")).json()["utc_offset_min"] == 480  # the business hours' zone
            assert (await desk.get("/v1/reports/summary", params={"utc_offset_min": -300})).json()["utc_offset_min"] == -300
    assert report["handoffs"] == {"no_bot": 1} and report["bot"] == {"conversations": 0, "contained": 0}
    assert report["wait_ms"]["count"] == 1 and report["wait_ms"]["p50"] >= 200
    assert report["first_response_ms"]["count"] == 1 and report["first_response_ms"]["p50"] >= report["wait_ms"]["p50"]
    assert [(a["agent"], a["assigned"], a["messages"], a["resolved"]) for a in report["agents"]] == [("b1", 1, 1, 0)]
    assert report["conversion"] == {"served": 1, "converted": 0, "rate": 0.0}  # a shopper the shop does not know


def test_an_order_counts_for_the_conversation_only_within_a_day_of_its_start():
    conv = Conversation("c", "t", "u", "app", "open", 1_000)
    assigned = StoredMessage("c", 1, "e1", "system", "system", 1_000, msgpack.packb({"kind": "event", "event": "assigned", "agent": "a1"}))

    def converted(*orders_at: int) -> int:
        return summarize([Reviewed(conv, [assigned], orders_at=orders_at)], since=0, until=10**13)["conversion"]["converted"]

    assert converted(1_000) == 1 and converted(1_000 + CONVERSION_WINDOW_MS - 1) == 1
    assert converted(999) == 0 and converted(1_000 + CONVERSION_WINDOW_MS) == 0 and converted() == 0


def test_a_conversation_counts_for_at_most_twenty_products():
    """A report holds its counters whatever the transcripts say: a shopper naming products in
    every message counts for the first twenty of them."""
    conv = Conversation("c", "t", "u", "app", "open", 1_000)
    said = [StoredMessage("c", i, f"m{i}", "u", "shopper", 1_000 + i, msgpack.packb({"kind": "text", "text": "?", "meta": {"product": f"P{i}"}})) for i in range(1, 31)]
    products = summarize([Reviewed(conv, said)], since=0, until=10**13)["products"]
    assert sorted(p["product"] for p in products) == sorted(f"P{i}" for i in range(1, 21))


def test_days_are_the_tenants_days():
    late = int(datetime(2026, 12, 7, 23, 30, tzinfo=timezone.utc).timestamp() * 1000)  # 07:30 on the 8th in Beijing
    conv = Conversation("c", "t", "u", "app", "open", late)
    assert [d["day"] for d in summarize([Reviewed(conv, [])], since=0, until=10**13)["days"]] == ["2026-12-07"]
    assert [d["day"] for d in summarize([Reviewed(conv, [])], since=0, until=10**13, utc_offset_min=480)["days"]] == ["2026-12-08"]
