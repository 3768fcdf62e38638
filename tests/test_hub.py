"""The hub's fan-out and resume merge, without a server: connections over socketpairs."""

from __future__ import annotations

import socket

from gateway.hub import Hub
from gateway.metrics import Stats
from gateway.model import Conversation, Participant
from gateway.transport.connection import Connection, Writer


_peers: list[socket.socket] = []  # the other ends, kept open for the test run


def conn(writer) -> Connection:
    a, b = socket.socketpair()
    _peers.append(b)
    return Connection(a, "c", "peer", writer)


def setup():
    hub = Hub()
    state = hub.add(Conversation("x", "t", "alice", "app", "open", 1), [Participant("x", "alice", "shopper", 1)])
    return hub, state, Writer(Stats(), 1 << 20)


def frames(c: Connection) -> list[bytes]:
    out, c.outbox = list(c.outbox), []
    c.outbox_bytes = 0
    return out


def test_fan_out_queues_the_same_bytes_to_every_subscriber_but_the_origin():
    hub, state, writer = setup()
    a, b, origin = conn(writer), conn(writer), conn(writer)
    for c in (a, b, origin):
        hub.subscribe(c, state)
    frame = b"frame-1"
    assert hub.deliver("x", 1, frame, origin) == 2
    assert frames(a)[0] is frame and frames(b)[0] is frame  # encoded once: the very same object
    assert frames(origin) == []


def test_catch_up_merges_stored_and_held_frames_once_in_order():
    hub, state, writer = setup()
    c = conn(writer)
    hub.begin_catchup(c, state, after=3)
    hub.deliver("x", 5, b"5", None)  # fanned out while the store is being read: held
    hub.deliver("x", 6, b"6", None)
    assert frames(c) == []
    for seq in (4, 5):  # what the store read returned, pushed by the node
        c.push(str(seq).encode())
        c.guards["x"] = seq
    assert hub.finish_catchup(c, state) == 1  # 6 only: 5 came from the store
    hub.deliver("x", 7, b"7", None)
    assert frames(c) == [b"4", b"5", b"6", b"7"]


def test_the_guard_drops_live_frames_the_store_read_already_had():
    hub, state, writer = setup()
    c = conn(writer)
    hub.begin_catchup(c, state, after=0)
    for seq in (1, 2, 3):  # committed before the read, fanned out after the catch-up ended
        c.push(str(seq).encode())
        c.guards["x"] = seq
    hub.finish_catchup(c, state)
    for seq in (2, 3, 4, 5):
        hub.deliver("x", seq, str(seq).encode(), None)
    assert frames(c) == [b"1", b"2", b"3", b"4", b"5"]
    assert "x" not in c.guards  # passed: the hot path is back to no checks


def test_states_nobody_uses_are_released():
    hub, state, writer = setup()
    c = conn(writer)
    hub.subscribe(c, state)
    state.inflight = 1
    hub.unsubscribe(c, "x")
    assert hub.get("x") is state  # a write is still in flight
    state.inflight = 0
    hub.release(state)
    assert hub.get("x") is None
