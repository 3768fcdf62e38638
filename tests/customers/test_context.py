"""Customer context for the agent: the built-in provider fed over REST, the CRM provider against a
real local HTTP server (timeouts, failures, the cache), delivery with ``assigned``, on request and
when it changes; a slow or failing provider never holds the conversation up."""

from __future__ import annotations

import json

import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http.server import serve_http

from ..http.conftest import client, new_key
from ..support import connect, token
from .conftest import events


class Crm:
    """A shop's CRM on a real port: answers, answers slowly, or fails, as the test says."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: list[str] = []

        async def context(request: Request) -> Response:
            self.calls.append(request.path_params["customer_id"])
            if self.mode == "slow":
                await trio.sleep(30)
            if self.mode == "fail":
                return JSONResponse({"error": "down"}, status_code=500)
            if self.mode == "garbage":
                return Response("not json", media_type="text/plain")
            return JSONResponse({"profile": {"name": "王女士", "tier": "VIP", "tags": []}, "orders": [{"id": "A7", "status": "paid", "items": []}], "viewed": []})

        self.app = Starlette(routes=[Route("/customers/{customer_id}/context", context)])


@pytest.fixture
async def crm(nursery):
    crm = Crm()
    port = await nursery.start(serve_http, crm.app, "127.0.0.1", 0)
    crm.url = f"http://127.0.0.1:{port}"
    return crm


async def crm_gateway(start_gateway, tmp_path, crm, **overrides):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none"}}))
    return await start_gateway(routing="on", routing_file=str(path), context_url=crm.url, **overrides)


async def settled(agent, offer) -> dict:
    """The customer context of an ``assigned`` offer, once it has arrived."""
    known = offer["customer"]
    if known["status"] == "pending":
        known = await agent.next("customer_context", conv=offer["conv"]["id"])
    return known


async def test_the_crm_answer_is_cached_and_comes_with_assigned_and_on_request(start_gateway, tmp_path, crm):
    gw = await crm_gateway(start_gateway, tmp_path, crm, context_wait_s=5.0)
    with trio.fail_after(20):
        async with connect(gw.url, token("u1", customer="c1"), resume={}) as shopper, connect(gw.url, token("a1", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("status", status="online")
            offer = await agent.next("assigned")
            assert offer["customer"]["status"] == "ok"  # waited for (context_wait_s), it came with the offer
            assert offer["customer"]["context"]["profile"]["tier"] == "VIP"
            assert offer["customer"]["context"]["orders"][0]["id"] == "A7"
            assert [c["id"] for c in offer["customer"]["context"]["conversations"]] == [conv]  # past conversations are the gateway's
            again = await agent.ok("context", conv=conv)
            assert again["status"] == "ok" and again["context"]["profile"]["name"] == "王女士"
            assert crm.calls == ["c1"]  # the second answer came from the cache
            assert gw.registry.get_sample_value("kefu_customer_contexts_total", {"result": "ok"}) == 2
            async with client(gw, await new_key(gw, scopes=("ingest",))) as shop:  # the shop says c1 changed
                assert (await shop.put("/v1/ingest/customers/c1", json={"name": "王女士"})).json()["told"] == 1
            assert (await agent.next("customer_context", conv=conv))["status"] == "ok"
            assert crm.calls == ["c1", "c1"]  # asked again, not answered from the cache


async def test_a_slow_crm_never_holds_the_conversation_up(start_gateway, tmp_path, crm):
    crm.mode = "slow"
    gw = await crm_gateway(start_gateway, tmp_path, crm, context_timeout_s=0.5, context_wait_s=0.05)
    with trio.fail_after(20):
        async with connect(gw.url, token("u1", customer="c1"), resume={}) as shopper, connect(gw.url, token("a1", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("status", status="online")
            offer = await agent.next("assigned")
            assert offer["customer"] == {"conv": conv, "status": "pending"}
            await events(shopper, conv, "assigned")
            await agent.ok("send", conv=conv, cmid="a1", body={"kind": "text", "text": "您好"})
            await shopper.next("msg", conv=conv, role="agent")  # the conversation goes on meanwhile
            late = await agent.next("customer_context", conv=conv)
            assert late["status"] == "unavailable" and "did not answer within 0.5 s" in late["reason"]
            assert late["customer"]["id"] == "c1"  # what the gateway knows itself is there still
            asked = await agent.ok("context", conv=conv)
            assert asked["status"] == "unavailable"


@pytest.mark.parametrize("mode, reason", [("fail", "answered 500"), ("garbage", "not JSON")])
async def test_a_failing_crm_is_unavailable_and_not_cached(start_gateway, tmp_path, crm, mode, reason):
    crm.mode = mode
    gw = await crm_gateway(start_gateway, tmp_path, crm)
    with trio.fail_after(20):
        async with connect(gw.url, token("u1", customer="c1"), resume={}) as shopper, connect(gw.url, token("a1", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("status", status="online")
            known = await settled(agent, await agent.next("assigned"))
            assert known["status"] == "unavailable" and reason in known["reason"]
            assert gw.registry.get_sample_value("kefu_customer_contexts_total", {"result": "unavailable"}) == 1
            crm.mode = "ok"
            assert (await agent.ok("context", conv=conv))["status"] == "ok"
            assert len(crm.calls) == 2


async def test_the_builtin_context_follows_what_the_shop_pushes(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        assert (await desk.put("/v1/ingest/customers/c1", json={"name": "李先生", "tier": "银卡"})).status_code == 200
        async with connect(gw.url, token("u1", customer="c1"), resume={}) as shopper, connect(gw.url, token("a1", "agent"), resume={}) as agent:
            conv = (await shopper.ok("open", product="p1"))["conv"]["id"]
            await agent.ok("status", status="online")
            known = await settled(agent, await agent.next("assigned"))
            assert known["context"]["profile"]["name"] == "李先生" and known["context"]["orders"] == []
            assert known["product"] == {"id": "p1"}  # not in the catalog (yet): the id travels anyway
            order = {"customer": "c1", "items": [{"product": "p1", "title": "衬衫"}], "status": "paid", "created_at": 1}
            told = (await desk.put("/v1/ingest/orders/o1", json=order)).json()
            assert told == {"kind": "order", "id": "o1", "told": 1}
            changed = await agent.next("customer_context", conv=conv)
            assert [o["id"] for o in changed["context"]["orders"]] == ["o1"]
            await desk.put("/v1/ingest/products/p1", json={"title": "白衬衫", "attributes": {"material": "纯棉"}, "sizes": ["M"], "price": 199})
            asked = await agent.ok("context", conv=conv)
            assert asked["product"]["title"] == "白衬衫" and asked["product"]["attributes"] == {"material": "纯棉"}
            refused = await shopper.request("context", conv=conv)
            assert refused["t"] == "error" and refused["code"] == "forbidden"


async def test_the_catalog_serves_the_bot_interface(desk):
    gw = desk.gateway
    chart = {"M": {"胸围": "96cm"}, "L": {"胸围": "100cm"}}
    await desk.put("/v1/ingest/products/coat", json={"title": "外套", "attributes": {"material": "羊毛"}, "sizes": ["M", "L"], "size_chart": chart, "stock": {"M": 2}, "price": 599.0, "image": "https://x/c.jpg"})
    product = gw.node.workspace.catalog.get("shop1", "coat")
    assert (product.title, product.material, product.sizes, product.price, product.stock) == ("外套", "羊毛", ("M", "L"), 599.0, {"M": 2})
    assert product.size_chart["L"]["胸围"] == "100cm"
    assert gw.node.workspace.catalog.get("shop2", "coat") is None


async def test_the_bot_answers_from_the_ingested_product_the_chat_was_opened_from(start_gateway):
    gw = await start_gateway(routing="on")  # the built-in bot
    coat = {"title": "驼色大衣", "attributes": {"material": "90%羊毛 10%羊绒"}, "sizes": ["M", "L"], "stock": {"M": 0, "L": 4}, "price": 1299.0}
    with trio.fail_after(20):
        async with client(gw, await new_key(gw, scopes=("ingest",))) as shop:
            assert (await shop.put("/v1/ingest/products/coat-camel", json=coat)).status_code == 200
        async with connect(gw.url, token("u1"), resume={}) as shopper:
            conv = (await shopper.ok("open", product="coat-camel"))["conv"]["id"]
            await shopper.next("msg", conv=conv, role="bot")  # the greeting
            await shopper.ok("send", conv=conv, cmid="q1", body={"kind": "text", "text": "这件是什么面料"})  # no meta: the open's product
            answer = (await shopper.next("msg", conv=conv, role="bot"))["body"]
            assert answer["intent"] == "product_question" and answer["product"] == "coat-camel"
            assert "90%羊毛" in answer["text"]


async def test_a_crm_that_cannot_be_reached_is_unavailable(start_gateway, tmp_path):
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    crm = Crm()
    crm.url = f"http://127.0.0.1:{port}"
    gw = await crm_gateway(start_gateway, tmp_path, crm)
    with trio.fail_after(20):
        async with connect(gw.url, token("u1", customer="c1"), resume={}) as shopper, connect(gw.url, token("boss", "supervisor"), resume={}) as boss:
            conv = (await shopper.ok("open"))["conv"]["id"]
            asked = await boss.ok("context", conv=conv)
            assert asked["status"] == "unavailable" and "could not be reached" in asked["reason"]
            assert asked["customer"]["id"] == "c1"
