"""/v1/conversations: list, transcript, post (the durable, sequenced path) and resolve/transfer."""

from __future__ import annotations

import trio

from ...support import connect, token
from ..conftest import client, new_key, problem

TEXT = {"kind": "text", "text": "你好"}


async def test_done_when_one_api_key_and_no_websocket_serve_a_shop(api):
    """With one API key and no WebSocket of its own, a shop's backend creates an agent, mints its
    shopper's token, and posts a system message the shopper's app receives with the next seq."""
    with trio.fail_after(15):
        assert (await api.post("/v1/agents", json={"user": "wangli", "name": "王丽"})).status_code == 201
        shopper_token = (await api.post("/v1/tokens", json={"user": "u-7", "role": "shopper", "channel": "app"})).json()["token"]
        async with connect(api.gateway.url, shopper_token, resume={}) as app:
            conv = (await app.ok("open"))["conv"]["id"]
            for i in range(2):
                await app.ok("send", conv=conv, cmid=f"c{i}", body=TEXT)
            listed = (await api.get("/v1/conversations", params={"status": "open"})).json()["conversations"]
            assert [c["id"] for c in listed] == [conv] and listed[0]["customer"] == "u-7" and listed[0]["last_seq"] == 2
            posted = await api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "system"}, "body": {"kind": "text", "text": "您的订单已发货"}})
            assert posted.status_code == 201, posted.text
            assert (posted.json()["seq"], posted.json()["from"], posted.json()["role"]) == (3, "system", "system")
            got = await app.next("msg", conv=conv)
            assert (got["seq"], got["from"], got["role"], got["body"]["text"]) == (3, "system", "system", "您的订单已发货")
            assert [f for f in await app.quiet(0.2) if f.get("t") == "msg"] == []  # exactly once
        async with connect(api.gateway.url, shopper_token, resume={conv: 2}) as again:  # a reconnect catches up once
            caught = [await again.next("msg", conv=conv)]
            assert [m["seq"] for m in caught] == [3]
            assert [f for f in await again.quiet(0.2) if f.get("t") == "msg"] == []


async def test_a_bot_posts_after_joining_and_every_participant_gets_the_next_seq(api):
    with trio.fail_after(15):
        async with connect(api.gateway.url, token("alice"), resume={}) as alice, connect(api.gateway.url, token("bob", "agent"), resume={}) as bob:
            conv = (await alice.ok("open"))["conv"]["id"]
            await bob.ok("join", conv=conv)
            await alice.ok("send", conv=conv, cmid="1", body=TEXT)
            await bob.next("msg", conv=conv, seq=1)
            async with client(api.gateway, await new_key(api.gateway, scopes=("bot",))) as bot_api:
                problem(await bot_api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "system"}, "body": TEXT}), 403, "forbidden")
                posted = await bot_api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "bot", "user": "faq-bot", "name": "小助手"}, "body": TEXT})
                assert posted.status_code == 201 and posted.json()["seq"] == 2
            joined = await alice.next("joined", conv=conv, user="faq-bot")
            assert (joined["user"], joined["role"], joined["name"]) == ("faq-bot", "bot", "小助手")
            for member in (alice, bob):
                got = await member.next("msg", conv=conv, seq=2)
                assert (got["from"], got["role"]) == ("faq-bot", "bot")
            detail = (await api.get(f"/v1/conversations/{conv}")).json()
            assert [p["user"] for p in detail["participants"]] == ["alice", "bob", "faq-bot"] and detail["last_seq"] == 2


