"""Webhooks: each event of a tenant POSTed to the URLs its backend subscribed, signed, retried.

A shop's backend learns what happened without holding a WebSocket: a message written, a
conversation assigned, resolved or rated. Subscriptions are records of the store (kind
``webhook``), so every node of a cluster sees them; a node reads a tenant's again after
``cache_s`` (its own changes at once). Each event is sent by the node where it happened, once.

Delivery is at least once while the gateway runs and across a graceful restart (SIGTERM): what
still waits then, retries included, is stored (``save_pending``, kind ``webhook_pending``) and sent
by the next node to start, keeping its delivery id and attempts. A crash (kill -9) loses what
waited. Events wait in memory
(``max_pending`` of them holding at most ``max_pending_bytes``, beyond which new ones are dropped,
counted and logged: memory stays bounded whatever the receivers do), ``concurrency``
POSTs are in flight at a time, and a POST that times out, cannot connect, or is answered 408,
429 or 5xx is tried again after each of ``retry_after_s``. Any other answer but 2xx ends it. Hosts
are resolved and refused when they are not public, unless ``allow_private`` (a receiver on the
gateway's own network), so a webhook cannot be aimed at the gateway's neighbours or a cloud's
metadata service.

The data path only appends to a deque, and only what some webhook of the tenant wants: a message
nobody subscribed to costs one dict lookup.
"""

from __future__ import annotations

import heapq
import ipaddress
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

import ssl

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..conversations.service import Watcher
from ..hub import ConvState
from ..model import SYSTEM, Conversation, DeleteRecord, PutRecords, Record, StoredMessage
from ..store.base import StoreError
from .client import Client, Unreachable
from .payloads import ALL, is_public, message_event, new_event_id, payload, signature

log = logging.getLogger("kefu.webhooks")

RECORD_KIND = "webhook"
STATUS_KIND = "webhook_status"  # a record beside each webhook's, same key: failing or ok, since when, the last error
RETRY_AFTER_S = (1.0, 10.0, 60.0, 300.0, 1800.0)  # five more tries, the last about 36 min after the first
RETRY_STATUSES = frozenset({408, 429})
ADDRESS_CACHE_S = 60.0
LOG_DROPS_EVERY_S = 10.0
PENDING_KIND = "webhook_pending"  # deliveries saved at shutdown, under PENDING_TENANT
PENDING_TENANT = ""  # no tenant is named so (a token's `tenant` is never empty): the gateway's own records
SAVE_WAIT_S = 2.0  # how long a shutdown lets POSTs in flight finish before saving them as well
MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer read (and then ignored); past it the connection is not kept
EVENT_BYTES = 1024  # what an event is charged beyond its message's body, until its payload is made


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    url: str
    events: frozenset[str]
    secret: str

    def wants(self, event: str) -> bool:
        return ALL in self.events or event in self.events

    @classmethod
    def from_record(cls, key: str, value: str) -> Subscription:
        doc = json.loads(value)
        return cls(key, doc["url"], frozenset(doc["events"]), doc["secret"])


