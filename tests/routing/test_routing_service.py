"""Routing over real sockets: queues with positions, assignment with context, transfer, resolve,
reopen, agent disconnect and the grace period, supervisors."""

from __future__ import annotations

import json

import pytest
import trio

from gateway.model import Fenced

from ..support import connect, token

TEXT = {"kind": "text", "text": "我要退货"}


@pytest.fixture
async def routed(start_gateway, tmp_path):
    """Start a gateway with routing on and the given default tenant routing settings."""

    async def start(**default):
        path = tmp_path / "routing.json"
        path.write_text(json.dumps({"default": {"bot": "none", "grace_s": 1.0, **default}}))
        return await start_gateway(routing="on", routing_file=str(path))

    return start


async def events(client, conv, n):
    """The next n lifecycle events (system messages) of a conversation."""
    got = []
    while len(got) < n:
        m = await client.next("msg", conv=conv, role="system")
        got.append(m["body"])
    return got


async def test_queue_position_then_assignment_with_context(routed):
    gw = await routed()
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("carol"), resume={}) as carol:
        a = (await alice.ok("open"))["conv"]["id"]
        c = (await carol.ok("open"))["conv"]["id"]
        queued = (await events(alice, a, 1))[0]
        assert queued["event"] == "queued" and queued["position"] == 1 and queued["eta_s"] is None
        assert (await events(carol, c, 1))[0]["position"] == 2
        await alice.ok("send", conv=a, cmid="q", body=TEXT)
        async with connect(gw.url, token("wangli", "agent", name="王丽"), resume={}) as agent:
            status = await agent.ok("status", status="online", max=1)
            assert status["max"] == 1
            offer = await agent.next("assigned")
            assert offer["conv"]["id"] == a and offer["conv"]["stage"] == "assigned" and offer["conv"]["assignee"] == "wangli"
            assert [t["text"] for t in offer["context"]["transcript"] if t["role"] == "shopper"] == ["我要退货"]
            assigned = (await events(alice, a, 1))[0]
            assert assigned["event"] == "assigned" and "王丽" in assigned["text"]
            moved = await carol.next("queue", conv=c)
            assert (moved["position"], moved["eta_s"] is not None) == (1, True)  # carol moved up; an agent is online
            # the two converse
            await agent.ok("send", conv=a, cmid="r", body={"kind": "text", "text": "好的，请提供订单号"})
            assert (await alice.next("msg", conv=a, role="agent"))["from"] == "wangli"
            # resolving frees her place: carol is next
            await agent.ok("resolve", conv=a)
            assert (await agent.next("assigned"))["conv"]["id"] == c
            assert (await events(alice, a, 1))[0]["event"] == "resolved"


async def test_transfer_to_another_agent_with_a_note(routed):
    gw = await routed()
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("ann", "agent"), resume={}) as ann, connect(
        gw.url, token("ben", "agent"), resume={}
    ) as ben:
        await ann.ok("status", status="online")
        conv = (await alice.ok("open"))["conv"]["id"]
        await ann.next("assigned")
        await ben.ok("status", status="online")
        await ann.ok("transfer", conv=conv, to_agent="ben", note="客户要开发票，转财务")
        offer = await ben.next("assigned")
        assert offer["context"]["transfer"] == {"from": "ann", "note": "客户要开发票，转财务", "to_agent": "ben", "to_group": None}
        assert offer["conv"]["assignee"] == "ben"
        refused = await ann.request("send", conv=conv, cmid="x", body=TEXT)
        assert refused["code"] == "forbidden"  # ann left the conversation


async def test_in_one_process_routing_writes_carry_no_fence(routed):
    """No cluster, no lease: the writes are stored as they always were, and the store has seen no
    fence (its highest is still 0, which only a fenced write would have raised)."""
    gw = await routed()
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("ann", "agent"), resume={}) as ann:
        await ann.ok("status", status="online")
        conv = (await alice.ok("open"))["conv"]["id"]
        assert (await ann.next("assigned"))["conv"]["id"] == conv
        await ann.ok("resolve", conv=conv)
    assert gw.node.routing.fence is None
    assert await gw.node.store.execute(Fenced(0)) is None
    assert gw.registry.get_sample_value("kefu_routing_stale_writes_total", {"op": "set_status"}) == 0


