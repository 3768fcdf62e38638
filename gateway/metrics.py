"""Counters on the hot path, exported to Prometheus at scrape time.

A prometheus-client ``inc()`` costs 1–2 µs — more than the rest of a message's bookkeeping — so the
data path bumps plain ints on ``Stats`` and ``KefuCollector`` turns them into metric families when
Prometheus scrapes. Names follow the Prometheus naming guide: ``kefu_`` prefix, base units,
``_total`` on counters, low-cardinality labels only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Any, Callable, Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# The routing writes that carry a fence (gateway.routing.service); "claim": a new term's first
STALE_WRITE_OPS = ("claim", "set_status", "add_participant", "remove_participant", "append_message")


class Histogram:
    """A fixed-bucket histogram that costs one bisect and three adds per observation."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            buckets.append((repr(float(bound)), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


class Stats:
    """Everything the gateway counts. Plain attributes: bump them directly on the hot path."""

    def __init__(self) -> None:
        self.connections: Counter[str] = Counter()  # open, authenticated connections by role
        self.connections_opened = 0
        self.handshakes_failed: Counter[str] = Counter()  # by reason
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_accepted = 0  # durable and acked, first time
        self.messages_duplicate = 0  # resent cmid answered with the original ack
        self.messages_delivered = 0  # message frames queued to a connection (one per recipient connection)
        self.events_delivered = 0  # receipts, typing, presence, membership frames queued
        self.ack_latency = Histogram(LATENCY_BUCKETS)  # request received -> durable ack queued
        self.fanout_latency = Histogram(LATENCY_BUCKETS)  # durable -> queued to every local recipient
        self.commit_latency = Histogram(LATENCY_BUCKETS)
        self.commit_batch = Histogram(BATCH_BUCKETS)
        self.store_pending = 0  # write ops submitted, not yet completed
        self.slow_consumer_disconnects = 0
        self.parked_inputs: Counter[str] = Counter()  # input for parked connections, by how: served (in the lot), reader
        self.errors: Counter[str] = Counter()  # error frames by code
        self.auth_failures: Counter[str] = Counter()  # by code
        self.closes: Counter[int] = Counter()  # server-initiated closes by close code
        self.rate_limited = 0
        self.http_refusals: Counter[tuple[str, int]] = Counter()  # HTTP requests refused, by (code, status)
        self.bus_publish_failures = 0  # events the bus could not hand to every node (durable anyway)
        self.bus_stale = 0  # messages from the bus already delivered here (resent, or read from the store first)
        self.bus_gap_filled = 0  # messages the bus missed, read from the store and delivered in order
        self.bus_resyncs = 0  # bus subscriptions re-established (each followed by a gap fill)
        self.store_healthy = True  # a shared store answered its last health check
        self.bus_healthy = True  # a shared bus is connected
        self.refused: Counter[str] = Counter()  # inbound input refused or dropped, by reason
        self.preauth_bytes = lambda: 0  # bytes held by connections not yet authenticated (set by the node)
        self.address_strikes: Counter[str] = Counter()  # connections closed for abuse, a strike against their address, by reason
        self.connect_addresses = lambda: 0  # source addresses the per-address connection limit remembers (set by the server)
        self.bot_handoffs: Counter[str] = Counter()  # conversations the bot handed to people, by reason code
        self.bot_conversations: Counter[str] = Counter()  # bot conversations ended, by outcome: contained, handed_off
        self.customer_contexts: Counter[str] = Counter()  # customer contexts fetched for agents, by result: ok, unavailable
        self.customer_erasures = 0  # customers' personal information erased on request (a repeated erasure counts again)
        self.routing_stale_writes: Counter[str] = Counter()  # routing writes the store refused for a stale fence, by op


