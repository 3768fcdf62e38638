"""The Bus contract, run against every implementation: two gateways in front of one store, each
with its own clients, behave as one."""

from __future__ import annotations

import pytest
import trio

from gateway.app import serve
from gateway.bus import LocalBus
from gateway.store import MemoryBackend

from ..conftest import make_config
from ..support import connect, token

TEXT = {"kind": "text", "text": "亲，在的"}

BUSES = {"local": LocalBus}


@pytest.fixture(params=sorted(BUSES))
def make_bus(request):
    return BUSES[request.param]


@pytest.fixture
async def two_nodes(nursery, tmp_path, make_bus):
    """Two gateways sharing one bus and one store (the memory store is applied on the Trio
    thread, so two writers over it stay serialised)."""
    bus, backend = make_bus(), MemoryBackend()
    a = await nursery.start(lambda task_status: serve(make_config(tmp_path), backend=backend, bus=bus, task_status=task_status))
    b = await nursery.start(lambda task_status: serve(make_config(tmp_path), backend=backend, bus=bus, task_status=task_status))
    yield a, b
    for running in (a, b):
        running.node.stop()


async def test_messages_cross_nodes_in_one_order(two_nodes):
    a, b = two_nodes
    async with connect(a.url, token("alice"), resume={}) as shopper, connect(b.url, token("bob", "agent"), resume={}) as agent, connect(
        b.url, token("alice", channel="web"), resume={}
    ) as shopper_laptop:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        assert (await shopper.next("joined", conv=conv))["user"] == "bob"
        for i in range(20):
            await shopper.send("send", conv=conv, cmid=f"s{i}", body=TEXT)
            await agent.send("send", conv=conv, cmid=f"a{i}", body=TEXT)
        laptop = [await shopper_laptop.next("msg", conv=conv) for _ in range(40)]
        assert [m["seq"] for m in laptop] == list(range(1, 41))
        to_agent = [await agent.next("msg", conv=conv) for _ in range(20)]
        assert [m["cmid"] for m in to_agent] == [f"s{i}" for i in range(20)]
        to_shopper = [await shopper.next("msg", conv=conv) for _ in range(20)]
        assert [m["cmid"] for m in to_shopper] == [f"a{i}" for i in range(20)]


async def test_a_join_on_one_node_subscribes_the_users_devices_on_the_other(two_nodes):
    a, b = two_nodes
    async with connect(a.url, token("alice"), resume={}) as shopper, connect(a.url, token("bob", "agent"), resume={}) as bob_on_a, connect(
        b.url, token("bob", "agent"), resume={}
    ) as bob_on_b:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await bob_on_b.ok("join", conv=conv)
        with trio.fail_after(5):
            while conv not in b.node.hub.convs or not any(c.convs for c in a.node.hub.connections_of("shop1", "bob")):
                await trio.sleep(0.01)
        await shopper.ok("send", conv=conv, cmid="hi", body=TEXT)
        assert (await bob_on_a.next("msg", conv=conv))["cmid"] == "hi"
        assert (await bob_on_b.next("msg", conv=conv))["cmid"] == "hi"
        await bob_on_b.ok("leave", conv=conv)
        await shopper.ok("send", conv=conv, cmid="gone", body=TEXT)
        assert [f for f in await bob_on_a.quiet(0.2) if f["t"] == "msg"] == []


async def test_typing_and_receipts_cross_nodes(two_nodes):
    a, b = two_nodes
    async with connect(a.url, token("alice"), resume={}) as shopper, connect(b.url, token("bob", "agent"), resume={}) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await shopper.ok("send", conv=conv, cmid="q", body=TEXT)
        await agent.next("msg", conv=conv)
        await agent.send("typing", conv=conv, on=True)
        assert (await shopper.next("typing", conv=conv))["user"] == "bob"
        await agent.ok("receipt", conv=conv, kind="read", seq=1)
        assert (await shopper.next("receipt", conv=conv))["seq"] == 1
