"""Private notes and tags: the conversation's staff see them; the shopper's connections and the
shopper's history never hold one."""

from __future__ import annotations

import trio

from ..http.conftest import problem
from ..support import connect, token
from .test_context import settled

SECRET_WORDS = "这位客户喜欢砍价"


async def test_a_private_note_reaches_staff_and_never_a_shopper(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        async with connect(gw.url, token("u1"), resume={}) as shopper, connect(gw.url, token("u1", channel="web"), resume={}) as shopper_web, \
                connect(gw.url, token("a1", "agent"), resume={}) as agent, connect(gw.url, token("boss", "supervisor"), resume={}) as boss:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("status", status="online")
            await settled(agent, await agent.next("assigned"))
            await boss.ok("join", conv=conv)
            note = (await agent.ok("note", conv=conv, text=SECRET_WORDS))["note"]
            assert (note["author"], note["role"], note["text"]) == ("a1", "agent", SECRET_WORDS)
            assert (await boss.next("note", conv=conv))["id"] == note["id"]
            assert (await agent.next("note", conv=conv))["id"] == note["id"]
            from_backend = (await desk.post(f"/v1/conversations/{conv}/notes", json={"text": "VIP: 优先处理"})).json()
            assert from_backend["author"] == "system"
            await boss.next("note", conv=conv, id=from_backend["id"])
            await agent.ok("tags", conv=conv, tags=["砍价", "VIP", "VIP"])
            assert (await boss.next("tags", conv=conv))["tags"] == ["VIP", "砍价"]

            await agent.ok("send", conv=conv, cmid="a1", body={"kind": "text", "text": "您好"})
            await shopper.next("msg", conv=conv, role="agent")  # what came before this reached the shopper already
            for connection in (shopper, shopper_web):
                seen = await connection.quiet(0.3)
                assert all(f["t"] not in ("note", "tags") for f in seen), seen
                assert all(SECRET_WORDS not in repr(f) and "优先处理" not in repr(f) for f in seen)
            history = await shopper.ok("history", conv=conv)
            assert history["messages"] and all(SECRET_WORDS not in repr(m) for m in history["messages"])
            refused = await shopper.request("notes", conv=conv)
            assert refused["t"] == "error" and refused["code"] == "forbidden"
            assert (await shopper.request("note", conv=conv, text="x"))["code"] == "forbidden"
            assert (await shopper.request("tags", conv=conv, tags=["x"]))["code"] == "forbidden"

            assert [n["text"] for n in (await boss.ok("notes", conv=conv))["notes"]] == [SECRET_WORDS, "VIP: 优先处理"]
            assert [n["text"] for n in (await desk.get(f"/v1/conversations/{conv}/notes")).json()["notes"]] == [SECRET_WORDS, "VIP: 优先处理"]
            transcript = (await desk.get(f"/v1/conversations/{conv}/messages")).json()["messages"]
            assert all(SECRET_WORDS not in repr(m) for m in transcript)  # notes are not messages
            assert (await desk.get(f"/v1/conversations/{conv}/workspace")).json()["tags"] == ["VIP", "砍价"]


async def test_notes_and_tags_are_refused_outside_the_conversation(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        async with connect(gw.url, token("u1"), resume={}) as shopper, connect(gw.url, token("u2"), resume={}) as stranger, \
                connect(gw.url, token("a9", "agent"), resume={}) as other_agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            assert (await stranger.request("notes", conv=conv))["code"] == "not_found"
            assert (await other_agent.request("note", conv=conv, text="x"))["code"] == "forbidden"  # not serving it
            assert (await other_agent.request("tags", conv=conv, tags="x"))["code"] == "forbidden"
        async with connect(gw.url, token("a1", "agent", tenant="shop2"), resume={}) as elsewhere:
            assert (await elsewhere.request("notes", conv=conv))["code"] == "not_found"
        problem(await desk.put(f"/v1/conversations/{conv}/tags", json={"tags": ["x" * 70]}), 422, "bad_request")
        problem(await desk.get("/v1/conversations/nope/notes"), 404, "not_found")
        problem(await desk.post(f"/v1/conversations/{conv}/notes", json={"text": ""}), 422, "bad_request")