async def test_transcript_pages_and_list_filters_with_cursor(api):
    with trio.fail_after(15):
        convs = []
        for user, channel in (("u1", "app"), ("u2", "web"), ("u3", "app")):
            async with connect(api.gateway.url, token(user, channel=channel), resume={}) as shopper:
                conv = (await shopper.ok("open"))["conv"]["id"]
                for i in range(3):
                    await shopper.ok("send", conv=conv, cmid=str(i), body={"kind": "text", "text": f"m{i}"})
                convs.append(conv)
        page1 = (await api.get("/v1/conversations", params={"limit": 2})).json()
        assert [c["id"] for c in page1["conversations"]] == [convs[2], convs[1]] and page1["next"]
        page2 = (await api.get("/v1/conversations", params={"limit": 2, "cursor": page1["next"]})).json()
        assert [c["id"] for c in page2["conversations"]] == [convs[0]] and page2["next"] is None
        assert [c["id"] for c in (await api.get("/v1/conversations", params={"channel": "app"})).json()["conversations"]] == [convs[2], convs[0]]
        assert (await api.get("/v1/conversations", params={"stage": "assigned"})).json()["conversations"] == []
        assert (await api.put(f"/v1/conversations/{convs[1]}/tags", json={"tags": ["vip", "refund", "vip"]})).json() == {"tags": ["refund", "vip"]}
        await api.put(f"/v1/conversations/{convs[2]}/tags", json={"tags": ["refund"]})
        assert [c["id"] for c in (await api.get("/v1/conversations", params={"tag": "refund"})).json()["conversations"]] == [convs[2], convs[1]]
        assert [c["id"] for c in (await api.get("/v1/conversations", params={"tag": "vip", "channel": "web"})).json()["conversations"]] == [convs[1]]
        assert (await api.get(f"/v1/conversations/{convs[1]}")).json()["tags"] == ["refund", "vip"]
        problem(await api.put(f"/v1/conversations/{convs[1]}/tags", json={"tags": ["x" * 100]}), 422, "bad_request")
        problem(await api.put(f"/v1/conversations/{convs[1]}/tags", json={"tags": "vip"}), 422, "bad_request")
        since = page1["conversations"][1]["created_at"]
        listed = (await api.get("/v1/conversations", params={"since": since})).json()["conversations"]
        assert {c["id"] for c in listed} >= {convs[1], convs[2]} and all(c["created_at"] >= since for c in listed)
        first = (await api.get(f"/v1/conversations/{convs[0]}/messages", params={"limit": 2})).json()
        assert [m["body"]["text"] for m in first["messages"]] == ["m0", "m1"] and first["more"] is True
        rest = (await api.get(f"/v1/conversations/{convs[0]}/messages", params={"after": 2})).json()
        assert [m["seq"] for m in rest["messages"]] == [3] and rest["more"] is False
        newest = (await api.get(f"/v1/conversations/{convs[0]}/messages", params={"before": 4, "limit": 1})).json()
        assert [m["seq"] for m in newest["messages"]] == [3]
        problem(await api.get("/v1/conversations", params={"stage": "sleeping"}), 422, "bad_request")
        problem(await api.get("/v1/conversations", params={"cursor": "garbage"}), 422, "bad_request")


async def test_other_tenants_conversations_do_not_exist(api):
    with trio.fail_after(15):
        async with connect(api.gateway.url, token("alice", tenant="shop2"), resume={}) as alice:
            conv = (await alice.ok("open"))["conv"]["id"]
            assert (await api.get("/v1/conversations")).json()["conversations"] == []
            problem(await api.get(f"/v1/conversations/{conv}"), 404, "not_found")
            problem(await api.get(f"/v1/conversations/{conv}/messages"), 404, "not_found")
            problem(await api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "system"}, "body": TEXT}), 404, "not_found")
            problem(await api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "bot", "user": "b"}, "body": TEXT}), 404, "not_found")
            assert [f for f in await alice.quiet(0.2) if f.get("t") in ("msg", "joined")] == []


