"""A customer's personal information exported and erased on request (docs/workspace.md, "Personal
information: export and erasure"), over real HTTP and WebSockets, on every store: a customer who
chatted on two channels, with an order, a browsing event, a photo, a note and a survey comment."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from gateway.app import Running, serve
from gateway.customers import privacy

from ..conftest import make_config
from ..http.conftest import client, new_key, problem
from ..http.v1.test_attachments import http, relative, upload
from ..media import samples
from ..postgres import PG_URL, drop_schema, fresh_schema
from ..support import connect, token
from .conftest import events
from .test_context import settled

ORDER = {"customer": "c42", "items": [{"product": "coat", "title": "蓝色羊毛外套", "quantity": 1}], "status": "paid", "created_at": 1_700_000_000_000}
PHONE = "13800001111"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def gw(request, nursery, tmp_path):
    """A gateway with routing on (no bot: conversations queue at once) on each store."""
    rules = tmp_path / "routing.json"
    rules.write_text(json.dumps({"default": {"bot": "none", "grace_s": 30.0}}))
    schema = fresh_schema()
    store = dict(store=PG_URL, store_schema=schema) if request.param == "postgres" else dict(store=request.param)
    running = await nursery.start(serve, make_config(tmp_path, routing="on", routing_file=str(rules), **store))
    running.data = Path(tmp_path / "data")
    yield running
    running.node.stop()
    with trio.fail_after(10):
        await running.node.stopped()
    if request.param == "postgres":
        drop_schema(schema)


@dataclass
class Story:
    conv_app: str  # c42 on the app: a text, a photo, a note, resolved and rated with a comment
    conv_web: str  # c42 on the web: a text
    conv_other: str  # another customer of the same tenant
    photo: dict
    photo_url: str  # a signed URL to the photo, made before anything was erased


def media_files(gw: Running) -> list[Path]:
    return [p for p in (gw.data / "media").rglob("*") if p.is_file()]


async def transcript(api, conv: str) -> list[dict]:
    got = await api.get(f"/v1/conversations/{conv}/messages", params={"limit": 200})
    assert got.status_code == 200, got.text
    return got.json()["messages"]


async def tell_story(gw: Running, api, agent, app, web, other) -> Story:
    """The shop pushes c42's profile, an order and a browsing event; c42 chats from the app (a
    text and a photo; the agent notes something; resolved, rated with a comment) and from the
    web; another customer chats too."""
    assert (await api.put("/v1/ingest/customers/c42", json={"name": "王女士", "tier": "金卡", "phone": PHONE})).status_code == 200
    assert (await api.put("/v1/ingest/orders/A1", json=ORDER)).status_code == 200
    assert (await api.post("/v1/ingest/events", json={"customer": "c42", "product": "coat", "ts": 1_700_000_000_500})).status_code == 201
    await agent.ok("status", status="online", max=5)

    conv_app = (await app.ok("open", subject="外套"))["conv"]["id"]
    await settled(agent, await agent.next("assigned"))
    await app.ok("send", conv=conv_app, cmid="t1", body={"kind": "text", "text": f"我的电话是{PHONE}"})
    async with http(gw, "u42") as app_http:
        up = await upload(app_http, conv_app, "image", samples.jpeg(400, 300), name="身份证.jpg")
        assert up.status_code == 201, up.text
    photo = up.json()
    await app.ok("send", conv=conv_app, cmid="p1", body={"kind": "image", "attachment": photo["id"]})
    await agent.next("msg", conv=conv_app, cmid="p1")
    await agent.ok("note", conv=conv_app, text="王女士说快递放门卫")
    await agent.ok("resolve", conv=conv_app)
    await events(app, conv_app, "survey")
    await app.ok("rate", conv=conv_app, score=4, comment="王女士很满意")

    conv_web = (await web.ok("open", subject="退货"))["conv"]["id"]
    await settled(agent, await agent.next("assigned"))
    await web.ok("send", conv=conv_web, cmid="w1", body={"kind": "text", "text": "我住在北京朝阳区"})
    await agent.next("msg", conv=conv_web, cmid="w1")

    conv_other = (await other.ok("open", subject="尺码"))["conv"]["id"]
    await settled(agent, await agent.next("assigned"))
    await other.ok("send", conv=conv_other, cmid="o1", body={"kind": "text", "text": "我是另一位顾客"})
    await agent.next("msg", conv=conv_other, cmid="o1")
    async with http(gw, "wangli", "agent") as agent_http:
        shown = (await agent_http.get(f"/v1/attachments/{photo['id']}")).json()
    return Story(conv_app, conv_web, conv_other, photo, relative(shown["url"]))


def people(gw: Running):
    """The agent and three shoppers' live connections: c42 on the app and on the web, and u7."""
    return (
        connect(gw.url, token("wangli", "agent", name="王丽"), resume={}),
        connect(gw.url, token("u42", customer="c42", name="王女士"), resume={}),
        connect(gw.url, token("v-77", channel="web", customer="c42"), resume={}),
        connect(gw.url, token("u7", customer="c7"), resume={}),
    )