@dataclass(slots=True, eq=False)
class Delivery:
    event_id: str
    event: str
    tenant: str
    webhook: Subscription
    body: bytes
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One POST's result: ``status`` (None: no answer); when not delivered, ``reason`` (a code:
    timeout, unreachable, status_3xx, status_4xx, status_5xx, private_address, unresolvable, not_running),
    ``detail`` for the log, and whether to try again."""

    delivered: bool
    status: int | None = None
    reason: str | None = None
    detail: str = ""
    retry: bool = False


class WebhookStats:
    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()  # by outcome: delivered, retried, failed, dropped
        self.failures: Counter[str] = Counter()  # attempts that did not deliver, by reason
        self.pending = 0
        self.pending_bytes = 0  # what they hold: events as estimated, deliveries their bodies


class Webhooks(Watcher):
    def __init__(
        self,
        store: Any,
        *,
        allow_private: bool = False,
        timeout_s: float = 5.0,
        retry_after_s: tuple[float, ...] = RETRY_AFTER_S,
        max_pending: int = 10_000,
        max_pending_bytes: int = 64 * 1024 * 1024,
        concurrency: int = 4,
        cache_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: whom https receivers must be certified by (default: the system's CAs)."""
        self.store = store  # gateway.store.writer.Store: records of kind ``webhook``
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.concurrency = concurrency
        self.cache_s = cache_s
        self.stats = WebhookStats()
        # tenant -> (good until, subscriptions, the events any of them wants)
        self._subscriptions: dict[str, tuple[float, tuple[Subscription, ...], frozenset[str]]] = {}
        self._events: deque[tuple[str, str, dict[str, Any], int, int]] = deque()  # (tenant, event, data, at ms, bytes charged), not yet matched
        self._ready: deque[Delivery] = deque()
        self._later: list[tuple[float, int, Delivery]] = []  # (due, tiebreak, delivery): retries waiting
        self._later_n = 0
        self._work = trio.Event()  # set when _events or _ready gained something
        self._later_changed = trio.Event()
        self._addresses: dict[str, tuple[float, Outcome | None, str | None]] = {}  # host -> (good until, why refused, the checked address)
        self._dropped_logged = 0.0
        self._ssl_context = ssl_context
        self._states: dict[str, str] = {}  # webhook id -> "ok" or "failing", as last stored by this node
        self._client: Client | None = None
        self._inflight: set[Delivery] = set()  # being POSTed
        self._stopping = False  # saving for a restart: workers take no more deliveries

    # ---- events in (the data path: no I/O, no await) ------------------------------------------

    def on_opened(self, state: ConvState) -> None:
        self._emit(state.conv, "conversation.opened", {})

    def on_closed(self, state: ConvState) -> None:
        self._emit(state.conv, "conversation.closed", {})

    def on_rated(self, state: ConvState, csat: dict[str, Any]) -> None:
        self._emit(state.conv, "conversation.rated", {"rating": csat})

    def on_message(self, state: ConvState, m: StoredMessage) -> None:
        conv = state.conv
        # what people and bots write is message.created; the system's messages may be any event
        if not self._may_want(conv.tenant, "message.created" if m.sender_role != SYSTEM else None):
            return
        name, message = message_event(m)
        self._emit(conv, name, {"message": message}, EVENT_BYTES + 2 * len(m.body))  # JSON may escape

    def _may_want(self, tenant: str, event: str | None) -> bool:
        """Whether a webhook of ``tenant`` may want ``event`` (None: any event): True while its
        webhooks are not known here (the event goes on, to find out)."""
        cached = self._subscriptions.get(tenant)
        if cached is None or cached[0] <= time.monotonic():
            return True
        wanted = cached[2]
        return bool(wanted) if event is None else ALL in wanted or event in wanted

    def _emit(self, conv: Conversation, event: str, data: dict[str, Any], cost: int = EVENT_BYTES) -> None:
        if not self._may_want(conv.tenant, event):
            return
        stats = self.stats
        if stats.pending >= self.max_pending or stats.pending_bytes + cost > self.max_pending_bytes:
            self._drop(event, conv.tenant)
            return
        stats.pending += 1
        stats.pending_bytes += cost
        data["conversation"] = conversation_json(conv)
        self._events.append((conv.tenant, event, data, int(time.time() * 1000), cost))
        self._work.set()

    def _drop(self, event: str, tenant: str, why: str = "") -> None:
        """Count a dropped event; log one line per ``LOG_DROPS_EVERY_S`` at most (a flood of drops
        must not become a flood of log lines)."""
        self.stats.deliveries["dropped"] += 1
        now = time.monotonic()
        if now - self._dropped_logged >= LOG_DROPS_EVERY_S:
            self._dropped_logged = now
            why = why or f"{self.stats.pending} events already wait (receivers slow or down)"
            log.warning("webhook event %s of %s dropped: %s (one line per %g s at most)", event, tenant, why, LOG_DROPS_EVERY_S)

    # ---- subscriptions ------------------------------------------------------------------------

    async def subscriptions(self, tenant: str) -> tuple[Subscription, ...]:
        cached = self._subscriptions.get(tenant)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        records = await self.store.records(tenant, RECORD_KIND)
        found = []
        for record in records:
            try:
                found.append(Subscription.from_record(record.key, record.value))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("webhook %s of %s is unreadable, skipped: %s", record.key, tenant, exc)
        subs = tuple(found)
        self._subscriptions[tenant] = (time.monotonic() + self.cache_s, subs, frozenset(e for sub in subs for e in sub.events))
        return subs

    def forget(self, tenant: str) -> None:
        """The tenant's webhooks changed here: read them again before the next event."""
        self._subscriptions.pop(tenant, None)

    # ---- delivery -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        headers = {"user-agent": f"kefu-webhooks/{__version__}", "content-type": "application/json"}
        client = self._client = Client(ssl_context=self._ssl_context, max_idle=self.concurrency, max_answer_bytes=MAX_ANSWER_BYTES, headers=headers)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._restore)  # in the background: a start never waits for the saved ones
                nursery.start_soon(self._retry_when_due)
                for _ in range(self.concurrency):
                    nursery.start_soon(self._deliver_forever)
                task_status.started()
        finally:
            self._client = None
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def _next(self) -> Delivery:
        """The next delivery to attempt, matching waiting events to subscriptions first."""
        while True:
            if self._stopping:
                await trio.sleep_forever()  # what waits is saved for the next start
            if self._ready:
                return self._ready.popleft()
            if self._events:
                await self._match(*self._events.popleft())
                continue
            if self._work.is_set():  # every idle worker waits on the same event: one set wakes them all
                self._work = trio.Event()
            await self._work.wait()

    async def _match(self, tenant: str, event: str, data: dict[str, Any], at: int, cost: int) -> None:
        """An event becomes a delivery to each webhook of its tenant that wants it."""
        self.stats.pending_bytes -= cost
        try:
            subs = [s for s in await self.subscriptions(tenant) if s.wants(event)]
        except StoreError as exc:  # the store is away: so are new messages, mostly
            subs = []
            self._drop(event, tenant, f"its webhooks could not be read ({exc})")
        self.stats.pending += len(subs) - 1
        if subs:
            event_id = new_event_id()
            body = payload(event_id, event, tenant, data, now_ms=at)
            self.stats.pending_bytes += len(body) * len(subs)  # one body, shared: counted per delivery
            self._ready.extend(Delivery(event_id, event, tenant, s, body) for s in subs)

    async def _deliver_forever(self) -> None:
        while True:
            delivery = await self._next()
            self._inflight.add(delivery)
            try:
                outcome = await self.attempt(delivery)
            finally:
                self._inflight.discard(delivery)
            delivery.attempts += 1
            await self._note_state(delivery, outcome)
            if outcome.delivered:
                self._finished(delivery, "delivered")
                continue
            self.stats.failures[outcome.reason or "unknown"] += 1
            if outcome.retry and delivery.attempts <= len(self.retry_after_s):
                self.stats.deliveries["retried"] += 1
                due = time.monotonic() + self.retry_after_s[delivery.attempts - 1]
                self._later_n += 1
                heapq.heappush(self._later, (due, self._later_n, delivery))
                self._later_changed.set()
                continue
            self._finished(delivery, "failed")
            log.warning(
                "webhook %s of %s gave up on %s after %d attempts: %s", delivery.webhook.id, delivery.tenant, delivery.event,
                delivery.attempts, outcome.detail or outcome.reason,
            )

    # ---- across a restart ---------------------------------------------------------------------

    async def save_pending(self) -> int:
        """Store every delivery still waiting (events matched first, retries, and POSTs in flight
        after ``SAVE_WAIT_S``) for the next node to start: the node calls it while shutting down,
        before its store closes. Returns how many were saved."""
        self._stopping = True
        self._work.set()
        with trio.move_on_after(SAVE_WAIT_S):
            while self._inflight:
                await trio.sleep(0.05)
        while self._events:
            await self._match(*self._events.popleft())
        waiting = [*self._ready, *(entry[2] for entry in self._later), *self._inflight]
        now = int(time.time() * 1000)
        records = tuple(
            Record(PENDING_TENANT, PENDING_KIND, f"{d.event_id}/{d.webhook.id}", json.dumps({
                "tenant": d.tenant, "event": d.event, "event_id": d.event_id, "webhook": d.webhook.id,
                "body": d.body.decode(), "attempts": d.attempts,
            }, ensure_ascii=False), now)
            for d in waiting
        )
        if not records:
            return 0
        try:
            await self.store.execute(PutRecords(records))
        except StoreError as exc:
            log.error("%d webhook deliveries could not be saved for the next start, and are lost: %s", len(records), exc)
            return 0
        log.info("%d webhook deliveries saved for the next start", len(records))
        return len(records)

    async def _restore(self) -> None:
        """Take the deliveries a node saved at shutdown (each once, even with several nodes
        starting: a record is taken by deleting it) and send them as they are taken."""
        saved: list[Record] = []
        try:
            while True:  # a page at a time
                page = await self.store.records(PENDING_TENANT, PENDING_KIND, after=saved[-1].key if saved else "")
                saved += page
                if not page:
                    break
        except StoreError as exc:
            log.error("webhook deliveries saved at the last shutdown could not be read: %s", exc)
            return
        restored = gone = 0
        for record in saved:
            try:
                if not await self.store.execute(DeleteRecord(PENDING_TENANT, PENDING_KIND, record.key)):
                    continue  # another node took it
                doc = json.loads(record.value)
                subs = [s for s in await self.subscriptions(doc["tenant"]) if s.id == doc["webhook"]]
            except (StoreError, ValueError, KeyError, TypeError) as exc:
                log.error("a saved webhook delivery %s could not be restored: %s", record.key, exc)
                continue
            if not subs:  # the webhook was deleted meanwhile
                gone += 1
                continue
            body = doc["body"].encode()
            self._ready.append(Delivery(doc["event_id"], doc["event"], doc["tenant"], subs[0], body, doc["attempts"]))
            self.stats.pending += 1
            self.stats.pending_bytes += len(body)
            self._work.set()
            restored += 1
        if restored or gone:
            log.info("%d webhook deliveries saved at the last shutdown restored (%d for webhooks deleted since)", restored, gone)

    async def _note_state(self, delivery: Delivery, outcome: Outcome) -> None:
        """Store that a webhook started failing, or delivers again, when it changes (as this node
        saw it): what its tenant's ``GET /v1/webhooks`` shows. A write per change, not per POST."""
        state = "ok" if outcome.delivered else "failing"
        key = delivery.webhook.id
        if self._states.get(key, "ok") == state:
            return
        self._states[key] = state
        now = int(time.time() * 1000)
        doc: dict[str, Any] = {"state": state, "since": now}
        if not outcome.delivered:
            doc["last_error"] = {"at": now, "event": delivery.event, "reason": outcome.reason, "detail": outcome.detail}
        try:
            await self.store.execute(PutRecords((Record(delivery.tenant, STATUS_KIND, key, json.dumps(doc, ensure_ascii=False), now),)))
        except StoreError as exc:
            log.warning("the state of webhook %s could not be stored: %s", key, exc)

    def _finished(self, delivery: Delivery, outcome: str) -> None:
        self.stats.deliveries[outcome] += 1
        self.stats.pending -= 1
        self.stats.pending_bytes -= len(delivery.body)

    async def _retry_when_due(self) -> None:
        while True:
            self._later_changed = trio.Event()
            if self._later:
                with trio.move_on_at(trio.current_time() + max(0.0, self._later[0][0] - time.monotonic())):
                    await self._later_changed.wait()
            else:
                await self._later_changed.wait()
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                self._ready.append(heapq.heappop(self._later)[2])
                self._work.set()

    async def attempt(self, delivery: Delivery) -> Outcome:
        """POST one delivery once (also what ``ping`` does): never raises for the receiver's faults."""
        client = self._client
        if client is None:
            return Outcome(False, reason="not_running", detail="the webhook sender is not running", retry=True)
        refused, address = await self._checked_address(delivery.webhook.url)
        if refused is not None:
            return refused
        headers = {
            "kefu-event": delivery.event,
            "kefu-delivery": delivery.event_id,
            "kefu-signature": signature(delivery.webhook.secret, delivery.body, int(time.time())),
        }
        try:
            status = await client.post(delivery.webhook.url, delivery.body, headers, self.timeout_s, address=address)
        except trio.TooSlowError:
            return Outcome(False, reason="timeout", detail=f"no answer within {self.timeout_s:g} s", retry=True)
        except Unreachable as exc:
            return Outcome(False, reason="unreachable", detail=str(exc), retry=True)
        if 200 <= status < 300:
            return Outcome(True, status)
        retry = status in RETRY_STATUSES or status >= 500
        return Outcome(False, status, f"status_{min(status // 100, 5)}xx", f"answered {status}", retry)  # 3xx: redirects are not followed

    async def _checked_address(self, url: str) -> tuple[Outcome | None, str | None]:
        """Where the URL's host may be reached: (None, an address it resolved to, all of them
        checked public), or (why not, None); resolved at most once a minute. The POST then
        connects to that very address, so a name that resolves to something else a moment later
        (DNS rebinding) cannot aim it elsewhere. (None, None) with ``allow_private``: the client
        resolves the name itself."""
        if self.allow_private:
            return None, None
        host = urlsplit(url).hostname or ""
        cached = self._addresses.get(host)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        why, checked = None, None
        try:
            infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            why = Outcome(False, reason="unresolvable", detail=f"{host} does not resolve: {exc}", retry=True)
        else:
            for info in infos:
                address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
                if not is_public(address):
                    why = Outcome(False, reason="private_address", detail=f"{host} is {address}, not a public address (--webhooks-allow-private)")
                    break
                checked = checked or str(address)
        if why is not None:
            checked = None
        self._addresses[host] = (time.monotonic() + ADDRESS_CACHE_S, why, checked)
        return why, checked

    def ping(self, tenant: str, webhook: Subscription) -> Delivery:
        """A ``ping`` event for ``webhook``, to be sent with ``attempt`` (a receiver's setup check)."""
        event_id = new_event_id()
        return Delivery(event_id, "ping", tenant, webhook, payload(event_id, "ping", tenant, {"webhook": webhook.id}))


