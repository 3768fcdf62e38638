"""The frustration score and its reasons."""

from __future__ import annotations

import pytest

from gateway.bot import BOT, SHOPPER, FrustrationMeter, FrustrationSettings, Turn

T0 = 1_795_600_000.0
meter = FrustrationMeter()


def shopper(text, at=T0, intent=None, category=""):
    return Turn(SHOPPER, text, at, intent=intent, category=category)


def answer(at=T0):
    return Turn(BOT, "亲，……", at, answered=True)


def fallback(at=T0):
    return Turn(BOT, "抱歉没明白", at)


def codes(frustration):
    return {reason.code for reason in frustration.reasons}


def test_a_calm_question_scores_zero():
    assert meter.assess([shopper("什么时候发货")], T0) == meter.assess([], T0)
    assert meter.assess([shopper("什么时候发货")], T0).score == 0.0


@pytest.mark.parametrize(
    "text, code",
    [
        ("怎么还没发货", "negative_words"),
        ("this is useless", "negative_words"),
        ("发货了吗？？？", "punctuation"),
        ("hello!!!", "punctuation"),
        ("WHERE IS MY PARCEL", "shouting"),
    ],
)
def test_each_mild_signal_alone_does_not_hand_off(text, code):
    frustration = meter.assess([shopper(text)], T0)
    assert codes(frustration) == {code}
    assert 0.0 < frustration.score < 0.6


@pytest.mark.parametrize(
    "text, code",
    [
        ("你们这什么垃圾服务", "negative_words"),
        ("骗子店", "negative_words"),
        ("that's ridiculous", "negative_words"),
        ("this is a scam", "negative_words"),
        ("你说的没用", "not_helped"),
        ("答非所问", "not_helped"),
        ("that didn't help", "not_helped"),
        ("that’s not what I asked", "not_helped"),
    ],
)
def test_an_insult_or_saying_it_did_not_help_is_enough(text, code):
    frustration = meter.assess([shopper(text)], T0)
    assert codes(frustration) == {code}
    assert frustration.score >= 0.6


@pytest.mark.parametrize("text", ["下单的时候没用上券怎么办", "我还没用过这个券", "no, I haven't used it", "thanks, that helps"])
def test_not_helped_needs_the_verdict_not_the_words(text):
    assert "not_helped" not in codes(meter.assess([shopper(text)], T0))


@pytest.mark.parametrize("text", ["OK", "DHL?", "I got SKU AB12", "Thanks a lot", "I hate to bother you"])
def test_capitals_in_passing_are_not_shouting(text):
    assert "shouting" not in codes(meter.assess([shopper(text)], T0))


def test_signals_add_up_but_stay_under_one():
    frustration = meter.assess([shopper("WHERE IS MY ORDER??? THIS IS USELESS, TERRIBLE SCAM")], T0)
    assert codes(frustration) == {"negative_words", "punctuation", "shouting"}
    assert 0.8 < frustration.score <= 1.0
    assert [r.weight for r in frustration.reasons] == sorted((r.weight for r in frustration.reasons), reverse=True)
    negative = next(r for r in frustration.reasons if r.code == "negative_words")
    assert negative.detail == "negative words: useless, terrible, scam"


def test_repeated_intent_counts_each_earlier_ask():
    turns = [shopper("我的快递到哪了", intent="order_status"), answer()]
    turns += [shopper("物流到哪里了", intent="order_status")]
    once = meter.assess(turns, T0)
    assert codes(once) == {"repeated_question"} and once.reasons[0].detail == "asked again (2 times, intent 'order_status')"
    turns += [answer(), shopper("包裹呢", intent="order_status")]
    twice = meter.assess(turns, T0)
    assert twice.score > once.score and "3 times" in twice.reasons[0].detail
    assert once.score < 0.6 <= twice.score  # a follow-up is fine; the third ask hands off


def test_near_identical_text_repeats_even_without_an_intent():
    turns = [shopper("我那个东西啥时候能到"), fallback(), shopper("我那个东西啥时候能到啊")]
    assert codes(meter.assess(turns, T0)) == {"repeated_question"}


def test_smalltalk_again_is_not_a_repeat():
    turns = [shopper("谢谢", intent="thanks", category="smalltalk"), answer()]
    turns += [shopper("好的多谢", intent="thanks", category="smalltalk")]
    assert meter.assess(turns, T0).score == 0.0


def test_older_messages_count_less_and_drop_out_of_the_window():
    angry = shopper("垃圾")
    recent = meter.assess([angry], T0).score
    older = meter.assess([angry, answer(), shopper("发票怎么开")], T0).score
    assert 0 < older < recent
    calm = [shopper(f"问题{i}号") for i in range(4)]
    assert meter.assess([angry, *calm], T0).score == 0.0  # window of 4 shopper messages


def test_long_wait_from_the_transcript_since_the_last_real_answer():
    turns = [shopper("发货了吗", at=T0), fallback(at=T0), shopper("在吗", at=T0 + 400)]
    frustration = meter.assess(turns, T0 + 400)
    assert codes(frustration) == {"long_wait"}
    assert frustration.reasons[0].detail == "waited 400 s without an answer"
    answered = [shopper("发货了吗", at=T0), answer(at=T0), shopper("好的", at=T0 + 400)]
    assert meter.assess(answered, T0 + 400).score == 0.0


def test_long_wait_passed_in_grows_with_the_wait():
    turns = [shopper("在吗", at=T0 + 1000)]
    assert meter.assess(turns, T0 + 1000, waiting_since=T0 + 990).score == 0.0  # under a minute
    short = meter.assess(turns, T0 + 1000, waiting_since=T0 + 880).score
    long = meter.assess(turns, T0 + 1000, waiting_since=T0).score
    assert 0 < short < long == FrustrationSettings().long_wait


def test_settings_change_the_weights():
    strict = FrustrationMeter(FrustrationSettings(punctuation=0.9))
    assert strict.assess([shopper("???")], T0).score == 0.9
