"""A supervisor's client token on the REST API (gateway/http/operations.py, ``token_roles``): the
console's Settings tab manages the shop's agents, business hours, routing and bot with it, so no
API key reaches a browser. It acts for the token's own tenant, on exactly these operations; other
roles' tokens are refused (403), and so is every other operation (401)."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import trio

from gateway.auth import mint_token
from gateway.http.openapi import document
from gateway.http.operations import SUPERVISOR, TOKEN_ROLES, Call, Operation
from gateway.http.v1 import ALL

from ...support import token
from ..conftest import client, new_key, problem
from .test_bot_knowledge_base import SHOP

CONSOLE_SETTINGS = {
    ("GET", "/v1/agents"), ("GET", "/v1/agents/{user}"), ("POST", "/v1/agents"), ("PATCH", "/v1/agents/{user}"),
    ("GET", "/v1/routing"), ("PUT", "/v1/routing"),
    ("GET", "/v1/bot/knowledge-base"), ("PUT", "/v1/bot/knowledge-base"), ("DELETE", "/v1/bot/knowledge-base"), ("POST", "/v1/bot/try"),
    ("GET", "/v1/business-hours"), ("PUT", "/v1/business-hours"), ("DELETE", "/v1/business-hours"),
}
CONSOLE_REPORTS = {("GET", "/v1/reports/summary")}
TAKE_TOKENS = [op for op in ALL if op.token_roles]
TAKE_KEYS_ONLY = [op for op in ALL if not op.token_roles]


def concrete(path: str) -> str:
    """A path of the operation with its parameters filled in."""
    return path.replace("{user}", "li").replace("{key_id}", "0123456789abcdef").replace("{webhook_id}", "wh1").replace("{conv_id}", "c1") \
        .replace("{seq}", "1").replace("{customer_id}", "c1").replace("{merge_id}", "m1").replace("{order_id}", "o1").replace("{product_id}", "p1")


async def nothing(call: Call) -> tuple[int, None]:
    return 204, None


def test_exactly_the_consoles_operations_take_a_supervisors_token_and_the_openapi_document_says_so():
    assert {(op.method, op.path) for op in TAKE_TOKENS} == CONSOLE_SETTINGS | CONSOLE_REPORTS
    assert all(op.token_roles == SUPERVISOR == TOKEN_ROLES and not op.backend_only for op in TAKE_TOKENS)
    assert {(op.method, op.path) for op in ALL if op.backend_only} >= {("POST", "/v1/apikeys"), ("POST", "/v1/tokens"), ("POST", "/v1/webhooks"), ("PATCH", "/v1/webhooks/{webhook_id}")}
    # a token acts with the operation's own scope: read where read keys may, admin where only admins may
    assert {(op.method, op.path): op.token_scope for op in TAKE_TOKENS if op.path.startswith("/v1/agents")} == {
        ("GET", "/v1/agents"): "read", ("GET", "/v1/agents/{user}"): "read", ("POST", "/v1/agents"): "admin", ("PATCH", "/v1/agents/{user}"): "admin",
    }
    paths = document(ALL)["paths"]
    for op in ALL:
        described = paths[op.path][op.method.lower()]
        assert described.get("x-kefu-token-roles") == (["supervisor"] if op.token_roles else None), (op.method, op.path)
        assert ({"clientToken": []} in described["security"]) == bool(op.token_roles)


@pytest.mark.parametrize("refused", [
    dict(token_roles=frozenset({"agent"})),  # an agent's token never stands for a key
    dict(token_roles=SUPERVISOR, backend_only=True),  # credentials are an API key's business
    dict(token_roles=SUPERVISOR, scopes=frozenset({"ingest"})),  # a token acts as read or admin, nothing between
    dict(token_roles=SUPERVISOR, scopes=frozenset({"read", "bot"})),
])
def test_an_operation_that_would_give_a_token_more_is_refused_when_it_is_declared(refused):
    declared = {"scopes": frozenset(), **refused}
    with pytest.raises(ValueError):
        Operation("PUT", "/v1/x", nothing, "x", **declared)


async def test_a_supervisors_token_manages_its_own_tenants_settings_as_an_admin_key_then_reads_them(start_gateway, caplog):
    caplog.set_level(logging.INFO, logger="kefu.http")
    gw = await start_gateway(routing="on")  # the built-in bot, for trying it
    with trio.fail_after(60):
        async with client(gw, token("boss", "supervisor", name="张主管")) as boss, client(gw, await new_key(gw)) as admin, \
                client(gw, await new_key(gw, tenant="shop2")) as elsewhere, client(gw, token("boss", "supervisor", tenant="shop2")) as other_boss:
            # agents: added, changed, disabled; the API key reads what the supervisor did
            created = await boss.post("/v1/agents", json={"user": "li", "name": "李雷", "languages": ["zh"], "max_active": 2})
            assert created.status_code == 201, created.text
            assert (await admin.get("/v1/agents/li")).json()["max_active"] == 2
            changed = await boss.patch("/v1/agents/li", json={"max_active": 4, "disabled": True})
            assert changed.status_code == 200, changed.text
            seen = (await admin.get("/v1/agents/li")).json()
            assert (seen["name"], seen["max_active"], seen["disabled"]) == ("李雷", 4, True)
            assert [a["user"] for a in (await boss.get("/v1/agents")).json()["agents"]] == ["li"]
            assert (await boss.get("/v1/agents/li")).json() == seen
            assert "exists" in problem(await boss.post("/v1/agents", json={"user": "li"}), 409, "conflict")["detail"]
            refused = problem(await boss.post("/v1/agents", json={"user": "wu", "groups": ["vip"]}), 422, "bad_request")
            assert refused["errors"] == [{"field": "groups", "message": "unknown skill groups ['vip']"}]
            # the tenant is the token's: never one named in the request, and another tenant's agents are out of reach
            assert problem(await boss.post("/v1/agents", json={"user": "x", "tenant": "shop2"}), 422, "bad_request")["errors"][0]["field"] == "tenant"
            problem(await elsewhere.get("/v1/agents/li"), 404, "not_found")
            problem(await other_boss.patch("/v1/agents/li", json={"max_active": 9}), 404, "not_found")
            assert (await other_boss.get("/v1/agents")).json() == {"agents": []}

            # routing: replaced, refused with the field named, read back by the key
            routing = {"strategy": "round_robin", "groups": [{"name": "vip", "match": {"channel": ["app"]}}, {"name": "default"}]}
            put = await boss.put("/v1/routing", json=routing)
            assert put.status_code == 200 and put.json()["source"] == "api", put.text
            stored = (await admin.get("/v1/routing")).json()
            assert stored["source"] == "api" and stored["settings"]["strategy"] == "round_robin"
            assert problem(await boss.put("/v1/routing", json={"strategy": "fastest"}), 422, "bad_request")["errors"][0]["field"] == "strategy"
            assert (await boss.get("/v1/routing")).json() == stored
            assert (await elsewhere.get("/v1/routing")).json()["source"] == "default"
            assert (await boss.patch("/v1/agents/li", json={"groups": ["vip"]})).json()["groups"] == ["vip"]  # the new group exists now

            # business hours: set, read by the key, removed
            hours = {"utc_offset_min": 480, "days": [0, 1, 2, 3, 4, 5, 6], "open": "00:00", "close": "24:00"}
            set_ = await boss.put("/v1/business-hours", json=hours)
            assert set_.status_code == 200 and set_.json()["open_now"] is True, set_.text
            assert (await admin.get("/v1/business-hours")).json()["hours"] == hours
            assert "close" in problem(await boss.put("/v1/business-hours", json={**hours, "open": "19:00", "close": "09:00"}), 422, "bad_request")["detail"]
            assert (await elsewhere.get("/v1/business-hours")).json()["hours"] is None
            assert (await boss.request("DELETE", "/v1/business-hours")).json() == {"hours": None, "open_now": True, "back_at": None}
            assert (await admin.get("/v1/business-hours")).json()["hours"] is None

            # the bot: tried in Chinese, its knowledge base replaced, tried again, back to the sample
            tried = (await boss.post("/v1/bot/try", json={"text": "怎么退货"})).json()
            assert tried["intent"] == "returns" and tried["answer"] and tried["language"] == "zh"
            put = await boss.put("/v1/bot/knowledge-base", json=SHOP)
            assert put.status_code == 200, put.text
            assert (await admin.get("/v1/bot/knowledge-base")).json()["source"] == "api"
            assert (await boss.post("/v1/bot/try", json={"text": "这茶开封后能放多久"})).json()["intent"] == "shelf_life"
            assert (await elsewhere.get("/v1/bot/knowledge-base")).json()["source"] == "default"
            assert (await boss.request("DELETE", "/v1/bot/knowledge-base")).status_code == 204
            assert (await admin.get("/v1/bot/knowledge-base")).json()["source"] == "default"

    said = [r.getMessage() for r in caplog.records if " by supervisor " in r.getMessage()]
    assert "PATCH /v1/agents/li by supervisor boss of tenant shop1 (disabled=True, max_active=4): 200" in said
    assert any(line.startswith("PUT /v1/routing by supervisor boss of tenant shop1 (groups, strategy='round_robin'): 200") for line in said)
    assert any(line.startswith("DELETE /v1/bot/knowledge-base by supervisor boss of tenant shop1: 204") for line in said)
    assert not any(line.startswith(("GET ", "POST /v1/bot/try")) for line in said)  # reads change nothing: not logged


def tampered(valid: str, **claims) -> str:
    """``valid`` with claims changed and its signature kept (no longer theirs)."""
    header, payload, signature = valid.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_other_tokens_bad_tokens_and_every_other_operation_are_refused_and_change_nothing(start_gateway):
    gw = await start_gateway()
    body = {"json": {}}  # refused before the body is read
    with trio.fail_after(30):
        for role in ("agent", "shopper", "bot"):
            async with client(gw, token("x", role)) as someone:
                for op in TAKE_TOKENS:
                    doc = problem(await someone.request(op.method, concrete(op.path), **body), 403, "forbidden")
                    assert f"role {role}" in doc["detail"], (op.method, op.path)
        boss = token("boss", "supervisor")
        invalid = (
            token("boss", "supervisor", ttl_s=-60),  # expired
            tampered(boss, tenant="shop2"),  # another tenant, the signature kept
            tampered(token("x", "agent"), role="supervisor"),  # promoted
            mint_token("another-secret-that-is-long-enough-for-hs256", tenant="shop1", user="boss", role="supervisor", channel="web"),
            "not-a-token",
        )
        for bad in invalid:
            async with client(gw, bad) as stranger:
                for op in TAKE_TOKENS:
                    problem(await stranger.request(op.method, concrete(op.path), **body), 401, "unauthenticated")
        async with client(gw, boss) as supervisor:
            for op in TAKE_KEYS_ONLY:  # keys, tokens, webhooks, ingest, customers, conversations, …: API keys only
                problem(await supervisor.request(op.method, concrete(op.path), **body), 401, "unauthenticated")
            minted = await supervisor.post("/v1/tokens", json={"user": "wangli", "role": "agent"})
            problem(minted, 401, "unauthenticated")  # no impersonation from a browser
        async with client(gw, await new_key(gw)) as admin:
            assert (await admin.get("/v1/agents")).json() == {"agents": []}
            assert (await admin.get("/v1/apikeys")).json()["keys"][0]["name"] == "test"  # the one made here, no other
            assert (await admin.get("/v1/webhooks")).json() == {"webhooks": []}
            assert (await admin.get("/v1/routing")).json()["source"] == "default"


async def test_a_supervisors_token_has_its_own_rate_per_tenant_and_user(start_gateway):
    gw = await start_gateway(api_rate_per_second=0.1)  # a burst of 2, then one every 10 s
    with trio.fail_after(10):
        async with client(gw, token("boss", "supervisor")) as busy, client(gw, token("boss", "supervisor", tenant="shop2")) as namesake:
            assert [(await busy.get("/v1/routing")).status_code for _ in range(2)] == [200, 200]
            problem(await busy.get("/v1/routing"), 429, "rate_limited")
            assert (await namesake.get("/v1/routing")).status_code == 200  # the same user name in another tenant
