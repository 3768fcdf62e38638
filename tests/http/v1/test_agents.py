"""/v1/agents: persisted agent settings, surviving restarts, used by routing as defaults."""

from __future__ import annotations

import json

import trio

from gateway.app import serve

from ...conftest import make_config
from ...support import connect, token
from ..conftest import client, new_key, problem, stop


async def test_create_update_list_and_disable(api):
    with trio.fail_after(10):
        created = await api.post("/v1/agents", json={"user": "wangli", "name": "王丽", "languages": ["zh", "en"], "max_active": 3})
        assert created.status_code == 201, created.text
        agent = created.json()
        assert (agent["name"], agent["groups"], agent["languages"], agent["max_active"], agent["disabled"]) == ("王丽", ["default"], ["zh", "en"], 3, False)
        assert agent["presence"] == {"status": "offline", "connections": 0, "active": 0}
        problem(await api.post("/v1/agents", json={"user": "wangli"}), 409, "conflict")
        updated = (await api.patch("/v1/agents/wangli", json={"max_active": 8, "disabled": True})).json()
        assert (updated["name"], updated["max_active"], updated["disabled"]) == ("王丽", 8, True)
        assert updated["updated_at"] >= agent["updated_at"] and updated["created_at"] == agent["created_at"]
        await api.post("/v1/agents", json={"user": "chen"})
        assert [a["user"] for a in (await api.get("/v1/agents")).json()["agents"]] == ["chen", "wangli"]
        assert (await api.get("/v1/agents/wangli")).json() == updated
        problem(await api.patch("/v1/agents/nobody", json={"max_active": 1}), 404, "not_found")


async def test_groups_must_be_the_tenants_skill_groups(api):
    with trio.fail_after(10):
        doc = problem(await api.post("/v1/agents", json={"user": "x", "groups": ["vip"]}), 422, "bad_request")
        assert doc["errors"][0]["field"] == "groups" and "vip" in doc["detail"]
        await api.put("/v1/routing", json={"groups": [{"name": "vip", "match": {"channel": ["app"]}}, {"name": "default"}]})
        assert (await api.post("/v1/agents", json={"user": "x", "groups": ["vip"]})).json()["groups"] == ["vip"]
        assert (await api.get("/v1/agents")).json()["agents"][0]["user"] == "x"  # the refused create left nothing


async def test_agents_survive_a_restart(nursery, tmp_path):
    config = make_config(tmp_path, store="sqlite")
    first = await nursery.start(serve, config)
    key = await new_key(first)
    with trio.fail_after(10):
        async with client(first, key) as http:
            await http.post("/v1/agents", json={"user": "wangli", "name": "王丽", "languages": ["zh"], "max_active": 2})
            await http.patch("/v1/agents/wangli", json={"disabled": True})
            before = (await http.get("/v1/agents")).json()
    await stop(first)
    again = await nursery.start(serve, config)
    try:
        with trio.fail_after(10):
            async with client(again, key) as http:
                assert (await http.get("/v1/agents")).json() == before
                assert before["agents"][0]["disabled"] is True and before["agents"][0]["max_active"] == 2
    finally:
        await stop(again)


async def routed(start_gateway, tmp_path, **default):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none", **default}}))
    return await start_gateway(routing="on", routing_file=str(path), store="sqlite")


async def test_routing_takes_an_agents_persisted_settings_as_defaults(start_gateway, tmp_path):
    gw = await routed(start_gateway, tmp_path, groups=[{"name": "vip", "match": {"channel": ["miniprogram"]}}, {"name": "default"}])
    with trio.fail_after(15):
        async with client(gw, await new_key(gw)) as http:
            await http.post("/v1/agents", json={"user": "wangli", "name": "王丽", "groups": ["vip"], "max_active": 1})
            async with connect(gw.url, token("wangli", "agent", name="token name"), resume={}) as agent:
                status = await agent.ok("status", status="online")  # no max, no groups: the stored ones
                assert (status["max"], status["groups"]) == (1, ["vip"])
                presence = (await http.get("/v1/agents/wangli")).json()["presence"]
                assert presence == {"status": "online", "connections": 1, "active": 0}
                async with connect(gw.url, token("alice", channel="miniprogram"), resume={}) as alice:
                    conv = (await alice.ok("open"))["conv"]["id"]
                    offer = await agent.next("assigned")
                    assert offer["conv"]["id"] == conv and offer["conv"]["group"] == "vip"
                    assigned = await alice.next("msg", conv=conv, role="system")
                    while assigned["body"]["event"] != "assigned":
                        assigned = await alice.next("msg", conv=conv, role="system")
                    assert "王丽" in assigned["body"]["text"]  # the stored display name, not the token's
                # a change through the API applies to the live agent at once
                await http.patch("/v1/agents/wangli", json={"max_active": 4})
                assert (await agent.ok("status", status="online"))["max"] == 4
                await http.patch("/v1/agents/wangli", json={"disabled": True})
                assert (await http.get("/v1/agents/wangli")).json()["presence"]["status"] == "offline"
                refused = await agent.request("status", status="online")
                assert refused["t"] == "error" and refused["code"] == "forbidden"