async def test_an_agent_never_exceeds_their_maximum_and_nothing_is_assigned_twice(routed):
    gw = await routed()
    shoppers = [f"s{i}" for i in range(12)]
    async with connect(gw.url, token("ann", "agent"), resume={}) as ann, connect(gw.url, token("ben", "agent"), resume={}) as ben:
        async with trio.open_nursery() as nursery:
            convs = []

            async def shopper(name):
                async with connect(gw.url, token(name), resume={}) as s:
                    convs.append((await s.ok("open"))["conv"]["id"])
                    await trio.sleep(3)

            for name in shoppers:
                nursery.start_soon(shopper, name)
            await trio.sleep(0.3)
            await ann.ok("status", status="online", max=3)
            await ben.ok("status", status="online", max=4)
            offers_ann = [await ann.next("assigned") for _ in range(3)]
            offers_ben = [await ben.next("assigned") for _ in range(4)]
            ids = [o["conv"]["id"] for o in offers_ann + offers_ben]
            assert len(set(ids)) == 7
            assert [f for f in await ann.quiet(0.3) if f["t"] == "assigned"] == []
            assert [f for f in await ben.quiet(0.1) if f["t"] == "assigned"] == []
            engine = gw.node.routing.engine
            assert len(engine.agent("shop1", "ann").active) == 3 and len(engine.agent("shop1", "ben").active) == 4
            assert len(engine.waiting) == 5


async def test_a_disconnected_agents_conversations_return_to_the_queue_first_in_line(routed):
    gw = await routed()
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("carol"), resume={}) as carol:
        async with connect(gw.url, token("ann", "agent"), resume={}) as ann:
            await ann.ok("status", status="online", max=1)
            a = (await alice.ok("open"))["conv"]["id"]
            await ann.next("assigned")
            c = (await carol.ok("open"))["conv"]["id"]  # waits behind alice's
        requeued = await alice.next("msg", conv=a, role="system", body={**(await _peek_event(alice, a, "requeued"))})
        assert requeued["body"]["event"] == "requeued"
        assert [w.conv_id for w in gw.node.routing.engine.queued("shop1")] == [a, c]  # alice first in line
        async with connect(gw.url, token("ben", "agent"), resume={}) as ben:
            await ben.ok("status", status="online", max=1)
            assert (await ben.next("assigned"))["conv"]["id"] == a


async def _peek_event(client, conv, event):
    while True:
        m = await client.next("msg", conv=conv, role="system")
        if m["body"]["event"] == event:
            client.buffer.insert(0, m)
            return m["body"]


async def test_manual_strategy_and_the_supervisor_view(routed):
    gw = await routed(strategy="manual")
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("ann", "agent"), resume={}) as ann, connect(
        gw.url, token("sue", "supervisor"), resume={}
    ) as sue:
        await ann.ok("status", status="online")
        conv = (await alice.ok("open"))["conv"]["id"]
        await events(alice, conv, 1)
        view = await sue.ok("queues")
        assert [w["conv"] for w in view["queues"]["default"]] == [conv]
        assert [a["user"] for a in view["agents"]] == ["ann"]
        await ann.ok("take", conv=conv)
        assert (await ann.next("assigned"))["how"] == "take"
        again = await ann.request("take", conv=conv)
        assert again["t"] == "error"
        await sue.ok("join", conv=conv)  # a supervisor joins a live conversation
        await ann.ok("send", conv=conv, cmid="1", body=TEXT)
        assert (await sue.next("msg", conv=conv, role="agent"))["cmid"] == "1"


