"""The routing issue's whole story over real sockets, with the built-in bot: a shopper asks when
their order ships and gets the bot's answer; asks for a human and is queued with a position; an
agent comes online, receives the conversation with its context packet, and the two converse."""

from __future__ import annotations

import pytest
import trio

from gateway.model import Principal

from ..support import connect, token


@pytest.fixture
async def with_bot(start_gateway):
    return await start_gateway(routing="on")  # default routing: the built-in bot answers first


async def bot_says(client, conv):
    return (await client.next("msg", conv=conv, role="bot"))["body"]


async def test_bot_answers_then_hands_over_with_context(with_bot):
    gw = with_bot
    async with connect(gw.url, token("alice", name="王女士"), resume={}) as alice:
        conv = (await alice.ok("open", subject="订单咨询"))["conv"]["id"]
        greeting = await bot_says(alice, conv)
        assert greeting["kind"] == "text" and greeting["text"]

        await alice.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
        answer = await bot_says(alice, conv)
        assert answer["intent"] == "shipping_time" and answer["confidence"] >= 0.5
        assert "发货" in answer["text"]

        await alice.ok("send", conv=conv, cmid="q2", body={"kind": "text", "text": "转人工"})
        notice = await bot_says(alice, conv)  # the bot says it is handing over
        assert notice["text"]
        queued = (await alice.next("msg", conv=conv, role="system"))["body"]
        assert (queued["event"], queued["position"], queued["reason"]) == ("queued", 1, "asked_for_human")
        assert "您是下一位" in queued["text"]

        async with connect(gw.url, token("wangli", "agent", name="王丽"), resume={}) as agent:
            await agent.ok("status", status="online", max=3)
            offer = await agent.next("assigned")
            context = offer["context"]
            assert offer["conv"]["id"] == conv and offer["conv"]["stage"] == "assigned"
            assert context["customer"]["user"] == "alice" and context["customer"]["name"] == "王女士"
            assert context["handoff"]["reason"] == "asked_for_human"
            shopper_said = [t["text"] for t in context["transcript"] if t["role"] == "shopper"]
            assert shopper_said == ["什么时候发货?", "转人工"]
            assert any(i.get("intent") == "shipping_time" for i in context["intents"])  # what the bot understood

            assigned = (await alice.next("msg", conv=conv, role="system"))["body"]
            assert assigned["event"] == "assigned" and "王丽" in assigned["text"]
            await agent.ok("send", conv=conv, cmid="a1", body={"kind": "text", "text": "王女士您好，您的订单今天下午发出"})
            assert (await alice.next("msg", conv=conv, role="agent"))["body"]["text"].startswith("王女士您好")
            await alice.ok("send", conv=conv, cmid="q3", body={"kind": "text", "text": "好的谢谢"})
            assert (await agent.next("msg", conv=conv, role="shopper"))["cmid"] == "q3"
            # the bot stays quiet once a human has the conversation
            assert [f for f in await alice.quiet(0.3) if f["t"] == "msg" and f["role"] == "bot"] == []


async def test_a_frustrated_shopper_reaches_a_human(with_bot):
    gw = with_bot
    async with connect(gw.url, token("bob"), resume={}) as bob:
        conv = (await bob.ok("open"))["conv"]["id"]
        await bot_says(bob, conv)
        for i, text in enumerate(["你们这什么垃圾服务!!!", "怎么还没发货！！！太差了", "怎么还没发货！！！太差了"]):
            await bob.ok("send", conv=conv, cmid=f"f{i}", body={"kind": "text", "text": text})
            body = (await bob.next("msg", conv=conv))["body"]
            if body.get("kind") == "event" or body.get("event"):
                break
        queued = body if body.get("event") == "queued" else (await bob.next("msg", conv=conv, role="system"))["body"]
        assert queued["event"] == "queued" and queued["reason"] in ("frustrated", "human_only_intent")


