"""The FAQ bot: answers a shopper's questions from a knowledge base and knows when to step aside.

Sans-IO: ``handle`` takes the shopper's text and the time, updates the session and returns what to
say; the caller (routing) sends it and, on a handoff, queues the conversation for a person with
``context_packet(session)``. One ``FaqBot`` serves every conversation of a knowledge base; the
per-conversation state is the ``BotSession``.

Each shopper turn is checked for a handoff in this order, the first that applies being the reason:
asked for a person, a human-only intent, frustration over its threshold, and low confidence for
``low_confidence_turns`` turns in a row. Short of that, a confident intent is answered and an
unclear question gets the fallback text with likely questions as quick replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .classifier import IntentClassifier, IntentMatch
from .frustration import FrustrationMeter, FrustrationSettings
from .handoff import ASKED_FOR_HUMAN, FRUSTRATED, HUMAN_ONLY_INTENT, LOW_CONFIDENCE, HandoffReason, asks_for_human
from .knowledge import Intent, KnowledgeBase
from .packet import context_packet
from .session import BOT, SHOPPER, BotSession, Customer, Turn
from .text import LANGUAGES, detect_language

DEFAULT_KNOWLEDGE_BASE = Path(__file__).parent / "data" / "shop_faq.yaml"

_SUGGESTION_FLOOR = 0.15  # an unclear question's candidates scoring at least this are offered


class BotSessionError(RuntimeError):
    """The caller used a session wrongly (a message after the handoff): a bug in the caller."""


@dataclass(frozen=True, slots=True)
class BotSettings:
    confidence_threshold: float = 0.5  # the classifier is calibrated so that 0.5 is the boundary
    low_confidence_turns: int = 2  # hand off after this many unclear questions in a row
    frustration_threshold: float = 0.6
    frustration: FrustrationSettings = field(default_factory=FrustrationSettings)

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_threshold <= 1.0 or not 0.0 <= self.frustration_threshold <= 1.0:
            raise ValueError("thresholds are in [0, 1]")
        if self.low_confidence_turns < 1:
            raise ValueError("low_confidence_turns must be at least 1")


@dataclass(frozen=True, slots=True)
class BotReply:
    answer: str | None  # what to send the shopper (on a handoff: the notice); None: send nothing
    quick_replies: list[str]  # button labels; a tap sends the label as the shopper's message
    intent: str | None  # the intent recognised in this message (None: not confident enough)
    confidence: float  # the top intent's score for this message, in [0, 1]
    handoff: HandoffReason | None  # set: route the conversation to a person now
    language: str = "zh"  # the language of `answer`


class FaqBot:
    def __init__(
        self,
        kb: KnowledgeBase,
        settings: BotSettings | None = None,
        classifier: IntentClassifier | None = None,
    ) -> None:
        """``classifier`` is ``IntentClassifier.fit(kb)`` when not given: pass a fitted one to share
        it (``load_bot`` does) rather than fit per bot."""
        self.kb = kb
        self.settings = settings or BotSettings()
        self.classifier = classifier or IntentClassifier.fit(kb)
        self.meter = FrustrationMeter(self.settings.frustration)

    def start(self, customer: Customer | Mapping[str, Any], now: float | None = None, language: str = "zh") -> BotSession:
        """A new session for ``customer`` (a Customer or routing's dict); ``language`` is a hint
        until the shopper writes (the app's locale, say)."""
        if not isinstance(customer, Customer):
            customer = Customer.from_mapping(customer)
        return BotSession(customer, started_at=now, language=language if language in LANGUAGES else "zh")

    def greeting(self, session: BotSession, now: float | None = None) -> BotReply:
        """The welcome message with the knowledge base's suggested questions."""
        language = session.language
        text = self.kb.greeting.in_language(language)
        session.turns.append(Turn(BOT, text, now if now is not None else session.started_at))
        return BotReply(text, self._titles(self.kb.suggestions, language), None, 0.0, None, language)

    def handle(self, session: BotSession, text: str, now: float, *, waiting_since: float | None = None) -> BotReply:
        """The bot's reply to the shopper's message ``text`` sent at ``now`` (epoch seconds).

        ``waiting_since``: when the shopper's oldest unanswered message was sent, if the caller
        knows of messages the bot did not see. Raises BotSessionError after a handoff: from then on
        the conversation belongs to people.
        """
        if session.handed_off:
            raise BotSessionError(f"the conversation was handed off ({session.handoff.code}); route messages to agents")
        if not text.strip():
            return BotReply(None, [], None, 0.0, None, session.language)
        language = session.language = detect_language(text, default=session.language)
        matches = tuple(self.classifier.classify(text))
        top = matches[0] if matches else IntentMatch("", 0.0)
        intent = self.kb.intent(top.intent) if top.score >= self.settings.confidence_threshold else None
        session.turns.append(
            Turn(SHOPPER, text, now, matches, intent.id if intent else None, intent.category if intent else "")
        )
        session.low_confidence_streak = 0 if intent else session.low_confidence_streak + 1
        session.frustration = self.meter.assess(session.turns, now, waiting_since=waiting_since)

        reason = self._handoff_reason(session, text, top, intent)
        if reason is not None:
            session.handoff, session.handoff_at = reason, now
            notice = (intent.answer if intent and intent.human_only else self.kb.handoff).in_language(language)
            session.turns.append(Turn(BOT, notice, now))
            return BotReply(notice, [], intent.id if intent else None, top.score, reason, language)
        if intent is not None:
            answer = intent.answer.in_language(language)
            session.turns.append(Turn(BOT, answer, now, answered=True))
            return BotReply(answer, self._titles(intent.quick_replies, language), intent.id, top.score, None, language)
        fallback = self.kb.fallback.in_language(language)
        session.turns.append(Turn(BOT, fallback, now))
        candidates = [m.intent for m in matches if m.score >= _SUGGESTION_FLOOR] or list(self.kb.suggestions)
        return BotReply(fallback, self._titles(candidates, language), None, top.score, None, language)

    def context_packet(self, session: BotSession) -> dict[str, Any]:
        """What the agent who takes over receives (see ``packet.py``); msgpack-ready."""
        return context_packet(session)

    def _handoff_reason(self, session: BotSession, text: str, top: IntentMatch, intent: Intent | None) -> HandoffReason | None:
        phrase = asks_for_human(text)
        if phrase:
            return HandoffReason(ASKED_FOR_HUMAN, f"the shopper asked for a person ({phrase!r})")
        if intent is not None and intent.human_only:
            return HandoffReason(HUMAN_ONLY_INTENT, f"intent '{intent.id}' ({intent.title.zh}) is handled by people only")
        frustration = session.frustration
        if frustration.score >= self.settings.frustration_threshold:
            why = "; ".join(reason.detail for reason in frustration.reasons)
            return HandoffReason(FRUSTRATED, f"frustration {frustration.score:.2f} (threshold {self.settings.frustration_threshold:.2f}): {why}")
        if session.low_confidence_streak >= self.settings.low_confidence_turns:
            best = f"best guess '{top.intent}' at {top.score:.2f}" if top.intent else "nothing recognised"
            return HandoffReason(
                LOW_CONFIDENCE,
                f"not confident for {session.low_confidence_streak} messages in a row ({best}, threshold {self.settings.confidence_threshold:.2f})",
            )
        return None

    def _titles(self, intent_ids, language: str) -> list[str]:
        return [self.kb.intent(intent_id).title.in_language(language) for intent_id in list(intent_ids)[:4]]


# Fitted models per knowledge base file, so that bots for the same file share one fit. The file's
# modification time is part of the key: an edited knowledge base is fitted again.
_FITTED: dict[str, tuple[int, KnowledgeBase, IntentClassifier]] = {}


def load_bot(path: str | Path | None = None, settings: BotSettings | None = None) -> FaqBot:
    """A bot for the knowledge base at ``path`` (None: the shipped sample shop), fitted once per
    file and version. The first call per file fits (about a second): call it at startup, or in a
    worker thread, not on the event loop in the middle of traffic."""
    resolved = Path(path or DEFAULT_KNOWLEDGE_BASE).resolve()
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError:
        mtime = -1  # KnowledgeBase.load reports the error
    cached = _FITTED.get(str(resolved))
    if cached is None or cached[0] != mtime:
        kb = KnowledgeBase.load(resolved)
        cached = _FITTED[str(resolved)] = (mtime, kb, IntentClassifier.fit(kb))
    return FaqBot(cached[1], settings, classifier=cached[2])


def load_default_bot(settings: BotSettings | None = None) -> FaqBot:
    """The bot of the shipped sample knowledge base (``data/shop_faq.yaml``)."""
    return load_bot(None, settings)
