"""Intent recognition on the dev set and on the kinds of text shoppers type, and a calibrated confidence."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import LinearSVC

from gateway.bot import BotSettings, IntentClassifier, KnowledgeBase
from gateway.bot.classifier import CalibratedFolds, load_out_of_scope
from gateway.bot.text import normalise

DEV = yaml.safe_load((Path(__file__).parent / "dev" / "questions.yaml").read_text(encoding="utf-8"))

# Floors under the dev-set figures measured when the classifier was built (docs/routing.md: zh 0.92,
# en 0.94 answered right at the default threshold; raw top-1 0.94/0.96). The dev set guided the
# choices, so these guard against regressions; they do not measure unseen data.
FLOOR_ANSWERED = {"zh": 0.88, "en": 0.88}
FLOOR_OUT_OF_SCOPE = 0.80
THRESHOLD = BotSettings().confidence_threshold


def test_dev_set_is_big_enough_and_not_in_the_training_data(shop_bot):
    ids = {intent.id for intent in shop_bot.kb.intents}
    in_scope = {lang: [r for r in DEV if r["lang"] == lang and r["intent"] in ids] for lang in ("zh", "en")}
    assert len(in_scope["zh"]) >= 100 and len(in_scope["en"]) >= 60
    assert {r["intent"] for r in DEV} - ids == {"out_of_scope"}
    assert ids <= {r["intent"] for r in DEV}  # every intent is measured
    known = {normalise(text) for intent in shop_bot.kb.intents for text in intent.examples}
    known |= {normalise(text) for texts in load_out_of_scope().values() for text in texts}
    assert [r["text"] for r in DEV if normalise(r["text"]) in known] == []


def test_dev_set_accuracy(shop_bot):
    ids = {intent.id for intent in shop_bot.kb.intents}
    for language in ("zh", "en"):
        rows = [r for r in DEV if r["lang"] == language and r["intent"] in ids]
        best = [shop_bot.classifier.classify(r["text"])[0] for r in rows]
        answered = sum(b.intent == r["intent"] and b.score >= THRESHOLD for b, r in zip(best, rows)) / len(rows)
        misses = [f"{r['text']!r}: {r['intent']} -> {b.intent} {b.score:.2f}" for b, r in zip(best, rows) if b.intent != r["intent"]]
        assert answered >= FLOOR_ANSWERED[language], misses
    outside = [r for r in DEV if r["intent"] not in ids]
    kept_out = sum(shop_bot.classifier.classify(r["text"])[0].score < THRESHOLD for r in outside) / len(outside)
    assert kept_out >= FLOOR_OUT_OF_SCOPE


def test_scores_are_calibrated_on_the_dev_set(shop_bot):
    """Of the questions answered with confidence p, about p are right: the top score's mean is
    close to the top-1 accuracy, in and out of scope together."""
    ids = {intent.id for intent in shop_bot.kb.intents}
    best = [shop_bot.classifier.classify(r["text"])[0] for r in DEV]
    accuracy = sum(b.intent == r["intent"] for b, r in zip(best, DEV) if r["intent"] in ids) / len(DEV)
    mean_score = sum(b.score for b in best) / len(best)
    assert abs(mean_score - accuracy) < 0.25, (mean_score, accuracy)
    high = [b.intent == r["intent"] for b, r in zip(best, DEV) if b.score >= 0.8]
    assert high and sum(high) / len(high) >= 0.9  # confident answers are right


def test_the_fast_predictor_matches_scikit_learn():
    """CalibratedFolds must give scikit-learn's own calibrated probabilities."""
    rng = np.random.default_rng(0)
    features = rng.random((90, 12))
    labels = np.array(["a", "b", "c"] * 30)
    features[labels == "a", 0] += 1.0
    features[labels == "b", 1] += 1.0
    model = CalibratedClassifierCV(LinearSVC(C=0.5), method="temperature", cv=3).fit(features, labels)
    fast = CalibratedFolds.from_sklearn(model)
    query = rng.random((7, 12))
    assert list(fast.classes_) == list(model.classes_)
    np.testing.assert_allclose(fast.predict_proba(query), model.predict_proba(query), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("text", ["你们老板叫什么名字", "what's the weather", "今天天气怎么样", "tell me a joke"])
def test_out_of_domain_questions_get_low_confidence(shop_bot, text):
    assert shop_bot.classifier.classify(text)[0].score < 0.4


@pytest.mark.parametrize(
    "text, intent",
    [
        ("什么时候发或", "shipping_time"),  # typo: 货 -> 或
        ("亲，啥时候发货呀？？", "shipping_time"),
        ("ＷＨＥＲＥ ＩＳ ＭＹ ＯＲＤＥＲ", "order_status"),  # full-width capitals
        ("查下物留", "order_status"),
        ("退款", "refund_status"),
        ("我要退款", "returns"),
        ("什麼時候發貨", "shipping_time"),  # traditional characters
        ("shenme shihou fahuo", "shipping_time"),  # typed pinyin
        ("tuikuan jindu", "refund_status"),
        ("包油吗", "shipping_fee"),  # homophone: 油 for 邮
        ("hello 包邮吗", "shipping_fee"),  # mixed
        ("这件外套是什么面料", "product_question"),
        ("can I machine wash this", "product_question"),
        ("XL码还有货吗🙏", "product_question"),  # emoji; "有XL码吗" alone is size_guide or stock, unclear
    ],
)
def test_colloquial_and_misspelt_questions(shop_bot, text, intent):
    best = shop_bot.classifier.classify(text)[0]
    assert (best.intent, best.score >= THRESHOLD) == (intent, True)


@pytest.mark.parametrize(
    "text, intent",
    [("谢谢 那运费谁出", "shipping_fee"), ("你好 我要退货", "returns"), ("在吗 发票怎么开", "invoices"),
     ("ok thanks, and can I pay with paypal", "payment_methods"), ("hi, I want to return my shoes", "returns"),
     ("谢谢", "thanks"), ("好的谢谢", "thanks"), ("hello", "greeting")],
)
def test_greetings_and_thanks_do_not_derail_a_question(shop_bot, text, intent):
    best = shop_bot.classifier.classify(text)[0]
    assert (best.intent, best.score >= THRESHOLD) == (intent, True)


def test_every_button_label_leads_to_its_intent(shop_bot):
    # quick replies are intent titles: tapping one sends the title as the shopper's message
    for intent in shop_bot.kb.intents:
        for language in ("zh", "en"):
            best = shop_bot.classifier.classify(intent.title.in_language(language))[0]
            assert (best.intent, best.score >= THRESHOLD) == (intent.id, True), (intent.id, language, best)


def test_classify_returns_the_top_three_best_first(shop_bot):
    matches = shop_bot.classifier.classify("怎么退货")
    assert len(matches) == 3 and len({m.intent for m in matches}) == 3
    assert matches[0].intent == "returns"
    assert all(0.0 <= m.score <= 1.0 for m in matches)
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    assert shop_bot.classifier.classify("   ") == []


def test_a_small_chinese_only_knowledge_base_fits_and_serves_english_too():
    kb = KnowledgeBase.from_dict(
        {
            "intents": [
                {"id": "shipping_time", "title": {"zh": "发货时间"}, "answer": {"zh": "48小时内发货"},
                 "examples": {"zh": ["什么时候发货", "多久发货", "几天能发出", "今天能发吗", "发货要多久"]}},
                {"id": "returns", "title": {"zh": "退货"}, "answer": {"zh": "七天无理由"},
                 "examples": {"zh": ["怎么退货", "可以退吗", "不想要了能退吗", "退货流程", "能七天无理由退货吗"]}},
            ]
        }
    )
    classifier = IntentClassifier.fit(kb)
    assert classifier.languages == ("zh",)
    assert classifier.classify("多久能发货呀")[0].intent == "shipping_time"
    assert classifier.classify("when will it ship")[0].score < THRESHOLD  # no English examples


def test_only_the_head_of_a_long_message_is_read(shop_bot):
    from gateway.bot.classifier import MAX_CHARS

    head = "我的快递到哪了" * 50  # 350 characters
    long = head[:MAX_CHARS] + "无关的内容" * 900  # 5,000 characters, the protocol's maximum
    assert shop_bot.classifier.classify(long) == shop_bot.classifier.classify(head[:MAX_CHARS])