async def test_resolved_conversations_reopen_when_the_shopper_writes(routed):
    gw = await routed(strategy="sticky", sticky_wait_s=30)
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("ann", "agent"), resume={}) as ann, connect(
        gw.url, token("ben", "agent"), resume={}
    ) as ben:
        await ann.ok("status", status="online")
        conv = (await alice.ok("open"))["conv"]["id"]
        await ann.next("assigned")
        await ben.ok("status", status="online")
        await ann.ok("resolve", conv=conv)
        await _peek_event(alice, conv, "resolved")
        await alice.ok("send", conv=conv, cmid="again", body={"kind": "text", "text": "还有个问题"})
        offer = await ann.next("assigned")  # sticky: the same agent, not ben
        assert offer["conv"]["id"] == conv and offer["context"]["handoff"]["reason"] == "reopened"


async def test_an_external_bot_answers_then_hands_off_with_its_context(routed):
    gw = await routed(bot="external", bot_user="rasa", bot_name="Rasa")
    async with connect(gw.url, token("rasa", "bot"), resume={}) as bot, connect(gw.url, token("alice"), resume={}) as alice, connect(
        gw.url, token("ann", "agent"), resume={}
    ) as ann:
        await ann.ok("status", status="online")
        conv = (await alice.ok("open"))["conv"]["id"]
        joined = await alice.next("joined", conv=conv)
        assert (joined["user"], joined["role"]) == ("rasa", "bot")
        await alice.ok("send", conv=conv, cmid="q", body={"kind": "text", "text": "我的包裹丢了"})
        assert (await bot.next("msg", conv=conv, role="shopper"))["cmid"] == "q"  # the bot hears the shopper
        await bot.ok("send", conv=conv, cmid="b1", body={"kind": "text", "text": "抱歉，我帮您转人工"})
        reply = await bot.ok("handoff", conv=conv, reason="lost parcel", context={"intent": "lost_parcel", "order": "A123"})
        assert reply["stage"] in ("queued", "assigned")
        offer = await ann.next("assigned")
        assert offer["context"]["intent"] == "lost_parcel" and offer["context"]["handoff"]["reason"] == "bot_request"


async def test_a_shopper_asks_for_a_human_by_request(routed):
    gw = await routed(bot="external", bot_user="rasa")
    async with connect(gw.url, token("alice"), resume={}) as alice:
        conv = (await alice.ok("open"))["conv"]["id"]
        reply = await alice.ok("handoff", conv=conv, reason="想找人工")
        assert reply["stage"] == "queued"
        queued = await _peek_event(alice, conv, "queued")
        assert queued["reason"] == "asked_for_human" and queued["position"] == 1
        outsider = await alice.request("queues")
        assert outsider["code"] == "forbidden"


async def test_a_restart_picks_up_queued_and_assigned_conversations(start_gateway, tmp_path):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none", "grace_s": 1.0}}))
    first = await start_gateway(routing="on", routing_file=str(path), store="sqlite")
    async with connect(first.url, token("alice"), resume={}) as alice, connect(first.url, token("carol"), resume={}) as carol, connect(
        first.url, token("ann", "agent"), resume={}
    ) as ann:
        await ann.ok("status", status="online", max=1)
        a = (await alice.ok("open"))["conv"]["id"]
        await ann.next("assigned")
        c = (await carol.ok("open"))["conv"]["id"]
        await _peek_event(carol, c, "queued")
    first.node.stop()
    with trio.fail_after(10):
        await first.node.stopped()
    again = await start_gateway(routing="on", routing_file=str(path), store="sqlite")
    engine = again.node.routing.engine
    assert [w.conv_id for w in engine.queued("shop1")] == [c]
    assert engine.assignee(a).user == "ann"
    async with connect(again.url, token("ben", "agent"), resume={}) as ben:
        await ben.ok("status", status="online", max=5)
        assert (await ben.next("assigned"))["conv"]["id"] == c  # carol's was still waiting
        # ann does not come back within her grace period: alice's conversation goes to ben too
        assert (await ben.next("assigned"))["conv"]["id"] == a
