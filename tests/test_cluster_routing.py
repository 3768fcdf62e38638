"""Routing across ``kefu serve`` processes over one PostgreSQL store and one Redis bus: one leader
decides (gateway.routing.cluster), so an agent's maximum holds across nodes and the bot answers once;
SIGKILL of the leader hands routing to another node, which restores queues and bot sessions; the
conversations of an agent whose node died go back to the queue; routing stops while Redis is away
and resumes by itself."""

from __future__ import annotations

import json
import secrets
import signal
import urllib.request
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
import trio

from gateway.app import serve
from gateway.routing.redis_client import RedisClient

from .conftest import make_config
from .postgres import fresh_schema
from .services import private_redis  # noqa: F401  (the fixture)
from .support import connect, token
from .test_cluster import REDIS_URL, cluster

ROUTING = {"default": {"bot": "none", "grace_s": 1.0}, "tenants": {"botshop": {"bot": "builtin", "grace_s": 1.0}}}

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def routed_cluster(tmp_path, n: int, schema: str | None = None):
    """``n`` gateway processes routing as one cluster (a 1 s lease); node 0 starts first and leads.
    Yields [(process, websocket url, metrics url)]."""
    schema, channel = schema or fresh_schema(), f"kefu:test:{secrets.token_hex(6)}"
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(ROUTING))
    routing = ("--routing", "on", "--routing-file", str(path), "--routing-lease-s", "1", "--routing-reply-timeout-s", "3")
    try:
        async with cluster(tmp_path, n, *routing, schema=schema, channel=channel) as nodes:
            yield nodes
    finally:
        redis = RedisClient(REDIS_URL, "kefu-test-cleanup")
        await redis.call("DEL", *(f"{channel}:routing:{key}" for key in ("leader", "inbox", "agents")))
        await redis.aclose()


def leads(metrics_url: str) -> bool:
    body = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return "kefu_routing_leader 1.0" in body


async def retried(client, t: str, **fields):
    """A request answered ``unavailable`` while routing changes hands, sent again until it is done."""
    while True:
        reply = await client.request(t, **fields)
        if reply["t"] == "ok":
            return reply
        assert reply["t"] == "error" and reply["code"] == "unavailable", reply
        await trio.sleep(0.2)


async def bot_says(client, conv: str) -> str:
    return (await client.next("msg", conv=conv, role="bot"))["body"]["text"]


async def test_one_leader_and_one_bot_answer_per_shopper_message_on_two_nodes(tmp_path):
    async with routed_cluster(tmp_path, 2) as nodes:
        (_, url0, metrics0), (_, url1, metrics1) = nodes
        assert [await trio.to_thread.run_sync(leads, m) for m in (metrics0, metrics1)] == [True, False]
        with trio.fail_after(40):
            async with connect(url0, token("alice", tenant="botshop"), resume={}) as alice, connect(url1, token("bob", tenant="botshop"), resume={}) as bob:
                for shopper in (alice, bob):
                    conv = (await shopper.ok("open"))["conv"]["id"]
                    assert await bot_says(shopper, conv)  # the greeting
                    await shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
                    assert "发货" in await bot_says(shopper, conv)
                    await shopper.ok("send", conv=conv, cmid="q2", body={"kind": "text", "text": "怎么退货?"})
                    assert await bot_says(shopper, conv)
                    assert [f for f in await shopper.quiet(1.0) if f["t"] == "msg" and f["role"] == "bot"] == []
                    history = await shopper.ok("history", conv=conv)
                    assert [m["role"] for m in history["messages"]] == ["bot", "shopper", "bot", "shopper", "bot"]


async def test_an_agents_maximum_holds_for_shoppers_on_two_nodes(tmp_path):
    async with routed_cluster(tmp_path, 2) as nodes:
        (_, url0, _), (_, url1, _) = nodes
        with trio.fail_after(40):
            async with AsyncExitStack() as stack:
                # the agent is on the node that does not lead: every request of theirs is forwarded
                agent = await stack.enter_async_context(connect(url1, token("wangli", "agent"), resume={}))
                supervisor = await stack.enter_async_context(connect(url0, token("zhao", "supervisor"), resume={}))
                status = await agent.ok("status", status="online", max=2)
                assert (status["status"], status["max"]) == ("online", 2)
                convs = []
                for i, url in enumerate([url0, url1, url0, url1]):
                    shopper = await stack.enter_async_context(connect(url, token(f"shopper{i}"), resume={}))
                    convs.append((await shopper.ok("open"))["conv"]["id"])
                offered = [(await agent.next("assigned"))["conv"]["id"] for _ in range(2)]
                assert [f for f in await agent.quiet(1.5) if f["t"] == "assigned"] == []  # not a third
                snapshot = await supervisor.ok("queues")
                [me] = [a for a in snapshot["agents"] if a["user"] == "wangli"]
                assert sorted(me["active"]) == sorted(offered) and me["max"] == 2
                assert sorted(w["conv"] for w in snapshot["queues"]["default"]) == sorted(set(convs) - set(offered))
                await agent.ok("resolve", conv=offered[0])  # a place frees: the next in line comes
                third = (await agent.next("assigned"))["conv"]["id"]
                assert third in set(convs) - set(offered)
                status = await agent.ok("status", status="online")
                assert sorted(status["active"]) == sorted([offered[1], third])


