"""The routing engine: agents, queues and assignments of every tenant, as a synchronous state machine.

Sans-IO: callers pass the time and carry out what it returns (``Assignment`` and ``Requeue``
values). Every method runs to completion without awaiting, on the one Trio thread, so a decision and
the bookkeeping that makes it safe — the agent's capacity taken, the conversation removed from its
queue — happen together: an agent never exceeds their maximum and a conversation is never assigned
twice, however many requests race.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model import AgentProfile
from .config import RoutingConfig, TenantRouting
from .strategies import Agent, LeastLoaded, Manual, RoundRobin, Sticky, Strategy, Waiting

AGENT_STATUSES = ("online", "away", "offline")


class RoutingError(Exception):
    """A routing request that cannot be carried out; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Assignment:
    conv_id: str
    tenant: str
    agent: str
    agent_name: str
    group: str
    how: str  # the strategy's name, "take" or "transfer"
    waited_s: float


@dataclass(frozen=True)
class Requeue:
    """An agent's grace period ran out: their conversation goes back to the front of its queue."""

    conv_id: str
    tenant: str
    agent: str


class RoutingEngine:
    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self.agents: dict[tuple[str, str], Agent] = {}
        self.queues: dict[tuple[str, str], list[Waiting]] = {}  # (tenant, group) -> waiting, first in line first
        self.waiting: dict[str, Waiting] = {}
        self.assigned: dict[str, tuple[Agent, str, str]] = {}  # conv -> (agent, group, customer)
        self.last_agent: dict[tuple[str, str], str] = {}  # (tenant, customer) -> agent who served last
        self._strategies: dict[str, Strategy] = {}
        self._average_wait: dict[str, float] = {}  # tenant -> moving average of waits, seconds
        self.profiles: dict[tuple[str, str], AgentProfile] = {}  # persisted agent settings (REST API)

    # ---- agents -------------------------------------------------------------------------------

    def agent(self, tenant: str, user: str) -> Agent:
        key = (tenant, user)
        agent = self.agents.get(key)
        if agent is None:
            agent = self.agents[key] = Agent(tenant, user, max_active=self.config.for_tenant(tenant).default_max_active)
            profile = self.profiles.get(key)
            if profile is not None:
                _apply(agent, profile)
        return agent

    def apply_profile(self, profile: AgentProfile, now: float) -> list[Assignment]:
        """Persisted settings of an agent, now their defaults (a ``status`` request may still set
        max and groups for the session). A disabled agent goes offline and cannot come back online;
        the conversations they hold stay theirs until resolved or transferred."""
        key = (profile.tenant, profile.user)
        self.profiles[key] = profile
        agent = self.agents.get(key)
        if agent is None:
            return []
        _apply(agent, profile)
        return self.dispatch(profile.tenant, now)

    def reconfigure(self, config: RoutingConfig) -> None:
        """New routing settings (a tenant's changed through the REST API): strategies start afresh."""
        self.config = config
        self._strategies.clear()

    def set_status(
        self,
        tenant: str,
        user: str,
        status: str,
        now: float,
        *,
        name: str | None = None,
        max_active: int | None = None,
        groups: frozenset[str] | None = None,
    ) -> list[Assignment]:
        """An agent changes status or capacity; routing runs again for their tenant."""
        if status not in AGENT_STATUSES:
            raise RoutingError("bad_request", f"status must be one of {', '.join(AGENT_STATUSES)}")
        agent = self.agent(tenant, user)
        profile = self.profiles.get((tenant, user))
        if profile is not None and profile.disabled:
            raise RoutingError("forbidden", "this agent is disabled")
        agent.status = status
        if name and not (profile and profile.name):
            agent.name = name
        if max_active is not None:
            agent.max_active = max_active
        if groups is not None:
            known = {g.name for g in self.config.for_tenant(tenant).groups}
            unknown = groups - known
            if unknown:
                raise RoutingError("bad_request", f"unknown skill groups {sorted(unknown)}; this tenant has {sorted(known)}")
            agent.groups = groups
        return self.dispatch(tenant, now)

    def connected(self, tenant: str, user: str) -> None:
        agent = self.agent(tenant, user)
        agent.connections += 1
        agent.offline_since = None

    def disconnected(self, tenant: str, user: str, now: float) -> None:
        """The agent's connection closed; with none left their grace period starts."""
        agent = self.agents.get((tenant, user))
        if agent is None:
            return
        agent.connections = max(0, agent.connections - 1)
        if agent.connections == 0:
            agent.offline_since = now

    def start_grace(self, now: float) -> None:
        """Agents with no connection known (a new routing leader, before the nodes report theirs)
        start their grace period: those who do not come back go offline when it ends."""
        for agent in self.agents.values():
            if agent.connections == 0 and agent.offline_since is None:
                agent.offline_since = now

    def expire(self, now: float) -> list[Requeue]:
        """Agents offline past their tenant's grace period go offline; their conversations go back
        to the front of their queues (call ``dispatch`` after carrying the requeues out)."""
        requeues = []
        for agent in self.agents.values():
            if agent.offline_since is None or now - agent.offline_since < self.config.for_tenant(agent.tenant).grace_s:
                continue
            agent.offline_since = None
            agent.status = "offline"
            for conv_id in sorted(agent.active):
                requeues.append(Requeue(conv_id, agent.tenant, agent.user))
        return requeues

    # ---- conversations ------------------------------------------------------------------------

    def enqueue(self, conv_id: str, tenant: str, customer: str, group: str, now: float, *, front: bool = False, language: str = "") -> list[Assignment]:
        """Put a conversation in its group's queue and route: at its end, or with ``front`` ahead of
        every conversation that was not put in front, behind those that were (so several messages
        left overnight are served in the order they were left). With ``language``, agents who speak
        it are preferred while any of them can take it."""
        self._unassign(conv_id)
        if conv_id in self.waiting:
            self._remove_waiting(conv_id)
        waiting = Waiting(conv_id, tenant, customer, group, now, language=language, ahead=front)
        queue = self.queues.setdefault((tenant, group), [])
        if front:
            queue.insert(next((i for i, w in enumerate(queue) if not w.ahead), len(queue)), waiting)
        else:
            queue.append(waiting)
        self.waiting[conv_id] = waiting
        return self.dispatch(tenant, now)

    def restore(self, conv_id: str, tenant: str, customer: str, group: str, user: str, now: float) -> None:
        """After a restart: ``user`` serves ``conv_id`` (as stored). Until the agent connects again
        their grace period runs, as if they had just disconnected."""
        agent = self.agent(tenant, user)
        agent.active.add(conv_id)
        self.assigned[conv_id] = (agent, group, customer)
        if agent.connections == 0:
            agent.offline_since = now

    def dispatch(self, tenant: str, now: float) -> list[Assignment]:
        """Assign every waiting conversation of ``tenant`` that its strategy can place now."""
        strategy = self._strategy(tenant)
        assignments = []
        for (queue_tenant, group), queue in self.queues.items():
            if queue_tenant != tenant:
                continue
            for waiting in list(queue):
                candidates = [a for a in self.agents.values() if a.tenant == tenant and a.can_take(group)]
                if not candidates:
                    break
                if waiting.language:  # speakers of it, and the customer's last agent (sticky waits for them)
                    last = self.last_agent.get((tenant, waiting.customer))
                    candidates = [a for a in candidates if waiting.language in a.languages or a.user == last] or candidates
                agent = strategy.pick(waiting, candidates, now)
                if agent is not None:
                    assignments.append(self._assign(waiting, agent, strategy.name, now))
        return assignments

    def take(self, tenant: str, user: str, conv_id: str, now: float) -> Assignment:
        """An agent takes a waiting conversation themselves (the manual strategy's way)."""
        waiting = self.waiting.get(conv_id)
        if waiting is None or waiting.tenant != tenant:
            raise RoutingError("conflict", "the conversation is not waiting in a queue (taken by someone else?)")
        agent = self.agent(tenant, user)
        if agent.status != "online":
            raise RoutingError("forbidden", "set your status to online first")
        if agent.free <= 0:
            raise RoutingError("conflict", f"you are at your maximum of {agent.max_active} conversations")
        return self._assign(waiting, agent, "take", now)

    def transfer_to_agent(self, conv_id: str, tenant: str, customer: str, group: str, user: str, now: float) -> Assignment:
        agent = self.agents.get((tenant, user))
        if agent is None or agent.status != "online" or agent.free <= 0:
            raise RoutingError("conflict", f"agent {user} is not online with room for another conversation")
        self._unassign(conv_id)
        if conv_id in self.waiting:
            self._remove_waiting(conv_id)
        return self._assign(Waiting(conv_id, tenant, customer, group, now), agent, "transfer", now)

    def finish(self, conv_id: str, now: float) -> list[Assignment]:
        """The conversation left routing (resolved or closed): free its agent's place and route."""
        tenant = None
        if conv_id in self.waiting:
            tenant = self.waiting[conv_id].tenant
            self._remove_waiting(conv_id)
        agent = self._unassign(conv_id)
        if agent is not None:
            tenant = agent.tenant
        return self.dispatch(tenant, now) if tenant is not None else []

    def assignee(self, conv_id: str) -> Agent | None:
        held = self.assigned.get(conv_id)
        return held[0] if held else None

    def position(self, conv_id: str) -> tuple[int, int | None] | None:
        """(1-based place in its queue, estimated seconds to wait or None when nobody is online)."""
        waiting = self.waiting.get(conv_id)
        if waiting is None:
            return None
        queue = self.queues[(waiting.tenant, waiting.group)]
        place = queue.index(waiting) + 1
        online = [a for a in self.agents.values() if a.tenant == waiting.tenant and a.status == "online" and waiting.group in a.groups]
        if not online:
            return place, None
        per_turn = self._average_wait.get(waiting.tenant) or self.config.for_tenant(waiting.tenant).average_handle_s
        return place, int(math.ceil(place / len(online)) * per_turn)

    def queued(self, tenant: str) -> list[Waiting]:
        return [w for (t, _), q in self.queues.items() if t == tenant for w in q]

    def snapshot(self, tenant: str, now: float) -> dict:
        """Queues and agents of a tenant, for supervisors."""
        queues = {}
        for (t, group), queue in self.queues.items():
            if t == tenant:
                queues[group] = [{"conv": w.conv_id, "customer": w.customer, "waited_s": round(now - w.since, 1)} for w in queue]
        agents = [
            {
                "user": a.user, "name": a.name, "status": a.status, "active": sorted(a.active), "max": a.max_active,
                "groups": sorted(a.groups), "connections": a.connections,
            }
            for a in self.agents.values()
            if a.tenant == tenant
        ]
        return {"queues": queues, "agents": sorted(agents, key=lambda a: a["user"])}

    # ---- internals ----------------------------------------------------------------------------

    def _assign(self, waiting: Waiting, agent: Agent, how: str, now: float) -> Assignment:
        assert agent.free > 0 and waiting.conv_id not in self.assigned
        if waiting.conv_id in self.waiting:
            self._remove_waiting(waiting.conv_id)
        agent.active.add(waiting.conv_id)
        agent.last_assigned_at = now
        self.assigned[waiting.conv_id] = (agent, waiting.group, waiting.customer)
        self.last_agent[(waiting.tenant, waiting.customer)] = agent.user
        waited = max(0.0, now - waiting.since)
        previous = self._average_wait.get(waiting.tenant)
        self._average_wait[waiting.tenant] = waited if previous is None else 0.8 * previous + 0.2 * waited
        return Assignment(waiting.conv_id, waiting.tenant, agent.user, agent.name or agent.user, waiting.group, how, waited)

    def _unassign(self, conv_id: str) -> Agent | None:
        held = self.assigned.pop(conv_id, None)
        if held is None:
            return None
        agent = held[0]
        agent.active.discard(conv_id)
        return agent

    def _remove_waiting(self, conv_id: str) -> None:
        waiting = self.waiting.pop(conv_id)
        self.queues[(waiting.tenant, waiting.group)].remove(waiting)

    def _strategy(self, tenant: str) -> Strategy:
        strategy = self._strategies.get(tenant)
        if strategy is None:
            strategy = self._strategies[tenant] = make_strategy(self.config.for_tenant(tenant), self.last_agent)
        return strategy


def _apply(agent: Agent, profile: AgentProfile) -> None:
    if profile.name:
        agent.name = profile.name
    agent.max_active = profile.max_active
    agent.groups = frozenset(profile.groups)
    agent.languages = frozenset(profile.languages)
    if profile.disabled:
        agent.status = "offline"


def make_strategy(routing: TenantRouting, last_agent: dict[tuple[str, str], str]) -> Strategy:
    simple = {"least_loaded": LeastLoaded, "round_robin": RoundRobin, "manual": Manual}
    if routing.strategy == "sticky":
        return Sticky(simple[routing.fallback](), routing.sticky_wait_s, last_agent)
    return simple[routing.strategy]()
