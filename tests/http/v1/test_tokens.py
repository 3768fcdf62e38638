"""POST /v1/tokens: a shop's backend mints client tokens that the WebSocket accepts."""

from __future__ import annotations

import json

import trio

from ...support import connect
from ..conftest import client, new_key, problem


async def test_a_minted_token_opens_a_websocket_as_that_user(api):
    with trio.fail_after(10):
        minted = await api.post("/v1/tokens", json={"user": "u-42", "role": "shopper", "channel": "app", "name": "王丽", "ttl_s": 600})
        assert minted.status_code == 201, minted.text
        token = minted.json()
        assert token["tenant"] == "shop1" and token["user"] == "u-42" and token["expires_at"] > 0
        async with connect(api.gateway.url, token["token"]) as shopper:
            me = shopper.hello["user"]
            assert (me["id"], me["tenant"], me["role"], me["channel"], me["name"]) == ("u-42", "shop1", "shopper", "app", "王丽")
            opened = await shopper.ok("open", subject="order 7")
            assert opened["conv"]["tenant"] == "shop1"


async def test_an_ingest_key_mints_shopper_and_bot_tokens_but_not_staff_ones(api):
    with trio.fail_after(10):
        async with client(api.gateway, await new_key(api.gateway, scopes=("ingest",))) as ingest:
            assert (await ingest.post("/v1/tokens", json={"user": "s1", "role": "shopper"})).status_code == 201
            assert (await ingest.post("/v1/tokens", json={"user": "b1", "role": "bot"})).status_code == 201
            for role in ("agent", "supervisor"):
                doc = problem(await ingest.post("/v1/tokens", json={"user": "a1", "role": role}), 403, "forbidden")
                assert "admin" in doc["detail"]
        assert (await api.post("/v1/tokens", json={"user": "a1", "role": "agent"})).status_code == 201


async def test_token_requests_are_validated_field_by_field(api):
    with trio.fail_after(10):
        for body, field in (({"user": "u", "role": "root"}, "role"), ({"user": "", "role": "shopper"}, "user"),
                            ({"user": "u", "role": "shopper", "ttl_s": 10 ** 9}, "ttl_s"), ({"user": "u", "role": "shopper", "tenant": "shop2"}, "tenant"),
                            ({"role": "shopper"}, "user"), ({"user": 7, "role": "shopper"}, "user")):
            doc = problem(await api.post("/v1/tokens", json=body), 422, "bad_request")
            assert [e["field"] for e in doc["errors"]] == [field] and f"`{field}`" in doc["detail"], doc


async def test_tokens_are_signed_with_the_tenants_own_secret(start_gateway, tmp_path):
    secrets_file = tmp_path / "tenants.json"
    secrets_file.write_text(json.dumps({"shop9": "shop9-secret-that-is-long-enough-for-hs256"}))
    gw = await start_gateway(tenant_secrets_file=str(secrets_file), tenants="shop1")
    with trio.fail_after(10):
        async with client(gw, await new_key(gw, tenant="shop9")) as http:
            token = (await http.post("/v1/tokens", json={"user": "u", "role": "shopper"})).json()["token"]
            async with connect(gw.url, token) as shopper:
                assert shopper.hello["user"]["tenant"] == "shop9"
        async with client(gw, await new_key(gw, tenant="shop5")) as unserved:  # not in --tenants
            problem(await unserved.post("/v1/tokens", json={"user": "u", "role": "shopper"}), 403, "forbidden")