def counter_by(name: str, doc: str, label: str, counts: Counter, keys: Iterable[object] = ()) -> CounterMetricFamily:
    """A counter family with one label: every key of ``counts`` (sorted), and ``keys`` even at 0."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key in sorted({*counts, *keys}, key=str):
        family.add_metric([str(key)], counts.get(key, 0))
    return family


class KefuCollector(Collector):
    """Reads ``Stats`` (and a few live gauges) when Prometheus scrapes."""

    def __init__(
        self,
        stats: Stats,
        *,
        build: dict[str, str],
        outbox_bytes: Callable[[], int],
        subscriptions: Callable[[], int],
        parked: Callable[[], int] = lambda: 0,
        node: dict[str, str] | None = None,
        bus: object = None,
        queue: Callable[[], tuple[int, float]] | None = None,
        routing: Callable[[], Any] | None = None,
    ) -> None:
        self._routing = routing  # the node's RoutingService, if routing is on
        self._queue = queue  # routing's queues: (conversations waiting, seconds the longest has waited)
        self._node = node or {}
        self._bus = bus
        self._stats = stats
        self._build = build
        self._outbox_bytes = outbox_bytes
        self._subscriptions = subscriptions
        self._parked = parked

    def collect(self):  # type: ignore[override]
        s = self._stats
        info = InfoMetricFamily("kefu_build", "Kefu version and which implementation of each native module is active (native or python).")
        info.add_metric([], self._build)
        yield info
        if self._node:
            node = InfoMetricFamily("kefu_node", "This gateway process: its node id (in logs and on the bus), its store and bus kinds.")
            node.add_metric([], self._node)
            yield node
        yield GaugeMetricFamily("kefu_store_up", "1 while the store answers (a shared store is pinged every second), else 0.", value=int(s.store_healthy))
        yield GaugeMetricFamily("kefu_bus_up", "1 while the bus is connected (always 1 for the in-process bus), else 0.", value=int(s.bus_healthy))
        if self._queue is not None:
            waiting, oldest = self._queue()
            yield GaugeMetricFamily("kefu_routing_queued", "Conversations waiting in routing queues for an agent (this process's).", value=waiting)
            yield GaugeMetricFamily("kefu_routing_queue_oldest_wait_seconds", "How long the conversation waiting longest has waited (0: none waiting).", value=oldest)
        routing = self._routing() if self._routing is not None else None
        cluster = getattr(routing, "cluster", None)
        leads = routing is not None and (cluster is None or cluster.leading)
        yield GaugeMetricFamily("kefu_routing_leader", "1 while this process decides routing (one process with routing on; in a cluster, the lease holder), else 0.", value=int(leads))
        timeouts, dropped = (cluster.forward_timeouts, cluster.forward_dropped) if cluster is not None else (0, 0)
        yield CounterMetricFamily("kefu_routing_forward_timeouts", "Routing requests forwarded to the leader and not answered in time (answered unavailable).", value=timeouts)
        yield CounterMetricFamily("kefu_routing_forward_dropped", "Routing inputs dropped while Redis was away past the outbox limit.", value=dropped)
        yield counter_by(
            "kefu_routing_stale_writes", "Routing writes the store refused because a leader of a later term had written (this node was paused or cut off past its lease; it stopped leading), by op.",
            "op", s.routing_stale_writes, STALE_WRITE_OPS,
        )
        bus = self._bus
        if bus is not None and hasattr(bus, "buffered_bytes"):
            yield GaugeMetricFamily("kefu_bus_buffered_bytes", "Bytes of bus publishes not yet answered by Redis (grows while it is slow or away).", value=bus.buffered_bytes)
            yield CounterMetricFamily("kefu_bus_reconnects", "Bus connections re-established after a loss.", value=bus.reconnects)
            yield CounterMetricFamily("kefu_bus_published", "Bus publishes answered by Redis.", value=bus.published)
            yield CounterMetricFamily("kefu_bus_received", "Bus events received from Redis.", value=bus.received)

        conns = GaugeMetricFamily("kefu_connections", "Open authenticated connections.", labels=["role"])
        for role in ("shopper", "agent", "supervisor", "bot"):
            conns.add_metric([role], s.connections.get(role, 0))
        yield conns
        yield CounterMetricFamily("kefu_connections_opened", "WebSocket connections accepted.", value=s.connections_opened)
        yield counter_by("kefu_handshakes_failed", "HTTP upgrades refused.", "reason", s.handshakes_failed)

        yield CounterMetricFamily("kefu_frames_received", "WebSocket messages received.", value=s.frames_in)
        yield CounterMetricFamily("kefu_frames_sent", "WebSocket frames queued to clients.", value=s.frames_out)
        yield CounterMetricFamily("kefu_received_bytes", "Bytes read from client sockets.", value=s.bytes_in)
        yield CounterMetricFamily("kefu_sent_bytes", "Bytes written to client sockets.", value=s.bytes_out)
        yield CounterMetricFamily("kefu_messages_accepted", "Messages made durable and acked.", value=s.messages_accepted)
        yield CounterMetricFamily(
            "kefu_messages_duplicate", "Resent client message ids answered with the original ack.", value=s.messages_duplicate
        )
        yield CounterMetricFamily(
            "kefu_messages_delivered", "Message frames queued to recipient connections.", value=s.messages_delivered
        )
        yield CounterMetricFamily(
            "kefu_events_delivered", "Receipt, typing, presence and membership frames queued.", value=s.events_delivered
        )
        yield s.ack_latency.family("kefu_ack_latency_seconds", "From a send received to its durable ack queued.")
        yield s.fanout_latency.family("kefu_fanout_latency_seconds", "From durable to queued on every local recipient.")
        yield s.commit_latency.family("kefu_store_commit_latency_seconds", "One store transaction (group commit).")
        yield s.commit_batch.family("kefu_store_commit_batch_size", "Write operations per store transaction.")
        yield GaugeMetricFamily("kefu_store_pending_ops", "Write operations waiting for the store.", value=s.store_pending)
        yield GaugeMetricFamily("kefu_outbox_bytes", "Bytes queued in connection outboxes.", value=self._outbox_bytes())
        yield GaugeMetricFamily("kefu_connections_parked", "Quiet connections parked without a reader task.", value=self._parked())
        yield counter_by("kefu_parked_inputs", "Input for parked connections: served in the parking lot, or handed to a new reader task.", "how", s.parked_inputs, ("served", "reader"))
        yield GaugeMetricFamily(
            "kefu_subscriptions", "Live (connection, conversation) subscriptions.", value=self._subscriptions()
        )
        yield CounterMetricFamily(
            "kefu_slow_consumer_disconnects", "Connections closed for a full outbox.", value=s.slow_consumer_disconnects
        )
        yield CounterMetricFamily("kefu_rate_limited", "Requests refused by the rate limit.", value=s.rate_limited)
        yield CounterMetricFamily("kefu_bus_publish_failures", "Bus publishes that did not reach every node (the data is durable; clients get it on resume).", value=s.bus_publish_failures)
        yield CounterMetricFamily("kefu_bus_stale_messages", "Messages from the bus already delivered on this node (dropped).", value=s.bus_stale)
        yield CounterMetricFamily("kefu_bus_gap_filled_messages", "Messages read from the store to fill a gap in what the bus brought (lost, or overtaken for longer than 20 ms), delivered in order.", value=s.bus_gap_filled)
        yield CounterMetricFamily("kefu_bus_resyncs", "Bus subscriptions re-established after a loss (each followed by a gap fill).", value=s.bus_resyncs)
        yield counter_by("kefu_input_refused", "Inbound frames, bytes or connections refused or dropped, by reason.", "reason", s.refused)
        yield GaugeMetricFamily(
            "kefu_preauth_bytes", "Bytes received from connections that have not authenticated yet.", value=s.preauth_bytes()
        )
        yield counter_by("kefu_address_strikes", "Connections closed for abuse, each a strike that halves its source address's connection rate for a while, by reason.", "reason", s.address_strikes)
        yield GaugeMetricFamily(
            "kefu_connect_limit_addresses", "Source addresses the per-address connection limit remembers (bounded by --connect-addresses).", value=s.connect_addresses()
        )
        yield counter_by("kefu_errors", "Error frames sent, by code.", "code", s.errors)
        yield counter_by("kefu_auth_failures", "Authentication failures, by code.", "code", s.auth_failures)
        yield counter_by("kefu_bot_handoffs", "Conversations the bot handed to people, by reason.", "reason", s.bot_handoffs)
        yield counter_by("kefu_bot_conversations", "Bot conversations by outcome: contained (resolved or closed by the bot) or handed_off.", "outcome", s.bot_conversations, ("contained", "handed_off"))
        yield counter_by("kefu_customer_contexts", "Customer contexts fetched for agents, by result: ok or unavailable (provider slow or failing).", "result", s.customer_contexts, ("ok", "unavailable"))
        yield CounterMetricFamily("kefu_customer_erasures", "Customers' personal information erased on request (POST /v1/customers/{id}/erase; repeats count).", value=s.customer_erasures)
        yield counter_by("kefu_closes", "Server-initiated WebSocket closes, by close code.", "code", s.closes)
        refusals = CounterMetricFamily("kefu_http_refusals", "HTTP requests refused, by error code and status.", labels=["code", "status"])
        for (code, status), n in sorted(s.http_refusals.items()):
            refusals.add_metric([code, str(status)], n)
        yield refusals
