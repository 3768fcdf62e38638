"""Text normalisation and language detection."""

import pytest

from gateway.bot.text import detect_language, normalise


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
