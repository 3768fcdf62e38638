"""Words and sounds of a shopper's message: the features a character n-gram cannot see.

Character n-grams catch typos and need no dictionary, but they cannot tell a word from a chance
pair of characters ("发货" in "发货时间" vs "发" + "货到付款"). So the classifier also reads:

- words: Chinese split by jieba (the jieba-rs port, ``rjieba``, with the shop's own vocabulary
  added), Latin words as written and
  crudely stemmed ("shipped", "shipping" -> "ship"), and pairs of neighbouring words;
- sounds: the toneless pinyin of every Chinese word and of Latin text that reads as pinyin, as whole
  words and as syllable pairs. Shoppers type homophones (发或 for 发货, 物留 for 物流) and pinyin
  ("fahuo", "tui kuan"); both sound like what the knowledge base says.

Input is ``text.normalise``d text. The segmenter loads its dictionary on first use (0.2 s, 33 MB;
the Python ``jieba`` took 1.5 s and 130 MB, and 25x longer per message).
"""

from __future__ import annotations

import re
import threading

import rjieba
from pypinyin import lazy_pinyin

from .text import looks_like_pinyin, pinyin_syllables

# Shop words jieba's general dictionary splits apart; added to this module's own tokenizer only.
SHOP_WORDS = (
    "包邮", "运费险", "七天无理由", "尺码表", "尺码", "码数", "偏大", "偏小", "退货", "退款", "换货",
    "发货", "物流", "快递单号", "签收", "优惠券", "满减", "花呗", "分期", "代付", "开票", "专票",
    "抬头", "税号", "修改地址", "收货地址", "取消订单", "正品", "假货", "高仿", "防伪码", "保修",
    "质保", "起球", "开线", "掉色", "积分", "会员", "面料", "材质", "机洗", "干洗", "补货", "现货",
    "预售", "转人工", "人工客服",
)

_PIECES = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z]+|\d+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_lock = threading.Lock()
_segmenter: rjieba.Jieba | None = None


def _jieba() -> rjieba.Jieba:
    """This module's own segmenter (the shop words are added to it, not to a shared one)."""
    global _segmenter
    with _lock:
        if _segmenter is None:
            segmenter = rjieba.Jieba()
            for word in SHOP_WORDS:
                segmenter.add_word(word, 20000, None)
            _segmenter = segmenter
        return _segmenter


def words(text: str) -> list[str]:
    """The words of ``text``: jieba's for Chinese runs, whole Latin words, numbers."""
    return [word for word, _ in _words_and_sounds(text, with_sounds=False)]


def _words_and_sounds(text: str, with_sounds: bool = True) -> list[tuple[str, list[str] | None]]:
    """Each word with its pinyin syllables (None: not a word that sounds like anything)."""
    out: list[tuple[str, list[str] | None]] = []
    latin_is_pinyin = with_sounds and looks_like_pinyin(_CJK.sub(" ", text))  # "fahuo", not "can I change"
    for piece in _PIECES.findall(text):
        if _CJK.match(piece):
            sounds = lazy_pinyin(piece) if with_sounds else []
            at = 0
            for word in _jieba().cut(piece, True):  # True: HMM for words not in the dictionary
                out.append((word, sounds[at : at + len(word)] if with_sounds else None))
                at += len(word)
        else:
            out.append((piece, pinyin_syllables(piece) if latin_is_pinyin and piece.isalpha() else None))
    return out


_SUFFIXES = ("ing", "ed", "es", "s", "ly", "er")


def stem(word: str) -> str:
    """A crude English stem, enough to let "shipped", "ships" and "shipping" meet at "ship"."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]  # shipp -> ship, but not "sell" -> "sel"
            return word
    return word


def features(text: str) -> list[str]:
    """Word, word-pair and pinyin features of normalised ``text`` (the classifier's word analyzer)."""
    pairs = _words_and_sounds(text)
    tokens = [word for word, _ in pairs]
    feats = [f"w:{w}" for w in tokens]
    feats += [f"st:{stem(w)}" for w in tokens if w.isascii() and w.isalpha() and len(w) > 3]
    feats += [f"w2:{a}|{b}" for a, b in zip(tokens, tokens[1:])]
    syllables: list[str] = []
    for _, sounds in pairs:
        if sounds:
            feats.append("p:" + "".join(sounds))
            syllables.extend(sounds)
    feats += [f"s:{s}" for s in syllables]
    feats += [f"s2:{a}{b}" for a, b in zip(syllables, syllables[1:])]
    return feats
