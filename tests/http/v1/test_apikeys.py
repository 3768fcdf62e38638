"""API keys: hashed, scoped, per tenant, created and revoked through the API and the CLI."""

from __future__ import annotations

import sys

import pytest
import trio

from gateway import cli
from gateway.http import keys

from ..conftest import client, new_key, problem


async def test_a_key_made_through_the_api_works_and_its_secret_is_shown_once(api):
    with trio.fail_after(10):
        created = await api.post("/v1/apikeys", json={"name": "crm sync", "scopes": ["read", "ingest"]})
        assert created.status_code == 201, created.text
        made = created.json()
        assert made["scopes"] == ["ingest", "read"] and made["revoked_at"] is None and made["key"].startswith("kefu_")
        stored = await api.gateway.node.store.api_key(made["id"])
        assert stored.secret_hash == keys.digest(keys.parse(made["key"])[1]) and made["key"] not in repr(stored)
        listed = (await api.get("/v1/apikeys")).json()["keys"]
        assert {k["id"] for k in listed} >= {made["id"]} and all("key" not in k for k in listed)
        async with client(api.gateway, made["key"]) as other:
            assert (await other.get("/v1/agents")).status_code == 200


async def test_missing_malformed_unknown_and_revoked_keys_are_401(api):
    with trio.fail_after(10):
        async with client(api.gateway) as anonymous:
            doc = problem(await anonymous.get("/v1/agents"), 401, "unauthenticated")
            assert "Bearer" in doc["detail"]
        made = (await api.post("/v1/apikeys", json={"name": "temp", "scopes": ["read"]})).json()
        forged = made["key"][:-4] + ("AAAA" if not made["key"].endswith("AAAA") else "BBBB")
        for bad in ("nonsense", "kefu_short_x", forged):
            async with client(api.gateway, bad) as http:
                response = await http.get("/v1/agents")
                problem(response, 401, "unauthenticated")
                assert response.headers["www-authenticate"].startswith("Bearer")
        async with client(api.gateway, made["key"]) as http:
            assert (await http.get("/v1/agents")).status_code == 200
            revoked = await api.delete(f"/v1/apikeys/{made['id']}")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
            problem(await http.get("/v1/agents"), 401, "unauthenticated")
    assert api.gateway.registry.get_sample_value("kefu_http_refusals_total", {"code": "unauthenticated", "status": "401"}) == 5


@pytest.mark.parametrize(
    "scopes, allowed, refused",
    [
        (("read",), [("GET", "/v1/agents"), ("GET", "/v1/routing"), ("GET", "/v1/conversations")], [("GET", "/v1/apikeys"), ("POST", "/v1/agents"), ("POST", "/v1/tokens")]),
        (("ingest",), [("POST", "/v1/tokens")], [("GET", "/v1/agents"), ("POST", "/v1/apikeys"), ("PUT", "/v1/routing")]),
        (("bot",), [("GET", "/v1/conversations")], [("POST", "/v1/tokens"), ("GET", "/v1/agents"), ("PATCH", "/v1/agents/alice")]),
    ],
)
async def test_scopes_decide_which_calls_a_key_may_make(api, scopes, allowed, refused):
    bodies = {"/v1/tokens": {"user": "u1", "role": "shopper"}, "/v1/agents": {"user": "zed"}, "/v1/apikeys": {"name": "x", "scopes": ["read"]},
              "/v1/routing": {}, "/v1/agents/alice": {"max_active": 1}}
    with trio.fail_after(10):
        async with client(api.gateway, await new_key(api.gateway, scopes=scopes)) as http:
            for method, path in allowed:
                response = await http.request(method, path, json=bodies.get(path) if method != "GET" else None)
                assert response.status_code in (200, 201), (method, path, response.text)
            for method, path in refused:
                doc = problem(await http.request(method, path, json=bodies.get(path) if method != "GET" else None), 403, "forbidden")
                assert "scope" in doc["detail"]
        assert (await api.get("/v1/agents")).json()["agents"] == []  # the refused POST created nothing


async def test_every_call_is_scoped_to_its_keys_tenant(api):
    with trio.fail_after(10):
        async with client(api.gateway, await new_key(api.gateway, tenant="shop2")) as other:
            assert (await other.post("/v1/agents", json={"user": "alice", "name": "Shop2 Alice"})).status_code == 201
            made = (await other.post("/v1/apikeys", json={"name": "theirs", "scopes": ["read"]})).json()
            assert made["id"] not in {k["id"] for k in (await api.get("/v1/apikeys")).json()["keys"]}
            problem(await api.delete(f"/v1/apikeys/{made['id']}"), 404, "not_found")
            assert (await other.get("/v1/apikeys")).json()["keys"][-1]["revoked_at"] is None
        assert (await api.get("/v1/agents")).json()["agents"] == []
        problem(await api.get("/v1/agents/alice"), 404, "not_found")
        assert (await api.post("/v1/agents", json={"user": "alice"})).status_code == 201  # the same id, another tenant


def test_the_cli_creates_lists_and_revokes_keys(tmp_path, capsys):
    def kefu(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(["apikey", *args, "--data-dir", str(tmp_path)])
        except SystemExit as exc:
            code = 1 if exc.code else 0
            print(exc.code, file=sys.stderr)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, secret, _ = kefu("create", "--tenant", "shop1", "--name", "ops", "--scopes", "admin,read")
    key_id, _ = keys.parse(secret.strip())
    code, listed, _ = kefu("list", "--tenant", "shop1")
    assert listed.split("\t")[:3] == [key_id, "valid", "admin,read"] and secret.strip() not in listed
    code, _, err = kefu("revoke", "--tenant", "shop2", key_id)
    assert code == 1 and "not found" in err
    assert kefu("revoke", "--tenant", "shop1", key_id)[0] == 0
    assert "\trevoked\t" in kefu("list", "--tenant", "shop1")[1]
    code, _, err = kefu("create", "--tenant", "shop1", "--name", "x", "--scopes", "root")
    assert code == 1 and "scopes" in err


async def test_a_key_from_the_cli_opens_the_api_of_a_running_gateway(nursery, tmp_path):
    from ...conftest import make_config
    from gateway.app import serve

    running = await nursery.start(serve, make_config(tmp_path, store="sqlite"))
    try:
        made = await trio.run_process(
            [sys.executable, "-m", "gateway", "apikey", "create", "--tenant", "shop1", "--name", "n", "--scopes", "read", "--data-dir", str(tmp_path / "data")],
            capture_stdout=True, capture_stderr=True,
        )
        with trio.fail_after(10):
            async with client(running, made.stdout.decode().strip()) as http:
                assert (await http.get("/v1/agents")).status_code == 200
    finally:
        running.node.stop()
        with trio.fail_after(10):
            await running.node.stopped()
