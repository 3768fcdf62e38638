"""The bot's turns: answers in the shopper's language, and each reason to hand off."""

from __future__ import annotations

import json
import os

import pytest

from gateway.bot import (
    ASKED_FOR_HUMAN,
    CLARIFICATION_FAILED,
    FRUSTRATED,
    HUMAN_ONLY_INTENT,
    BotSessionError,
    BotSettings,
    Customer,
    FaqBot,
    KnowledgeBase,
    load_bot,
    load_default_bot,
)

from .conftest import ALICE, T0


def test_greeting_offers_the_suggested_questions(shop_bot, session):
    reply = shop_bot.greeting(session)
    assert reply.answer == shop_bot.kb.greeting.zh and reply.handoff is None
    assert reply.quick_replies == ["发货时间", "查物流", "七天无理由退货", "优惠券规则"]
    assert session.turns[-1].at == T0  # the session's start time


def test_greeting_in_english_when_the_app_says_so(shop_bot):
    session = shop_bot.start(Customer("shop1", "bob", "web"), language="en")
    reply = shop_bot.greeting(session)
    assert reply.answer == shop_bot.kb.greeting.en and reply.quick_replies[0] == "Shipping time"


def test_a_clear_question_is_answered_with_follow_ups(shop_bot, session):
    reply = shop_bot.handle(session, "亲，什么时候发货呀", T0 + 5)
    assert reply.intent == "shipping_time" and reply.confidence >= 0.5 and reply.handoff is None
    assert reply.answer == shop_bot.kb.intent("shipping_time").answer.zh
    assert reply.quick_replies == ["查物流", "运费与包邮"]


def test_answers_follow_the_language_of_each_message(shop_bot, session):
    english = shop_bot.handle(session, "how do I return an item?", T0 + 1)
    assert (english.language, english.answer) == ("en", shop_bot.kb.intent("returns").answer.en)
    assert english.quick_replies == ["Refund status", "Exchanges", "Shipping fee"]
    chinese = shop_bot.handle(session, "那退款多久到账", T0 + 2)
    assert (chinese.language, chinese.answer) == ("zh", shop_bot.kb.intent("refund_status").answer.zh)
    shop_bot.handle(session, "thanks", T0 + 3)
    emoji = shop_bot.handle(session, "🤔🤔", T0 + 4)  # no letters: stay with English
    assert emoji.language == "en" and emoji.clarifying and emoji.quick_replies[-1] == shop_bot.kb.other.en


def test_empty_message_is_ignored(shop_bot, session):
    reply = shop_bot.handle(session, "   ", T0)
    assert reply.answer is None and reply.handoff is None and session.turns == []


def test_asked_for_human(shop_bot, session):
    shop_bot.handle(session, "我的快递到哪了", T0)
    reply = shop_bot.handle(session, "算了，转人工", T0 + 10)
    assert reply.handoff.code == ASKED_FOR_HUMAN and "转人工" in reply.handoff.detail
    assert reply.answer == shop_bot.kb.handoff.zh and reply.quick_replies == []
    assert session.handed_off and session.handoff_at == T0 + 10


def test_asked_for_human_in_english_gets_an_english_notice(shop_bot, session):
    reply = shop_bot.handle(session, "can I speak to a real person", T0)
    assert reply.handoff.code == ASKED_FOR_HUMAN and reply.answer == shop_bot.kb.handoff.en


def test_human_only_intent(shop_bot, session):
    reply = shop_bot.handle(session, "我要投诉你们的快递", T0)
    assert (reply.handoff.code, reply.intent) == (HUMAN_ONLY_INTENT, "complaint")
    assert "complaint" in reply.handoff.detail
    assert reply.answer == shop_bot.kb.intent("complaint").answer.zh  # its own apology


def test_asking_for_a_person_wins_over_other_reasons(shop_bot, session):
    reply = shop_bot.handle(session, "垃圾！！！我要投诉，转人工", T0)
    assert reply.handoff.code == ASKED_FOR_HUMAN
    assert session.frustration.score >= 0.6  # still measured, for the agent


