"""Intent recognition on questions the knowledge base has never seen, and a meaningful confidence."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.bot import IntentClassifier, KnowledgeBase

HELDOUT = yaml.safe_load((Path(__file__).parent / "heldout.yaml").read_text(encoding="utf-8"))

# Floors under the figures measured when the classifier was built (zh 0.93, en 0.76, out of scope
# 1.00 in both languages, at the default threshold 0.5). English trails: the knowledge base has 8
# English examples per intent, and character n-grams cannot link synonyms it lacks
# ("voucher" ~ "coupon", "counterfeit" ~ "fake"): more examples, not a new model, close that gap.
FLOOR_IN_SCOPE = {"zh": 0.85, "en": 0.70, "all": 0.85}
FLOOR_OUT_OF_SCOPE = 0.80
THRESHOLD = 0.5


def evaluate(classifier: IntentClassifier, rows: list[dict]) -> tuple[float, float, list[str]]:
    """(share of in-scope questions answered with the right intent, share of out-of-scope ones
    kept under the threshold, the misses)."""
    right = wrong_scope = in_scope = out_of_scope = 0
    misses = []
    for row in rows:
        best = classifier.classify(row["text"])[0]
        if row["intent"] is None:
            out_of_scope += 1
            ok = best.score < THRESHOLD
            wrong_scope += not ok
        else:
            in_scope += 1
            ok = best.intent == row["intent"] and best.score >= THRESHOLD
            right += ok
        if not ok:
            misses.append(f"{row['text']!r}: expected {row['intent']}, got {best.intent} at {best.score:.2f}")
    return right / in_scope, 1 - wrong_scope / out_of_scope, misses


def test_heldout_set_is_big_enough_and_unseen(shop_bot):
    in_scope = {lang: [r for r in HELDOUT[lang] if r["intent"]] for lang in ("zh", "en")}
    assert len(in_scope["zh"]) >= 40 and len(in_scope["en"]) >= 20
    assert all(any(r["intent"] is None for r in HELDOUT[lang]) for lang in ("zh", "en"))
    known = {text for intent in shop_bot.kb.intents for text in intent.examples}
    ids = {intent.id for intent in shop_bot.kb.intents}
    for row in HELDOUT["zh"] + HELDOUT["en"]:
        assert row["text"] not in known, f"{row['text']!r} is a knowledge base example"
        assert row["intent"] is None or row["intent"] in ids


def test_heldout_accuracy(shop_bot):
    figures, all_right, all_in = {}, 0.0, 0
    for language in ("zh", "en"):
        rows = HELDOUT[language]
        in_scope, out_of_scope, misses = evaluate(shop_bot.classifier, rows)
        figures[language] = (in_scope, out_of_scope)
        count = sum(1 for r in rows if r["intent"])
        all_right += in_scope * count
        all_in += count
        print(f"\n{language}: in-scope accuracy {in_scope:.2f} ({count} questions), "
              f"out-of-scope detection {out_of_scope:.2f}")
        for miss in misses:
            print("  miss:", miss)
        assert in_scope >= FLOOR_IN_SCOPE[language], misses
        assert out_of_scope >= FLOOR_OUT_OF_SCOPE, misses
    print(f"all: in-scope accuracy {all_right / all_in:.2f}")
    assert all_right / all_in >= FLOOR_IN_SCOPE["all"]


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
    ],
)
def test_colloquial_and_misspelt_questions(shop_bot, text, intent):
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
