"""Routing strategies: given a waiting conversation and the agents who could take it, pick one.

A strategy only chooses; it never mutates the pool. ``RoutingEngine`` has already filtered the
candidates to agents who are online, serve the conversation's skill group and are below their own
maximum of concurrent conversations, so a strategy cannot overbook anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(eq=False)
class Agent:
    """A human agent (or an external bot acting as one) as routing sees them."""

    tenant: str
    user: str
    name: str = ""
    status: str = "offline"  # online, away, offline
    max_active: int = 5
    groups: frozenset[str] = frozenset({"default"})
    languages: frozenset[str] = frozenset()  # from the agent's stored profile (REST API)
    active: set[str] = field(default_factory=set)  # conversations assigned now
    last_assigned_at: float = 0.0
    connections: int = 0
    offline_since: float | None = None  # set when the last connection closed: the grace period runs

    @property
    def free(self) -> int:
        return self.max_active - len(self.active)

    def can_take(self, group: str) -> bool:
        return self.status == "online" and self.free > 0 and group in self.groups


@dataclass
class Waiting:
    """A conversation waiting for an agent."""

    conv_id: str
    tenant: str
    customer: str
    group: str
    since: float  # when it started waiting (kept when it moves to the front after a requeue)
    preferred: str | None = None  # an agent asked for by name (transfer) — waits for them only
    language: str = ""  # the shopper's language, when known: agents who speak it are preferred
    ahead: bool = False  # put ahead of the queue (a message left outside hours, a requeue): first come first among them


class Strategy(Protocol):
    name: str

    def pick(self, waiting: Waiting, candidates: list[Agent], now: float) -> Agent | None:
        """The agent to assign, or None to leave the conversation waiting."""


class LeastLoaded:
    """The candidate with the fewest active conversations; ties go to whoever waited longest
    since their last assignment (spreads work evenly)."""

    name = "least_loaded"

    def pick(self, waiting: Waiting, candidates: list[Agent], now: float) -> Agent | None:
        if not candidates:
            return None
        return min(candidates, key=lambda a: (len(a.active), a.last_assigned_at, a.user))


class RoundRobin:
    """Agents of a group take turns, in a stable order, skipping those who cannot take one now."""

    name = "round_robin"

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], str] = {}  # (tenant, group) -> user served last

    def pick(self, waiting: Waiting, candidates: list[Agent], now: float) -> Agent | None:
        if not candidates:
            return None
        ordered = sorted(candidates, key=lambda a: a.user)
        last = self._last.get((waiting.tenant, waiting.group))
        chosen = next((a for a in ordered if last is None or a.user > last), ordered[0])
        self._last[(waiting.tenant, waiting.group)] = chosen.user
        return chosen


class Sticky:
    """The agent who last served this customer, if they can take it; while they cannot, wait up to
    ``wait_s`` for them, then fall back to another strategy."""

    name = "sticky"

    def __init__(self, fallback: Strategy, wait_s: float, last_agent: dict[tuple[str, str], str]) -> None:
        self.fallback = fallback
        self.wait_s = wait_s
        self.last_agent = last_agent  # (tenant, customer) -> agent user; shared with the engine

    def pick(self, waiting: Waiting, candidates: list[Agent], now: float) -> Agent | None:
        previous = self.last_agent.get((waiting.tenant, waiting.customer))
        if previous is not None:
            for agent in candidates:
                if agent.user == previous:
                    return agent
            if now - waiting.since < self.wait_s:
                return None
        return self.fallback.pick(waiting, candidates, now)


class Manual:
    """Nobody is assigned automatically: conversations wait in the team queue until an agent takes one."""

    name = "manual"

    def pick(self, waiting: Waiting, candidates: list[Agent], now: float) -> Agent | None:
        return None