async def test_an_export_holds_everything_about_the_customer_and_only_its_tenant_may_read_it(gw):
    with trio.fail_after(30):
        a, b, c, d = people(gw)
        async with client(gw, await new_key(gw)) as api, a as agent, b as app, c as web, d as other:
            story = await tell_story(gw, api, agent, app, web, other)
            got = await api.get("/v1/customers/c42/export")
            assert got.status_code == 200, got.text
            doc = got.json()
            assert doc["customer"]["id"] == "c42" and sorted(doc["customer"]["links"]) == ["app:u42", "web:v-77"]
            assert sorted(i["identity"] for i in doc["identities"]) == ["app:u42", "web:v-77"]
            assert doc["profile"] == {"name": "王女士", "tier": "金卡", "tags": [], "phone": PHONE}
            assert [o["id"] for o in doc["orders"]] == ["A1"] and [v["product"] for v in doc["viewed"]] == ["coat"]
            assert doc["merges"] == [] and doc["truncated"] is False
            convs = {c["conversation"]["id"]: c for c in doc["conversations"]}
            assert set(convs) == {story.conv_app, story.conv_web}  # never the other customer's
            mine = convs[story.conv_app]
            texts = [m["body"].get("text") for m in mine["messages"]]
            assert f"我的电话是{PHONE}" in texts
            assert [m["seq"] for m in mine["messages"]] == list(range(1, mine["conversation"]["last_seq"] + 1))
            assert all({"seq", "from", "role", "ts", "body"} <= set(m) for m in mine["messages"])
            assert [(x["id"], x["kind"], x["name"], x["content_type"]) for x in mine["attachments"]] == [(story.photo["id"], "image", "身份证.jpg", "image/jpeg")]
            assert mine["attachments"][0]["size"] == story.photo["size"] and "url" not in mine["attachments"][0]
            assert mine["satisfaction"]["score"] == 4 and mine["satisfaction"]["comment"] == "王女士很满意" and mine["survey"]["expires_at"] > 0
            assert {p["user"] for p in mine["participants"]} >= {"u42", "wangli"} and mine["messages_complete"] is True
            assert "我住在北京朝阳区" in [m["body"].get("text") for m in convs[story.conv_web]["messages"]]
            assert "我是另一位顾客" not in got.text

            problem(await api.get("/v1/customers/nobody/export"), 404, "not_found")
            async with client(gw, await new_key(gw, tenant="shop2")) as stranger:
                problem(await stranger.get("/v1/customers/c42/export"), 404, "not_found")
                problem(await stranger.post("/v1/customers/c42/erase", json={"confirm": "c42"}), 404, "not_found")
            async with client(gw, await new_key(gw, scopes=("read", "ingest"))) as reader:
                problem(await reader.get("/v1/customers/c42/export"), 403, "forbidden")  # admin keys only
            async with client(gw, token("boss", "supervisor")) as console:
                problem(await console.get("/v1/customers/c42/export"), 401, "unauthenticated")
                problem(await console.post("/v1/customers/c42/erase", json={"confirm": "c42"}), 401, "unauthenticated")
            assert (await api.get("/v1/customers/c42/export")).json()["profile"]["phone"] == PHONE  # nothing erased by the refusals


async def test_a_large_history_is_exported_truncated_with_where_to_read_on(gw, monkeypatch):
    monkeypatch.setattr(privacy, "MAX_EXPORT_MESSAGES", 3)  # the cap, small: the rule is the same
    with trio.fail_after(30):
        a, b, c, d = people(gw)
        async with client(gw, await new_key(gw)) as api, a as agent, b as app, c as web, d as other:
            story = await tell_story(gw, api, agent, app, web, other)
            doc = (await api.get("/v1/customers/c42/export")).json()
            assert doc["truncated"] is True and "messages_complete" in doc["rest"]
            assert sum(len(c["messages"]) for c in doc["conversations"]) == 3
            short = [c for c in doc["conversations"] if not c["messages_complete"]]
            assert short and all(c["next"].startswith(f"/v1/conversations/{c['conversation']['id']}/messages?after=") for c in short)
            first = short[0]
            rest = await api.get(first["next"])
            assert rest.status_code == 200 and rest.json()["messages"][0]["seq"] == len(first["messages"]) + 1
            assert story.conv_app in {c["conversation"]["id"] for c in doc["conversations"]}