def conversation_json(conv: Conversation) -> dict[str, Any]:
    return {
        "id": conv.id, "customer": conv.customer, "channel": conv.channel, "status": conv.status, "stage": conv.stage,
        "assignee": conv.assignee or None, "group": conv.group or None, "subject": conv.subject, "created_at": conv.created_at,
    }


class WebhookCollector(Collector):
    def __init__(self, stats: WebhookStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        deliveries = CounterMetricFamily(
            "kefu_webhook_deliveries", "Webhook deliveries by outcome: delivered, retried (an attempt failed, another is due), failed (given up), dropped (too many waiting).",
            labels=["outcome"],
        )
        for outcome in ("delivered", "retried", "failed", "dropped"):
            deliveries.add_metric([outcome], self.stats.deliveries[outcome])
        failures = CounterMetricFamily("kefu_webhook_attempt_failures", "Webhook POSTs that did not deliver, by reason.", labels=["reason"])
        for reason in sorted(self.stats.failures):
            failures.add_metric([reason], self.stats.failures[reason])
        yield deliveries
        yield failures
        yield GaugeMetricFamily("kefu_webhook_pending", "Webhook events and deliveries waiting or in flight.", value=self.stats.pending)
        yield GaugeMetricFamily("kefu_webhook_pending_bytes", "Bytes they hold (at most --webhooks-max-pending-bytes, and one event's more).", value=self.stats.pending_bytes)
