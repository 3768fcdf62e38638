"""The node: one gateway process. It wires store, bus, hub, conversation service, request handlers
and WebSocket server, and delivers what the bus carries to its local connections.

    socket -> transport.server -> transport.connection -> protocol (decode) -> transport.ws_handlers
      -> conversations.service -> store (durable) -> bus.publish -> Node.on_* -> hub -> connection.push
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

import trio

from .auth import Authenticator
from .bus import Bus, LocalBus
from .config import Config
from .conversations.service import ConversationService
from .customers import WorkspaceService
from .hub import Hub, SentHere
from .metrics import Stats
from .model import Conversation
from .protocol import admission
from .protocol import envelope as env
from .protocol.errors import CLOSE_SERVICE_RESTART
from .http.health import Check
from .store.base import StoreError
from .store.writer import Store
from .transport.connection import Connection
from .transport.server import WebSocketServer
from .transport.ws_handlers import RequestHandlers

if TYPE_CHECKING:
    from .media.service import Media
    from .routing.service import RoutingService
    from .webhooks import Webhooks

log = logging.getLogger("kefu.node")

HEALTH_INTERVAL_S = 1.0  # how often a shared store and bus are checked for /readyz
HEALTH_TIMEOUT_S = 2.0
REORDER_WAIT_S = 0.02  # how long a gap may wait for the bus before the store is read
FILL_PAGE = 500  # messages read from the store per step of a gap fill
FILL_RETRIES = 8  # store reads a gap fill tries before it gives up (and clients resume)
ACK_WAIT_S = 0.5  # an ack waiting this long for its message's echo from the bus: read the store
ACK_GIVE_UP_S = 5.0  # ... and this long: send it regardless


class Node:
    def __init__(
        self,
        config: Config,
        store: Store,
        authenticator: Authenticator,
        *,
        stats: Stats,
        bus: Bus | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.store = store
        self.bus: Bus = bus if bus is not None else LocalBus()
        self.hub = Hub()
        self.id = config.node_id or secrets.token_hex(6)  # this node on the bus: its own echoes carry it
        limits = config.limits
        self.service = ConversationService(
            store, self.hub, self.bus, stats, node_id=self.id, limits=limits, reply_bytes=config.max_outbox_bytes // 4
        )
        self.preauth = preauth = admission.PreAuthBudget(config.max_pending_bytes, config.max_preauth_bytes)
        stats.preauth_bytes = lambda: preauth.held
        self.handlers = RequestHandlers(config, self.service, self.hub, authenticator, stats, preauth)
        self.server = WebSocketServer(config, stats, self.handlers, preauth)
        store.output = self.server.writer  # a pass of store completions is written at its end
        self.routing: RoutingService | None = None
        self.workspace = WorkspaceService(self.service)
        self.service.watchers.append(self.workspace)
        self.handlers.workspace = self.workspace
        self.handlers.register(self.workspace.requests())
        self.media: Media | None = None  # uploads and downloads (the HTTP API's): set by the app
        self.webhooks: Webhooks | None = None  # events to the tenants' backends: set by the app
        self.draining = False
        #: True when the bus crosses processes (Redis): deliveries are ordered and gap-filled here
        self.ordered = bool(getattr(self.bus, "crosses_processes", False))
        self._held: dict[str, dict[int, tuple[bytes, Connection | None, SentHere | None]]] = {}  # conv_id -> seq -> frame, while filling
        self._tasks: trio.Nursery | None = None
        self._resync_wanted: set[str] = set()  # conversations whose running fill must read to the end
        self._stop = trio.Event()
        self._done = trio.Event()

    def use_routing(self, routing: RoutingService) -> None:
        """Route conversations (bot first, then agents): routing hears the service's lifecycle and
        connections coming and going, and serves its own request types."""
        self.routing = routing
        self.service.hooks = routing
        self.handlers.hooks = routing
        self.handlers.register(routing.requests())
        routing.workspace = self.workspace

    @property
    def connections(self) -> set[Connection]:
        return self.server.connections

    @property
    def lot(self):
        return self.server.lot

    @property
    def ready(self) -> bool:
        return self.server.ready

    @property
    def port(self) -> int:
        return self.server.port

    # ---- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; then drain gracefully. ``task_status.started`` gets the bound port."""
        async with trio.open_nursery() as system:
            self._tasks = system
            await system.start(self.store.run)
            await system.start(self.bus.run, self)
            await system.start(self.workspace.run)
            if self.routing is not None:  # after the store (it restores from it), before accepting
                await system.start(self.routing.run)
            port = await system.start(self.server.run)
            if hasattr(self.store.backend, "ping") or self.ordered:
                await system.start(self._watch_health)
            if self.ordered:
                system.start_soon(self._watch_acks)
            self.server.ready = True
            task_status.started(port)
            await self._stop.wait()
            await self._drain()
            system.cancel_scope.cancel()
        self._done.set()

    async def _watch_health(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``server.checks`` (what /readyz lists) current: the shared store answers a ping,
        the bus is connected."""
        started = False
        while True:
            checks = []
            if hasattr(self.store.backend, "ping"):
                try:
                    with trio.fail_after(HEALTH_TIMEOUT_S):
                        await self.store.ping()
                    checks.append(Check("store", True, type(self.store.backend).__name__))
                except (StoreError, trio.TooSlowError) as exc:
                    checks.append(Check("store", False, str(exc).splitlines()[0] if str(exc) else "no answer"))
            describe = getattr(self.bus, "describe", None)
            if describe is not None:
                checks.append(Check("bus", bool(getattr(self.bus, "healthy", True)), describe()))
            for check in checks:
                healthy = getattr(self.stats, f"{check.name}_healthy")
                if healthy and not check.ok:
                    log.error("%s unhealthy: %s", check.name, check.detail)
                elif not healthy and check.ok:
                    log.info("%s healthy again: %s", check.name, check.detail)
                setattr(self.stats, f"{check.name}_healthy", check.ok)
            self.server.checks = checks
            if not started:
                started = True
                task_status.started()
            await trio.sleep(HEALTH_INTERVAL_S)

    def stop(self) -> None:
        """Begin a graceful shutdown (see ``_drain``); ``run`` returns when it is done."""
        self._stop.set()

    async def stopped(self) -> None:
        await self._done.wait()

    async def _drain(self) -> None:
        """Stop accepting, make every write durable, tell clients to reconnect elsewhere."""
        log.info("shutting down: %d connections", len(self.connections))
        self.draining = True
        self.service.accepting = False
        self.server.stop_accepting()
        with trio.move_on_after(self.config.shutdown_timeout_s / 2) as scope:
            await self.store.drained()
        if scope.cancelled_caught:
            log.warning("store did not drain in time; unacked sends will be retried by clients")
        await self.server.close_connections(CLOSE_SERVICE_RESTART, "server restart", self.config.shutdown_timeout_s / 2)
        if self.webhooks is not None:  # while the store still runs: what waits is sent after the restart
            await self.webhooks.save_pending()

    # ---- bus handler: what every node does with committed events ------------------------------

    def on_message(self, node: str, conv_id: str, seq: int, frame: bytes, origin: str | None) -> None:
        started = time.perf_counter()
        sender = None
        if origin is not None and node == self.id:  # our own echo: skip the sender's own session
            sender = self.server.sessions.get(origin)
        if self.ordered:
            self._deliver_in_order(conv_id, seq, frame, sender)
        else:
            self.stats.messages_delivered += self.hub.deliver(conv_id, seq, frame, sender)
        self.stats.fanout_latency.observe(time.perf_counter() - started)

    # ---- across processes: in seq order, once, with gaps filled from the store -----------------

    def _deliver_in_order(self, conv_id: str, seq: int, frame: bytes, sender: Connection | None) -> None:
        """Messages of one conversation committed by different processes reach this node in any
        order, a resent publish may arrive twice, and a bus outage may lose some. Deliver each seq
        once and in order: a seq delivered already is dropped; one past a gap is held while the
        missing ones are read from the store (``_fill``). A message sent from here is acked to its
        sender when it is delivered here, so the sender's acks and deliveries keep one order."""
        sent = self.hub.origins.pop((conv_id, seq), None) if self.hub.origins else None
        if sent is not None and sender is None:
            sender = self.server.sessions.get(sent.origin)
        state = self.hub.get(conv_id)
        if state is None or seq <= state.last_seq:
            if state is not None:
                self.stats.bus_stale += 1
            if sent is not None:
                sent.ack()
            return
        held = self._held.get(conv_id)
        if held is None and seq == state.last_seq + 1:
            self.stats.messages_delivered += self.hub.deliver(conv_id, seq, frame, sender)
            if sent is not None:
                sent.ack()
            return
        if held is None:
            held = self._held[conv_id] = {}
            self._spawn(self._fill, conv_id)
        held[seq] = (frame, sender, sent)

    def _deliver_held(self, conv_id: str, seq: int, held: dict[int, tuple[bytes, Connection | None, SentHere | None]]) -> None:
        frame, sender, sent = held.pop(seq)
        self.stats.messages_delivered += self.hub.deliver(conv_id, seq, frame, sender)
        if sent is not None:
            sent.ack()

    async def _watch_acks(self) -> None:
        """Acks wait for their message's echo from the bus. An echo the bus lost would hold one
        until the next message of its conversation shows the gap: after ACK_WAIT_S the store is
        read instead (a fill), and after ACK_GIVE_UP_S the ack is sent regardless."""
        origins = self.hub.origins
        while True:
            await trio.sleep(ACK_WAIT_S / 2)
            now = time.monotonic()
            late = []
            for key, sent in origins.items():  # oldest first (insertion order)
                if now - sent.since < ACK_WAIT_S:
                    break
                late.append((key, sent))
            for (conv_id, seq), sent in late:
                if now - sent.since >= ACK_GIVE_UP_S or self.hub.get(conv_id) is None:
                    if origins.pop((conv_id, seq), None) is not None:
                        sent.ack()
                elif conv_id not in self._held:
                    self._held[conv_id] = {}
                    self._spawn(self._fill, conv_id, True)

    def on_resync(self) -> None:
        """The bus lost traffic (its subscription was re-established): every conversation in use
        here reads what it may have missed from the store."""
        self.stats.bus_resyncs += 1
        for conv_id in list(self.hub.convs):
            if conv_id in self._held:  # a fill is running: it reads on to the end too
                self._resync_wanted.add(conv_id)
            else:
                self._held[conv_id] = {}
                self._spawn(self._fill, conv_id, True)

    def _spawn(self, fn, *args) -> None:
        if self._tasks is not None:
            self._tasks.start_soon(fn, *args)

    async def _fill(self, conv_id: str, resync: bool = False) -> None:
        """Deliver, in order, the held messages of ``conv_id`` and the stored ones before or
        between them (``resync``: every stored one past the last delivered)."""
        held = self._held[conv_id]
        failures = 0
        waited = 0.0
        try:
            while True:
                state = self.hub.get(conv_id)
                if state is None:
                    return
                # Most gaps are messages of other processes still on the bus, overtaken by a later
                # one through another publisher: give them a moment before reading the store.
                if held and min(held) > state.last_seq + 1 and waited < REORDER_WAIT_S:
                    await trio.sleep(0.002)
                    waited += 0.002
                    continue
                while state.last_seq + 1 in held:  # contiguous: straight out
                    self._deliver_held(conv_id, state.last_seq + 1, held)
                for seq in [s for s in held if s <= state.last_seq]:
                    sent = held.pop(seq)[2]
                    if sent is not None:
                        sent.ack()
                if not held and not resync:  # the bus closed the gap by itself
                    if conv_id not in self._resync_wanted:
                        return
                    self._resync_wanted.discard(conv_id)
                    resync = True
                try:  # oldest first, from the last delivered (with ``before`` a page is the newest of its range)
                    page = await self.store.read_messages(conv_id, after=state.last_seq, limit=FILL_PAGE)
                except Exception as exc:  # the store is away too: retry a while, then let clients resume
                    failures += 1
                    if failures > FILL_RETRIES:
                        log.error("gap in %s not filled (%s): delivering what arrived; clients resume from seq", conv_id, exc)
                        for seq in sorted(held):
                            self._deliver_held(conv_id, seq, held)
                        return
                    await trio.sleep(min(0.05 * 2**failures, 1.0))
                    continue
                state = self.hub.get(conv_id)
                if state is None:
                    return
                progress = state.last_seq
                for m in page.messages:
                    seq = state.last_seq + 1
                    if m.seq != seq:
                        break
                    if seq in held:  # arrived meanwhile: its own frame, with its sender skipped
                        self._deliver_held(conv_id, seq, held)
                        continue
                    self.stats.bus_gap_filled += 1
                    # sent from here and its echo still on the way: skip its sender all the same
                    sent = self.hub.origins.pop((conv_id, seq), None)
                    sender = self.server.sessions.get(sent.origin) if sent is not None else None
                    self.stats.messages_delivered += self.hub.deliver(conv_id, seq, env.message_frame(m), sender)
                    if sent is not None:
                        sent.ack()
                if not held and not page.more:
                    return
                if held and state.last_seq == progress and min(held) > state.last_seq + 1:
                    # the store does not show the hole's messages (yet): look again, a few times
                    failures += 1
                    if failures > FILL_RETRIES:
                        log.error("gap before seq %d in %s not in the store: delivering what arrived", min(held), conv_id)
                        for seq in sorted(held):
                            self._deliver_held(conv_id, seq, held)
                        return
                    await trio.sleep(0.01 * failures)
        finally:
            del self._held[conv_id]
            self._resync_wanted.discard(conv_id)

    def on_event(self, node: str, conv_id: str, frame: bytes, skip_user: str | None) -> None:
        self.stats.events_delivered += self.hub.broadcast(conv_id, frame, skip_user)

    def on_conversation(self, node: str, conv: Conversation) -> None:
        state = self.hub.get(conv.id)
        if state is not None:
            state.conv = conv

    def on_membership(self, node: str, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        state = self.hub.get(conv_id)
        if state is None:
            conns = [c for c in self.hub.connections_of(tenant, user) if c.live]
            if joined and conns and self.server.nursery is not None:
                self.server.nursery.start_soon(self._subscribe_later, conv_id, conns)
            return
        if joined:
            state.members[user] = role
            for conn in self.hub.connections_of(tenant, user):
                if conn.live:
                    self.hub.subscribe(conn, state)
        else:
            state.members.pop(user, None)
            for conn in list(self.hub.connections_of(tenant, user)):
                self.hub.unsubscribe(conn, conv_id)

    def on_user(self, node: str, tenant: str, user: str, frame: bytes) -> None:
        for conn in self.hub.connections_of(tenant, user):
            conn.push(frame)

    async def _subscribe_later(self, conv_id: str, conns: list[Connection]) -> None:
        state = await self.service.load(conv_id)
        if state is None:
            return
        for conn in conns:
            if not conn.closed and conn.identity.tenant == state.conv.tenant and conn.identity.user in state.members:
                self.hub.subscribe(conn, state)
