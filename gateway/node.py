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
from .hub import Hub
from .metrics import Stats
from .model import Conversation
from .protocol import admission
from .protocol.errors import CLOSE_SERVICE_RESTART
from .store.writer import Store
from .transport.connection import Connection
from .transport.server import WebSocketServer
from .transport.ws_handlers import RequestHandlers

if TYPE_CHECKING:
    from .media.service import Media
    from .routing.service import RoutingService

log = logging.getLogger("kefu.node")


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
        self.id = secrets.token_hex(6)  # this node on the bus: its own echoes carry it
        limits = config.limits
        self.service = ConversationService(
            store, self.hub, self.bus, stats, node_id=self.id, limits=limits, reply_bytes=config.max_outbox_bytes // 4
        )
        self.preauth = preauth = admission.PreAuthBudget(config.max_pending_bytes, config.max_preauth_bytes)
        stats.preauth_bytes = lambda: preauth.held
        self.handlers = RequestHandlers(config, self.service, self.hub, authenticator, stats, preauth)
        self.server = WebSocketServer(config, stats, self.handlers, preauth)
        self.routing: RoutingService | None = None
        self.workspace = WorkspaceService(self.service)
        self.service.watchers.append(self.workspace)
        self.handlers.workspace = self.workspace
        self.handlers.register(self.workspace.requests())
        self.media: Media | None = None  # uploads and downloads (the HTTP API's): set by the app
        self.draining = False
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
            await system.start(self.store.run)
            await system.start(self.bus.run, self)
            await system.start(self.workspace.run)
            if self.routing is not None:  # after the store (it restores from it), before accepting
                await system.start(self.routing.run)
            port = await system.start(self.server.run)
            self.server.ready = True
            task_status.started(port)
            await self._stop.wait()
            await self._drain()
            system.cancel_scope.cancel()
        self._done.set()

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

    # ---- bus handler: what every node does with committed events ------------------------------

    def on_message(self, node: str, conv_id: str, seq: int, frame: bytes, origin: str | None) -> None:
        started = time.perf_counter()
        sender = None
        if origin is not None and node == self.id:  # our own echo: skip the sender's own session
            sender = self.server.sessions.get(origin)
        self.stats.messages_delivered += self.hub.deliver(conv_id, seq, frame, sender)
        self.stats.fanout_latency.observe(time.perf_counter() - started)

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
