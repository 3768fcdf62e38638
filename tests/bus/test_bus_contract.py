"""The Bus contract, run against every implementation through a factory (``BUSES``): the bus on
its own (order, node ids, plain data, failures reported), then two gateways in front of one store,
each with its own clients, behaving as one. A factory makes a ``join`` function: each call returns
a bus joined to the others of the test (the same in-process bus; a Redis bus of its own on a
channel of the test's own, as each process would hold)."""

from __future__ import annotations

import pickle
import secrets

import pytest
import trio

from gateway.app import serve
from gateway.bus import BusError, LocalBus
from gateway.bus.redis import RedisBus
from gateway.model import Conversation
from gateway.protocol import envelope as env
from gateway.store import MemoryBackend

from ..conftest import make_config
from ..support import connect, token

TEXT = {"kind": "text", "text": "亲，在的"}

REDIS_URL = "redis://127.0.0.1:6379"


def local_buses():
    bus = LocalBus()
    return lambda: bus


def redis_buses():
    channel = f"kefu:test:{secrets.token_hex(6)}"
    return lambda: RedisBus(REDIS_URL, channel=channel)


BUSES = {"local": local_buses, "redis": redis_buses}


@pytest.fixture(params=sorted(BUSES))
def join(request):
    return BUSES[request.param]()


PLAIN = (str, int, bytes, bool, type(None), Conversation)
CONV = Conversation("c1", "t1", "alice", "app", "open", 1)


class Recorder:
    """A node's side of the bus: keeps what arrives."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.arrived = trio.Event()

    def _keep(self, kind, *args):
        self.events.append((kind, *args))
        self.arrived.set()

    def on_message(self, *args): self._keep("message", *args)
    def on_event(self, *args): self._keep("event", *args)
    def on_conversation(self, *args): self._keep("conversation", *args)
    def on_membership(self, *args): self._keep("membership", *args)
    def on_user(self, *args): self._keep("user", *args)

    async def wait_for(self, n: int) -> list[tuple]:
        with trio.fail_after(5):
            while len(self.events) < n:
                self.arrived = trio.Event()
                await self.arrived.wait()
        return self.events


def publish_all(bus, node: str, n: int) -> None:
    for seq in range(1, n + 1):
        bus.publish_message(node, "c1", seq, b"frame-%d" % seq, "sess-1" if seq == 1 else None)
    bus.publish_event(node, "c1", b"typing", "alice")
    bus.publish_conversation(node, CONV)
    bus.publish_membership(node, "c1", "t1", "bob", "agent", True)
    bus.publish_user(node, "t1", "bob", b"offer")


async def test_every_node_gets_every_event_in_order_with_the_publishers_id(nursery, join):
    bus = join()
    a, b = Recorder(), Recorder()
    await nursery.start(bus.run, a)
    await nursery.start(join().run, b)
    publish_all(bus, "node-a", 20)
    for node in (a, b):  # the publisher's own node too: it tells its echoes by the node id
        events = await node.wait_for(24)
        assert [e[3] for e in events[:20]] == list(range(1, 21))
        assert all(e[1] == "node-a" for e in events)
        assert events[0][5] == "sess-1" and events[1][5] is None
        assert [e[0] for e in events[20:]] == ["event", "conversation", "membership", "user"]


async def test_events_are_plain_data_that_can_cross_a_process(nursery, join):
    bus = join()
    node = Recorder()
    await nursery.start(bus.run, node)
    publish_all(bus, "node-a", 2)
    for event in await node.wait_for(6):
        assert all(isinstance(arg, PLAIN) for arg in event[1:]), event
        assert pickle.loads(pickle.dumps(event)) == event


async def test_a_publish_after_close_raises_and_none_is_dropped_in_silence(nursery, join):
    bus = join()
    await nursery.start(bus.run, Recorder())
    bus.close()
    for publish in (
        lambda: bus.publish_message("n", "c1", 1, b"x", None),
        lambda: bus.publish_event("n", "c1", b"x", None),
        lambda: bus.publish_conversation("n", CONV),
        lambda: bus.publish_membership("n", "c1", "t1", "bob", "agent", True),
        lambda: bus.publish_user("n", "t1", "bob", b"x"),
    ):
        with pytest.raises(BusError):
            publish()


async def test_publishing_with_no_node_attached_is_no_error(join):
    join().publish_message("n", "c1", 1, b"x", None)


@pytest.fixture
async def two_nodes(nursery, tmp_path, join):
    """Two gateways joined by the bus, over one store (the memory store is applied on the Trio
    thread, so two writers over it stay serialised)."""
    backend = MemoryBackend()
    a = await nursery.start(lambda task_status: serve(make_config(tmp_path), backend=backend, bus=join(), task_status=task_status))
    b = await nursery.start(lambda task_status: serve(make_config(tmp_path), backend=backend, bus=join(), task_status=task_status))
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


async def test_a_node_tells_its_own_echo_by_its_node_id(two_nodes):
    """The origin session is skipped only on the node that published (session ids are local)."""
    a, b = two_nodes
    async with connect(b.url, token("alice"), resume={}) as shopper:
        conv = (await shopper.ok("open"))["conv"]["id"]
        session = shopper.hello["session"]
        bus = b.node.bus
        bus.publish_message(b.node.id, conv, 1, env.event_frame({"t": "msg", "conv": conv, "seq": 1}), session)
        bus.publish_message(a.node.id, conv, 2, env.event_frame({"t": "msg", "conv": conv, "seq": 2}), session)
        assert (await shopper.next("msg", conv=conv))["seq"] == 2  # not 1: that was its own echo
