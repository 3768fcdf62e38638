"""The Redis bus when traffic is lost: a node that missed messages (a lost subscription, Redis
restarted) fills the gap from the store, in order and once; a lost publisher connection sends
again what Redis did not answer; a full buffer is a BusError, never a silent drop."""

from __future__ import annotations

import secrets

import hiredis
import pytest
import trio

from gateway.app import serve
from gateway.bus import BusError
from gateway.bus.redis import RedisAddress, RedisBus, command, read_reply
from gateway.model import AppendMessage
from gateway.store import MemoryBackend

from ..conftest import make_config
from ..services import private_redis  # noqa: F401  (the fixture)
from ..support import connect, token
from .test_bus_contract import REDIS_URL, TEXT, Recorder


async def redis_call(url: str, *parts: bytes):
    address = RedisAddress(url)
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(command(*parts))
        return await read_reply(stream, hiredis.Reader())


async def kill_client(url: str, name: str) -> None:
    """End one named connection of ours (as a network blip would), nobody else's."""
    listing = (await redis_call(url, b"CLIENT", b"LIST")).decode()
    ids = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)["id"] for line in listing.splitlines() if f" name={name} " in line]
    assert ids, f"no redis client named {name}"
    for client_id in ids:
        await redis_call(url, b"CLIENT", b"KILL", b"ID", client_id.encode())


@pytest.fixture
async def pair(nursery, tmp_path):
    """Two gateways over one (memory) store and one Redis channel; the store is returned too, so a
    test can commit messages that no bus carries (exactly what a node that missed them sees)."""
    backend, channel = MemoryBackend(), f"kefu:test:{secrets.token_hex(6)}"
    nodes = []
    for _ in range(2):
        bus = RedisBus(REDIS_URL, channel=channel)
        nodes.append(await nursery.start(lambda task_status, bus=bus: serve(make_config(tmp_path), backend=backend, bus=bus, task_status=task_status)))
    yield (*nodes, backend)
    for running in nodes:
        running.node.stop()


def commit_unpublished(backend: MemoryBackend, conv: str, *cmids: str) -> None:
    for result in backend.apply_batch([AppendMessage(conv, cmid, "alice", "shopper", b"\x81\xa4kind\xa4text") for cmid in cmids]):
        assert not isinstance(result, Exception), result


