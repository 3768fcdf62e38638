"""The routing lease on a real Redis, and gateways in this process routing as a cluster: a request
the leader does not answer is ``unavailable`` (counted), a graceful stop hands the lease over at
once, settings stored through a follower are in force on the leader. Each term's fence is higher
than every earlier term's, and a write of a leader cut off past its lease that lands after its
successor's is refused by the store: the successor's decision stays, the old leader steps down.
The cluster of real processes is in tests/test_cluster_routing.py."""

from __future__ import annotations

import json
import logging
import secrets
import threading
from functools import partial
from typing import Callable

import msgpack
import pytest
import trio

from gateway.app import serve
from gateway.model import AddParticipant, AppendMessage, Fenced, WriteOp
from gateway.routing.lease import Lease
from gateway.routing.redis_client import RedisClient
from gateway.store import PostgresBackend, StaleFence, StoreBackend

from ..conftest import make_config
from ..http.conftest import client, new_key
from ..postgres import PG_URL, drop_schema, fresh_schema
from ..services import TcpProxy
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


# ---- the fence: a leader's writes after its term are refused -------------------------------------


class HeldCall:
    """A store backend whose first call of ``method`` with arguments that ``matches`` waits, in the
    thread that made it (the Store's writer or a reader), until ``release`` is set: a write on its
    way, as when its process stops (a GC pause, SIGSTOP, a slow disk) after sending it, or a slow
    read. Everything else is the backend's."""

    def __init__(self, backend: StoreBackend, method: str, matches: Callable[..., bool]) -> None:
        self.backend = backend
        self.method = method
        self.matches = matches
        self.reached = threading.Event()
        self.release = threading.Event()
        self.args: tuple = ()
        self.result: object = None  # what the held call returned

    def __getattr__(self, name: str):
        call = getattr(self.backend, name)
        if name != self.method:
            return call

        def held(*args: object, **kwargs: object) -> object:
            if self.reached.is_set() or not self.matches(*args, **kwargs):
                return call(*args, **kwargs)
            self.args = args
            self.reached.set()
            self.release.wait(60)
            self.result = call(*args, **kwargs)
            return self.result

        return held


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.02)


@pytest.mark.parametrize("lands", ["after B assigned", "before B wrote"])
async def test_a_write_of_a_leader_cut_off_past_its_lease_is_refused_after_its_successor_began(nursery, start_gateway, tmp_path, caplog, lands):
    """Leader A's assignment (ann takes the conversation) is on its way to the store when A is cut
    off from Redis and its lease runs out; B leads with a higher fence and assigns ben. A's write
    then lands: the store refuses it, the conversation stays ben's, and A stops leading at once
    (by its own clock its lease is still valid for 20 s) and counts the refusal. The same when it
    lands before B has written anything: B claimed its fence before it read the store."""
    caplog.set_level(logging.WARNING)
    schema, channel = fresh_schema(), f"kefu:test:{secrets.token_hex(6)}"
    rules = tmp_path / "routing.json"
    rules.write_text(json.dumps({"default": {"bot": "none", "strategy": "manual"}}))
    settings = dict(routing="on", routing_file=str(rules), store=PG_URL, store_schema=schema, bus_channel=channel, routing_lease_s=30.0)
    proxy = TcpProxy(6379)  # A's way to Redis
    await nursery.start(proxy.run)
    def ann_added(op: WriteOp) -> bool:
        return type(op) is Fenced and type(op.op) is AddParticipant and op.op.participant.user == "ann"

    held = HeldCall(PostgresBackend(PG_URL, schema=schema), "apply_batch", lambda ops: any(map(ann_added, ops)))
    a = await nursery.start(partial(serve, make_config(tmp_path, bus=f"redis://127.0.0.1:{proxy.port}", **settings), backend=held))
    redis = RedisClient(REDIS_URL, "kefu-test")
    try:
        with trio.fail_after(30):
            await until(lambda: a.node.routing.cluster.leading)
            b = await start_gateway(bus=REDIS_URL, **settings)
            async with connect(a.url, token("alice"), resume={}) as alice, connect(a.url, token("ann", "agent"), resume={}) as ann:
                conv = (await alice.ok("open"))["conv"]["id"]
                assert (await alice.next("msg", conv=conv, role="system"))["body"]["event"] == "queued"
                await ann.ok("status", status="online")
                await ann.ok("take", conv=conv)
                await until(held.reached.is_set)  # A's assignment is on its way
                fence_a = a.node.routing.fence
                proxy.down()  # A is cut off from Redis, and its lease runs out
                await redis.call("DEL", f"{channel}:routing:leader")
                await until(lambda: b.node.routing.cluster.leading)
                assert b.node.routing.fence > fence_a
                async with connect(b.url, token("ben", "agent"), resume={}) as ben:
                    await ben.ok("status", status="online")
                    if lands == "before B wrote":
                        assert a.node.routing.cluster.leading  # A has not noticed: by its clock the lease holds
                        held.release.set()
                        await until(lambda: not a.node.routing.cluster.leading)
                        assert (await b.node.store.get_conversation(conv)).stage == "queued"  # as B read it
                    await ben.ok("take", conv=conv)
                    assert (await ben.next("assigned"))["conv"]["assignee"] == "ben"
                if lands == "after B assigned":
                    assert a.node.routing.cluster.leading
                    held.release.set()
                    await until(lambda: not a.node.routing.cluster.leading)
        [refused] = [result for op, result in zip(held.args[0], held.result) if ann_added(op)]
        assert isinstance(refused, StaleFence) and (refused.fence, refused.highest) == (fence_a, b.node.routing.fence)
        assert a.registry.get_sample_value("kefu_routing_stale_writes_total", {"op": "add_participant"}) == 1
        assert b.registry.get_sample_value("kefu_routing_stale_writes_total", {"op": "add_participant"}) == 0
        stored = await b.node.store.get_conversation(conv)
        assert (stored.stage, stored.assignee) == ("assigned", "ben")
        assert "ann" not in [p.user for p in await b.node.store.participants(conv)]
        assert b.node.routing.cluster.leading
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("routing write refused (add_participant)" in w for w in warnings)
        assert any(f"stops leading routing: the store has seen fence {b.node.routing.fence}" in w for w in warnings)
    finally:
        held.release.set()
        await proxy.up()
        a.node.stop()
        with trio.fail_after(10):
            await a.node.stopped()
        await redis.call("DEL", *(f"{channel}:routing:{key}" for key in ("leader", "leader:fence", "agents", "inbox", "processing")))
        await redis.aclose()
        drop_schema(schema)


