"""A connection's last moments: ``finish`` after its reader has stopped."""

from __future__ import annotations

import socket

import trio

from gateway.metrics import Stats
from gateway.protocol.errors import CLOSE_SLOW_CONSUMER
from gateway.transport.connection import Connection, Writer, finish


async def test_a_close_from_another_task_while_finishing_does_not_escape():
    # The reader has ended (say the peer reset) and finish() waits for the peer's EOF; meanwhile
    # another task closes the connection (a slow consumer, the heartbeat), which wakes every wait
    # on the socket with ClosedResourceError. It must end the wait, not the gateway.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = Connection(ours, "c1", "peer", Writer(Stats(), 1 << 20))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish, conn)
            await trio.sleep(0.05)  # finish() is waiting for the peer's EOF
            conn.close(CLOSE_SLOW_CONSUMER, "slow consumer")
    assert conn.closed and ours.fileno() == -1
    theirs.close()
