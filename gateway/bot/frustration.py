"""How frustrated the shopper is, from what they wrote and how long they waited.

The score is in [0, 1] and comes with its reasons, so the agent who takes over sees *why* the bot
stepped aside ("asked the same question 3 times", "wrote 垃圾"), not just a number. Each signal has a
weight in [0, 1]; they combine like independent pieces of evidence (1 - Π(1 - w)), so two mild
signals together count more than either alone, and the score never passes 1. Lexical signals come
from the last few shopper messages, the older ones counting less, because frustration builds up.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Sequence

from typing import TYPE_CHECKING

from .knowledge import SMALLTALK
from .text import normalise

if TYPE_CHECKING:
    from .session import Turn

_SHOPPER = "shopper"  # session.SHOPPER (session imports this module)

# Words that show annoyance. Chinese is matched as substrings, English as whole words. Strong words
# (insults, "scam") hand off on their own; mild ones ("怎么还没", "still not") need company.
STRONG_ZH = (
    "垃圾", "骗子", "骗人", "黑店", "坑人", "坑爹", "气死", "受够", "忍无可忍", "恶心", "废物", "什么破",
    "破玩意", "耍我", "搞什么", "搞毛", "烂透", "滚", "有病", "去死", "妈的", "tmd", "12315",
)
MILD_ZH = (
    "太差", "差评", "投诉", "生气", "怎么还没", "还没到", "还不发", "无语", "退钱", "太慢", "敷衍", "举报",
    "浪费时间", "服了", "失望", "离谱", "到底", "急死",
)
STRONG_EN = (
    "scam", "scammer", "scammers", "fraud", "wtf", "pissed", "furious", "disgusting", "pathetic", "ridiculous",
    "rip off", "ripoff", "fed up", "sick of", "worst", "unacceptable", "bullshit", "stupid", "idiot",
)
MILD_EN = (
    "useless", "terrible", "angry", "awful", "horrible", "hate", "still not", "still haven't", "still hasn't",
    "waste of time", "frustrated", "frustrating", "annoyed", "joke", "nonsense", "seriously", "again",
)
NEGATIVE_ZH = STRONG_ZH + MILD_ZH
NEGATIVE_EN = STRONG_EN + MILD_EN
# Saying the bot's answer did not help: on its own a reason to hand off.
NOT_HELPED_ZH = (
    "没用", "没帮助", "没解决", "不解决", "还是不行", "不是这个意思", "不是我问的", "我问的不是",
    "答非所问", "没听懂", "听不懂", "说了等于没说", "没回答", "你在说什么", "看不懂你", "不是这个问题",
    "机器人听不懂", "牛头不对马嘴", "没啥用", "没什么用", "没有用", "不管用", "没帮上", "帮不上", "还是不懂",
    "你说的不对", "回答不对", "不是我要的", "我已经试过", "试过了还是", "这个我知道", "我都知道", "说了半天",
    "还是没解决", "问题没解决",
)
NOT_HELPED_EN = (
    "didn't help", "doesn't help", "did not help", "does not help", "not helpful", "no help", "unhelpful",
    "not what i asked", "that's not what i asked", "you didn't answer", "you did not answer", "not my question",
    "that's not it", "doesn't answer", "didn't answer", "still doesn't work", "still not working",
    "you don't understand", "you're not understanding", "not helping", "not what i meant", "that's wrong",
    "wrong answer", "you're not answering", "you aren't answering", "i already know that", "i already did that",
    "already tried that", "i tried that", "that doesn't work", "that did not work", "that didn't work",
    "not answering my question", "still not solved", "still not resolved", "going in circles", "same answer again",
)
# "没用" but not "没用上券" / "没用过" (did not use): a word, not a verdict, when a verb part follows
_NOT_HELPED_ZH = re.compile("|".join("没用(?![上过到券积掉完])" if p == "没用" else re.escape(p) for p in NOT_HELPED_ZH))
_STRONG = frozenset(STRONG_ZH + STRONG_EN)
_NEGATIVE_EN = re.compile(r"\b(" + "|".join(re.escape(w) for w in NEGATIVE_EN) + r")\b")
_NOT_HELPED_EN = re.compile(r"\b(" + "|".join(re.escape(w) for w in NOT_HELPED_EN) + r")\b")
_COMPARED_CHARS = 300  # repeats are judged on the first characters (difflib is quadratic)
_PUNCTUATION_RUN = re.compile(r"[!?]{3,}")  # after normalise(): ！！！ and ？？？ are ASCII
_LETTERS = re.compile(r"[A-Za-z]")


@dataclass(frozen=True, slots=True)
class FrustrationReason:
    code: str  # "not_helped", "repeated_question", "negative_words", "punctuation", "shouting", "long_wait"
    detail: str  # for the agent: what was seen
    weight: float  # this signal's contribution in [0, 1]


@dataclass(frozen=True, slots=True)
class Frustration:
    score: float  # in [0, 1]
    reasons: tuple[FrustrationReason, ...]


@dataclass(frozen=True, slots=True)
class FrustrationSettings:
    window: int = 4  # how many recent shopper messages are read
    decay: float = 0.5  # weight of a message one step older than the last
    strong_word: float = 0.65  # one strong negative word ("垃圾", "scam") in the last message
    mild_word: float = 0.35  # one mild one ("怎么还没", "still not"); words add up, two at most
    not_helped: float = 0.65  # "没用", "that didn't help": the shopper says the bot failed them
    punctuation: float = 0.3  # "!!!", "？？？"
    shouting: float = 0.35  # an English message in capitals
    repeat: float = 0.4  # per earlier message with the same intent or nearly the same text (3 asks: 0.64)
    similar_text: float = 0.85  # difflib ratio above which two messages are "the same question"
    wait_from_s: float = 60.0  # a wait shorter than this is not a reason
    wait_full_s: float = 600.0  # a wait this long (or longer) weighs `long_wait`
    long_wait: float = 0.6


class FrustrationMeter:
    """Scores the shopper's frustration over a conversation's turns (sans-IO: time is passed in)."""

    def __init__(self, settings: FrustrationSettings = FrustrationSettings()) -> None:
        self.settings = settings

    def assess(self, turns: Sequence[Turn], now: float, *, waiting_since: float | None = None) -> Frustration:
        """Frustration as of the last shopper turn in ``turns``, at ``now`` (epoch seconds).

        ``waiting_since`` is when the shopper's oldest still-unanswered message was sent, for a
        caller that knows better than the transcript (messages the bot never saw); by default it is
        the first shopper turn after the bot's last real answer (a fallback answers nothing).
        """
        s = self.settings
        recent = [turn for turn in turns if turn.role == _SHOPPER][-s.window:]
        if not recent:
            return Frustration(0.0, ())
        reasons: list[FrustrationReason] = []
        reasons += self._lexical(recent)
        reasons += self._repeats(recent)
        if waiting_since is None:
            waiting_since = _unanswered_since(turns)
        if waiting_since is not None:
            reasons += self._wait(now - waiting_since)
        calm = 1.0
        for reason in reasons:
            calm *= 1.0 - reason.weight
        return Frustration(round(1.0 - calm, 4), tuple(sorted(reasons, key=lambda r: -r.weight)))

    def _lexical(self, recent: list[Turn]) -> list[FrustrationReason]:
        s = self.settings
        found: dict[str, tuple[float, str]] = {}  # code -> (weight, detail), strongest kept

        def keep(code: str, weight: float, detail: str) -> None:
            if weight > found.get(code, (0.0, ""))[0]:
                found[code] = (weight, detail)

        for age, turn in enumerate(reversed(recent)):
            factor = s.decay**age
            text = normalise(turn.text)
            words = negative_words(text)
            if words:
                strongest = sorted((s.strong_word if w in _STRONG else s.mild_word for w in words), reverse=True)[:2]
                weight = 1.0 - math.prod(1.0 - w for w in strongest)
                keep("negative_words", weight * factor, f"negative words: {', '.join(words)}")
            said = not_helped(text)
            if said:
                keep("not_helped", s.not_helped * factor, f"said the answer did not help ({said!r})")
            run = _PUNCTUATION_RUN.search(text)
            if run:
                keep("punctuation", s.punctuation * factor, f"punctuation run {run.group()!r}")
            if is_shouting(turn.text):
                keep("shouting", s.shouting * factor, "message in capitals")
        return [FrustrationReason(code, detail, round(weight, 4)) for code, (weight, detail) in found.items()]

    def _repeats(self, recent: list[Turn]) -> list[FrustrationReason]:
        s = self.settings
        last, earlier = recent[-1], recent[:-1]
        text = normalise(last.text)[:_COMPARED_CHARS]
        repeats = 0
        for turn in earlier:
            same_intent = last.intent and _topic(turn) == _topic(last) and last.category != SMALLTALK
            same_text = difflib.SequenceMatcher(None, text, normalise(turn.text)[:_COMPARED_CHARS]).ratio() >= s.similar_text
            repeats += bool(same_intent or same_text)
        if not repeats:
            return []
        weight = 1.0 - (1.0 - s.repeat) ** repeats
        what = f"intent '{last.intent}'" if last.intent and last.category != SMALLTALK else "nearly the same text"
        return [FrustrationReason("repeated_question", f"asked again ({repeats + 1} times, {what})", round(weight, 4))]

    def _wait(self, waited: float) -> list[FrustrationReason]:
        s = self.settings
        if waited < s.wait_from_s:
            return []
        fraction = min(1.0, (waited - s.wait_from_s) / max(1.0, s.wait_full_s - s.wait_from_s))
        weight = round(s.long_wait * max(fraction, 0.1), 4)
        return [FrustrationReason("long_wait", f"waited {int(waited)} s without an answer", weight)]


def negative_words(text: str) -> list[str]:
    """The negative words in ``text`` (already normalised), in list order, each once."""
    found = [word for word in NEGATIVE_ZH if word in text]
    for match in _NEGATIVE_EN.finditer(text):
        if match.group() not in found:
            found.append(match.group())
    return found


def not_helped(text: str) -> str | None:
    """The phrase with which ``text`` (normalised) says the bot's answer did not help, or None."""
    match = _NOT_HELPED_ZH.search(text)
    if match:
        return match.group()
    match = _NOT_HELPED_EN.search(text.replace("\u2019", "'"))
    return match.group() if match else None


def is_shouting(text: str) -> bool:
    """An English message written in capitals: at least 6 letters, nearly all upper case, and at
    least two words (so "OK", "SKU123" or "DHL" alone are not shouting)."""
    letters = _LETTERS.findall(text)
    if len(letters) < 6 or len(text.split()) < 2:
        return False
    return sum(c.isupper() for c in letters) / len(letters) >= 0.8


def _topic(turn: Turn) -> str | None:
    """What a turn asked: its topic when the bot noted one (product questions differ by the
    attribute asked), else its intent."""
    return turn.topic or turn.intent


def _unanswered_since(turns: Sequence[Turn]) -> float | None:
    """When the first shopper turn after the bot's last real answer was sent (None: none)."""
    since = None
    for turn in turns:
        if turn.role == _SHOPPER:
            if since is None:
                since = turn.at
        elif turn.answered:
            since = None
    return since
