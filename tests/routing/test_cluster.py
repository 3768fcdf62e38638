"""The routing lease on a real Redis, and gateways in this process routing as a cluster: a request
the leader does not answer is ``unavailable`` (counted), a graceful stop hands the lease over at
once, settings stored through a follower are in force on the leader; each term's fence is higher
than every earlier term's. The cluster of real processes is in tests/test_cluster_routing.py."""

from __future__ import annotations

import secrets

import msgpack
import pytest
import trio

from gateway.model import AppendMessage
from gateway.routing.lease import Lease
from gateway.routing.redis_client import RedisClient

from ..http.conftest import client, new_key
from ..postgres import PG_URL, drop_schema, fresh_schema
from ..support import connect, token

REDIS_URL = "redis://127.0.0.1:6379"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def redis():
    client = RedisClient(REDIS_URL, "kefu-test")
    prefix = f"kefu:test:{secrets.token_hex(6)}"
    yield client, prefix
    keys = (":lease", ":lease:fence", ":routing:leader", ":routing:leader:fence", ":routing:inbox", ":routing:agents")
    await client.call("DEL", *(f"{prefix}{key}" for key in keys))
    await client.aclose()


async def test_the_lease_has_one_holder_renewed_by_it_alone_and_free_after_expiry(redis):
    client, prefix = redis
    first, second = (Lease(client, f"{prefix}:lease", node, ttl_s=0.3) for node in ("a", "b"))
    assert await first.acquire() and first.held
    assert not await second.acquire() and not second.held
    assert await second.holder() == first.term
    assert await first.renew() and not await second.renew()
    while await second.holder() is not None:  # nobody renews: it expires
        await trio.sleep(0.05)
    assert not await first.renew() and not first.held  # too late: the term is over
    assert await second.acquire()
    await first.release()  # not its lease: nothing happens
    assert await second.holder() == second.term
    await second.release()
    assert await second.holder() is None


async def test_each_term_gets_a_fence_above_every_earlier_terms(redis):
    client, prefix = redis
    first, second = (Lease(client, f"{prefix}:lease", node, ttl_s=0.3) for node in ("a", "b"))
    assert await first.acquire()
    taken = first.fence
    assert taken >= 1
    assert not await second.acquire() and second.fence == 0  # an attempt that fails takes no number
    assert await first.renew() and first.fence == taken  # the term keeps its number
    while await second.holder() is not None:  # nobody renews: it expires
        await trio.sleep(0.05)
    assert await second.acquire() and second.fence == taken + 1  # lost, and taken by another node
    await second.release()
    assert await first.acquire() and first.fence == taken + 2  # the first node again: a new term, higher
    await first.release()


async def test_stepping_aside_puts_the_next_fence_past_what_the_store_has_seen(redis):
    """Redis lost the counter, so a leader got a number the store has seen already: stepping aside
    raises the counter past the store's, never lowers it, and gives back only its own lease."""
    client, prefix = redis
    first, second = (Lease(client, f"{prefix}:lease", node, ttl_s=30.0) for node in ("a", "b"))
    await client.call("SET", first.counter, 2)
    assert await first.acquire() and first.fence == 3
    await second.step_aside(50)  # not the holder: the lease stays first's
    assert await first.holder() == first.term
    await first.step_aside(40)  # the store has seen 40 (the counter is at 50 already)
    assert not first.held and await first.holder() is None
    assert await second.acquire() and second.fence == 51
    await second.step_aside(2)
    assert await first.acquire() and first.fence == 52


async def test_a_request_no_leader_answers_is_unavailable_and_counted(redis, start_gateway):
    client, prefix = redis
    channel = prefix
    # another node (that never answers) holds the lease
    await client.call("SET", f"{channel}:routing:leader", "ghost/1", "PX", 60_000)
    gw = await start_gateway(routing="on", bus=REDIS_URL, bus_channel=channel, routing_reply_timeout_s=0.3)
    assert not gw.node.routing.cluster.leading
    async with connect(gw.url, token("wangli", "agent"), resume={}) as agent:
        reply = await agent.request("status", status="online")
        assert (reply["t"], reply["code"]) == ("error", "unavailable")
    assert gw.registry.get_sample_value("kefu_routing_forward_timeouts_total") == 1
    assert gw.registry.get_sample_value("kefu_routing_leader") == 0


async def test_a_graceful_stop_hands_the_lease_to_the_next_node_at_once(redis, start_gateway):
    _, channel = redis
    settings = dict(routing="on", bus=REDIS_URL, bus_channel=channel, routing_lease_s=30.0)
    first = await start_gateway(**settings)
    second = await start_gateway(**settings)
    with trio.fail_after(10):
        while not first.node.routing.cluster.leading:
            await trio.sleep(0.05)
        assert not second.node.routing.cluster.leading
        first.node.stop()
        await first.node.stopped()
        # the lease lives 30 s; the stopped leader gave it back, so the next node leads well before
        while not second.node.routing.cluster.leading:
            await trio.sleep(0.05)
        async with connect(second.url, token("wangli", "agent"), resume={}) as agent:
            assert (await agent.ok("status", status="online", max=2))["max"] == 2