def test_frustrated_by_words_and_punctuation(shop_bot, session):
    reply = shop_bot.handle(session, "怎么还没发货？？？太慢了", T0)
    assert reply.handoff.code == FRUSTRATED
    assert "negative words: 怎么还没, 太慢" in reply.handoff.detail and "'???'" in reply.handoff.detail


def test_frustrated_by_asking_the_same_thing_three_times(shop_bot, session):
    questions = ["我的快递到哪了", "物流到哪里了", "包裹到哪了呢"]
    replies = [shop_bot.handle(session, q, T0 + i) for i, q in enumerate(questions)]
    assert [r.intent for r in replies] == ["order_status"] * 3
    assert [r.handoff for r in replies[:2]] == [None] * 2  # asking twice is a follow-up, not frustration
    assert replies[2].handoff.code == FRUSTRATED and "3 times" in replies[2].handoff.detail


def test_frustrated_when_told_the_answer_did_not_help(shop_bot, session):
    assert shop_bot.handle(session, "退款怎么还没到", T0).handoff is None
    reply = shop_bot.handle(session, "你说的这些没用", T0 + 10)
    assert reply.handoff.code == FRUSTRATED and "did not help" in reply.handoff.detail


def test_an_insult_alone_hands_off(shop_bot, session):
    reply = shop_bot.handle(session, "你们这什么垃圾店", T0)
    assert reply.handoff.code == FRUSTRATED and "垃圾" in reply.handoff.detail


def test_frustrated_after_a_long_wait(shop_bot, session):
    reply = shop_bot.handle(session, "在吗", T0 + 900, waiting_since=T0)
    assert reply.handoff.code == FRUSTRATED and "waited 900 s" in reply.handoff.detail


@pytest.fixture
def picky(shop_bot):
    """The shop's bot answering only when 90 % sure: "about my order" becomes a question it is
    unsure of whatever the model's exact scores (it has two or three plausible intents)."""
    return FaqBot(shop_bot.kb, BotSettings(confidence_threshold=0.9), classifier=shop_bot.classifier)


def test_an_unclear_question_gets_a_clarifying_question_with_buttons(picky):
    session = picky.start(ALICE, now=T0)
    reply = picky.handle(session, "订单的问题", T0)
    assert reply.handoff is None and reply.intent is None and reply.clarifying
    assert reply.answer == picky.kb.clarify.zh  # "您是想问下面哪个问题呢？"
    guesses, other = reply.quick_replies[:-1], reply.quick_replies[-1]
    assert 2 <= len(guesses) <= 3 and other == "其他"
    titles = {intent.title.zh: intent.id for intent in picky.kb.intents}
    assert titles[guesses[0]] == picky.classifier.classify("订单的问题")[0].intent  # best guess first


def test_tapping_a_suggested_button_answers_it(shop_bot, picky):
    session = picky.start(ALICE, now=T0)
    first = picky.handle(session, "订单的问题", T0)
    reply = shop_bot.handle(session, first.quick_replies[0], T0 + 5)  # a title is always clear
    assert reply.handoff is None and reply.intent is not None
    assert shop_bot.kb.intent(reply.intent).title.zh == first.quick_replies[0]
    assert session.unclear_streak == 0


def test_unclear_in_english_gets_english_buttons(picky):
    session = picky.start(ALICE, now=T0)
    reply = picky.handle(session, "about my order", T0)
    assert reply.clarifying and reply.answer == picky.kb.clarify.en and reply.quick_replies[-1] == "Something else"
    assert "Track my order" in reply.quick_replies


def test_nothing_recognised_gets_the_fallback_with_common_questions(shop_bot, session):
    reply = shop_bot.handle(session, "那个事情怎么弄", T0)
    assert reply.clarifying and reply.answer == shop_bot.kb.fallback.zh and reply.handoff is None
    assert reply.quick_replies == ["发货时间", "查物流", "七天无理由退货", "其他"]  # suggestions, then "none of these"