async def test_a_leader_whose_write_is_refused_leads_again_with_a_fence_past_the_stores(start_gateway):
    """The store has seen a higher fence than Redis hands out (Redis lost its counter): the
    leader's first routing write is refused and counted, it steps down, steps aside, and its next
    term's number passes, without a loop of refusals."""
    schema, channel = fresh_schema(), f"kefu:test:{secrets.token_hex(6)}"
    settings = dict(routing="on", store=PG_URL, store_schema=schema, bus=REDIS_URL, bus_channel=channel, routing_lease_s=30.0)
    gw = await start_gateway(**settings)
    redis = gw.node.routing.cluster.commands
    try:
        with trio.fail_after(30):
            await until(lambda: gw.node.routing.cluster.leading)
            fence = gw.node.routing.fence
            ahead = PostgresBackend(PG_URL, schema=schema)  # another process's store, which saw a later term
            ahead.open()
            assert ahead.apply_batch([Fenced(fence + 5)]) == [None]
            ahead.close()
            async with connect(gw.url, token("alice"), resume={}) as alice:
                refused = (await alice.ok("open"))["conv"]["id"]  # routing's first write for it is refused
                await until(lambda: gw.registry.get_sample_value("kefu_routing_stale_writes_total", {"op": "add_participant"}) == 1)
                await until(lambda: gw.node.routing.cluster.leading and gw.node.routing.fence > fence + 5)
                assert gw.node.routing.fence == fence + 6
                served = (await alice.ok("open"))["conv"]["id"]
                assert (await alice.next("msg", conv=served, role="bot"))["body"]["text"]  # the bot greets: routing works
        assert (await gw.node.store.get_conversation(refused)).stage == "opened"  # the refused write changed nothing
        assert sum(gw.registry.get_sample_value("kefu_routing_stale_writes_total", {"op": op}) for op in ("claim", "set_status", "add_participant", "remove_participant", "append_message")) == 1
    finally:
        gw.node.stop()
        with trio.fail_after(10):
            await gw.node.stopped()
        await redis.call("DEL", *(f"{channel}:routing:{key}" for key in ("leader", "leader:fence", "agents", "inbox", "processing")))
        drop_schema(schema)


async def test_a_term_cut_short_while_it_reads_the_store_ends_before_the_next_begins(nursery, tmp_path, caplog):
    """The lease runs out while a new term restores from the store (a store read cannot be
    cancelled): the node contends again only once that term has ended, so the old term's cleanup
    never wipes the new one's routing state."""
    caplog.set_level(logging.WARNING)
    schema, channel = fresh_schema(), f"kefu:test:{secrets.token_hex(6)}"
    lease = f"{channel}:routing:leader"
    held = HeldCall(PostgresBackend(PG_URL, schema=schema), "in_stages", lambda stages, **limit: True)
    config = make_config(tmp_path, routing="on", store=PG_URL, store_schema=schema, bus=REDIS_URL, bus_channel=channel, routing_lease_s=30.0)
    gw = await nursery.start(partial(serve, config, backend=held))
    redis = RedisClient(REDIS_URL, "kefu-test")
    try:
        with trio.fail_after(30):
            await until(held.reached.is_set)  # the first term restores
            first = gw.node.routing.fence
            await redis.call("DEL", lease)  # and its lease runs out meanwhile
            await until(lambda: any("stops leading routing: lease lost" in r.getMessage() for r in caplog.records))
            with trio.move_on_after(2.5):  # two heartbeats: a node that did not wait would take the lease again here
                while await redis.call("EXISTS", lease) == 0:
                    await trio.sleep(0.05)
            assert await redis.call("EXISTS", lease) == 0
            held.release.set()
            await until(lambda: gw.node.routing.cluster.leading)
            assert gw.node.routing.fence == first + 1
            async with connect(gw.url, token("alice"), resume={}) as alice:
                conv = (await alice.ok("open"))["conv"]["id"]
                assert (await alice.next("msg", conv=conv, role="bot"))["body"]["text"]
            assert gw.node.routing.cluster.leading
    finally:
        held.release.set()
        gw.node.stop()
        with trio.fail_after(10):
            await gw.node.stopped()
        await redis.call("DEL", *(f"{channel}:routing:{key}" for key in ("leader", "leader:fence", "agents", "inbox", "processing")))
        await redis.aclose()
        drop_schema(schema)
