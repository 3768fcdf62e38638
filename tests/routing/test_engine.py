"""The routing engine without sockets: strategies, queues, capacity, grace periods, invariants."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.model import AgentProfile
from gateway.routing.config import RoutingConfig, SkillGroup, TenantRouting
from gateway.routing.engine import RoutingEngine, RoutingError
from gateway.routing.lifecycle import IllegalTransition, next_stage


def engine(**settings) -> RoutingEngine:
    return RoutingEngine(RoutingConfig(default=TenantRouting(**settings)))


def test_least_loaded_respects_each_agents_maximum():
    e = engine()
    e.set_status("t", "ann", "online", 0, max_active=1)
    e.set_status("t", "ben", "online", 0, max_active=3)
    got = [e.enqueue(f"c{i}", "t", f"u{i}", "default", i) for i in range(5)]
    agents = [a[0].agent if a else None for a in got]
    assert agents == ["ann", "ben", "ben", "ben", None]  # ann full after one; ben takes the rest up to 3
    assert e.position("c4") == (1, 180)
    # ann resolves: the waiting conversation goes to her
    assert [a.conv_id for a in e.finish("c0", 10)] == ["c4"]


def test_agents_who_speak_the_shoppers_language_are_preferred_while_they_have_room():
    e = engine()
    e.apply_profile(AgentProfile("t", "zoe", languages=("en",), max_active=1), 0)
    e.set_status("t", "amy", "online", 0, max_active=5)  # amy wins every tie (by name) unless language decides
    e.set_status("t", "zoe", "online", 0)
    assert e.agent("t", "zoe").languages == frozenset({"en"}) and e.agent("t", "zoe").max_active == 1
    assert e.enqueue("c1", "t", "u1", "default", 1, language="en")[0].agent == "zoe"
    assert e.enqueue("c2", "t", "u2", "default", 2, language="en")[0].agent == "amy"  # zoe is full: anyone
    e.finish("c1", 3)
    assert e.enqueue("c3", "t", "u3", "default", 4, language="fr")[0].agent == "zoe"  # nobody speaks it: least loaded
    e.finish("c3", 5)
    assert e.enqueue("c4", "t", "u4", "default", 6)[0].agent == "zoe"


def test_round_robin_takes_turns():
    e = engine(strategy="round_robin")
    for user in ("a", "b", "c"):
        e.set_status("t", user, "online", 0, max_active=10)
    picks = [e.enqueue(f"c{i}", "t", "u", "default", i)[0].agent for i in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_sticky_meets_the_same_agent_and_falls_back_after_the_wait():
    e = engine(strategy="sticky", sticky_wait_s=60)
    e.set_status("t", "ann", "online", 0, max_active=1)
    e.set_status("t", "ben", "online", 0, max_active=5)
    first = e.enqueue("c1", "t", "shopper", "default", 0)[0]
    e.finish("c1", 5)
    assert e.enqueue("c2", "t", "shopper", "default", 10)[0].agent == first.agent  # a returning shopper
    e.enqueue("x", "t", "someone", "default", 11)  # keeps ann busy
    busy = first.agent
    assert busy == "ann"
    e.finish("c2", 12)
    e.enqueue("fill", "t", "other", "default", 13)  # ann is full again
    assert e.enqueue("c3", "t", "shopper", "default", 20) == []  # waits for ann...
    late = e.dispatch("t", 81)
    assert [(a.conv_id, a.agent) for a in late] == [("c3", "ben")]  # ...then falls back


def test_manual_waits_until_an_agent_takes():
    e = engine(strategy="manual")
    e.set_status("t", "ann", "online", 0, max_active=1)
    assert e.enqueue("c1", "t", "u", "default", 0) == []
    assert e.take("t", "ann", "c1", 5).waited_s == 5
    with pytest.raises(RoutingError) as taken:
        e.take("t", "ann", "c1", 6)
    assert taken.value.code == "conflict"
    e.enqueue("c2", "t", "u2", "default", 7)
    with pytest.raises(RoutingError):
        e.take("t", "ann", "c2", 8)  # at her maximum


def test_skill_groups_route_to_their_agents():
    cfg = TenantRouting(groups=(SkillGroup("english", {"language": ("en",)}), SkillGroup("default")))
    e = RoutingEngine(RoutingConfig(default=cfg))
    assert cfg.group_for({"language": "en", "channel": "web"}) == "english"
    assert cfg.group_for({"language": "zh"}) == "default"
    e.set_status("t", "zh-agent", "online", 0, groups=frozenset({"default"}))
    assert e.enqueue("c1", "t", "u", "english", 0) == []
    e.set_status("t", "en-agent", "online", 1, groups=frozenset({"english"}))
    assert e.assignee("c1").user == "en-agent"
    with pytest.raises(RoutingError):
        e.set_status("t", "x", "online", 2, groups=frozenset({"nope"}))


def test_disconnected_agents_keep_their_conversations_for_the_grace_period():
    e = engine(grace_s=30)
    e.set_status("t", "ann", "online", 0)
    e.connected("t", "ann")
    e.enqueue("c1", "t", "u", "default", 0)
    e.enqueue("c2", "t", "u", "default", 0)
    e.disconnected("t", "ann", 100)
    assert e.expire(120) == []
    e.connected("t", "ann")  # back in time
    e.disconnected("t", "ann", 200)
    requeues = e.expire(231)
    assert sorted(r.conv_id for r in requeues) == ["c1", "c2"]
    e.enqueue("c0", "t", "u", "default", 232)
    for r in requeues:
        e.enqueue(r.conv_id, "t", "u", "default", 232, front=True)
    assert [w.conv_id for w in e.queued("t")][-1] == "c0"  # requeued ones are first in line


def test_conversations_put_in_front_are_served_in_the_order_they_were_put_there():
    """Messages left overnight go ahead of the day's queue, and among themselves first come first."""
    e = engine()
    e.enqueue("day", "t", "u0", "default", 0)
    for i, conv in enumerate(("left-at-20h", "left-at-22h", "left-at-23h"), start=1):
        e.enqueue(conv, "t", f"u{i}", "default", i, front=True)
    e.enqueue("morning", "t", "u9", "default", 9)
    assert [w.conv_id for w in e.queued("t")] == ["left-at-20h", "left-at-22h", "left-at-23h", "day", "morning"]
    assert [a.conv_id for a in e.set_status("t", "ann", "online", 10, max_active=1)] == ["left-at-20h"]


