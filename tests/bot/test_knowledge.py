"""Loading knowledge bases: the shipped sample, and errors that name the intent and the field."""

from __future__ import annotations

import copy
import json

import pytest

from gateway.bot import DEFAULT_KNOWLEDGE_BASE, KnowledgeBase, KnowledgeBaseError

REQUIRED_INTENTS = {
    "greeting", "thanks", "shipping_time", "order_status", "shipping_fee", "coupons", "returns",
    "exchanges", "refund_status", "size_guide", "invoices", "payment_methods", "modify_address",
    "cancel_order", "product_question", "authenticity", "warranty", "membership_points", "complaint",
}

MINIMAL = {
    "version": 1,
    "name": "小店",
    "intents": [
        {
            "id": "shipping_time",
            "title": {"zh": "发货时间", "en": "Shipping time"},
            "examples": {"zh": ["什么时候发货"], "en": ["when will it ship"]},
            "answer": {"zh": "48小时内发货哦", "en": "Within 48 hours."},
            "quick_replies": ["returns"],
        },
        {
            "id": "returns",
            "title": {"zh": "退货"},
            "examples": {"zh": ["怎么退货"]},
            "answer": {"zh": "支持七天无理由退货"},
        },
    ],
}


def broken(change) -> dict:
    data = copy.deepcopy(MINIMAL)
    change(data)
    return data


def test_shipped_knowledge_base_is_complete():
    kb = KnowledgeBase.load(DEFAULT_KNOWLEDGE_BASE)
    ids = {intent.id for intent in kb.intents}
    assert REQUIRED_INTENTS <= ids
    for intent in kb.intents:
        # a corpus written for coverage: many ways to ask, in both languages
        assert len(intent.examples_zh) >= 40 and len(intent.examples_en) >= 20, intent.id
        examples = (*intent.examples_zh, *intent.examples_en)
        assert len(set(examples)) == len(examples), f"{intent.id}: duplicate examples"
        assert intent.answer.zh != intent.answer.en, f"{intent.id}: an English answer is missing"
    assert kb.intent("complaint").human_only
    assert [i.id for i in kb.intents if i.human_only] == ["complaint"]
    assert [i.id for i in kb.intents if i.catalog] == ["product_question"]
    every = [text for intent in kb.intents for text in (*intent.examples_zh, *intent.examples_en)]
    assert len(every) == len(set(every)), "an example is given to two intents"
    assert kb.greeting.zh and kb.greeting.en and kb.suggestions


def test_minimal_dict_loads_and_english_falls_back_to_chinese():
    kb = KnowledgeBase.from_dict(MINIMAL)
    returns = kb.intent("returns")
    assert returns.answer.in_language("en") == "支持七天无理由退货"
    assert returns.examples == ("怎么退货", "退货", "退货")  # titles train too: buttons send them
    assert kb.intent("shipping_time").quick_replies == ("returns",)
    assert kb.greeting.zh  # the built-in default


def test_json_file_loads(tmp_path):
    path = tmp_path / "faq.json"
    path.write_text(json.dumps(MINIMAL, ensure_ascii=False), encoding="utf-8")
    assert KnowledgeBase.load(path).source == str(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["intents"][0]["answer"].pop("zh"), "intent 'shipping_time': field 'answer.zh' is missing"),
        (lambda d: d["intents"][1].pop("answer"), "intent 'returns': field 'answer' is missing"),
        (lambda d: d["intents"][1].pop("examples"), "intent 'returns': field 'examples' is missing"),
        (lambda d: d["intents"][1].update(examples={"zh": [], "en": []}), "intent 'returns': field 'examples' needs at least one"),
        (lambda d: d["intents"][1].update(examples={"zh": ["ok", ""]}), "intent 'returns': field 'examples.zh' must be a list of non-empty texts"),
        (lambda d: d["intents"][1].pop("title"), "intent 'returns': field 'title' is missing"),
        (lambda d: d["intents"][1].update(exmaples=[]), "intent 'returns': unknown field 'exmaples'"),
        (lambda d: d["intents"][1].update(human_only="yes"), "intent 'returns': field 'human_only' must be true or false"),
        (lambda d: d["intents"][1].update(catalog=1), "intent 'returns': field 'catalog' must be true or false"),
        (lambda d: d["intents"][0].update(quick_replies=["refunds"]), "intent 'shipping_time': field 'quick_replies' names unknown intent 'refunds'"),
        (lambda d: d["intents"][1].update(id="shipping_time"), "intent 'shipping_time': the id is used by more than one intent"),
        (lambda d: d["intents"][1].pop("id"), "intent #2: field 'id' is missing"),
        (lambda d: d["intents"][1].update(id="Returns!"), "intent #2: field 'id' must be snake_case"),
        (lambda d: d.update(bot={"suggestions": ["nope"]}), "field 'bot': field 'suggestions' names unknown intent 'nope'"),
        (lambda d: d.update(intents=[]), "field 'intents': must be a non-empty list"),
        (lambda d: d.update(version=2), "field 'version': unsupported version 2"),
        (lambda d: d["intents"][1].update(answer={"zh": "您的订单{order.id}可以退"}),
         "intent 'returns': field 'answer' uses {order.id}: add 'answer_without_context'"),
        (lambda d: d["intents"][1].update(answer={"zh": "{order.id}可以退"}, answer_without_context={"zh": "订单{order.id}"}),
         "intent 'returns': field 'answer_without_context' must not use variables"),
    ],
)
def test_errors_name_the_intent_and_the_field(change, message):
    with pytest.raises(KnowledgeBaseError) as raised:
        KnowledgeBase.from_dict(broken(change), source="faq.yaml")
    assert f"faq.yaml: {message}" in str(raised.value)


def test_file_errors_say_which_file(tmp_path):
    with pytest.raises(KnowledgeBaseError, match="cannot read"):
        KnowledgeBase.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("intents: [unclosed", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=r"bad\.yaml: not valid YAML"):
        KnowledgeBase.load(bad)
    text = tmp_path / "faq.txt"
    text.write_text("", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=r"\.yaml, \.yml or \.json"):
        KnowledgeBase.load(text)


def test_a_knowledge_base_writes_itself_out_as_it_reads_and_knows_when_it_needs_the_context():
    kb = KnowledgeBase.load(DEFAULT_KNOWLEDGE_BASE)
    assert KnowledgeBase.from_dict(kb.to_dict(), source=kb.source) == kb
    assert not kb.uses_context and not KnowledgeBase.from_dict(MINIMAL).uses_context
    with_order = broken(lambda d: d["intents"][1].update(answer={"zh": "订单{order.id}可退", "en": "Order {order.id} may be returned"}, answer_without_context={"zh": "请发订单号"}))
    kb = KnowledgeBase.from_dict(with_order)
    assert kb.uses_context and kb.intent("returns").answer_without_context.en == "请发订单号"
    assert KnowledgeBase.from_dict(kb.to_dict()) == kb
