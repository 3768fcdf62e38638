"""A tenant's customer-service report over a period: hot topics, response times, workload and
satisfaction, computed from what is stored (conversations, their transcripts, tags and ratings).

:class:`Summary` adds conversations up one at a time (tests hand it transcripts). :func:`report`
reads them from the store, dropping each transcript once it is added: the newest
``MAX_CONVERSATIONS`` created in the period (``truncated`` says when there were more), each
transcript's first ``MAX_MESSAGES`` messages.
What counts, read from the transcript the routing service writes:

- **topics**: the intents of the bot's answers (each answered question once), most asked first;
- **products**: the products shoppers asked about (in view when they wrote, or answered from the
  catalog), by the number of conversations;
- **handoffs**: the ``reason`` of ``queued`` events, or of ``assigned`` ones when an agent was
  free at once (the bot's handoff reasons, ``no_bot``, …);
- **first response**: from a conversation's first ``queued`` (or ``assigned``) event to the first
  agent message after it; **wait**: the ``waited_s`` of ``assigned`` events;
- **agents**: per agent, conversations assigned to them, messages they sent, conversations they
  resolved, the first responses they gave, and the ratings of the conversations they served last;
- **conversion** (询单转化率): of the conversations an agent served last, those whose customer
  placed an order (as the shop pushed it to /v1/ingest) within a day of the conversation's start;
- **satisfaction**: the ratings shoppers gave (the last one per conversation);
- **days**: per day of the tenant's calendar (by the conversation's start), conversations, those
  that went to a person, those the bot handled alone, first responses and ratings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import msgpack

from .model import Conversation, StoredMessage

MAX_CONVERSATIONS = 2000
MAX_MESSAGES = 500
TOP = 20
PRODUCTS_A_CONVERSATION = 20  # products counted per conversation at most (its first ones)
CONVERSION_WINDOW_MS = 24 * 3600 * 1000  # an order placed within a day of the conversation's start counts
PAGE = 100  # conversations per store read


@dataclass
class Reviewed:
    """One conversation as the report reads it."""

    conv: Conversation
    messages: list[StoredMessage]
    tags: tuple[str, ...] = ()
    csat: dict[str, Any] | None = None
    orders_at: tuple[int, ...] = ()  # when the customer's orders were placed (ms), as the shop pushed them


@dataclass
class AgentWork:
    assigned: int = 0
    messages: int = 0
    resolved: int = 0
    first_responses_ms: list[int] = field(default_factory=list)
    scores: list[int] = field(default_factory=list)  # ratings of conversations they served last
    served: int = 0  # conversations they served last
    converted: int = 0  # of those, followed by an order within CONVERSION_WINDOW_MS


@dataclass
class DayFigures:
    conversations: int = 0
    to_person: int = 0  # went to a person (queued or assigned)
    contained: int = 0  # the bot spoke and no person was needed
    first_responses_ms: list[int] = field(default_factory=list)
    scores: Counter[int] = field(default_factory=Counter)


def percentiles(values: list[int]) -> dict[str, int | None]:
    """``count``, ``p50`` and ``p90`` (nearest rank) of ``values``; None when there are none."""
    ordered = sorted(values)

    def rank(p: int) -> int | None:
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] if ordered else None

    return {"count": len(ordered), "p50": rank(50), "p90": rank(90)}


def summarize(reviewed: Iterable[Reviewed], *, since: int, until: int, truncated: bool = False, utc_offset_min: int = 0) -> dict[str, Any]:
    summary = Summary(utc_offset_min)
    for item in reviewed:
        summary.add(item)
    return summary.result(since=since, until=until, truncated=truncated)


class Summary:
    """The report's figures, one conversation at a time: a transcript is read, added and dropped,
    so a report holds one transcript and the counters, however many conversations it reads."""

    def __init__(self, utc_offset_min: int = 0) -> None:
        self.utc_offset_min = utc_offset_min
        self.zone = timezone(timedelta(minutes=utc_offset_min))  # the days of ``days`` are the tenant's
        self.days: dict[str, DayFigures] = {}
        self.topics: Counter[str] = Counter()
        self.products: Counter[str] = Counter()  # conversations asking about each product
        self.handoffs: Counter[str] = Counter()
        self.tags: Counter[str] = Counter()
        self.scores: Counter[int] = Counter()
        self.first_responses: list[int] = []
        self.waits: list[int] = []
        self.agents: dict[str, AgentWork] = {}
        self.conversations = self.with_bot = self.contained = 0

    def add(self, item: Reviewed) -> None:
        agents = self.agents
        self.conversations += 1
        self.tags.update(item.tags)
        if item.csat and type(item.csat.get("score")) is int:
            self.scores[item.csat["score"]] += 1
        queued_at: int | None = None  # when it first went to a person
        answered_first = False
        bot_answered = False
        asked_about: set[str] = set()
        served_by: str | None = None
        for m in item.messages:
            body = msgpack.unpackb(m.body, raw=False)
            meta = body.get("meta")
            if m.sender_role == "shopper" and type(meta) is dict and type(meta.get("product")) is str and len(asked_about) < PRODUCTS_A_CONVERSATION:
                asked_about.add(meta["product"])  # the product in view when the shopper wrote
            if m.sender_role == "bot":
                bot_answered = True
                if type(body.get("intent")) is str and body["intent"]:
                    self.topics[body["intent"]] += 1
                if type(body.get("product")) is str and len(asked_about) < PRODUCTS_A_CONVERSATION:
                    asked_about.add(body["product"])  # answered from this product's catalog entry
            elif m.sender_role == "agent":
                work = agents.setdefault(m.sender, AgentWork())
                work.messages += 1
                if queued_at is not None and not answered_first:
                    answered_first = True
                    self.first_responses.append(m.ts - queued_at)
                    work.first_responses_ms.append(m.ts - queued_at)
            elif m.sender_role == "system" and body.get("kind") == "event":
                event = body.get("event")
                if event in ("queued", "assigned"):
                    if queued_at is None:
                        queued_at = m.ts
                    if type(body.get("reason")) is str:  # on `assigned` only when it did not queue first
                        self.handoffs[body["reason"]] += 1
                if event == "assigned" and type(body.get("agent")) is str:
                    agents.setdefault(body["agent"], AgentWork()).assigned += 1
                    served_by = body["agent"]
                    if isinstance(body.get("waited_s"), (int, float)):
                        self.waits.append(round(body["waited_s"] * 1000))
                elif event == "resolved" and type(body.get("by")) is str and body["by"] in agents:
                    agents[body["by"]].resolved += 1
        self.products.update(asked_about)
        if served_by is not None:
            work = agents[served_by]
            work.served += 1
            start = item.conv.created_at
            work.converted += any(start <= at < start + CONVERSION_WINDOW_MS for at in item.orders_at)
            if item.csat and type(item.csat.get("score")) is int:
                work.scores.append(item.csat["score"])
        if bot_answered:
            self.with_bot += 1
            if queued_at is None:
                self.contained += 1
        day = self.days.setdefault(datetime.fromtimestamp(item.conv.created_at / 1000, self.zone).date().isoformat(), DayFigures())
        day.conversations += 1
        day.to_person += queued_at is not None
        day.contained += bot_answered and queued_at is None
        if answered_first:
            day.first_responses_ms.append(self.first_responses[-1])
        if item.csat and type(item.csat.get("score")) is int:
            day.scores[item.csat["score"]] += 1

    def result(self, *, since: int, until: int, truncated: bool) -> dict[str, Any]:
        agents = self.agents
        return {
            "since": since,
            "until": until,
            "conversations": self.conversations,
            "truncated": truncated,
            "topics": [{"intent": intent, "count": n} for intent, n in self.topics.most_common(TOP)],
            "products": [{"product": product, "conversations": n} for product, n in self.products.most_common(TOP)],
            "tags": [{"tag": tag, "count": n} for tag, n in self.tags.most_common(TOP)],
            "bot": {"conversations": self.with_bot, "contained": self.contained},
            "handoffs": dict(self.handoffs.most_common()),
            "first_response_ms": percentiles(self.first_responses),
            "wait_ms": percentiles(self.waits),
            "agents": [
                {
                    "agent": user, "assigned": w.assigned, "messages": w.messages, "resolved": w.resolved,
                    "first_response_ms": percentiles(w.first_responses_ms), "satisfaction": satisfaction(Counter(w.scores)),
                    "conversion": conversion(w.served, w.converted),
                }
                for user, w in sorted(agents.items())
            ],
            "conversion": conversion(sum(w.served for w in agents.values()), sum(w.converted for w in agents.values())),
            "satisfaction": {**satisfaction(self.scores), "by_score": {str(score): self.scores[score] for score in range(1, 6)}},
            "utc_offset_min": self.utc_offset_min,
            "days": [
                {"day": name, "conversations": d.conversations, "to_person": d.to_person, "contained": d.contained,
                 "first_response_ms": percentiles(d.first_responses_ms), "satisfaction": satisfaction(d.scores)}
                for name, d in sorted(self.days.items())
            ],
        }


def conversion(served: int, converted: int) -> dict[str, Any]:
    """Conversations an agent served, how many were followed by the customer's order, the rate."""
    return {"served": served, "converted": converted, "rate": round(converted / served, 3) if served else None}