async def test_the_leaders_death_hands_routing_to_another_node(tmp_path):
    async with routed_cluster(tmp_path, 2) as nodes:
        (leader, _, _), (_, url1, metrics1) = nodes
        with trio.fail_after(60):
            async with connect(url1, token("bob", tenant="botshop"), resume={}) as bob, connect(url1, token("carol"), resume={}) as carol:
                conv = (await bob.ok("open"))["conv"]["id"]
                assert await bot_says(bob, conv)
                await bob.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
                assert "发货" in await bot_says(bob, conv)
                waiting = (await carol.ok("open"))["conv"]["id"]
                assert (await carol.next("msg", conv=waiting, role="system"))["body"]["event"] == "queued"
                leader.send_signal(signal.SIGKILL)
                await leader.wait()
                # the bot conversation goes on with the next leader (its session replayed from the store)
                await bob.ok("send", conv=conv, cmid="q2", body={"kind": "text", "text": "什么时候发货?"})
                assert "发货" in await bot_says(bob, conv)
                history = await bob.ok("history", conv=conv)
                assert [m["role"] for m in history["messages"]] == ["bot", "shopper", "bot", "shopper", "bot"]
                assert await trio.to_thread.run_sync(leads, metrics1)
                # the queued shopper is assigned by the new leader
                async with connect(url1, token("wangli", "agent"), resume={}) as agent:
                    await retried(agent, "status", status="online", max=3)
                    assert (await agent.next("assigned"))["conv"]["id"] == waiting
                    assert (await carol.next("msg", conv=waiting, role="system"))["body"]["event"] == "assigned"


async def test_an_agents_conversations_are_requeued_when_their_node_dies(tmp_path):
    async with routed_cluster(tmp_path, 2) as nodes:
        (_, url0, _), (follower, url1, _) = nodes
        with trio.fail_after(60):
            async with connect(url0, token("alice"), resume={}) as alice, connect(url0, token("lihua", "agent"), resume={}) as other:
                conv = (await alice.ok("open"))["conv"]["id"]
                assert (await alice.next("msg", conv=conv, role="system"))["body"]["event"] == "queued"
                async with connect(url1, token("wangli", "agent"), resume={}) as agent:
                    await agent.ok("status", status="online", max=1)
                    assert (await agent.next("assigned"))["conv"]["id"] == conv
                    await other.ok("status", status="online", max=1)  # free, but wangli has her
                    follower.send_signal(signal.SIGKILL)
                    await follower.wait()
                    events = []
                    while events.count("assigned") < 2:
                        events.append((await alice.next("msg", conv=conv, role="system"))["body"]["event"])
                    assert events == ["assigned", "requeued", "assigned"]  # lihua was free: no wait
                    offer = await other.next("assigned")
                    assert offer["conv"]["id"] == conv and offer["conv"]["assignee"] == "lihua"


async def test_routing_stops_while_redis_is_away_and_resumes_by_itself(nursery, tmp_path, private_redis):
    config = make_config(tmp_path, bus=private_redis.url, routing="on", routing_lease_s=1.0, routing_reply_timeout_s=1.0)
    running = await nursery.start(serve, config)
    cluster = running.node.routing.cluster
    with trio.fail_after(40):
        while not cluster.leading:  # the only node: it takes the lease and restores
            await trio.sleep(0.05)
        async with connect(running.url, token("wangli", "agent"), resume={}) as agent:
            private_redis.kill()
            while cluster.leading:  # it cannot renew the lease: it stops deciding
                await trio.sleep(0.05)
            refused = await agent.request("status", status="online")
            assert (refused["t"], refused["code"], refused["retryable"]) == ("error", "unavailable", True)
            private_redis.start()
            status = await retried(agent, "status", status="online", max=2)
            assert (status["status"], status["max"]) == ("online", 2) and cluster.leading
    assert running.registry.get_sample_value("kefu_routing_forward_timeouts_total") >= 1
    running.node.stop()


async def test_a_knowledge_base_put_on_a_node_that_does_not_lead_answers_on_every_node(tmp_path):
    """The PUT is stored and handed to the leader, which fits it in the background; shoppers on
    either node then get its answers."""
    from .http.v1.test_bot_knowledge_base import SHOP
    from .postgres import create_api_key

    schema = fresh_schema()
    async with routed_cluster(tmp_path, 2, schema) as nodes:
        (_, url0, metrics0), (_, url1, metrics1) = nodes
        assert [await trio.to_thread.run_sync(leads, m) for m in (metrics0, metrics1)] == [True, False]
        secret = await trio.to_thread.run_sync(create_api_key, schema, "botshop")
        with trio.fail_after(60):
            async with connect(url0, token("gus", tenant="botshop"), resume={}) as shopper:  # the leader has used the sample since
                conv = (await shopper.ok("open"))["conv"]["id"]
                assert not (await bot_says(shopper, conv)).startswith("您好，这里是茶叶铺")
            async with httpx.AsyncClient(base_url=metrics1.removesuffix("/metrics"), headers={"authorization": f"Bearer {secret}"}, timeout=30) as http:
                put = await http.put("/v1/bot/knowledge-base", json=SHOP)
                assert put.status_code == 200 and put.json()["source"] == "api", put.text
            for url, user in ((url1, "erin"), (url0, "finn")):
                async with connect(url, token(user, tenant="botshop"), resume={}) as shopper:
                    while True:  # until the leader has fitted it: the sample shop answers meanwhile
                        conv = (await shopper.ok("open"))["conv"]["id"]
                        if (await bot_says(shopper, conv)).startswith("您好，这里是茶叶铺"):
                            break
                        await trio.sleep(0.2)
                    await shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "开封后能放多久"})
                    assert "18个月" in await bot_says(shopper, conv)