async def test_a_bad_message_body_is_refused_before_anything_is_stored(api):
    with trio.fail_after(15):
        async with connect(api.gateway.url, token("alice"), resume={}) as alice:
            conv = (await alice.ok("open"))["conv"]["id"]
            for body in ({"kind": "sticker"}, {"kind": "text"}, {"kind": "text", "text": "x" * 100_000}):
                response = await api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "bot", "user": "b"}, "body": body})
                assert response.status_code in (413, 422), response.text
            problem(await api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "bot"}, "body": TEXT}), 422, "bad_request")
            detail = (await api.get(f"/v1/conversations/{conv}")).json()
            assert detail["last_seq"] == 0 and [p["user"] for p in detail["participants"]] == ["alice"]  # no bot joined
            await alice.ok("close", conv=conv)
            problem(await api.post(f"/v1/conversations/{conv}/messages", json={"sender": {"role": "system"}, "body": TEXT}), 409, "conversation_closed")


async def test_resolve_and_transfer_through_routing(start_gateway, tmp_path):
    import json

    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none", "groups": [{"name": "default"}, {"name": "vip", "match": {"channel": ["web"]}}]}}))
    gw = await start_gateway(routing="on", routing_file=str(path))
    with trio.fail_after(15):
        async with client(gw, await new_key(gw)) as http:
            problem(await http.post("/v1/conversations/nope/resolve"), 404, "not_found")
            async with connect(gw.url, token("alice"), resume={}) as alice, connect(gw.url, token("wang", "agent"), resume={}) as wang, \
                    connect(gw.url, token("li", "agent"), resume={}) as li:
                await wang.ok("status", status="online")
                conv = (await alice.ok("open"))["conv"]["id"]
                assert (await wang.next("assigned"))["conv"]["id"] == conv
                await li.ok("status", status="online", max=1, groups=["vip"])
                problem(await http.post(f"/v1/conversations/{conv}/transfer", json={"to_agent": "li", "to_group": "vip"}), 422, "bad_request")
                moved = await http.post(f"/v1/conversations/{conv}/transfer", json={"to_agent": "li", "note": "VIP customer"})
                assert moved.status_code == 200, moved.text
                offer = await li.next("assigned")
                assert offer["conv"]["id"] == conv and offer["context"]["transfer"]["note"] == "VIP customer"
                resolved = await http.post(f"/v1/conversations/{conv}/resolve")
                assert resolved.status_code == 200 and resolved.json()["stage"] == "resolved"
                events = []
                while "resolved" not in events:
                    events.append((await alice.next("msg", conv=conv, role="system"))["body"]["event"])
                assert events == ["assigned", "transferred", "assigned", "resolved"]
                problem(await http.post(f"/v1/conversations/{conv}/resolve"), 403, "forbidden")  # resolved already


async def test_an_idempotency_key_makes_a_retried_post_land_once(api):
    with trio.fail_after(15):
        async with connect(api.gateway.url, token("alice"), resume={}) as alice:
            conv = (await alice.ok("open"))["conv"]["id"]
            post = {"sender": {"role": "system"}, "body": {"kind": "text", "text": "发货了"}}
            first = await api.post(f"/v1/conversations/{conv}/messages", json=post, headers={"idempotency-key": "ship-1"})
            again = await api.post(f"/v1/conversations/{conv}/messages", json=post, headers={"idempotency-key": "ship-1"})
            assert (first.status_code, first.json()["duplicate"]) == (201, False)
            assert (again.status_code, again.json()["duplicate"], again.json()["seq"]) == (200, True, first.json()["seq"])
            assert (await alice.next("msg", conv=conv))["seq"] == 1
            other = await api.post(f"/v1/conversations/{conv}/messages", json=post, headers={"idempotency-key": "ship-2"})
            assert other.json()["seq"] == 2 and (await alice.next("msg", conv=conv))["seq"] == 2
            assert [f for f in await alice.quiet(0.2) if f.get("t") == "msg"] == []
            problem(await api.post(f"/v1/conversations/{conv}/messages", json=post, headers={"idempotency-key": "x" * 200}), 422, "bad_request")