async def test_a_message_past_a_gap_brings_the_missing_ones_first(pair):
    a, b, backend = pair
    with trio.fail_after(15):
        async with connect(a.url, token("alice"), resume={}) as shopper, connect(b.url, token("bob", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            await shopper.ok("send", conv=conv, cmid="m1", body=TEXT)
            assert (await agent.next("msg", conv=conv))["seq"] == 1
            commit_unpublished(backend, conv, "lost2", "lost3", "lost4")  # durable, never on the bus
            await shopper.ok("send", conv=conv, cmid="m5", body=TEXT)
            got = [await agent.next("msg", conv=conv) for _ in range(4)]
            assert [(m["seq"], m["cmid"]) for m in got] == [(2, "lost2"), (3, "lost3"), (4, "lost4"), (5, "m5")]
            assert b.node.stats.bus_gap_filled == 3
            assert [f for f in await agent.quiet(0.2) if f["t"] == "msg"] == []  # each once


async def test_after_its_subscription_is_lost_a_node_reads_what_it_missed(pair):
    a, b, backend = pair
    with trio.fail_after(15):
        async with connect(a.url, token("alice"), resume={}) as shopper, connect(b.url, token("bob", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            await shopper.ok("send", conv=conv, cmid="m1", body=TEXT)
            assert (await agent.next("msg", conv=conv))["seq"] == 1
            commit_unpublished(backend, conv, "lost2", "lost3")
            await kill_client(REDIS_URL, b.node.bus.name + "-sub")
            got = [await agent.next("msg", conv=conv) for _ in range(2)]  # no new message needed
            assert [(m["seq"], m["cmid"]) for m in got] == [(2, "lost2"), (3, "lost3")]
            assert b.node.stats.bus_resyncs == 1
            await shopper.ok("send", conv=conv, cmid="m4", body=TEXT)  # and live again
            assert (await agent.next("msg", conv=conv))["seq"] == 4


async def test_a_lost_publisher_connection_sends_again_what_redis_did_not_answer(nursery):
    channel = f"kefu:test:{secrets.token_hex(6)}"
    sender, listener = RedisBus(REDIS_URL, channel=channel), RedisBus(REDIS_URL, channel=channel)
    heard = Recorder()
    await nursery.start(sender.run, Recorder())
    await nursery.start(listener.run, heard)
    await kill_client(REDIS_URL, sender.name + "-pub")
    for seq in range(1, 51):
        sender.publish_message("n", "c1", seq, b"f", None)
    events = await heard.wait_for(50)
    seqs = [e[3] for e in events]
    assert sorted(set(seqs)) == list(range(1, 51))  # at least once, each; the node drops repeats by seq
    assert sender.reconnects >= 1


async def test_a_redis_restart_mid_traffic_loses_nothing_and_repeats_nothing(nursery, tmp_path, private_redis):
    """Redis is killed (SIGKILL) and started again while the shopper on one node keeps sending:
    every acked message reaches the agent on the other node once, in order."""
    backend, channel = MemoryBackend(), "kefu:restart"
    a = await nursery.start(lambda task_status: serve(make_config(tmp_path), backend=backend, bus=RedisBus(private_redis.url, channel=channel), task_status=task_status))
    b = await nursery.start(lambda task_status: serve(make_config(tmp_path), backend=backend, bus=RedisBus(private_redis.url, channel=channel), task_status=task_status))
    with trio.fail_after(30):
        async with connect(a.url, token("alice"), resume={}) as shopper, connect(b.url, token("bob", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            acked = []
            for i in range(60):
                if i == 20:
                    private_redis.kill()
                if i == 40:
                    private_redis.start()
                acked.append((await shopper.ok("send", conv=conv, cmid=f"m{i}", body=TEXT))["seq"])
            assert acked == list(range(1, 61))  # the store took every send while Redis was away
            got = [await agent.next("msg", conv=conv) for _ in range(60)]
            assert [m["seq"] for m in got] == list(range(1, 61))
            assert [m["cmid"] for m in got] == [f"m{i}" for i in range(60)]
            assert [f for f in await agent.quiet(0.3) if f["t"] == "msg"] == []
    assert b.node.stats.bus_resyncs >= 1  # its subscription came back, and it read what it missed
    for running in (a, b):
        running.node.stop()


async def test_while_redis_is_away_a_full_buffer_refuses_publishes(nursery, private_redis):
    bus = RedisBus(private_redis.url, channel="kefu:full", max_buffer=4096)
    await nursery.start(bus.run, Recorder())
    private_redis.kill()
    with trio.fail_after(10):
        with pytest.raises(BusError, match="buffer full"):
            while True:
                bus.publish_message("n", "c1", 1, b"x" * 100, None)
                await trio.sleep(0)
    assert bus.buffered_bytes >= 4096


async def test_a_gateway_whose_redis_does_not_answer_at_start_says_so(nursery, monkeypatch):
    monkeypatch.setattr("gateway.bus.redis.START_TIMEOUT_S", 0.3)
    bus = RedisBus("redis://127.0.0.1:1", channel="kefu:nowhere")
    with trio.fail_after(10):
        with pytest.raises(BusError, match="redis 127.0.0.1:1 did not answer within 0.3 s"):
            await nursery.start(bus.run, Recorder())


async def test_a_senders_acks_and_the_others_messages_arrive_in_one_seq_order(pair):
    """docs/protocol.md: on a live connection a conversation's msg frames and the acks of your own
    sends arrive together in seq order without gaps. Across processes the others' messages come
    through Redis while one's own ack is local: the ack waits for every earlier seq."""
    a, b, _ = pair
    with trio.fail_after(20):
        async with connect(a.url, token("alice"), resume={}) as shopper, connect(b.url, token("bob", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)

            async def burst(client, who: str) -> None:
                for i in range(40):
                    await client.send("send", conv=conv, cmid=f"{who}{i}", body=TEXT)

            async with trio.open_nursery() as nursery:  # both sides at once: their seqs interleave
                nursery.start_soon(burst, shopper, "s")
                nursery.start_soon(burst, agent, "a")
            for client in (shopper, agent):
                seqs = []
                while len(seqs) < 80:
                    frame = await client.recv()
                    if frame["t"] in ("ack", "msg") and frame.get("conv") == conv:
                        seqs.append(frame["seq"])
                assert seqs == list(range(1, 81))


async def test_an_ack_whose_echo_the_bus_lost_is_sent_after_a_read_of_the_store(pair):
    a, b, _ = pair
    with trio.fail_after(20):
        async with connect(a.url, token("alice"), resume={}) as shopper, connect(b.url, token("bob", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            deliver, lost = a.node.on_message, []

            def losing_the_first_echo(node, conv_id, seq, frame, origin):
                if not lost:
                    lost.append(seq)  # as if Redis dropped it on the way back to node a
                    return
                deliver(node, conv_id, seq, frame, origin)

            a.node.on_message = losing_the_first_echo
            ack = await shopper.ok("send", conv=conv, cmid="m1", body=TEXT)  # acked all the same
            assert (ack["seq"], lost) == (1, [1])
            assert (await agent.next("msg", conv=conv))["seq"] == 1  # node b heard it
            assert a.node.hub.origins == {}
