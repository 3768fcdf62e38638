"""Why the bot hands a conversation to a person, and recognising a shopper who asks for one.

A request for a person ("转人工", "real person", …) is checked before intent recognition, because it
must win whatever else the message says ("退货太麻烦了，转人工"). A phrase right after a negation
("不用人工", "no need for an agent") is not a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .text import normalise

# The reason codes: stable, routing and reports switch on them (docs/routing.md lists them).
ASKED_FOR_HUMAN = "asked_for_human"
HUMAN_ONLY_INTENT = "human_only_intent"
FRUSTRATED = "frustrated"  # anger, repeated questions, "that didn't help", a long wait
CLARIFICATION_FAILED = "clarification_failed"  # still not understood after asking what was meant
HANDOFF_CODES = (ASKED_FOR_HUMAN, HUMAN_ONLY_INTENT, FRUSTRATED, CLARIFICATION_FAILED)


@dataclass(frozen=True, slots=True)
class HandoffReason:
    code: str  # one of HANDOFF_CODES
    detail: str  # human-readable, for the agent who takes over


# Chinese: substrings, the more specific first (the first found is the one reported).
HUMAN_PHRASES_ZH = (
    "人工客服", "转人工", "找人工", "要人工", "接人工", "人工服务", "人工", "真人", "活人",
    "不要机器人", "别用机器人", "不想跟机器人", "不想和机器人", "不跟机器人", "不和机器人", "不要自动回复",
    "客服人员", "叫你们经理", "找你们经理", "找客服", "转客服", "叫客服", "联系客服", "真的客服",
    "在线客服", "rengong", "renggong",
)
# English: whole words or phrases (regular expressions).
HUMAN_PHRASES_EN = (
    r"real (?:person|human|people)",
    r"live (?:agent|person|chat|support)",
    r"(?:speak|talk|chat) (?:to|with) (?:a |an |the |your )?(?:someone|somebody|person|human|people|staff|agent|representative|manager|operator|customer (?:service|support))",
    r"humans?",
    r"agents?",
    r"representative",
    r"operator",
    r"(?:need|want|contact|get|reach|call) (?:a |the |your )?customer (?:service|support|care)",
    r"customer (?:service|support|care) (?:please|pls|rep|representative|team|agent|person)",
    r"support (?:team|staff)",
    r"(?:someone|somebody) (?:real|from (?:the |your )?(?:team|shop|store|customer service|support))",
    r"(?:your|a) manager",
    r"get (?:me )?(?:the|a|your) manager",
    r"live help",
    r"not a (?:bot|robot)",
)
_HUMAN_EN = re.compile(r"\b(" + "|".join(HUMAN_PHRASES_EN) + r")\b")
_NEGATION_ZH = re.compile(r"(不用|不需要|无需|不必)$")
_NEGATION_EN = re.compile(r"\b(no need (for|of)|(don't|do not|dont) (need|want)( to (speak|talk) (to|with))?)( an?| the)?\s*$")


# Asking what the bot is ("你是真人吗", "are you a bot or a human?") is not asking for a person.
_IDENTITY_ZH = re.compile(r"(你|您|这|对面)(们)?(是|是不是)(真人|人工|机器人|ai|智能|自动回复|程序)|是(真人|人工|机器人)(吗|嘛|么|还是)")
_IDENTITY_EN = re.compile(
    r"\b(are you|r u|is (this|that|it)|am i (talking|speaking|chatting) (to|with))\b[^.?!]*\b(bot|robot|human|real|person|ai|agent|machine)\b"
)


def asks_for_human(text: str) -> str | None:
    """The phrase with which ``text`` asks for a person, or None."""
    text = normalise(text)
    if _IDENTITY_ZH.search(text) or _IDENTITY_EN.search(text):
        return None
    for phrase in HUMAN_PHRASES_ZH:
        start = text.find(phrase)
        if start >= 0 and text.startswith("人工智能", start):  # "artificial intelligence"
            start = text.find(phrase, start + 4)
        if start >= 0 and not _NEGATION_ZH.search(text[:start]):
            return phrase
    for match in _HUMAN_EN.finditer(text):
        if not _NEGATION_EN.search(text[: match.start()]):
            return match.group()
    return None
