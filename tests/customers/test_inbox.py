"""The agent's inbox: assigned conversations with unread counts, the shopper's waiting time and the
last message, longest-waiting first, kept current by ``inbox`` events."""

from __future__ import annotations

import trio

from ..support import connect, token
from .test_context import settled


async def test_the_inbox_counts_unread_waiting_time_and_follows_events(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        async with connect(gw.url, token("u1"), resume={}) as u1, connect(gw.url, token("u2"), resume={}) as u2, \
                connect(gw.url, token("a1", "agent"), resume={}) as agent:
            await agent.ok("status", status="online", max=5)
            conv1 = (await u1.ok("open"))["conv"]["id"]
            await settled(agent, await agent.next("assigned"))
            conv2 = (await u2.ok("open"))["conv"]["id"]
            await settled(agent, await agent.next("assigned"))

            first = await u1.ok("send", conv=conv1, cmid="m1", body={"kind": "text", "text": "在吗"})
            await u1.ok("send", conv=conv1, cmid="m2", body={"kind": "text", "text": "我的快递到哪了"})
            pushed = await agent.next("inbox")
            while pushed["item"]["last"]["text"] != "我的快递到哪了":
                pushed = await agent.next("inbox")
            assert pushed["item"]["conv"]["id"] == conv1 and pushed["item"]["unread"] == 2
            await trio.sleep(0.005)  # u2's first message a few ms after u1's: no tie in waiting time
            second = await u2.ok("send", conv=conv2, cmid="m1", body={"kind": "text", "text": "退货怎么办"})
            assert second["ts"] > first["ts"]

            gw.node.workspace.clock = lambda: first["ts"] / 1000 + 90
            items = (await agent.ok("inbox"))["items"]
            assert [i["conv"]["id"] for i in items] == [conv1, conv2]  # the longest-waiting shopper first
            assert (items[0]["unread"], items[0]["waiting_ms"], items[0]["last"]["text"]) == (2, 90_000, "我的快递到哪了")
            assert (items[1]["unread"], items[1]["waiting_ms"]) == (1, 90_000 - (second["ts"] - first["ts"]))

            read_up_to = items[0]["conv"]["last_seq"]
            await agent.ok("receipt", conv=conv1, kind="read", seq=read_up_to)
            pushed = await agent.next("inbox")
            while pushed["item"]["unread"]:
                pushed = await agent.next("inbox")
            assert pushed["item"]["conv"]["id"] == conv1  # reading on is pushed too
            await agent.ok("send", conv=conv1, cmid="a1", body={"kind": "text", "text": "马上帮您查"})
            items = {i["conv"]["id"]: i for i in (await agent.ok("inbox"))["items"]}
            assert (items[conv1]["unread"], items[conv1]["waiting_ms"], items[conv1]["last"]["role"]) == (0, 0, "agent")
            assert list(items) == [conv2, conv1]
        async with connect(gw.url, token("u3"), resume={}) as shopper:
            assert (await shopper.request("inbox"))["code"] == "forbidden"