def test_lifecycle_table():
    assert next_stage("opened", "bot") == "bot"
    assert next_stage("bot", "handoff") == "queued"
    assert next_stage("resolved", "reopen") == "queued"
    with pytest.raises(IllegalTransition):
        next_stage("closed", "reopen")
    with pytest.raises(IllegalTransition):
        next_stage("bot", "assign")


class RoutingUnderChurn(RuleBasedStateMachine):
    """Random interleavings of everything that can happen: the invariants hold after each step."""

    def __init__(self):
        super().__init__()
        self.e = engine(strategy="least_loaded")
        self.now = 0.0
        self.convs = 0

    @rule(user=st.sampled_from(["a", "b", "c"]), status=st.sampled_from(["online", "away", "offline"]), cap=st.integers(0, 3))
    def status(self, user, status, cap):
        self.now += 1
        current = len(self.e.agent("t", user).active)  # lowering a maximum never evicts: keep it >= the load
        self.e.set_status("t", user, status, self.now, max_active=max(cap, current))

    @rule(front=st.booleans())
    def arrive(self, front):
        self.now += 1
        self.convs += 1
        self.e.enqueue(f"c{self.convs}", "t", "u", "default", self.now, front=front)

    @rule(data=st.data())
    def finish(self, data):
        if self.convs:
            self.e.finish(f"c{data.draw(st.integers(1, self.convs))}", self.now)

    @rule(user=st.sampled_from(["a", "b", "c"]), data=st.data())
    def take(self, user, data):
        if self.convs:
            try:
                self.e.take("t", user, f"c{data.draw(st.integers(1, self.convs))}", self.now)
            except RoutingError:
                pass

    @rule(user=st.sampled_from(["a", "b", "c"]))
    def drop(self, user):
        self.e.connected("t", user)
        self.e.disconnected("t", user, self.now)
        self.now += 100
        for r in self.e.expire(self.now):
            self.e.enqueue(r.conv_id, r.tenant, "u", "default", self.now, front=True)

    @invariant()
    def nobody_over_capacity_and_nothing_twice(self):
        assigned = [c for a in self.e.agents.values() for c in a.active]
        assert len(assigned) == len(set(assigned))  # never assigned twice
        assert set(assigned) == set(self.e.assigned)
        assert not set(assigned) & set(self.e.waiting)  # waiting or assigned, not both
        for agent in self.e.agents.values():
            assert len(agent.active) <= agent.max_active
        queued = [w.conv_id for q in self.e.queues.values() for w in q]
        assert sorted(queued) == sorted(self.e.waiting)

    @invariant()
    def nothing_waits_while_someone_could_take_it(self):
        for waiting in self.e.waiting.values():
            assert not any(a.can_take(waiting.group) for a in self.e.agents.values())


TestRoutingUnderChurn = RoutingUnderChurn.TestCase
TestRoutingUnderChurn.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
