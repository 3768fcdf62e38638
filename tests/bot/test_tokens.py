"""Word, pinyin and stem features of the classifier."""

import pytest

from gateway.bot.text import normalise
from gateway.bot.tokens import features, stem, words


def test_words_segment_chinese_and_keep_latin_words():
    assert words("这件外套 ok 123") == ["这件", "外套", "ok", "123"]
    assert "包邮" in words("两件包邮吗")  # a shop word jieba's dictionary would split


def test_a_homophone_typo_sounds_like_the_real_word():
    typo, right = set(features(normalise("查下物留"))), set(features(normalise("查下物流")))
    assert "s2:wuliu" in typo and "s2:wuliu" in right


def test_typed_pinyin_meets_the_chinese_words():
    typed, chinese = set(features(normalise("fahuo"))), set(features(normalise("发货")))
    assert "p:fahuo" in typed and "p:fahuo" in chinese


def test_english_words_get_no_pinyin_features():
    assert not [f for f in features(normalise("can I change my address")) if f.startswith(("p:", "s:", "s2:"))]


@pytest.mark.parametrize(
    "word, expected",
    [("shipped", "ship"), ("shipping", "ship"), ("ships", "ship"), ("returned", "return"), ("dress", "dress"),
     ("address", "address"), ("sells", "sell")],
)
def test_stem(word, expected):
    assert stem(word) == expected
