"""Product questions answered from the catalog entry of the product in view (bot session level;
tests/routing/test_bot_products.py does the same over a real socket)."""

from __future__ import annotations

import pytest

from gateway.bot import FaqBot, MemoryCatalog
from gateway.bot.products import aspects

from .conftest import ALICE, T0
from .test_catalog import SAMPLE


@pytest.fixture(scope="module")
def shop(shop_bot) -> FaqBot:
    return FaqBot(shop_bot.kb, shop_bot.settings, classifier=shop_bot.classifier, catalog=MemoryCatalog.load(SAMPLE))


@pytest.mark.parametrize(
    "question, expected",
    [
        ("这件外套是什么面料", "面料：70%羊毛 30%聚酯纤维，里料100%粘胶"),
        ("能机洗吗", "洗涤保养：建议干洗，不可机洗"),
        ("M码还有吗", "M码暂时缺货"),
        ("L码有货吗", "L码现在有货（12件）"),
        ("这件多少钱", "价格：¥899"),
        ("有几种颜色", "颜色：驼色、黑色"),
    ],
)
def test_chinese_questions_about_the_product_in_view(shop, question, expected):
    session = shop.start(ALICE, now=T0, product="P1001")
    reply = shop.handle(session, question, T0 + 1)
    assert reply.intent == "product_question" and reply.product == "P1001" and reply.handoff is None
    assert reply.answer.startswith("「羊毛混纺双排扣大衣」") and expected in reply.answer


@pytest.mark.parametrize(
    "question, expected",
    [
        ("what is it made of", "material: 70% wool, 30% polyester"),
        ("can I machine wash it", "care: dry clean only"),
        ("is the large in stock?", "size L is in stock (12 left)"),
        ("how much is this", "price: ¥899"),
    ],
)
def test_english_questions_get_english_answers(shop, question, expected):
    session = shop.start(ALICE, now=T0, product="P1001")
    reply = shop.handle(session, question, T0 + 1)
    assert reply.intent == "product_question" and reply.language == "en" and expected in reply.answer


def test_the_product_can_come_with_a_later_message(shop):
    session = shop.start(ALICE, now=T0)
    assert shop.handle(session, "在吗", T0).intent == "greeting"
    reply = shop.handle(session, "这件是纯棉的吗", T0 + 1, product="P2002")
    assert reply.product == "P2002" and "面料：100%棉" in reply.answer
    assert session.product == "P2002"
    later = shop.handle(session, "能机洗吗", T0 + 2)  # still about the same product
    assert later.product == "P2002" and "可机洗" in later.answer


def test_without_a_product_in_view_the_bot_asks_which(shop):
    session = shop.start(ALICE, now=T0)
    reply = shop.handle(session, "这件外套是什么面料", T0)
    assert reply.intent == "product_question" and reply.product is None and reply.handoff is None
    assert reply.answer == shop.kb.intent("product_question").answer.zh and "哪件商品" in reply.answer


def test_a_product_the_catalog_does_not_know(shop):
    session = shop.start(ALICE, now=T0, product="P404")
    reply = shop.handle(session, "这件外套是什么面料", T0)
    assert reply.product is None and "查不到" in reply.answer and reply.handoff is None


def test_without_a_catalog_every_product_question_asks(shop_bot):
    session = shop_bot.start(ALICE, now=T0, product="P1001")
    reply = shop_bot.handle(session, "这件外套是什么面料", T0)
    assert reply.product is None and "查不到" in reply.answer


def test_the_size_guide_shows_the_products_size_chart(shop):
    session = shop.start(ALICE, now=T0, product="P1001")
    reply = shop.handle(session, "我穿多大码", T0)
    assert reply.intent == "size_guide" and reply.product == "P1001"
    assert "M（衣长100cm，胸围104cm）" in reply.answer and shop.kb.intent("size_guide").answer.zh in reply.answer


def test_several_questions_about_a_product_are_not_repeats(shop):
    session = shop.start(ALICE, now=T0, product="P1001")
    questions = ["是什么面料", "能机洗吗", "M码还有吗", "有几种颜色", "多少钱"]
    replies = [shop.handle(session, q, T0 + i) for i, q in enumerate(questions)]
    assert [r.handoff for r in replies] == [None] * 5
    assert [r.product for r in replies] == ["P1001"] * 5


def test_the_same_product_question_three_times_is_a_repeat(shop):
    session = shop.start(ALICE, now=T0, product="P1001")
    replies = [shop.handle(session, q, T0 + i) for i, q in enumerate(["是什么面料", "面料是什么", "什么材质的"])]
    assert replies[-1].handoff is not None and replies[-1].handoff.code == "frustrated"


@pytest.mark.parametrize(
    "question, expected",
    [("是什么面料", ["material"]), ("can I wash it", ["care"]), ("M码还有货吗", ["stock"]),
     ("多少钱", ["price"]), ("有哪些尺码", ["sizes"]), ("介绍一下", [])],
)
def test_aspects(question, expected):
    assert aspects(question) == expected
