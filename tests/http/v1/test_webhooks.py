"""/v1/webhooks: subscriptions created (the secret shown once), listed, pinged and deleted."""

from __future__ import annotations

import trio

from gateway.webhooks import verify

from ...webhooks.conftest import receiver  # noqa: F401  (the fixture)
from ..conftest import client, new_key, problem


async def test_a_webhook_is_created_listed_pinged_and_deleted(start_gateway, receiver):  # noqa: F811
    gw = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    async with client(gw, await new_key(gw)) as api:
        created = await api.post("/v1/webhooks", json={"url": receiver.url + "/hook", "events": ["message.created", "conversation.resolved"]})
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["id"].startswith("wh_") and hook["secret"].startswith("whsec_") and hook["description"] == ""
        listed = (await api.get("/v1/webhooks")).json()["webhooks"]
        assert listed == [{**{k: v for k, v in hook.items() if k != "secret"}, "status": None}]  # never the secret again; nothing failed yet

        pinged = await api.post(f"/v1/webhooks/{hook['id']}/ping")
        assert pinged.status_code == 200 and pinged.json() == {"delivered": True, "status": 200, "reason": None, "detail": ""}
        (got,) = await receiver.wait_for(1)
        assert got.doc["event"] == "ping" and got.doc["data"] == {"webhook": hook["id"]}
        assert verify(hook["secret"], got.body, got.headers["kefu-signature"])

        receiver.answers = [500]
        failed = (await api.post(f"/v1/webhooks/{hook['id']}/ping")).json()
        assert failed == {"delivered": False, "status": 500, "reason": "status_5xx", "detail": "answered 500"}

        changed = await api.patch(f"/v1/webhooks/{hook['id']}", json={"events": ["*"], "description": "客服事件"})
        assert changed.status_code == 200 and changed.json()["events"] == ["*"] and changed.json()["url"] == hook["url"], changed.text
        problem(await api.patch(f"/v1/webhooks/{hook['id']}", json={"events": ["nope"]}), 422, "bad_request")
        problem(await api.patch(f"/v1/webhooks/{hook['id']}", json={"secret": "mine"}), 422, "bad_request")  # not changeable
        receiver.answers = []
        assert (await api.post(f"/v1/webhooks/{hook['id']}/ping")).json()["delivered"] is True
        assert verify(hook["secret"], receiver.got[-1].body, receiver.got[-1].headers["kefu-signature"])  # the secret stayed
        assert (await api.get("/v1/webhooks")).json()["webhooks"][0]["description"] == "客服事件"
        assert (await api.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
        assert (await api.get("/v1/webhooks")).json() == {"webhooks": []}
        problem(await api.delete(f"/v1/webhooks/{hook['id']}"), 404, "not_found")
        problem(await api.post(f"/v1/webhooks/{hook['id']}/ping"), 404, "not_found")
        problem(await api.patch(f"/v1/webhooks/{hook['id']}", json={"description": "x"}), 404, "not_found")


async def test_bad_webhooks_are_refused_naming_the_problem(start_gateway):
    gw = await start_gateway()  # private addresses not allowed (the default)
    async with client(gw, await new_key(gw)) as api, client(gw, await new_key(gw, scopes=("read",))) as reader:
        doc = problem(await api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]}), 422, "bad_request")
        assert "not a public address" in doc["detail"]
        doc = problem(await api.post("/v1/webhooks", json={"url": "https://shop.example.com/hook", "events": ["message.deleted"]}), 422, "bad_request")
        assert "message.deleted" in doc["detail"]
        problem(await api.post("/v1/webhooks", json={"url": "ftp://shop.example.com/", "events": ["*"]}), 422, "bad_request")
        problem(await api.post("/v1/webhooks", json={"url": "https://shop.example.com/", "events": []}), 422, "bad_request")
        problem(await api.post("/v1/webhooks", content=b"{not json", headers={"content-type": "application/json"}), 400, "bad_request")
        problem(await reader.post("/v1/webhooks", json={"url": "https://shop.example.com/", "events": ["*"]}), 403, "forbidden")
        problem(await reader.get("/v1/webhooks"), 403, "forbidden")
        for i in range(20):
            assert (await api.post("/v1/webhooks", json={"url": f"https://shop.example.com/{i}", "events": ["*"]})).status_code == 201
        problem(await api.post("/v1/webhooks", json={"url": "https://shop.example.com/21", "events": ["*"]}), 409, "conflict")
        assert (await api.get("/v1/webhooks")).json()["webhooks"][0]["url"].startswith("https://shop.example.com/")


async def test_a_name_that_resolves_to_a_private_address_is_not_sent_to(start_gateway, receiver):  # noqa: F811
    gw = await start_gateway()
    url = receiver.url.replace("127.0.0.1", "localhost") + "/hook"
    async with client(gw, await new_key(gw)) as api:
        hook = (await api.post("/v1/webhooks", json={"url": url, "events": ["*"]})).json()  # a name is accepted
        pinged = (await api.post(f"/v1/webhooks/{hook['id']}/ping")).json()
        assert pinged["delivered"] is False and pinged["reason"] == "private_address", pinged
        await trio.sleep(0.1)
    assert receiver.got == []
