"""Text normalisation and language detection."""

import pytest

from gateway.bot.text import detect_language, normalise, pinyin_syllables


def test_normalise_folds_width_case_and_spaces():
    assert normalise("  ＷＨＥＲＥ   is　my 订单？？？ ") == "where is my 订单???"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("什么时候发货", "zh"),
        ("iPhone 15 什么时候发货", "zh"),  # any Chinese character: the shopper reads Chinese
        ("when will it ship", "en"),
        ("ok", "en"),
    ],
)
def test_language_is_chinese_when_any_cjk_character(text, expected):
    assert detect_language(text) == expected


@pytest.mark.parametrize("text", ["😀", "123456", "???", ""])
def test_language_without_letters_keeps_the_default(text):
    assert detect_language(text, default="en") == "en"
    assert detect_language(text) == "zh"


def test_traditional_characters_fold_to_simplified():
    assert normalise("這件外套是什麼面料？發貨時間") == "这件外套是什么面料?发货时间"
    assert normalise("退貨 OK") == "退货 ok"


@pytest.mark.parametrize(
    "word, syllables",
    [("fahuo", ["fa", "huo"]), ("xian", ["xian"]), ("tuikuan", ["tui", "kuan"]), ("zhuanrengong", ["zhuan", "ren", "gong"]),
     ("hello", None), ("ok", None), ("ship", None)],
)
def test_pinyin_syllables(word, syllables):
    assert pinyin_syllables(word) == syllables


@pytest.mark.parametrize(
    "text, expected",
    [("shenme shihou fahuo", "zh"), ("tuikuan", "zh"), ("zai ma", "zh"), ("can I pay", "en"), ("hang on", "en"),
     ("hi", "en"), ("he", "en"), ("where is my order", "en")],
)
def test_pinyin_reads_as_chinese(text, expected):
    assert detect_language(text) == expected
