"""Parking quiet connections (gateway.transport.connection.ParkingLot), over real sockets: a parked
connection has no reader task but still gets its deliveries, is served again when it speaks, and is
finished properly when the server closes it or the peer goes away; a connection in the middle of a
message is not parked."""

from __future__ import annotations

import msgpack
import trio

from gateway.protocol._frames_py import FrameDecoder
from gateway.protocol.errors import CLOSE_GOING_AWAY

from ..protocol.test_frames import mask_frame
from ..support import connect, token
from ..test_errors_and_limits import close_code_after, raw_socket

TEXT = {"kind": "text", "text": "在吗?"}
PARK = dict(park_after_s=0.05)


async def parked(gw, n: int) -> None:
    """Wait until ``n`` connections are parked."""
    with trio.fail_after(10):
        while len(gw.node.lot) != n:
            await trio.sleep(0.01)


async def test_a_parked_connection_gets_deliveries_and_is_served_again(start_gateway):
    gw = await start_gateway(**PARK)
    async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("bob", "agent"), resume={}) as bob:
        conv = (await alice.ok("open"))["conv"]["id"]
        await bob.ok("join", conv=conv)
        await parked(gw, 2)
        assert all(c.parked for c in gw.node.connections)
        readers = [t for t in gw.node.server.nursery.child_tasks if "_accept_loop" not in t.name]
        assert readers == []  # no task left for them: only the accept loop
        assert gw.registry.get_sample_value("kefu_connections_parked") == 2
        # alice speaks: the lot serves her send without a reader task, she is acked and stays
        # parked; bob is still parked and gets the message
        assert (await alice.request("send", conv=conv, cmid="m1", body=TEXT))["seq"] == 1
        assert (await bob.next("msg"))["body"] == TEXT
        assert len(gw.node.lot) == 2 and all(c.parked for c in gw.node.connections)
        assert gw.registry.get_sample_value("kefu_parked_inputs_total", {"how": "served"}) >= 1
        # bob answers from the lot; both are parked again once quiet
        assert (await bob.request("send", conv=conv, cmid="r1", body=TEXT))["seq"] == 2
        assert (await alice.next("msg"))["seq"] == 2
        await parked(gw, 2)
        assert gw.registry.get_sample_value("kefu_connections_parked") == 2
        history = await alice.ok("history", conv=conv)
        assert [m["seq"] for m in history["messages"]] == [1, 2]


async def test_a_parked_connection_answers_pings_and_is_parked_again(start_gateway):
    gw = await start_gateway(**PARK)
    async with connect(gw.url, token("alice"), resume={}) as alice:
        await parked(gw, 1)
        for _ in range(3):
            assert (await alice.request("ping"))["t"] == "pong"
            await parked(gw, 1)


async def test_the_server_closing_a_parked_connection_sends_its_close_frame(start_gateway):
    gw = await start_gateway(**PARK)
    async with connect(gw.url, token("alice"), resume={}) as alice:
        await parked(gw, 1)
        (conn,) = gw.node.connections
        conn.close(CLOSE_GOING_AWAY, "test")
        assert await alice.closed() == CLOSE_GOING_AWAY
    with trio.fail_after(5):
        while gw.node.connections:
            await trio.sleep(0.01)
    assert len(gw.node.lot) == 0


async def test_a_peer_gone_while_parked_is_forgotten_and_its_presence_ends(start_gateway):
    gw = await start_gateway(**PARK)
    async with connect(gw.url, token("bob", "agent"), resume={}) as bob:
        async with connect(gw.url, token("alice"), resume={}) as alice:
            conv = (await alice.ok("open"))["conv"]["id"]
            await bob.ok("join", conv=conv)
            await parked(gw, 2)
        # alice's client closed its socket while parked: the lot wakes, her reader finishes her
        event = await bob.next("presence")
        assert (event["user"], event["online"]) == ("alice", False)
        with trio.fail_after(5):
            while len(gw.node.connections) != 1:
                await trio.sleep(0.01)


async def test_shutdown_closes_parked_connections_with_1012(start_gateway):
    gw = await start_gateway(**PARK)
    async with connect(gw.url, token("alice"), resume={}) as alice:
        await parked(gw, 1)
        gw.node.stop()
        assert await alice.closed() == 1012
    with trio.fail_after(10):
        await gw.node.stopped()


