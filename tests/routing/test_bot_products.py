"""Over real sockets: a product question answered from the catalog, a clarifying question with
buttons instead of a handoff, and the bot's handoff and containment metrics."""

from __future__ import annotations

import pytest
import trio

from gateway.bot import MemoryCatalog

from ..bot.test_catalog import SAMPLE
from ..support import connect, token


@pytest.fixture
async def with_bot(start_gateway):
    gw = await start_gateway(routing="on")
    # the workspace's product ingest will fill this catalog; here the sample shop's products
    for product_id in ("P1001", "P2002"):
        gw.node.routing.bots.catalog.put("shop1", MemoryCatalog.load(SAMPLE).get("shop1", product_id))
    return gw


async def bot_says(client, conv):
    return (await client.next("msg", conv=conv, role="bot"))["body"]


def metric(gw, name, **labels):
    return gw.registry.get_sample_value(name, labels) or 0.0


async def test_a_product_question_is_answered_from_the_catalog(with_bot):
    gw = with_bot
    with trio.fail_after(20):
        async with connect(gw.url, token("alice"), resume={}) as alice:
            conv = (await alice.ok("open"))["conv"]["id"]
            await bot_says(alice, conv)  # greeting
            body = {"kind": "text", "text": "这件外套是什么面料", "meta": {"product": "P1001"}}
            await alice.ok("send", conv=conv, cmid="p1", body=body)
            answer = await bot_says(alice, conv)
            assert answer["intent"] == "product_question" and answer["product"] == "P1001"
            assert "70%羊毛" in answer["text"]
            # the product stays in view for the next question, which carries no meta
            await alice.ok("send", conv=conv, cmid="p2", body={"kind": "text", "text": "M码还有吗"})
            stock = await bot_says(alice, conv)
            assert stock["product"] == "P1001" and "M码暂时缺货" in stock["text"]


async def test_without_a_product_the_bot_asks_which(with_bot):
    gw = with_bot
    with trio.fail_after(20):
        async with connect(gw.url, token("bob"), resume={}) as bob:
            conv = (await bob.ok("open"))["conv"]["id"]
            await bot_says(bob, conv)
            await bob.ok("send", conv=conv, cmid="p1", body={"kind": "text", "text": "这件是什么面料"})
            answer = await bot_says(bob, conv)
            assert answer["intent"] == "product_question" and "product" not in answer and "哪件商品" in answer["text"]


async def test_an_unclear_question_gets_buttons_not_a_person(with_bot):
    gw = with_bot
    with trio.fail_after(20):
        async with connect(gw.url, token("carol"), resume={}) as carol:
            conv = (await carol.ok("open"))["conv"]["id"]
            await bot_says(carol, conv)
            await carol.ok("send", conv=conv, cmid="u1", body={"kind": "text", "text": "那个事情怎么弄"})
            ask = await bot_says(carol, conv)
            assert "intent" not in ask and ask["text"]  # the clarifying question, or the fallback when nothing is recognised
            assert len(ask["quick_replies"]) >= 2 and ask["quick_replies"][-1] == "其他"
            # a tap on a button sends its label, and is answered
            await carol.ok("send", conv=conv, cmid="u2", body={"kind": "text", "text": ask["quick_replies"][0]})
            answer = await bot_says(carol, conv)
            assert answer.get("intent")
            frames = await carol.quiet(0.3)
            assert [f for f in frames if f["t"] == "msg" and f["role"] == "system"] == []  # never queued
            assert metric(gw, "kefu_bot_handoffs_total", reason="clarification_failed") == 0.0


async def test_handoffs_and_containment_are_counted(with_bot):
    gw = with_bot
    before = metric(gw, "kefu_bot_handoffs_total", reason="asked_for_human")
    handed = metric(gw, "kefu_bot_conversations_total", outcome="handed_off")
    contained = metric(gw, "kefu_bot_conversations_total", outcome="contained")
    with trio.fail_after(20):
        async with connect(gw.url, token("dave"), resume={}) as dave:
            conv = (await dave.ok("open"))["conv"]["id"]
            await bot_says(dave, conv)
            await dave.ok("send", conv=conv, cmid="h1", body={"kind": "text", "text": "转人工"})
            queued = (await dave.next("msg", conv=conv, role="system"))["body"]
            assert queued["reason"] == "asked_for_human"

            second = (await dave.ok("open"))["conv"]["id"]
            await bot_says(dave, second)
            await dave.ok("send", conv=second, cmid="q1", body={"kind": "text", "text": "什么时候发货"})
            await bot_says(dave, second)
            await dave.ok("resolve", conv=second)  # answered: the shopper is done
    assert metric(gw, "kefu_bot_handoffs_total", reason="asked_for_human") == before + 1
    assert metric(gw, "kefu_bot_conversations_total", outcome="handed_off") == handed + 1
    assert metric(gw, "kefu_bot_conversations_total", outcome="contained") == contained + 1


async def test_a_changed_knowledge_base_is_refitted_in_a_worker_thread(tmp_path):
    import json
    import os

    from gateway.bots import BotDirectory
    from gateway.routing.config import TenantRouting

    path = tmp_path / "faq.json"
    kb = {"intents": [
        {"id": "invoices", "title": {"zh": "发票"}, "answer": {"zh": "可以开"}, "examples": {"zh": ["能开发票吗", "怎么开票", "要发票", "开个票"]}},
        {"id": "returns", "title": {"zh": "退货"}, "answer": {"zh": "七天无理由"}, "examples": {"zh": ["怎么退货", "能退吗", "想退掉", "退货流程"]}},
    ]}
    path.write_text(json.dumps(kb, ensure_ascii=False), encoding="utf-8")
    bots = BotDirectory()
    routing = TenantRouting(knowledge_base=str(path))
    with trio.fail_after(30):
        first = await bots.reload(str(path))
        assert bots.for_tenant("shop1", routing) is first
        kb["intents"][0]["answer"]["zh"] = "可以开电子发票"
        path.write_text(json.dumps(kb, ensure_ascii=False), encoding="utf-8")
        os.utime(path, ns=(1, 1))  # a different modification time: the file changed
        assert bots.for_tenant("shop1", routing) is first  # still the old fit until reloaded
        second = await bots.reload(str(path))
    assert bots.for_tenant("shop1", routing) is second and second is not first
    session = second.start({"tenant": "shop1", "user": "u"})
    assert second.handle(session, "能开发票吗", 0.0).answer == "可以开电子发票"
    assert second.catalog is bots.catalog  # one catalog for every bot of the gateway


async def test_a_knowledge_base_from_memory_is_installed_under_a_key():
    from gateway.bots import BotDirectory
    from gateway.bot import KnowledgeBase
    from gateway.routing.config import TenantRouting

    kb = KnowledgeBase.from_dict({"intents": [
        {"id": "opening_hours", "title": {"zh": "营业时间"}, "answer": {"zh": "每天9点到21点"},
         "examples": {"zh": ["几点开门", "营业时间", "几点关门", "周末营业吗"]}},
        {"id": "returns", "title": {"zh": "退货"}, "answer": {"zh": "七天无理由"},
         "examples": {"zh": ["怎么退货", "能退吗", "想退掉", "退货流程"]}},
    ]})
    bots = BotDirectory()
    with trio.fail_after(30):
        bot = await bots.install("tenant:shop9", kb)
    assert bots.for_tenant("shop9", TenantRouting(knowledge_base="tenant:shop9")) is bot
    session = bot.start({"tenant": "shop9", "user": "u"})
    assert bot.handle(session, "你们几点开门", 0.0).answer == "每天9点到21点"