def test_none_of_these_asks_for_the_question_in_words(picky):
    session = picky.start(ALICE, now=T0)
    picky.handle(session, "订单的问题", T0)
    reply = picky.handle(session, "其他", T0 + 5)
    assert reply.answer == picky.kb.rephrase.zh and reply.quick_replies == [] and reply.handoff is None
    assert session.unclear_streak == 2


def test_other_is_only_a_refusal_right_after_a_clarifying_question(shop_bot, session):
    shop_bot.handle(session, "什么时候发货", T0)
    reply = shop_bot.handle(session, "其他", T0 + 5)  # no buttons were offered: just an unclear message
    assert reply.clarifying and reply.answer != shop_bot.kb.rephrase.zh and reply.quick_replies


def test_clarification_fails_after_three_unclear_turns(shop_bot, session):
    assert shop_bot.handle(session, "那个事情怎么弄", T0).handoff is None
    assert shop_bot.handle(session, "其他", T0 + 10).handoff is None
    reply = shop_bot.handle(session, "就是上次说的那个", T0 + 20)
    assert reply.handoff.code == CLARIFICATION_FAILED and "3 messages in a row" in reply.handoff.detail
    assert reply.answer == shop_bot.kb.handoff.zh


def test_two_unclear_questions_are_not_a_handoff(shop_bot, session):
    assert shop_bot.handle(session, "你们老板叫什么名字", T0).handoff is None
    assert shop_bot.handle(session, "今天天气怎么样", T0 + 10).handoff is None


def test_a_clear_question_resets_the_unclear_count(shop_bot, session):
    assert shop_bot.handle(session, "你们老板叫什么名字", T0).handoff is None
    assert shop_bot.handle(session, "能开发票吗", T0 + 1).intent == "invoices"
    assert shop_bot.handle(session, "今天天气怎么样", T0 + 2).handoff is None
    assert session.unclear_streak == 1


def test_clarification_turns_is_configurable(shop_bot):
    hasty = FaqBot(shop_bot.kb, BotSettings(clarification_turns=2), classifier=shop_bot.classifier)
    session = hasty.start(ALICE)
    unclear = ["what's the weather like", "who is your boss"]
    replies = [hasty.handle(session, text, T0 + i) for i, text in enumerate(unclear)]
    assert [r.handoff.code if r.handoff else None for r in replies] == [None, CLARIFICATION_FAILED]


def test_no_bot_turns_after_the_handoff(shop_bot, session):
    shop_bot.handle(session, "人工", T0)
    with pytest.raises(BotSessionError, match="asked_for_human"):
        shop_bot.handle(session, "在吗", T0 + 1)


def test_start_takes_routing_s_customer_dict(shop_bot):
    assert shop_bot.start(ALICE).customer == Customer("shop1", "alice", "app", "王女士")
    with pytest.raises(ValueError, match="'user'"):
        shop_bot.start({"tenant": "shop1"})


def test_settings_are_checked():
    with pytest.raises(ValueError):
        BotSettings(confidence_threshold=1.5)
    with pytest.raises(ValueError):
        BotSettings(clarification_turns=0)