async def test_erasure_replaces_every_body_deletes_the_rest_and_is_idempotent(gw, caplog):
    caplog.set_level(logging.INFO, logger="kefu.privacy")
    with trio.fail_after(40):
        a, b, c, d = people(gw)
        async with client(gw, await new_key(gw)) as api, a as agent, b as app, c as web, d as other:
            story = await tell_story(gw, api, agent, app, web, other)
            before = {conv: await transcript(api, conv) for conv in (story.conv_app, story.conv_web, story.conv_other)}
            assert media_files(gw)  # the photo and its thumbnail

            # a confirmation that does not match erases nothing
            doc = problem(await api.post("/v1/customers/c42/erase", json={"confirm": "c43"}), 422, "bad_request")
            assert doc["errors"][0]["field"] == "confirm"
            problem(await api.post("/v1/customers/c42/erase", json={}), 422, "bad_request")
            assert {conv: await transcript(api, conv) for conv in before} == before
            assert (await api.get(f"/v1/conversations/{story.conv_app}/notes")).json()["notes"]
            assert (await api.get("/v1/customers/c42/export")).json()["profile"]["phone"] == PHONE

            done = await api.post("/v1/customers/c42/erase", json={"confirm": "c42"})
            assert done.status_code == 200, done.text
            mine = len(before[story.conv_app]) + len(before[story.conv_web])
            assert done.json() == {"customer": "c42", "erased": {
                "conversations": 2, "messages": mine, "attachments": 1, "notes": 1, "comments": 1, "summaries": 1,
                "profile": 1, "orders": 1, "views": 1}}

            # members connected live hear of it, one event per conversation
            assert (await app.next("erased", conv=story.conv_app))["through"] == before[story.conv_app][-1]["seq"]
            assert (await web.next("erased", conv=story.conv_web))["conv"] == story.conv_web
            await agent.next("erased", conv=story.conv_app)
            await agent.next("erased", conv=story.conv_web)

            # every body is erased, for every member and in the REST transcript; seqs, senders, times stay
            for conv, member in ((story.conv_app, app), (story.conv_app, agent), (story.conv_web, web), (story.conv_web, agent)):
                history = (await member.ok("history", conv=conv))["messages"]
                assert [m["seq"] for m in history] == list(range(1, len(before[conv]) + 1))
                assert all(m["body"] == {"kind": "erased"} for m in history), history
            for conv in (story.conv_app, story.conv_web):
                after = await transcript(api, conv)
                assert [(m["seq"], m["from"], m["role"], m["ts"]) for m in after] == [(m["seq"], m["from"], m["role"], m["ts"]) for m in before[conv]]
                assert all(m["body"] == {"kind": "erased"} for m in after)
            assert await transcript(api, story.conv_other) == before[story.conv_other]  # another customer's: untouched

            # the photo is gone, from disk too; notes, the comment, the profile, orders and browsing too
            async with http(gw, "wangli", "agent") as agent_http, http(gw) as anonymous:
                problem(await agent_http.get(f"/v1/attachments/{story.photo['id']}/content"), 410, "attachment_deleted")
                problem(await anonymous.get(story.photo_url), 410, "attachment_deleted")
            assert media_files(gw) == []
            assert (await api.get(f"/v1/conversations/{story.conv_app}/notes")).json()["notes"] == []
            facts = (await api.get(f"/v1/conversations/{story.conv_app}/workspace")).json()
            assert facts["satisfaction"]["score"] == 4 and facts["satisfaction"]["comment"] == ""
            context = (await api.get("/v1/customers/c42/context")).json()["context"]
            assert context["profile"] == {"name": "", "tier": "", "tags": []} and context["orders"] == [] and context["viewed"] == []
            exported = (await api.get("/v1/customers/c42/export")).json()
            assert exported["profile"] is None and PHONE not in json.dumps(exported, ensure_ascii=False) and "王女士" not in json.dumps(exported, ensure_ascii=False)
            conv = (await api.get(f"/v1/conversations/{story.conv_app}")).json()
            assert conv["id"] == story.conv_app and conv["last_seq"] == before[story.conv_app][-1]["seq"]  # the conversation stays

            # again: nothing left to erase, and it says so
            again = await api.post("/v1/customers/c42/erase", json={"confirm": "c42"})
            assert again.status_code == 200 and set(again.json()["erased"].values()) == {0}
            assert gw.registry.get_sample_value("kefu_customer_erasures_total") == 2
            audit = [r.getMessage() for r in caplog.records if r.name == "kefu.privacy"]
            assert len(audit) == 2 and "customer c42 of tenant shop1 erased by apikey:" in audit[0] and "messages=" in audit[0]
            assert not any(PHONE in line or "王女士" in line for line in audit)

            # the conversation lives on: its shopper writes again, with the next seq
            await app.ok("send", conv=story.conv_app, cmid="t2", body={"kind": "text", "text": "还在吗"})
            new = [m for m in await transcript(api, story.conv_app) if m["cmid"] == "t2"]
            assert new[0]["body"]["text"] == "还在吗" and new[0]["seq"] > before[story.conv_app][-1]["seq"]
