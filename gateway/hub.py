"""The hub: which local connections hear which conversation, and fan-out to them.

It indexes and plans; it never touches a socket. Fan-out hands the *same* frame bytes to every
recipient's outbox (encode once). A connection that resumes a conversation is first held in a
catch-up buffer, then joins the live set with a guard that drops any live frame it already got from
the store, so a resume yields every missed message once, in order (see ``Hub.finish_catchup``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import trio

from .model import Conversation, Participant

if TYPE_CHECKING:
    from .transport.connection import Connection


class ConvState:
    """What the node keeps in memory about a conversation while it is in use."""

    __slots__ = ("conv", "members", "subs", "catchup", "inflight", "last_seq", "receipts")

    def __init__(self, conv: Conversation, participants: Iterable[Participant]) -> None:
        self.conv = conv
        self.members: dict[str, str] = {p.user: p.role for p in participants}  # user -> role
        self.subs: set[Connection] = set()  # live local connections of members
        self.catchup: dict[Connection, list[tuple[int, bytes]]] | None = None  # resuming connections: held live frames
        self.inflight = 0  # write ops submitted for this conversation and not completed
        self.last_seq = conv.last_seq  # highest seq known here (raised by every delivery)
        self.receipts: dict[tuple[str, str], int] | None = None  # (user, kind) -> highest seq announced


@dataclass(slots=True)
class SentHere:
    """A message sent from a session of this node (across processes), awaiting its in-order delivery."""

    origin: str  # the sender's session id: the delivery skips it
    ack: Callable[[], None]  # sends the sender its ack (called once, after every earlier seq)
    since: float  # time.monotonic() when it became durable


class Hub:
    def __init__(self) -> None:
        self.convs: dict[str, ConvState] = {}
        self.users: dict[tuple[str, str], set[Connection]] = {}  # (tenant, user) -> local connections
        self._loading: dict[str, trio.Event] = {}
        #: Across processes only: messages sent from a session of this node, until delivered here
        #: in order — a message read from the store to fill a gap must skip its sender too, and
        #: the sender's ack waits for every earlier seq to be delivered to it (docs/protocol.md).
        self.origins: dict[tuple[str, int], SentHere] = {}

    # ---- conversation states ------------------------------------------------------------------

    def get(self, conv_id: str) -> ConvState | None:
        return self.convs.get(conv_id)

    async def load(self, conv_id: str, fetch) -> ConvState | None:
        """The state of ``conv_id``, fetched with ``await fetch(conv_id)`` -> (Conversation,
        participants) or None when missing; concurrent loads of one conversation share one fetch."""
        while True:
            state = self.convs.get(conv_id)
            if state is not None:
                return state
            loading = self._loading.get(conv_id)
            if loading is None:
                break
            await loading.wait()
        done = self._loading[conv_id] = trio.Event()
        try:
            found = await fetch(conv_id)
            if found is None:
                return None
            state = self.convs[conv_id] = ConvState(*found)
            return state
        finally:
            del self._loading[conv_id]
            done.set()

    def add(self, conv: Conversation, participants: Iterable[Participant]) -> ConvState:
        state = self.convs.get(conv.id)
        if state is None:
            state = self.convs[conv.id] = ConvState(conv, participants)
        return state

    def release(self, state: ConvState) -> None:
        """Forget a state nobody listens to and nothing waits on (it is reloaded when needed)."""
        if not state.subs and not state.catchup and state.inflight == 0:
            self.convs.pop(state.conv.id, None)

    # ---- users and subscriptions --------------------------------------------------------------

    def add_connection(self, conn: Connection) -> int:
        """Index a newly authenticated connection; returns how many the user now has here."""
        conns = self.users.setdefault(conn.user_key, set())
        conns.add(conn)
        return len(conns)

    def remove_connection(self, conn: Connection) -> int:
        """Drop a closing connection from every index; returns how many the user still has here."""
        for conv_id in list(conn.convs):
            self.unsubscribe(conn, conv_id)
        conns = self.users.get(conn.user_key)
        if conns is None:
            return 0
        conns.discard(conn)
        if not conns:
            del self.users[conn.user_key]
        return len(conns)

    def connections_of(self, tenant: str, user: str) -> set[Connection]:
        return self.users.get((tenant, user), set())

    def subscribe(self, conn: Connection, state: ConvState) -> None:
        """Live delivery of ``state``'s conversation to ``conn`` from now on."""
        state.subs.add(conn)
        if state.conv.id not in conn.convs:
            conn.convs.append(state.conv.id)

    def unsubscribe(self, conn: Connection, conv_id: str) -> None:
        if conv_id in conn.convs:
            conn.convs.remove(conv_id)
        conn.guards.pop(conv_id, None)
        state = self.convs.get(conv_id)
        if state is not None:
            state.subs.discard(conn)
            if state.catchup:
                state.catchup.pop(conn, None)
            self.release(state)

    def begin_catchup(self, conn: Connection, state: ConvState, after: int) -> None:
        """Hold live frames for ``conn`` while the messages after seq ``after`` (the last one the
        client holds) are read from the store."""
        state.subs.discard(conn)
        if state.catchup is None:
            state.catchup = {}
        state.catchup[conn] = []
        if state.conv.id not in conn.convs:
            conn.convs.append(state.conv.id)
        conn.guards[state.conv.id] = after

    def finish_catchup(self, conn: Connection, state: ConvState) -> int:
        """End a catch-up whose stored messages were pushed up to ``conn.guards[conv]``: push the
        frames fanned out meanwhile that are newer, in order, and go live, the guard dropping any
        live frame already sent. Returns how many held frames were pushed.

        Complete because fan-out runs in seq order per conversation: a message fanned out before
        the catch-up began was committed before the store reads, so they returned it; one fanned
        out during catch-up is held here; later ones reach the live set. The guard covers a
        message the reads returned whose fan-out comes after the connection went live."""
        held = state.catchup.pop(conn, []) if state.catchup else []
        if conn.closed:
            return 0
        conv_id = state.conv.id
        last = conn.guards.get(conv_id, 0)
        sent = 0
        for seq, frame in held:  # fan-out order is seq order
            if seq > last:
                conn.push(frame)
                last = seq
                sent += 1
        if last:
            conn.guards[conv_id] = last
        state.subs.add(conn)
        return sent

    # ---- fan-out ------------------------------------------------------------------------------

    def deliver(self, conv_id: str, seq: int, frame: bytes, origin: Connection | None) -> int:
        """Queue a message frame to every live local subscriber but its origin connection;
        returns the number of connections it was queued to."""
        state = self.convs.get(conv_id)
        if state is None:
            return 0
        if seq > state.last_seq:
            state.last_seq = seq
        if state.catchup:
            for held in state.catchup.values():
                held.append((seq, frame))
        n = 0
        for conn in state.subs:
            if conn is origin:
                continue
            if conn.guards:
                guard = conn.guards.get(conv_id)
                if guard is not None:
                    if seq <= guard:
                        continue
                    del conn.guards[conv_id]
            conn.push(frame)
            n += 1
        return n

    def broadcast(self, conv_id: str, frame: bytes, skip_user: str | None = None) -> int:
        """Queue an event frame (receipt, typing, membership) to live subscribers; not sequenced."""
        state = self.convs.get(conv_id)
        if state is None:
            return 0
        n = 0
        for conn in state.subs:
            if conn.identity.user != skip_user:
                conn.push(frame)
                n += 1
        return n

    def subscription_count(self) -> int:
        return sum(len(s.subs) + len(s.catchup or ()) for s in self.convs.values())