def test_the_fitted_model_is_shared_per_knowledge_base_file(shop_bot, tmp_path):
    assert load_default_bot().classifier is shop_bot.classifier
    path = tmp_path / "faq.json"
    kb = {"intents": [
        {"id": "invoices", "title": {"zh": "发票"}, "answer": {"zh": "可以开"}, "examples": {"zh": ["能开发票吗", "怎么开票"]}},
        {"id": "returns", "title": {"zh": "退货"}, "answer": {"zh": "七天无理由"}, "examples": {"zh": ["怎么退货", "能退吗"]}},
    ]}
    path.write_text(json.dumps(kb, ensure_ascii=False), encoding="utf-8")
    first = load_bot(path)
    assert load_bot(str(path)).classifier is first.classifier
    kb["intents"][0]["answer"]["zh"] = "可以开电子发票"
    path.write_text(json.dumps(kb, ensure_ascii=False), encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a different modification time: the file changed
    second = load_bot(path)
    assert second.classifier is not first.classifier and second.kb.intent("invoices").answer.zh == "可以开电子发票"


def test_a_weak_guess_of_a_human_only_intent_asks_before_calling_a_person(shop_bot, session):
    reply = shop_bot.handle(session, "about the item", T0)
    assert reply.handoff is None and reply.clarifying and "Complaints" in reply.quick_replies
    assert shop_bot.settings.confidence_threshold <= reply.confidence < shop_bot.settings.human_only_threshold
    tapped = shop_bot.handle(session, "Complaints", T0 + 5)
    assert tapped.handoff.code == HUMAN_ONLY_INTENT and tapped.intent == "complaint"


def test_an_answer_with_variables_is_filled_from_the_context_or_said_for_no_context():
    kb = KnowledgeBase.from_dict({"intents": [
        {"id": "order_status", "title": {"zh": "订单状态", "en": "Order status"},
         "answer": {"zh": "{customer.name}，您的订单{order.id}：{order.status}", "en": "Order {order.id}: {order.status}"},
         "answer_without_context": {"zh": "请发一下订单号", "en": "What is your order number?"},
         "examples": {"zh": ["我的订单到哪了", "查订单", "订单状态"], "en": ["where is my order", "order status"]}},
        {"id": "returns", "title": {"zh": "退货"}, "answer": {"zh": "七天无理由"}, "examples": {"zh": ["怎么退货", "能退吗", "想退掉"]}},
    ]})
    bot = FaqBot(kb)
    context = {"customer": {"name": "王女士"}, "order": {"id": "A9", "status": "已发货"}, "product": {}}
    reply = bot.handle(bot.start(ALICE, now=T0), "我的订单到哪了", T0 + 1, context=context)
    assert (reply.intent, reply.answer) == ("order_status", "王女士，您的订单A9：已发货")
    english = bot.handle(bot.start(ALICE, now=T0), "where is my order", T0 + 1, context=context)
    assert english.answer == "Order A9: 已发货"
    no_order = bot.handle(bot.start(ALICE, now=T0), "我的订单到哪了", T0 + 1, context={"customer": {"name": "王女士"}})
    assert no_order.answer == "请发一下订单号"
    assert bot.handle(bot.start(ALICE, now=T0), "我的订单到哪了", T0 + 1).answer == "请发一下订单号"
    assert bot.handle(bot.start(ALICE, now=T0), "怎么退货", T0 + 1, context=context).answer == "七天无理由"


def test_a_person_only_intents_notice_is_filled_from_the_context_too():
    kb = KnowledgeBase.from_dict({"intents": [
        {"id": "complaint", "human_only": True, "title": {"zh": "投诉"},
         "answer": {"zh": "{customer.name}，非常抱歉，马上为您转接专人处理"}, "answer_without_context": {"zh": "非常抱歉，马上为您转接专人处理"},
         "examples": {"zh": ["我要投诉", "投诉你们", "太差了我要投诉"]}},
        {"id": "returns", "title": {"zh": "退货"}, "answer": {"zh": "七天无理由"}, "examples": {"zh": ["怎么退货", "能退吗", "想退掉"]}},
    ]})
    bot = FaqBot(kb)
    reply = bot.handle(bot.start(ALICE, now=T0), "我要投诉", T0 + 1, context={"customer": {"name": "王女士"}})
    assert reply.handoff is not None and reply.answer == "王女士，非常抱歉，马上为您转接专人处理"
    assert bot.handle(bot.start(ALICE, now=T0), "我要投诉", T0 + 1).answer == "非常抱歉，马上为您转接专人处理"
