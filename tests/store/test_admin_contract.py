"""The tenant-administration half of the StoreBackend contract: API keys, agent profiles, tenant
settings, and the conversation-list filters the REST API uses. Every backend in BACKENDS runs it
(a PostgreSQL backend joins by adding itself there)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.model import AgentProfile, ApiKey, CreateApiKey, RevokeApiKey, SaveAgent, SaveTenantSettings, SetStatus, SetTags, TenantSettings
from gateway.store import Conflict, NotFound, StoreBackend

from .test_backend_contract import apply_one, backend, conversation, create  # noqa: F401  (the fixture)


def key(key_id: str = "k1", tenant: str = "t1", created_at: int = 1_000) -> ApiKey:
    return ApiKey(key_id, tenant, "backend", ("admin", "read"), "ab" * 32, created_at)


def agent(user: str = "alice", tenant: str = "t1", **changes) -> AgentProfile:
    return replace(AgentProfile(tenant, user, "Alice", ("default", "vip"), ("zh", "en"), 3, False, 1_000, 1_000), **changes)


def test_an_api_key_is_stored_and_found_by_id(backend: StoreBackend) -> None:
    assert apply_one(backend, CreateApiKey(key())) == key()
    assert backend.api_key("k1") == key()
    assert backend.api_key("nope") is None


def test_an_api_key_id_is_created_once(backend: StoreBackend) -> None:
    apply_one(backend, CreateApiKey(key()))
    result = apply_one(backend, CreateApiKey(replace(key(), name="other")))
    assert isinstance(result, Conflict)
    assert backend.api_key("k1").name == "backend"


def test_api_keys_are_listed_per_tenant_oldest_first(backend: StoreBackend) -> None:
    backend.apply_batch([CreateApiKey(key("k2", created_at=2_000)), CreateApiKey(key("k1", created_at=3_000)), CreateApiKey(key("k0", "t2"))])
    assert [k.id for k in backend.api_keys("t1")] == ["k2", "k1"]
    assert [k.id for k in backend.api_keys("t2")] == ["k0"]
    assert backend.api_keys("t3") == []


def test_revoking_keeps_the_first_time_and_only_in_the_keys_tenant(backend: StoreBackend) -> None:
    apply_one(backend, CreateApiKey(key()))
    assert isinstance(apply_one(backend, RevokeApiKey("t2", "k1", 5_000)), NotFound)
    assert backend.api_key("k1").revoked_at == 0
    assert apply_one(backend, RevokeApiKey("t1", "k1", 5_000)).revoked_at == 5_000
    assert apply_one(backend, RevokeApiKey("t1", "k1", 6_000)).revoked_at == 5_000
    assert backend.api_key("k1").revoked_at == 5_000
    assert isinstance(apply_one(backend, RevokeApiKey("t1", "missing", 1)), NotFound)


def test_an_agent_is_created_once_and_updated_only_when_there(backend: StoreBackend) -> None:
    assert isinstance(apply_one(backend, SaveAgent(agent())), NotFound)
    assert apply_one(backend, SaveAgent(agent(), create=True)) == agent()
    assert isinstance(apply_one(backend, SaveAgent(agent(name="Again"), create=True)), Conflict)
    updated = agent(name="Alice Li", groups=("vip",), languages=(), max_active=0, disabled=True, updated_at=2_000)
    assert apply_one(backend, SaveAgent(updated)) == updated
    assert backend.agents("t1") == [updated]


def test_agents_are_listed_per_tenant_or_all(backend: StoreBackend) -> None:
    backend.apply_batch([SaveAgent(agent("bob"), create=True), SaveAgent(agent("alice"), create=True), SaveAgent(agent("carol", "t0"), create=True)])
    assert [a.user for a in backend.agents("t1")] == ["alice", "bob"]
    assert [(a.tenant, a.user) for a in backend.agents()] == [("t0", "carol"), ("t1", "alice"), ("t1", "bob")]
    assert backend.agents("t9") == []


def test_the_same_user_is_a_different_agent_in_another_tenant(backend: StoreBackend) -> None:
    apply_one(backend, SaveAgent(agent(), create=True))
    assert apply_one(backend, SaveAgent(agent(tenant="t2", name="Other"), create=True)).name == "Other"
    assert backend.agents("t1")[0].name == "Alice"


def test_tenant_settings_are_replaced_whole(backend: StoreBackend) -> None:
    apply_one(backend, SaveTenantSettings(TenantSettings("t1", '{"strategy": "round_robin"}', 1)))
    apply_one(backend, SaveTenantSettings(TenantSettings("t0", "{}", 1)))
    apply_one(backend, SaveTenantSettings(TenantSettings("t1", '{"bot": "none"}', 2)))
    assert backend.tenant_settings("t1") == [TenantSettings("t1", '{"bot": "none"}', 2)]
    assert [t.tenant for t in backend.tenant_settings()] == ["t0", "t1"]
    assert backend.tenant_settings("t9") == []


def test_list_filters_by_stage_assignee_channel_and_time(backend: StoreBackend) -> None:
    for i in range(4):
        create(backend, replace(conversation(f"c{i}", created_at=1_000 + i), channel="web" if i % 2 else "app"))
    apply_one(backend, SetStatus("c1", stage="assigned", assignee="alice"))
    apply_one(backend, SetStatus("c2", stage="assigned", assignee="bob"))
    ids = lambda **kw: [c.id for c in backend.list_conversations("t1", **kw)]  # noqa: E731
    assert ids(stage="assigned") == ["c2", "c1"]
    assert ids(assignee="alice") == ["c1"]
    assert ids(channel="web") == ["c3", "c1"]
    assert ids(since=1_002) == ["c3", "c2"]
    assert ids(since=1_001, before=1_003, stage="assigned", channel="web") == ["c1"]
    assert ids(stage="queued") == []
    backend.apply_batch([SetTags("c0", ("vip", "refund")), SetTags("c3", ("vip",)), SetTags("c2", ("refund",))])
    assert ids(tag="vip") == ["c3", "c0"]
    assert ids(tag="refund", channel="app") == ["c2", "c0"]
    assert ids(tag="vip", before=1_003) == ["c0"]
    assert ids(tag="missing") == []


@pytest.mark.parametrize("op", [CreateApiKey(key()), SaveAgent(agent(), create=True)])
def test_an_admin_op_in_a_batch_fails_alone(backend: StoreBackend, op) -> None:
    apply_one(backend, op)
    results = backend.apply_batch([op, SaveTenantSettings(TenantSettings("t1", "{}", 1))])
    assert isinstance(results[0], Conflict) and results[1] == TenantSettings("t1", "{}", 1)