async def test_a_connection_in_the_middle_of_a_message_is_not_parked(start_gateway):
    gw = await start_gateway(**PARK)
    stream, rest = await raw_socket(gw, token("alice"))
    hello = msgpack.packb({"t": "ping", "id": 7})
    # The first half of a fragmented message, even an empty one, keeps the reader task.
    await stream.send_all(mask_frame(0x2, b"", fin=False))
    await trio.sleep(0.5)  # ten times the parking delay
    assert len(gw.node.lot) == 0
    await stream.send_all(mask_frame(0x0, hello))
    server_frames = FrameDecoder(max_message_size=1 << 20, require_mask=False)
    replies = [msgpack.unpackb(p) for _, p in server_frames.feed(rest)]
    with trio.fail_after(5):
        while not any(r["t"] == "pong" for r in replies):
            replies += [msgpack.unpackb(p) for _, p in server_frames.feed(await stream.receive_some(4096))]
    assert [r["id"] for r in replies if r["t"] == "pong"] == [7]
    await parked(gw, 1)  # between messages again: parked
    await stream.send_all(mask_frame(0x8, (1000).to_bytes(2, "big"), mask=b"abcd"))
    assert await close_code_after(stream, b"") == 1000


def parked_inputs(gw, how: str) -> float:
    return gw.registry.get_sample_value("kefu_parked_inputs_total", {"how": how}) or 0.0


class RawClient:
    """A hand-made client over a raw socket: several requests in one TCP chunk, or a frame cut in two."""

    def __init__(self, stream, rest: bytes) -> None:
        self.stream = stream
        self.frames = FrameDecoder(max_message_size=1 << 20, require_mask=False)
        self.replies = [msgpack.unpackb(p) for _, p in self.frames.feed(rest)]

    @staticmethod
    def frame(req: dict) -> bytes:
        return mask_frame(0x2, msgpack.packb(req), mask=b"abcd")

    async def reply(self, rid: int) -> dict:
        with trio.fail_after(5):
            while True:
                for r in self.replies:
                    if r.get("id") == rid:
                        return r
                self.replies += [msgpack.unpackb(p) for _, p in self.frames.feed(await self.stream.receive_some(65536))]


async def test_a_parked_connections_requests_that_wait_get_a_reader_and_their_answers_in_order(start_gateway):
    gw = await start_gateway(**PARK)
    alice = RawClient(*await raw_socket(gw, token("alice")))
    await alice.stream.send_all(alice.frame({"t": "open", "id": 1}))
    conv = (await alice.reply(1))["conv"]["id"]
    await parked(gw, 1)
    served, readers = parked_inputs(gw, "served"), parked_inputs(gw, "reader")
    # one chunk: a send (served at once), a history read (waits on the store), then a ping
    await alice.stream.send_all(
        alice.frame({"t": "send", "id": 2, "conv": conv, "cmid": "m1", "body": TEXT})
        + alice.frame({"t": "history", "id": 3, "conv": conv})
        + alice.frame({"t": "ping", "id": 4})
    )
    assert (await alice.reply(2))["seq"] == 1
    assert [m["seq"] for m in (await alice.reply(3))["messages"]] == [1]
    assert (await alice.reply(4))["t"] == "pong"
    ids = [r["id"] for r in alice.replies if r.get("id") in (2, 3, 4)]
    assert ids == [2, 3, 4]  # answered in order although the history read waited
    assert parked_inputs(gw, "reader") == readers + 1 and parked_inputs(gw, "served") == served
    await parked(gw, 1)  # quiet again: parked again


async def test_a_parked_connection_with_a_frame_cut_across_reads_gets_a_reader_that_completes_it(start_gateway):
    gw = await start_gateway(**PARK)
    alice = RawClient(*await raw_socket(gw, token("alice")))
    await parked(gw, 1)
    frame = alice.frame({"t": "ping", "id": 9})
    await alice.stream.send_all(frame[:5])
    with trio.fail_after(5):
        while len(gw.node.lot) != 0:  # the half frame took it out of the lot
            await trio.sleep(0.01)
    await alice.stream.send_all(frame[5:])
    assert (await alice.reply(9))["t"] == "pong"
    await parked(gw, 1)


async def test_a_parked_connection_served_in_the_lot_stays_parked_through_many_messages(start_gateway):
    gw = await start_gateway(**PARK)
    async with connect(gw.url, token("alice"), resume={}) as alice:
        conv = (await alice.ok("open"))["conv"]["id"]
        await parked(gw, 1)
        readers = parked_inputs(gw, "reader")
        for i in range(20):
            assert (await alice.request("send", conv=conv, cmid=f"m{i}", body=TEXT))["seq"] == i + 1
            assert len(gw.node.lot) == 1
        assert parked_inputs(gw, "reader") == readers
        assert parked_inputs(gw, "served") >= 20
