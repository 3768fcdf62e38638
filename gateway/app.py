"""Assembly: build a gateway from a Config and run it (the CLI, tests and benchmarks all use this)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from . import __version__
from .auth import Authenticator
from .bots import BotDirectory
from .bus import Bus, LocalBus
from .bus.redis import RedisBus
from .config import Config
from .customers import HttpProvider
from .media import Media, MediaCollector, RecalledAttachments
from .metrics import KefuCollector, Stats
from .node import Node
from .build import IMPLEMENTATIONS
from .routing.config import RoutingConfig
from .routing.cluster import Cluster
from .routing.service import RoutingService
from .store import MemoryBackend, PostgresBackend, SqliteBackend, StoreBackend
from .store.writer import Store
from .http.app import Services, build_app
from .http.limits import KeyRates
from .http.server import serve_http
from .webhooks import WebhookCollector, Webhooks

log = logging.getLogger("kefu")


@dataclass
class Running:
    """A started gateway: its node and where it listens."""

    node: Node
    port: int
    metrics_port: int | None
    registry: CollectorRegistry

    @property
    def url(self) -> str:
        return f"ws://{_host(self.node.config.host)}:{self.port}/ws"

    @property
    def http_url(self) -> str | None:
        """The HTTP side: metrics, health and the REST API."""
        if self.metrics_port is None:
            return None
        return f"http://{_host(self.node.config.metrics_host)}:{self.metrics_port}"

    @property
    def metrics_url(self) -> str | None:
        return None if self.http_url is None else self.http_url + "/metrics"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def make_backend(config: Config) -> StoreBackend:
    if config.shared_store:
        return PostgresBackend(config.store, schema=config.store_schema)
    if config.store == "memory":
        return MemoryBackend()
    data = Path(config.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    return SqliteBackend(config.sqlite_path, synchronous=config.sqlite_synchronous.upper())


def routing_queue(node: Node) -> tuple[int, float]:
    """(conversations waiting for an agent, seconds the longest has waited) on this node."""
    if node.routing is None:
        return 0, 0.0
    waiting = [w for queue in node.routing.engine.queues.values() for w in queue]
    return len(waiting), max((time.time() - w.since for w in waiting), default=0.0)


def make_bus(config: Config) -> Bus:
    if config.shared_bus:
        return RedisBus(config.bus, channel=config.bus_channel)
    return LocalBus()


def make_authenticator(config: Config) -> Authenticator:
    secret, source = config.secret()
    tenant_secrets = {}
    if config.tenant_secrets_file:
        tenant_secrets = json.loads(Path(config.tenant_secrets_file).read_text())
    log.info("token secret: %s; %d per-tenant secrets", source, len(tenant_secrets))
    return Authenticator(secret, tenant_secrets=tenant_secrets, tenants=config.csv("tenants"))


async def serve(
    config: Config,
    *,
    backend: StoreBackend | None = None,
    bus: Bus | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway until its node is stopped (``running.node.stop()``)."""
    stats = Stats()
    store = Store(backend or make_backend(config), stats)
    auth = make_authenticator(config)
    node = Node(config, store, auth, stats=stats, bus=bus if bus is not None else make_bus(config))
    node.media = Media.in_directory(
        store, config.media_dir or Path(config.data_dir) / "media", config.secret()[0], limits=config.media_limits,
        concurrency=config.media_workers, processes=config.media_inspection == "processes", cpus=config.media_cpu_set,
        url_ttl_s=config.media_url_ttl_s,
    )
    workspace = node.workspace
    workspace.wait_s = config.context_wait_s
    workspace.timeout_s = config.context_timeout_s + 1.0  # the provider's own deadline comes first
    if config.context_url:
        workspace.provider = HttpProvider(config.context_url, workspace.book, workspace.directory, timeout_s=config.context_timeout_s, ttl_s=config.context_ttl_s)
    node.webhooks = Webhooks(
        store, allow_private=config.webhooks_allow_private == "yes", timeout_s=config.webhooks_timeout_s, max_pending=config.webhooks_max_pending,
        max_pending_bytes=config.webhooks_max_pending_bytes,
    )
    node.service.watchers.append(node.webhooks)
    recalled_attachments = RecalledAttachments(node.media)
    node.service.watchers.append(recalled_attachments)
    registry = CollectorRegistry()
    registry.register(MediaCollector(node.media.stats))
    registry.register(WebhookCollector(node.webhooks.stats))
    build = {"version": __version__, **IMPLEMENTATIONS}
    registry.register(
        KefuCollector(
            stats,
            build=build,
            outbox_bytes=lambda: sum(c.outbox_bytes for c in list(node.connections)),
            subscriptions=node.hub.subscription_count,
            parked=lambda: len(node.lot),
            node={"node": node.id, "store": type(store.backend).__name__, "bus": type(node.bus).__name__},
            bus=node.bus,
            queue=lambda: routing_queue(node),
            routing=lambda: node.routing,
        )
    )
    routing_config = RoutingConfig.load(config.routing_file) if config.routing_file else RoutingConfig()
    if config.routing == "on":
        bots = BotDirectory(store=store, fits_dir=config.bot_fits_path)
        node.workspace.catalog.on_product = bots.add_product  # the shop's ingested products answer product questions
        routing = RoutingService(node.service, routing_config, bots=bots)
        if config.shared_bus:  # one leader decides for the cluster (gateway.routing.cluster)
            routing.cluster = Cluster(
                config.bus, node.id, prefix=f"{config.bus_channel}:routing", lease_s=config.routing_lease_s,
                reply_timeout_s=config.routing_reply_timeout_s, stats=stats,
            )
        node.use_routing(routing)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(node.run)
        nursery.start_soon(node.media.run)
        await nursery.start(recalled_attachments.run)
        await nursery.start(node.webhooks.run)
        metrics_port = None
        if config.metrics_port >= 0:
            app = build_app(Services(
                node, auth, registry, routing_config, config.api_max_body_bytes,
                KeyRates(config.api_rate_per_second, max(2.0, 2 * config.api_rate_per_second)), ws_port=port, web_ws_url=config.web_ws_url,
                frame_ancestors=" ".join(sorted(config.csv("allowed_origins") or ())) or "*",
            ))
            metrics_port = await nursery.start(serve_http, app, config.metrics_host, config.metrics_port)
        task_status.started(Running(node, port, metrics_port, registry))
        await node.stopped()
        nursery.cancel_scope.cancel()