def satisfaction(scores: Counter[int]) -> dict[str, Any]:
    """``responses`` and their ``average`` (None without any) of ratings counted by score."""
    responses = sum(scores.values())
    return {"responses": responses, "average": round(sum(score * n for score, n in scores.items()) / responses, 2) if responses else None}


async def report(store: Any, workspace: Any, tenant: str, *, since: int, until: int, utc_offset_min: int = 0) -> dict[str, Any]:
    """The report of conversations created in [since, until) (ms since the epoch), read from
    ``store`` (a gateway.store.Store) and ``workspace`` (ratings and orders; None: none are
    counted), with its days in the time zone ``utc_offset_min``."""
    summary = Summary(utc_offset_min)
    before: int | None = until
    before_id: str | None = None
    truncated = False
    while True:
        page = await store.list_conversations(tenant, since=since, before=before, before_id=before_id, limit=PAGE)
        for conv in page:
            if summary.conversations == MAX_CONVERSATIONS:
                truncated = True
                break
            transcript = await store.read_messages(conv.id, after=0, limit=MAX_MESSAGES)
            facts, orders_at = ({}, ()) if workspace is None else (await workspace.facts(tenant, conv.id), await orders_of(workspace, conv))
            summary.add(Reviewed(conv, transcript.messages, await store.tags(conv.id), facts.get("csat"), orders_at))
        if truncated or len(page) < PAGE:
            break
        before, before_id = page[-1].created_at, page[-1].id
    return summary.result(since=since, until=until, truncated=truncated)


async def orders_of(workspace: Any, conv: Conversation) -> tuple[int, ...]:
    """When the conversation's customer placed the orders the shop pushed (/v1/ingest/orders)."""
    customer = await workspace.customer_of(conv)
    placed: list[int] = []
    for cid in (customer["id"], *customer.get("absorbed", [])):
        placed += [order.get("created_at", 0) for _, order in await workspace.book.list(conv.tenant, "order", prefix=f"{cid}/")]
    return tuple(placed)
