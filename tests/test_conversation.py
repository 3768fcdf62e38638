"""Conversations over real sockets: open, join, send/ack/deliver, devices, duplicates, resume, history."""

from __future__ import annotations

from contextlib import asynccontextmanager

import trio

from .support import connect, token

TEXT = {"kind": "text", "text": "你好，什么时候发货？"}


async def test_shopper_and_agent_converse(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(
        gateway.url, token("bob", "agent"), resume={}
    ) as agent:
        opened = await shopper.ok("open", subject="物流")
        conv = opened["conv"]["id"]
        assert opened["conv"]["customer"] == "alice" and opened["conv"]["status"] == "open"
        joined = await agent.ok("join", conv=conv)
        assert [p["user"] for p in joined["participants"]] == ["alice", "bob"]
        notice = await shopper.next("joined", conv=conv)
        assert notice["user"] == "bob" and notice["role"] == "agent"

        ack = await shopper.request("send", conv=conv, cmid="m1", body=TEXT)
        assert ack["t"] == "ack" and ack["seq"] == 1 and ack["cmid"] == "m1" and ack["dup"] is False
        msg = await agent.next("msg", conv=conv)
        assert msg["seq"] == 1 and msg["body"] == TEXT and msg["from"] == "alice" and msg["role"] == "shopper"
        assert msg["ts"] == ack["ts"]

        reply = await agent.request("send", conv=conv, cmid="r1", body={"kind": "text", "text": "今天下午发货"})
        assert reply["seq"] == 2
        got = await shopper.next("msg", conv=conv)
        assert got["seq"] == 2 and got["from"] == "bob"
        # the sending connection gets the ack, not its own message back
        assert [f for f in await shopper.quiet(0.1) if f["t"] == "msg"] == []


async def test_sequence_numbers_are_gap_free_and_one_order_for_everybody(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(
        gateway.url, token("bob", "agent"), resume={}
    ) as agent, connect(gateway.url, token("sue", "supervisor"), resume={}) as supervisor:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await supervisor.ok("join", conv=conv)
        n = 40
        # both sides pipeline sends without waiting for acks
        for i in range(n):
            await shopper.send("send", conv=conv, cmid=f"s{i}", body={"kind": "text", "text": f"s{i}"})
            await agent.send("send", conv=conv, cmid=f"a{i}", body={"kind": "text", "text": f"a{i}"})
        seen = [await supervisor.next("msg", conv=conv) for _ in range(2 * n)]
        assert [m["seq"] for m in seen] == list(range(1, 2 * n + 1))
        order = [m["cmid"] for m in seen]
        # every participant sees the same order; each sender's own messages keep their send order
        shopper_view = [m["cmid"] for m in [await shopper.next("msg", conv=conv) for _ in range(n)]]
        assert shopper_view == [c for c in order if c.startswith("a")]
        assert [c for c in order if c.startswith("s")] == [f"s{i}" for i in range(n)]


async def test_every_device_of_every_participant_receives(gateway):
    async with connect(gateway.url, token("alice", channel="app"), resume={}) as phone, connect(
        gateway.url, token("alice", channel="web"), resume={}
    ) as laptop, connect(gateway.url, token("bob", "agent"), resume={}) as agent:
        conv = (await phone.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        ack = await phone.request("send", conv=conv, cmid="x", body=TEXT)
        # the shopper's other device gets the message too, and so does the agent
        assert (await laptop.next("msg", conv=conv))["seq"] == ack["seq"]
        assert (await agent.next("msg", conv=conv))["seq"] == ack["seq"]
        await agent.request("send", conv=conv, cmid="y", body=TEXT)
        assert (await phone.next("msg", conv=conv))["cmid"] == "y"
        assert (await laptop.next("msg", conv=conv))["cmid"] == "y"


async def test_resending_a_client_message_id_returns_the_original_ack_and_is_not_delivered_again(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(
        gateway.url, token("bob", "agent"), resume={}
    ) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        first = await shopper.request("send", conv=conv, cmid="same", body=TEXT)
        again = await shopper.request("send", conv=conv, cmid="same", body={"kind": "text", "text": "changed"})
        assert again["t"] == "ack" and again["dup"] is True
        assert (again["seq"], again["ts"]) == (first["seq"], first["ts"])
        nxt = await shopper.request("send", conv=conv, cmid="next", body=TEXT)
        assert nxt["seq"] == first["seq"] + 1  # the duplicate consumed no number
        got = [f for f in await agent.quiet(0.3) if f["t"] == "msg"]
        assert [m["cmid"] for m in got] == ["same", "next"]
        assert got[0]["body"] == TEXT


async def test_resume_after_a_gap_delivers_exactly_the_missed_messages_then_live(gateway):
    async with connect(gateway.url, token("bob", "agent"), resume={}) as agent:
        async with connect(gateway.url, token("alice"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            for i in range(3):
                await agent.ok("send", conv=conv, cmid=f"a{i}", body=TEXT)
            held = [(await shopper.next("msg", conv=conv))["seq"] for _ in range(3)]
            assert held == [1, 2, 3]
        # the shopper is gone; the agent goes on writing
        for i in range(3, 8):
            await agent.ok("send", conv=conv, cmid=f"a{i}", body=TEXT)
        async with connect(gateway.url, token("alice"), resume=None, hello=True) as shopper:
            resumed = await shopper.ok("resume", convs={conv: 3})
            assert resumed["resumed"][conv] == {"sent": 5, "complete": True, "last_seq": 8}
            missed = [await shopper.next("msg", conv=conv) for _ in range(5)]
            assert [m["seq"] for m in missed] == [4, 5, 6, 7, 8]
            assert [m["cmid"] for m in missed] == [f"a{i}" for i in range(3, 8)]
            await agent.ok("send", conv=conv, cmid="live", body=TEXT)
            live = await shopper.next("msg", conv=conv)
            assert (live["seq"], live["cmid"]) == (9, "live")
            assert [f for f in await shopper.quiet(0.2) if f["t"] == "msg"] == []


async def test_resume_while_messages_keep_arriving_loses_and_repeats_nothing(gateway):
    async with connect(gateway.url, token("bob", "agent"), resume={}) as agent:
        async with connect(gateway.url, token("alice"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        total = 120

        async def write():
            for i in range(total):
                await agent.send("send", conv=conv, cmid=f"k{i}", body=TEXT)
                if i % 10 == 0:
                    await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await trio.sleep(0.01)
            async with connect(gateway.url, token("alice")) as shopper:
                await shopper.ok("resume", convs={conv: 0})
                seqs = [(await shopper.next("msg", conv=conv))["seq"] for _ in range(total)]
                assert seqs == list(range(1, total + 1))
                assert [f for f in await shopper.quiet(0.2) if f["t"] == "msg"] == []


async def test_live_delivery_starts_with_resume(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(
        gateway.url, token("bob", "agent"), resume={}
    ) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        async with connect(gateway.url, token("alice")) as second:  # authenticated, not resumed
            await agent.ok("send", conv=conv, cmid="before", body=TEXT)
            assert [f for f in await second.quiet(0.2) if f["t"] == "msg"] == []
            await second.ok("resume", convs={})
            await agent.ok("send", conv=conv, cmid="after", body=TEXT)
            assert (await second.next("msg", conv=conv))["cmid"] == "after"


async def test_auth_frame_can_carry_resume(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await shopper.ok("send", conv=conv, cmid="one", body=TEXT)
    async with connect(gateway.url) as client:
        await client.send("auth", token=token("alice"), resume={conv: 0})
        assert (await client.recv())["t"] == "hello"
        assert (await client.next("msg", conv=conv))["cmid"] == "one"
        assert (await client.next("ok"))["resumed"][conv]["sent"] == 1


async def test_history_pages_backwards_and_forwards(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper:
        conv = (await shopper.ok("open"))["conv"]["id"]
        for i in range(25):
            await shopper.send("send", conv=conv, cmid=f"h{i}", body={"kind": "text", "text": str(i)})
        for _ in range(25):
            await shopper.next("ack")
        newest = await shopper.ok("history", conv=conv, before=26, limit=10)
        assert [m["seq"] for m in newest["messages"]] == list(range(16, 26)) and newest["more"] is True
        older = await shopper.ok("history", conv=conv, before=16, limit=10)
        assert [m["seq"] for m in older["messages"]] == list(range(6, 16))
        forward = await shopper.ok("history", conv=conv, after=20, limit=10)
        assert [m["seq"] for m in forward["messages"]] == list(range(21, 26)) and forward["more"] is False
        assert forward["messages"][0]["body"] == {"kind": "text", "text": "20"}


async def test_list_my_conversations(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as alice, connect(
        gateway.url, token("carol"), resume={}
    ) as carol, connect(gateway.url, token("sue", "supervisor"), resume={}) as sue:
        a1 = (await alice.ok("open", subject="one"))["conv"]["id"]
        a2 = (await alice.ok("open", subject="two"))["conv"]["id"]
        c1 = (await carol.ok("open"))["conv"]["id"]
        mine = await alice.ok("list")
        assert [c["id"] for c in mine["convs"]] == [a2, a1] and mine["more"] is False
        page = await alice.ok("list", limit=1)
        assert [c["id"] for c in page["convs"]] == [a2] and page["more"] is True
        rest = await alice.ok("list", limit=1, cursor=page["next"])
        assert [c["id"] for c in rest["convs"]] == [a1] and rest["more"] is False and rest["next"] is None
        everything = await sue.ok("list")
        assert {c["id"] for c in everything["convs"]} == {a1, a2, c1}
        await alice.ok("close", conv=a1)
        assert [c["id"] for c in (await alice.ok("list", status="open"))["convs"]] == [a2]


@asynccontextmanager
async def served(gateway):
    """alice's new conversation, joined by the agent bob, with alice's first message in it."""
    async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(
        gateway.url, token("bob", "agent"), resume={}
    ) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await shopper.ok("send", conv=conv, cmid="1", body=TEXT)
        yield shopper, agent, conv


async def test_receipts_typing_and_presence(gateway):
    async with served(gateway) as (shopper, agent, conv):
        await shopper.ok("send", conv=conv, cmid="2", body=TEXT)
        await agent.next("msg", seq=2)

        await agent.ok("receipt", conv=conv, kind="read", seq=2)
        receipt = await shopper.next("receipt", conv=conv)
        assert (receipt["user"], receipt["kind"], receipt["seq"]) == ("bob", "read", 2)
        lower = await agent.ok("receipt", conv=conv, kind="read", seq=1)
        assert lower["seq"] == 2  # cumulative: never lowered, and nobody is told
        await agent.ok("receipt", conv=conv, kind="read", seq=2)  # repeated: nobody is told again
        assert [f for f in await shopper.quiet(0.1) if f["t"] == "receipt"] == []
        history = await shopper.ok("history", conv=conv)
        assert {"user": "bob", "kind": "read", "seq": 2} in history["receipts"]
        past = await agent.request("receipt", conv=conv, kind="read", seq=99)
        assert past["t"] == "error" and past["code"] == "bad_request"

        await agent.send("typing", conv=conv, on=True)
        typing = await shopper.next("typing", conv=conv)
        assert (typing["user"], typing["on"]) == ("bob", True)

        assert [f for f in await agent.quiet(0.1) if f["t"] == "typing"] == []  # not echoed to its sender
        await shopper.send("typing", conv=conv, on=False)
        assert (await agent.next("typing", conv=conv))["on"] is False


async def test_presence_online_and_offline(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper:
        conv = (await shopper.ok("open"))["conv"]["id"]
        async with connect(gateway.url, token("bob", "agent"), resume={}) as agent:
            await agent.ok("join", conv=conv)
            async with connect(gateway.url, token("bob", "agent"), resume={}):
                pass  # a second device coming and going: bob stays online
        presence = await shopper.next("presence", conv=conv)
        assert (presence["user"], presence["online"]) == ("bob", False)
        async with connect(gateway.url, token("bob", "agent"), resume={}):
            presence = await shopper.next("presence", conv=conv)
            assert (presence["user"], presence["online"]) == ("bob", True)
        presence = await shopper.next("presence", conv=conv)
        assert (presence["user"], presence["online"]) == ("bob", False)
        assert [f for f in await shopper.quiet(0.1) if f["t"] == "presence"] == []


async def test_a_supervisor_follows_a_conversation_live_without_joining_and_nobody_hears_of_it(gateway):
    with trio.fail_after(10):
        await follow_unseen(gateway)


async def follow_unseen(gateway):
    async with served(gateway) as (shopper, agent, conv):
        # a supervisor connecting with a cursor for it (as the console does after a reconnect) ...
        async with connect(gateway.url, token("boss", "supervisor"), resume={conv: 0}) as boss:
            assert (await boss.next("msg", conv=conv))["seq"] == 1  # caught up
            await shopper.ok("send", conv=conv, cmid="2", body=TEXT)
            assert (await boss.next("msg", conv=conv))["seq"] == 2  # and live
            await agent.send("typing", conv=conv, on=True)
            assert (await boss.next("typing", conv=conv))["user"] == "bob"
            await agent.ok("receipt", conv=conv, kind="read", seq=2)
            assert (await boss.next("receipt", conv=conv))["user"] == "bob"
            # ... is no participant: the conversation's members are not told it came or went
            participants = (await agent.ok("join", conv=conv))["participants"]
            assert "boss" not in [p["user"] for p in participants]
        await shopper.ok("send", conv=conv, cmid="3", body=TEXT)
        await agent.next("msg", seq=3)
        for member in (shopper, agent):
            assert [f for f in await member.quiet(0.1) if f["t"] == "presence" and f["user"] == "boss"] == []


async def test_leave_and_close(gateway):
    async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(
        gateway.url, token("bob", "agent"), resume={}
    ) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await agent.ok("leave", conv=conv)
        assert (await shopper.next("left", conv=conv))["user"] == "bob"
        refused = await agent.request("send", conv=conv, cmid="x", body=TEXT)
        assert refused["t"] == "error" and refused["code"] == "forbidden"
        cannot = await shopper.request("leave", conv=conv)
        assert cannot["code"] == "forbidden"
        closed = await shopper.ok("close", conv=conv)
        assert closed["conv"]["status"] == "closed"
        after = await shopper.request("send", conv=conv, cmid="late", body=TEXT)
        assert after["code"] == "conversation_closed"
        rejoin = await agent.request("join", conv=conv)
        assert rejoin["code"] == "conversation_closed"
