"""/v1/routing: a tenant's routing settings through the API, persisted and in force at once."""

from __future__ import annotations

import json
from dataclasses import fields

import trio

from gateway.app import serve
from gateway.http.v1.routing import RoutingSettings
from gateway.routing.config import TenantRouting

from ...conftest import make_config
from ...support import connect, token
from ..conftest import client, new_key, problem, stop


def test_the_api_model_covers_every_routing_setting_but_the_knowledge_base():
    assert set(RoutingSettings.model_fields) == {f.name for f in fields(TenantRouting)} - {"knowledge_base"}


async def test_get_shows_defaults_then_put_replaces_and_persists(nursery, tmp_path):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none"}, "tenants": {"shop1": {"strategy": "round_robin", "bot": "none"}}}))
    config = make_config(tmp_path, store="sqlite", routing="on", routing_file=str(path))
    first = await nursery.start(serve, config)
    key = await new_key(first)
    with trio.fail_after(10):
        async with client(first, key) as http:
            got = (await http.get("/v1/routing")).json()
            assert (got["source"], got["settings"]["strategy"], got["settings"]["bot"]) == ("file", "round_robin", "none")
            put = await http.put("/v1/routing", json={"strategy": "manual", "bot": "none", "groups": [{"name": "vip", "match": {"channel": ["app"]}}, {"name": "default"}]})
            assert put.status_code == 200, put.text
            assert put.json()["source"] == "api" and put.json()["settings"]["strategy"] == "manual"
            assert put.json()["settings"]["fallback"] == "least_loaded"  # left out: the default, not the file's
    await stop(first)
    again = await nursery.start(serve, config)
    try:
        with trio.fail_after(10):
            async with client(again, key) as http:
                got = (await http.get("/v1/routing")).json()
                assert got["source"] == "api" and [g["name"] for g in got["settings"]["groups"]] == ["vip", "default"]
                assert again.node.routing.config.for_tenant("shop1").strategy == "manual"  # stored settings win over the file
    finally:
        await stop(again)


async def test_new_settings_route_the_next_conversation(start_gateway, tmp_path):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none"}}))
    gw = await start_gateway(routing="on", routing_file=str(path))
    with trio.fail_after(15):
        async with client(gw, await new_key(gw)) as http:
            async with connect(gw.url, token("alice"), resume={}) as alice:
                conv = (await alice.ok("open"))["conv"]["id"]
                assert (await alice.next("msg", conv=conv, role="system"))["body"]["group"] == "default"
                settings = {"bot": "none", "groups": [{"name": "vip", "match": {"channel": ["app"]}}, {"name": "default"}]}
                assert (await http.put("/v1/routing", json=settings)).status_code == 200
                conv = (await alice.ok("open"))["conv"]["id"]
                assert (await alice.next("msg", conv=conv, role="system"))["body"]["group"] == "vip"


async def test_bad_settings_are_refused_naming_the_setting_and_change_nothing(api):
    with trio.fail_after(10):
        cases = [
            ({"strategy": "fastest"}, "strategy"),
            ({"knowledge_base": "/etc/passwd"}, "knowledge_base"),
            ({"groups": []}, "groups"),
            ({"groups": [{"name": "a", "match": {"mood": ["x"]}}]}, "groups.0.match.mood.[key]"),
            ({"default_max_active": "5"}, "default_max_active"),
            ({"grace_s": -1}, "grace_s"),
        ]
        for body, field in cases:
            doc = problem(await api.put("/v1/routing", json=body), 422, "bad_request")
            assert doc["errors"][0]["field"] == field, doc
        doc = problem(await api.put("/v1/routing", json={"groups": [{"name": "a"}, {"name": "a"}]}), 422, "bad_request")
        assert "unique" in doc["detail"]
        assert (await api.get("/v1/routing")).json()["source"] == "default"


async def test_with_routing_off_the_stored_settings_are_still_kept_and_shown(nursery, tmp_path):
    config = make_config(tmp_path, store="sqlite", routing="off")
    first = await nursery.start(serve, config)
    key = await new_key(first)
    with trio.fail_after(10):
        async with client(first, key) as http:
            await http.put("/v1/routing", json={"groups": [{"name": "vip"}, {"name": "default"}]})
    await stop(first)
    again = await nursery.start(serve, config)
    try:
        with trio.fail_after(10):
            async with client(again, key) as http:
                got = (await http.get("/v1/routing")).json()
                assert got["source"] == "api" and [g["name"] for g in got["settings"]["groups"]] == ["vip", "default"]
                assert (await http.post("/v1/agents", json={"user": "a", "groups": ["vip"]})).status_code == 201
    finally:
        await stop(again)