async def test_an_english_shopper_is_answered_in_english(with_bot):
    gw = with_bot
    async with connect(gw.url, token("carol"), resume={}) as carol:
        conv = (await carol.ok("open"))["conv"]["id"]
        await bot_says(carol, conv)
        await carol.ok("send", conv=conv, cmid="e1", body={"kind": "text", "text": "When will my order be shipped?"})
        answer = await bot_says(carol, conv)
        assert answer["intent"] == "shipping_time" and not any("\u4e00" <= c <= "\u9fff" for c in answer["text"])
        await carol.ok("send", conv=conv, cmid="e2", body={"kind": "text", "text": "I want to talk to a human"})
        await bot_says(carol, conv)
        queued = (await carol.next("msg", conv=conv, role="system"))["body"]
        assert queued["event"] == "queued" and "next" in queued["text"]


async def test_a_bot_session_outlives_its_process_replayed_from_the_stored_messages(start_gateway):
    first = await start_gateway(routing="on", store="sqlite")
    async with connect(first.url, token("alice"), resume={}) as alice:
        conv = (await alice.ok("open"))["conv"]["id"]
        await bot_says(alice, conv)
        await alice.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
        assert (await bot_says(alice, conv))["intent"] == "shipping_time"
    first.node.stop()
    with trio.fail_after(10):
        await first.node.stopped()
    again = await start_gateway(routing="on", store="sqlite")  # the same data directory
    async with connect(again.url, token("alice"), resume={}) as alice:
        await alice.ok("send", conv=conv, cmid="q2", body={"kind": "text", "text": "转人工"})
        await bot_says(alice, conv)
        async with connect(again.url, token("wangli", "agent"), resume={}) as agent:
            await agent.ok("status", status="online", max=3)
            context = (await agent.next("assigned"))["context"]
            # what the bot understood before the restart is in the session the new process rebuilt
            assert any(i.get("intent") == "shipping_time" for i in context["intents"])


async def test_a_question_sent_before_the_greeting_arrives_is_answered_once_after_it(start_gateway):
    """A shopper app that sends its first question as soon as ``open`` answers, before the bot's
    greeting has arrived (on SQLite, where the bot's own writes take longest)."""
    gw = await start_gateway(routing="on", store="sqlite")
    with trio.fail_after(20):
        for n in range(3):
            async with connect(gw.url, token(f"shopper{n}"), resume={}) as shopper:
                conv = (await shopper.ok("open"))["conv"]["id"]
                await shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
                said = [(await bot_says(shopper, conv))["text"] for _ in range(2)]
                assert "发货" in said[1], said  # the greeting, then the answer
                assert [f for f in await shopper.quiet(0.3) if f["t"] == "msg" and f["role"] == "bot"] == []


async def test_the_routing_leader_starts_a_conversation_it_hears_of_first_by_a_message(start_gateway):
    """A leader that died holding a conversation's ``opened`` input (or a message that overtook
    it): the next leader hears of the conversation first by a shopper's message. It starts it
    then, so the shopper is greeted and answered rather than ignored; the late ``opened`` after
    that changes nothing."""
    gw = await start_gateway(routing="on", store="sqlite")
    service, routing = gw.node.service, gw.node.routing

    async def bot_messages(conv: str) -> list:
        return [m for m in (await service.store.read_messages(conv, limit=50)).messages if m.sender_role == "bot"]

    with trio.fail_after(20):
        async with connect(gw.url, token("alice"), resume={}) as alice:
            service.hooks = None  # routing hears neither the open nor the message: as on a node that is not leading
            try:
                conv = (await alice.ok("open"))["conv"]["id"]
                await alice.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
            finally:
                service.hooks = routing
            assert (await service.load(conv)).conv.stage == "opened" and await bot_messages(conv) == []
            [stored] = (await service.store.read_messages(conv, limit=50)).messages
            routing.message_elsewhere(stored)  # what the leader does with a forwarded shopper message
            greeting, answer = (await alice.next("msg", conv=conv, role="bot")), (await alice.next("msg", conv=conv, role="bot"))
            assert greeting["body"]["text"] and "发货" in answer["body"]["text"] and answer["cmid"] == f"re-{stored.seq}"
            routing.opened_elsewhere(conv, Principal("shop1", "alice", "shopper", "app"))  # the late ``opened``
            assert [f for f in await alice.quiet(0.5) if f["t"] == "msg" and f["role"] == "bot"] == []  # not greeted twice
            assert (await service.load(conv)).conv.stage == "bot" and len(await bot_messages(conv)) == 2
