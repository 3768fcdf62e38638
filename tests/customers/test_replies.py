"""Quick replies: variables filled from the context (a missing one named, not guessed), search by
shortcut prefix and by text (Chinese too), managed per tenant and per agent over the protocol and
REST."""

from __future__ import annotations

import trio

from gateway import variables
from gateway.customers import replies as quick

from ..http.conftest import problem
from ..support import connect, token
from .test_context import settled

REPLIES = [
    {"shortcut": "/ship", "title": "发货时间", "text": "亲，订单 {order.id} 已发货", "attachments": []},
    {"shortcut": "/size", "title": "尺码建议", "text": "{product.title} 偏小，建议大一码", "attachments": []},
    {"shortcut": "/shop", "title": "Opening hours", "text": "We open at nine", "attachments": []},
]


def test_variables_are_filled_and_a_missing_one_is_named_and_left_as_written():
    values = {"customer": {"name": "王女士"}, "order": {"id": "A1"}, "product": {}}
    assert variables.fill("{customer.name}您好，订单 {order.id}", values) == ("王女士您好，订单 A1", [])
    text, missing = variables.fill("{customer.name}，{product.title} 有货", values)
    assert (text, missing) == ("王女士，{product.title} 有货", ["product.title"])
    assert variables.fill("{customer.phone}{unknown.x}", {"customer": {}}) == ("{customer.phone}{unknown.x}", ["customer.phone"])


def test_search_by_shortcut_prefix_then_by_text_in_chinese_too():
    assert [r["shortcut"] for r in quick.search(REPLIES, "/sh")] == ["/ship", "/shop"]
    assert [r["shortcut"] for r in quick.search(REPLIES, "si")] == ["/size"]  # the slash may be left out
    assert [r["shortcut"] for r in quick.search(REPLIES, "发货")] == ["/ship"]
    assert [r["shortcut"] for r in quick.search(REPLIES, "大一码")] == ["/size"]
    assert [r["shortcut"] for r in quick.search(REPLIES, "NINE")] == ["/shop"]
    assert quick.search(REPLIES, "") == REPLIES and quick.search(REPLIES, "退款") == []


async def test_replies_are_managed_over_the_protocol_per_agent_and_per_tenant(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        async with connect(gw.url, token("a1", "agent"), resume={}) as a1, connect(gw.url, token("a2", "agent"), resume={}) as a2, \
                connect(gw.url, token("boss", "supervisor"), resume={}) as boss:
            await boss.ok("reply_save", scope="tenant", reply={"shortcut": "/ship", "title": "发货", "text": "订单 {order.id} 已发货"})
            refused = await a1.request("reply_save", scope="tenant", reply={"shortcut": "/x", "text": "x"})
            assert refused["t"] == "error" and refused["code"] == "forbidden"
            await a1.ok("reply_save", scope="mine", reply={"shortcut": "/hi", "title": "问候", "text": "{customer.name}您好"})
            await a1.ok("reply_save", scope="mine", reply={"shortcut": "/ship", "text": "我的发货话术"})
            assert [(r["shortcut"], r["owner"]) for r in (await a1.ok("replies"))["replies"]] == [("/hi", "a1"), ("/ship", "a1")]
            assert [(r["shortcut"], r["owner"]) for r in (await a2.ok("replies"))["replies"]] == [("/ship", "*")]
            assert [r["shortcut"] for r in (await a1.ok("replies", q="您好"))["replies"]] == ["/hi"]
            bad = await a1.request("reply_save", scope="mine", reply={"shortcut": "no slash", "text": "x"})
            assert bad["t"] == "error" and bad["code"] == "bad_request" and "shortcut" in bad["message"]
            await a1.ok("reply_delete", scope="mine", shortcut="/ship")
            assert [(r["shortcut"], r["owner"]) for r in (await a1.ok("replies"))["replies"]] == [("/hi", "a1"), ("/ship", "*")]
            gone = await a1.request("reply_delete", scope="mine", shortcut="/ship")
            assert gone["t"] == "error" and gone["code"] == "not_found"
        async with connect(gw.url, token("u1"), resume={}) as shopper:
            assert (await shopper.request("replies"))["code"] == "forbidden"


async def test_a_filled_reply_names_what_is_missing(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        await desk.put("/v1/ingest/customers/c1", json={"name": "王女士"})
        assert (await desk.put("/v1/quick-replies", json={"shortcut": "/hi", "text": "{customer.name}您好，订单 {order.id} 已发货"})).status_code == 200
        async with connect(gw.url, token("u1", customer="c1"), resume={}) as shopper, connect(gw.url, token("a1", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("status", status="online")
            await settled(agent, await agent.next("assigned"))
            filled = await agent.ok("reply_fill", conv=conv, shortcut="/hi")
            assert filled["text"] == "王女士您好，订单 {order.id} 已发货" and filled["missing"] == ["order.id"]
            await desk.put("/v1/ingest/orders/A9", json={"customer": "c1", "items": [{"product": "p"}], "status": "shipped", "created_at": 5})
            filled = await agent.ok("reply_fill", conv=conv, shortcut="/hi")
            assert filled["text"] == "王女士您好，订单 A9 已发货" and filled["missing"] == []
            assert (await agent.request("reply_fill", conv=conv, shortcut="/nope"))["code"] == "not_found"


async def test_replies_over_rest(desk):
    saved = await desk.put("/v1/quick-replies", json={"shortcut": "/ret", "title": "退货", "text": "七天无理由退货", "attachments": [{"url": "https://x/r.png", "kind": "image"}]})
    assert saved.status_code == 200 and saved.json()["owner"] == "*"
    await desk.put("/v1/quick-replies", json={"shortcut": "/ret", "text": "我的退货话术", "owner": "a1"})
    assert [r["text"] for r in (await desk.get("/v1/quick-replies", params={"q": "无理由"})).json()["replies"]] == ["七天无理由退货"]
    assert [r["text"] for r in (await desk.get("/v1/quick-replies", params={"owner": "a1"})).json()["replies"]] == ["我的退货话术"]
    problem(await desk.put("/v1/quick-replies", json={"shortcut": "ret", "text": "x"}), 422, "bad_request")
    assert (await desk.request("DELETE", "/v1/quick-replies", params={"shortcut": "/ret"})).status_code == 200
    problem(await desk.request("DELETE", "/v1/quick-replies", params={"shortcut": "/ret"}), 404, "not_found")
    assert (await desk.get("/v1/quick-replies")).json()["replies"] == []