async def test_settings_stored_through_a_follower_are_in_force_on_the_leader(start_gateway):
    schema, channel = fresh_schema(), f"kefu:test:{secrets.token_hex(6)}"
    settings = dict(routing="on", store=PG_URL, store_schema=schema, bus=REDIS_URL, bus_channel=channel, routing_lease_s=30.0)
    started = []
    try:
        leader = await start_gateway(**settings)
        started.append(leader)
        follower = await start_gateway(**settings)
        started.append(follower)
        with trio.fail_after(20):
            while not leader.node.routing.cluster.leading:
                await trio.sleep(0.05)
            async with client(follower, await new_key(follower)) as http:
                put = await http.put("/v1/routing", json={"bot": "none", "default_max_active": 1})
                assert put.status_code == 200, put.text
            async with client(leader, await new_key(leader)) as http:  # the store says, on every node
                assert (await http.get("/v1/routing")).json()["settings"]["default_max_active"] == 1
            async with connect(follower.url, token("wangli", "agent"), resume={}) as agent, connect(follower.url, token("alice"), resume={}) as alice:
                # the leader decides with the settings the follower stored: one conversation at most, no bot
                assert (await agent.ok("status", status="online"))["max"] == 1
                conv = (await alice.ok("open"))["conv"]["id"]
                assert (await agent.next("assigned"))["conv"]["id"] == conv
                async with client(follower, await new_key(follower)) as http:  # presence, as the leader knows it
                    created = await http.post("/v1/agents", json={"user": "wangli"})
                    assert created.status_code == 201, created.text
                    assert created.json()["presence"] == {"status": "online", "connections": 1, "active": 1}
        await leader.node.routing.cluster.commands.call("DEL", f"{channel}:routing:agents", f"{channel}:routing:inbox")
    finally:
        for running in reversed(started):
            running.node.stop()
            with trio.fail_after(10):
                await running.node.stopped()
        drop_schema(schema)


async def test_inputs_a_dead_leader_took_are_carried_out_by_the_next_once(start_gateway):
    """A leader dies between taking a shopper's message from the inbox and answering it: the next
    leader answers it, once, and does not answer again what the dead one had answered."""
    schema, channel = fresh_schema(), f"kefu:test:{secrets.token_hex(6)}"
    settings = dict(routing="on", store=PG_URL, store_schema=schema, bus=REDIS_URL, bus_channel=channel, routing_lease_s=30.0)
    started = []
    try:
        first = await start_gateway(**settings)
        started.append(first)
        with trio.fail_after(20):
            async with connect(first.url, token("alice"), resume={}) as alice:
                conv = (await alice.ok("open"))["conv"]["id"]
                await alice.next("msg", conv=conv, role="bot")
                await alice.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
                await alice.next("msg", conv=conv, role="bot", cmid="re-2")  # the answer to seq 2
            # a message stored while nobody routed it, whose input a dead leader had taken
            body = msgpack.packb({"kind": "text", "text": "怎么退货?"})
            m = (await first.node.store.execute(AppendMessage(conv, "q2", "alice", "shopper", body))).message
            inputs = [["message", "dead", conv, seq, cmid, "alice", "shopper", m.ts, b] for seq, cmid, b in ((2, "q1", body), (m.seq, "q2", body))]
            redis = first.node.routing.cluster.commands
            await redis.call("RPUSH", f"{channel}:routing:processing", *(msgpack.packb(i, use_bin_type=True) for i in inputs))
            await redis.call("RPUSH", f"{channel}:routing:inbox", msgpack.packb(inputs[0], use_bin_type=True))  # and once more
            first.node.stop()
            await first.node.stopped()
            second = await start_gateway(**settings)
            started.append(second)
            async with connect(second.url, token("alice"), resume={}) as alice:
                answer = await alice.next("msg", conv=conv, role="bot", cmid=f"re-{m.seq}")  # taken back from the processing list
                assert answer["body"]["text"]
                await alice.quiet(0.5)
                history = await alice.ok("history", conv=conv)
                assert [(x["role"], x["cmid"]) for x in history["messages"]][1:] == [
                    ("shopper", "q1"), ("bot", "re-2"), ("shopper", "q2"), ("bot", f"re-{m.seq}")
                ]
            assert await redis.call("LLEN", f"{channel}:routing:processing") == 0
        await redis.call("DEL", f"{channel}:routing:agents", f"{channel}:routing:inbox", f"{channel}:routing:processing")
    finally:
        for running in reversed(started):
            running.node.stop()
            with trio.fail_after(10):
                await running.node.stopped()
        drop_schema(schema)
