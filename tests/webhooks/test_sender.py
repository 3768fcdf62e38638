"""Webhooks end to end: a real gateway, a real receiver over HTTP, events from real sockets."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
import trio

from gateway.webhooks import verify

from ..customers.conftest import events
from ..http.conftest import client, new_key
from ..support import connect, token


async def subscribe(api: httpx.AsyncClient, url: str, events: list[str]) -> dict:
    created = await api.post("/v1/webhooks", json={"url": url, "events": events, "description": "订单系统"})
    assert created.status_code == 201, created.text
    return created.json()


def metric(gw, name: str, **labels: str) -> float:
    """A sample the gateway exports (what /metrics shows), 0 when absent."""
    return gw.registry.get_sample_value(name, labels) or 0.0


async def delivered(gw, count: int) -> float:
    """The deliveries counted, once they reach ``count`` (the receiver has a POST a moment before
    the gateway has its answer)."""
    with trio.fail_after(10):
        while metric(gw, "kefu_webhook_deliveries_total", outcome="delivered") < count:
            await trio.sleep(0.01)
    return metric(gw, "kefu_webhook_deliveries_total", outcome="delivered")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_conversations_life_reaches_the_webhook_signed_in_order_of_seq(start_gateway, receiver, store):
    gw = await start_gateway(store=store, webhooks_allow_private="yes")
    async with client(gw, await new_key(gw)) as api:
        hook = await subscribe(api, receiver.url + "/all", ["*"])
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["*"]
        async with connect(gw.url, token("s1", customer="c1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await shopper.ok("send", conv=conv, cmid="m1", body={"kind": "text", "text": "你好，我的订单还没到"})
            await shopper.ok("send", conv=conv, cmid="m2", body={"kind": "location", "lat": 31.2304, "lng": 121.4737, "address": "上海市人民广场"})
            await shopper.ok("close", conv=conv)
        got = await receiver.wait_for(4)
    assert sorted(r.doc["event"] for r in got) == ["conversation.closed", "conversation.opened", "message.created", "message.created"]
    for r in got:
        assert verify(hook["secret"], r.body, r.headers["kefu-signature"]), r.headers
        assert r.headers["kefu-event"] == r.doc["event"] and r.headers["kefu-delivery"] == r.doc["id"]
        assert r.headers["content-type"] == "application/json"
        assert r.doc["tenant"] == "shop1" and r.doc["data"]["conversation"]["id"] == conv
    messages = sorted((r.doc["data"]["message"] for r in got if r.doc["event"] == "message.created"), key=lambda m: m["seq"])
    assert [m["seq"] for m in messages] == [1, 2]
    assert messages[0]["body"] == {"kind": "text", "text": "你好，我的订单还没到"} and messages[0]["from"] == "s1" and messages[0]["role"] == "shopper"
    assert messages[1]["body"]["address"] == "上海市人民广场"
    closed = next(r.doc for r in got if r.doc["event"] == "conversation.closed")
    assert closed["data"]["conversation"]["status"] == "closed"
    assert await delivered(gw, 4) == 4
    assert len(receiver.got) == 4  # nothing twice


async def test_each_webhook_gets_only_the_events_it_asked_for(start_gateway, receiver):
    gw = await start_gateway(webhooks_allow_private="yes")
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/messages", ["message.created"])
        await subscribe(api, receiver.url + "/closes", ["conversation.closed"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await shopper.ok("send", conv=conv, cmid="m1", body={"kind": "text", "text": "有货吗"})
            await shopper.ok("close", conv=conv)
        await receiver.wait_for(2)
        await trio.sleep(0.3)  # nothing more comes
    assert receiver.events("/messages") == ["message.created"]
    assert receiver.events("/closes") == ["conversation.closed"]


async def test_routing_events_and_a_rating_are_conversation_events(start_gateway, receiver):
    gw = await start_gateway(routing="on", webhooks_allow_private="yes")
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/life", ["conversation.assigned", "conversation.resolved", "conversation.rated"])
        async with connect(gw.url, token("a1", "agent"), resume={}) as agent, connect(gw.url, token("s1", customer="c1"), resume={}) as shopper:
            await agent.ok("status", status="online")
            conv = (await shopper.ok("open"))["conv"]["id"]
            await shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "转人工"})
            assert (await agent.next("assigned"))["conv"]["id"] == conv
            await agent.ok("resolve", conv=conv)
            await events(shopper, conv, "survey")  # sent once the conversation is resolved
            await shopper.ok("rate", conv=conv, score=5, comment="很满意")
        got = await receiver.wait_for(3)
    assert [r.doc["event"] for r in got] == ["conversation.assigned", "conversation.resolved", "conversation.rated"]
    assert got[0].doc["data"]["message"]["body"]["agent"] == "a1"
    assert got[2].doc["data"]["rating"]["score"] == 5 and got[2].doc["data"]["rating"]["comment"] == "很满意"


async def test_a_resolved_conversation_that_stays_quiet_is_closed_by_routing_and_told(start_gateway, receiver, tmp_path):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none", "reopen_window_s": 0.2}}))
    gw = await start_gateway(routing="on", routing_file=str(path), webhooks_allow_private="yes")
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/closes", ["conversation.resolved", "conversation.closed"])
        async with connect(gw.url, token("a1", "agent"), resume={}) as agent, connect(gw.url, token("s1"), resume={}) as shopper:
            await agent.ok("status", status="online")
            conv = (await shopper.ok("open"))["conv"]["id"]
            await shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "发票怎么开"})
            assert (await agent.next("assigned"))["conv"]["id"] == conv
            await agent.ok("resolve", conv=conv)
            got = await receiver.wait_for(2)  # routing's tick closes it once the reopen window is over
    assert [r.doc["event"] for r in got] == ["conversation.resolved", "conversation.closed"]
    assert got[1].doc["data"]["conversation"]["stage"] == "closed"


async def test_a_receiver_that_fails_gets_the_event_again_with_the_same_id(start_gateway, receiver):
    gw = await start_gateway(webhooks_allow_private="yes")
    gw.node.webhooks.retry_after_s = (0.05, 0.05, 0.05)
    receiver.answers = [503, 429]  # then 200
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/flaky", ["conversation.opened"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
        got = await receiver.wait_for(3)
    assert len({r.doc["id"] for r in got}) == 1 and len({r.headers["kefu-delivery"] for r in got}) == 1
    assert await delivered(gw, 1) == 1
    assert metric(gw, "kefu_webhook_deliveries_total", outcome="retried") == 2
    assert metric(gw, "kefu_webhook_attempt_failures_total", reason="status_5xx") == 1
    assert metric(gw, "kefu_webhook_attempt_failures_total", reason="status_4xx") == 1


async def test_a_refusing_receiver_is_given_up_at_once_and_others_still_get_theirs(start_gateway, receiver, caplog):
    gw = await start_gateway(webhooks_allow_private="yes")
    gw.node.webhooks.retry_after_s = (0.05,)
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/gone", ["conversation.opened"])
        await subscribe(api, receiver.url + "/fine", ["conversation.opened"])
        receiver.answers = [410]  # whichever is asked first refuses
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
        await receiver.wait_for(2)
        await trio.sleep(0.3)  # no retry of a 4xx
    assert len(receiver.got) == 2
    assert metric(gw, "kefu_webhook_deliveries_total", outcome="failed") == 1
    assert metric(gw, "kefu_webhook_deliveries_total", outcome="delivered") == 1
    assert any("gave up" in r.getMessage() and "answered 410" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_receiver_is_retried_then_given_up(start_gateway, receiver):
    gw = await start_gateway(webhooks_allow_private="yes")
    gw.node.webhooks.retry_after_s = (0.05, 0.05)
    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, dead, ["conversation.opened"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
        with trio.fail_after(10):
            while metric(gw, "kefu_webhook_deliveries_total", outcome="failed") < 1:
                await trio.sleep(0.05)
    assert metric(gw, "kefu_webhook_attempt_failures_total", reason="unreachable") == 3
    assert metric(gw, "kefu_webhook_pending") == 0


async def test_four_deliveries_are_in_flight_at_once_while_a_receiver_is_slow(start_gateway, receiver):
    gw = await start_gateway(webhooks_allow_private="yes")
    receiver.hold = trio.Event()
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/slow", ["message.created"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            for i in range(6):
                await shopper.ok("send", conv=conv, cmid=f"m{i}", body={"kind": "text", "text": f"第{i}条"})
            await receiver.wait_for(4)  # four POSTs wait for their answers together
            await trio.sleep(0.2)
            assert len(receiver.got) == 4  # and no more than four
            receiver.hold.set()
            await receiver.wait_for(6)
    assert sorted(r.doc["data"]["message"]["seq"] for r in receiver.got) == [1, 2, 3, 4, 5, 6]


async def test_events_beyond_the_bound_are_dropped_and_counted_while_receivers_are_slow(start_gateway, receiver):
    gw = await start_gateway(webhooks_allow_private="yes", webhooks_max_pending=3)
    receiver.hold = trio.Event()
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/slow", ["message.created"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            for i in range(20):
                await shopper.ok("send", conv=conv, cmid=f"m{i}", body={"kind": "text", "text": f"第{i}条"})
            assert metric(gw, "kefu_webhook_pending") <= 3
            dropped = metric(gw, "kefu_webhook_deliveries_total", outcome="dropped")
            assert dropped >= 17
            receiver.hold.set()
            with trio.fail_after(10):
                while metric(gw, "kefu_webhook_pending") > 0:
                    await trio.sleep(0.05)
    assert len(receiver.got) == 20 - dropped
    assert metric(gw, "kefu_webhook_deliveries_total", outcome="delivered") == 20 - dropped


async def test_the_bytes_waiting_are_bounded_too(start_gateway, receiver):
    gw = await start_gateway(webhooks_allow_private="yes", webhooks_max_pending_bytes=40_000)
    receiver.hold = trio.Event()
    text = "请问这款连衣裙有没有大码" * 80  # 960 characters, 2,880 bytes of UTF-8
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/slow", ["message.created"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            for i in range(20):
                await shopper.ok("send", conv=conv, cmid=f"m{i}", body={"kind": "text", "text": text})
                assert metric(gw, "kefu_webhook_pending_bytes") <= 40_000 + 8_000  # the bound, and one event's more
            dropped = metric(gw, "kefu_webhook_deliveries_total", outcome="dropped")
            assert 0 < dropped < 20
            receiver.hold.set()
            with trio.fail_after(10):
                while metric(gw, "kefu_webhook_pending") > 0:
                    await trio.sleep(0.05)
    assert metric(gw, "kefu_webhook_pending_bytes") == 0
    assert len(receiver.got) == 20 - dropped and all(r.doc["data"]["message"]["body"]["text"] == text for r in receiver.got)


async def test_an_external_bot_hears_through_a_webhook_and_answers_and_hands_off_over_rest(start_gateway, receiver, tmp_path):
    """A bot service with no WebSocket: it hears shoppers' messages from a webhook, answers as the
    tenant's bot user with a `bot` key (the event id as the idempotency key), and hands the
    conversation over when asked for a person: the online agent gets it."""
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "external", "bot_user": "helper-bot"}}))
    gw = await start_gateway(routing="on", routing_file=str(path), webhooks_allow_private="yes")
    async with client(gw, await new_key(gw)) as admin, client(gw, await new_key(gw, scopes=("bot",))) as bot:
        await subscribe(admin, receiver.url + "/bot", ["message.created"])
        async with connect(gw.url, token("a1", "agent"), resume={}) as agent, connect(gw.url, token("s1"), resume={}) as shopper:
            await agent.ok("status", status="online")
            conv = (await shopper.ok("open"))["conv"]["id"]
            await shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "运费怎么算"})
            heard = 0
            for question, answer in (("运费怎么算", "满99元包邮"), ("转人工", None)):
                while True:  # the bot service's loop: shoppers' messages only (its own come back too)
                    event = (await receiver.wait_for(heard + 1))[heard].doc
                    heard += 1
                    if event["data"]["message"]["role"] == "shopper":
                        break
                assert event["data"]["message"]["body"]["text"] == question
                if answer is not None:
                    posted = await bot.post(f"/v1/conversations/{conv}/messages", headers={"idempotency-key": event["id"]},
                                            json={"sender": {"role": "bot", "user": "helper-bot"}, "body": {"kind": "text", "text": answer}})
                    assert posted.status_code == 201, posted.text
                    assert (await shopper.next("msg", conv=conv, role="bot"))["body"]["text"] == answer
                    await shopper.ok("send", conv=conv, cmid="q2", body={"kind": "text", "text": "转人工"})
                else:
                    moved = await bot.post(f"/v1/conversations/{conv}/handoff", json={"bot": "helper-bot", "reason": "顾客要人工", "context": {"topic": "运费"}})
                    assert moved.status_code == 200, moved.text
            offer = await agent.next("assigned")
            assert offer["conv"]["id"] == conv
            assert offer["context"] == {"topic": "运费", "handoff": {"reason": "bot_request", "detail": "顾客要人工"}}  # the bot's context, and why
        refused = await bot.post(f"/v1/conversations/{conv}/handoff", json={"bot": "someone-else"})
        assert refused.status_code == 403, refused.text  # only the conversation's bot hands it over


async def test_a_receiver_that_answers_too_late_is_tried_again(start_gateway, receiver):
    gw = await start_gateway(webhooks_allow_private="yes", webhooks_timeout_s=0.3)
    gw.node.webhooks.retry_after_s = (0.05, 0.05, 0.05, 0.05)
    receiver.hold = trio.Event()  # answers wait until it is set
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/slow", ["conversation.opened"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
        await receiver.wait_for(2)  # the first attempt timed out; the second came
        receiver.hold.set()
        with trio.fail_after(10):
            while metric(gw, "kefu_webhook_deliveries_total", outcome="delivered") < 1:
                await trio.sleep(0.05)
    assert metric(gw, "kefu_webhook_attempt_failures_total", reason="timeout") >= 1
    assert len({r.doc["id"] for r in receiver.got}) == 1  # the same event each time


async def test_the_list_shows_a_failing_webhook_with_its_last_error_until_it_delivers_again(start_gateway, receiver):
    gw = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    receiver.answers = [410]  # the first event is refused; the later ones taken
    async with client(gw, await new_key(gw)) as api:
        hook = await subscribe(api, receiver.url + "/shop", ["conversation.opened"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
            with trio.fail_after(10):
                while metric(gw, "kefu_webhook_deliveries_total", outcome="failed") < 1:
                    await trio.sleep(0.05)
            (listed,) = (await api.get("/v1/webhooks")).json()["webhooks"]
            assert listed["id"] == hook["id"] and listed["status"]["state"] == "failing"
            error = listed["status"]["last_error"]
            assert (error["event"], error["reason"], error["detail"]) == ("conversation.opened", "status_4xx", "answered 410")
            await shopper.ok("open")
            with trio.fail_after(10):
                while metric(gw, "kefu_webhook_deliveries_total", outcome="delivered") < 1:
                    await trio.sleep(0.05)
        (listed,) = (await api.get("/v1/webhooks")).json()["webhooks"]
        assert listed["status"]["state"] == "ok" and "last_error" not in listed["status"]
        assert (await api.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
        assert await gw.node.store.record("shop1", "webhook_status", hook["id"]) is None  # deleted with it
