"""The FAQ bot: answers a shopper's questions from a knowledge base and knows when to step aside.

Sans-IO: ``handle`` takes the shopper's text and the time, updates the session and returns what to
say; the caller (routing) sends it and, on a handoff, queues the conversation for a person with
``context_packet(session)``. One ``FaqBot`` serves every conversation of a knowledge base; the
per-conversation state is the ``BotSession``.

Each shopper turn is checked for a handoff in this order, the first that applies being the reason:
asked for a person, frustration over its threshold (anger, the same question three times, "that
didn't help", a long wait: an angry "垃圾店" is frustration even when it reads as a complaint), a
human-only intent (a calm "我要投诉"), and clarification failed (not understood for
``clarification_turns`` turns in a row, each of which got a clarifying question). Short of that, a
confident intent is answered (a product question from the catalog entry of the product in view),
and an unclear question gets a clarifying question: the bot's best guesses as quick-reply buttons,
plus "其他" (none of these), which asks the shopper to say it in their own words. Being unsure is
never by itself a reason to call a person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import variables
from . import products
from .catalog import Catalog
from .classifier import IntentClassifier, IntentMatch
from .fits import FitCache
from .frustration import FrustrationMeter, FrustrationSettings
from .handoff import ASKED_FOR_HUMAN, CLARIFICATION_FAILED, FRUSTRATED, HUMAN_ONLY_INTENT, HandoffReason, asks_for_human
from .knowledge import Bilingual, Intent, KnowledgeBase
from .packet import context_packet
from .session import BOT, SHOPPER, BotSession, Customer, Turn
from .text import LANGUAGES, detect_language, normalise

DEFAULT_KNOWLEDGE_BASE = Path(__file__).parent / "data" / "shop_faq.yaml"

SIZE_GUIDE = "size_guide"  # a knowledge base's size guide also shows the size chart of the product in view
UNKNOWN_PRODUCT = Bilingual(
    "亲，这件商品的详细信息小客暂时查不到😅 可以发一下商品链接，或者输入“人工”让客服帮您确认哦。",
    "Sorry, I can't find the details of this item 😅 Send me the product link, or type \"agent\" and a person will check.",
)
# "None of these" after a clarifying question (the "其他" button sends the knowledge base's label).
_DECLINES = re.compile(
    r"^(其他|其它|别的|都不是|都不对|不是|不是这些|没有我要的|以上都不是|something else|none of (these|them|the above)"
    r"|neither|no|nope|not these|other|others)[\s.!?。！？~～]*$"
)


class BotSessionError(RuntimeError):
    """The caller used a session wrongly (a message after the handoff): a bug in the caller."""


@dataclass(frozen=True, slots=True)
class BotSettings:
    confidence_threshold: float = 0.3  # answer at or above this calibrated probability (dev set: docs/routing.md)
    human_only_threshold: float = 0.5  # a human-only intent hands off only this sure (below: ask first)
    suggestion_floor: float = 0.05  # guesses scoring at least this are offered as buttons
    clarification_turns: int = 3  # hand off after this many turns in a row not understood
    frustration_threshold: float = 0.6
    frustration: FrustrationSettings = field(default_factory=FrustrationSettings)

    def __post_init__(self) -> None:
        thresholds = (self.confidence_threshold, self.human_only_threshold, self.frustration_threshold)
        if not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError("thresholds are in [0, 1]")
        if self.clarification_turns < 1:
            raise ValueError("clarification_turns must be at least 1")


@dataclass(frozen=True, slots=True)
class BotReply:
    answer: str | None  # what to send the shopper (on a handoff: the notice); None: send nothing
    quick_replies: list[str]  # button labels; a tap sends the label as the shopper's message
    intent: str | None  # the intent recognised in this message (None: not confident enough)
    confidence: float  # the top intent's score for this message, in [0, 1]
    handoff: HandoffReason | None  # set: route the conversation to a person now
    language: str = "zh"  # the language of `answer`
    clarifying: bool = False  # `answer` asks which of `quick_replies` the shopper meant
    product: str | None = None  # the product whose catalog entry answered


class FaqBot:
    def __init__(
        self,
        kb: KnowledgeBase,
        settings: BotSettings | None = None,
        classifier: IntentClassifier | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        """``classifier`` is ``IntentClassifier.fit(kb)`` when not given: pass a fitted one to share
        it (``load_bot`` does) rather than fit per bot. ``catalog`` answers product questions
        (None: every product question is answered by asking for the product)."""
        self.kb = kb
        self.settings = settings or BotSettings()
        self.classifier = classifier or IntentClassifier.fit(kb)
        self.catalog = catalog
        self.meter = FrustrationMeter(self.settings.frustration)

    def start(
        self,
        customer: Customer | Mapping[str, Any],
        now: float | None = None,
        language: str = "zh",
        product: str | None = None,
    ) -> BotSession:
        """A new session for ``customer`` (a Customer or routing's dict); ``language`` is a hint
        until the shopper writes (the app's locale, say); ``product`` is the id of the product the
        shopper opened the chat from, if any."""
        if not isinstance(customer, Customer):
            customer = Customer.from_mapping(customer)
        language = language if language in LANGUAGES else "zh"
        return BotSession(customer, started_at=now, language=language, product=product or None)

    def greeting(self, session: BotSession, now: float | None = None) -> BotReply:
        """The welcome message with the knowledge base's suggested questions."""
        language = session.language
        text = self.kb.greeting.in_language(language)
        session.turns.append(Turn(BOT, text, now if now is not None else session.started_at))
        return BotReply(text, self._titles(self.kb.suggestions, language), None, 0.0, None, language)

    def handle(
        self,
        session: BotSession,
        text: str,
        now: float,
        *,
        waiting_since: float | None = None,
        product: str | None = None,
        context: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> BotReply:
        """The bot's reply to the shopper's message ``text`` sent at ``now`` (epoch seconds).

        ``waiting_since``: when the shopper's oldest unanswered message was sent, if the caller
        knows of messages the bot did not see. ``product``: the product in view when the message
        was sent (the shopper's app puts it in the message), which from then on is the product
        the conversation is about. ``context``: the values of the answers' variables
        (gateway.variables: {"customer": profile, "order": the newest, "product": in view}); only
        needed when ``kb.uses_context``. Raises BotSessionError after a handoff: from then on the
        conversation belongs to people.
        """
        if session.handed_off:
            raise BotSessionError(f"the conversation was handed off ({session.handoff.code}); route messages to agents")
        if product:
            session.product = product
        if not text.strip():
            return BotReply(None, [], None, 0.0, None, session.language)
        language = session.language = detect_language(text, default=session.language)
        matches = tuple(self.classifier.classify(text))
        top = matches[0] if matches else IntentMatch("", 0.0)
        declined = self._declines(session, text)
        needed = self.settings.confidence_threshold
        if top.intent and self.kb.intent(top.intent).human_only:
            needed = max(needed, self.settings.human_only_threshold)  # a weak guess must not call a person
        confident = top.score >= needed and not declined
        intent = self.kb.intent(top.intent) if confident else None
        topic = f"{intent.id}:{','.join(products.aspects(text))}:{session.product or ''}" if intent and intent.catalog else ""
        session.turns.append(
            Turn(SHOPPER, text, now, matches, intent.id if intent else None, intent.category if intent else "", topic)
        )
        session.unclear_streak = 0 if intent else session.unclear_streak + 1
        session.frustration = self.meter.assess(session.turns, now, waiting_since=waiting_since)

        reason = self._handoff_reason(session, text, top, intent)
        if reason is not None:
            session.handoff, session.handoff_at = reason, now
            notice = self._said(intent, language, context) if intent and intent.human_only else self.kb.handoff.in_language(language)
            session.turns.append(Turn(BOT, notice, now))
            return BotReply(notice, [], intent.id if intent else None, top.score, reason, language)
        if intent is not None:
            answer, product_id = self._answer(session, intent, text, language, context)
            session.turns.append(Turn(BOT, answer, now, answered=True))
            quick = self._titles(intent.quick_replies, language)
            return BotReply(answer, quick, intent.id, top.score, None, language, product=product_id)
        if declined:
            rephrase = self.kb.rephrase.in_language(language)
            session.turns.append(Turn(BOT, rephrase, now, clarifying=True))
            return BotReply(rephrase, [], None, top.score, None, language, clarifying=True)
        guesses = [m.intent for m in matches if m.score >= self.settings.suggestion_floor][:3]
        ask = (self.kb.clarify if guesses else self.kb.fallback).in_language(language)
        buttons = self._titles(guesses or self.kb.suggestions[:3], language) + [self.kb.other.in_language(language)]
        session.turns.append(Turn(BOT, ask, now, clarifying=True))
        return BotReply(ask, buttons, None, top.score, None, language, clarifying=True)

    @staticmethod
    def _said(intent: Intent, language: str, context: Mapping[str, Mapping[str, Any]] | None) -> str:
        """The intent's answer, its variables filled from ``context``, or its answer for no context."""
        answer = intent.answer.in_language(language)
        if intent.answer_without_context is not None:
            answer, missing = variables.fill(answer, context or {})
            if missing:
                answer = intent.answer_without_context.in_language(language)
        return answer

    def _answer(
        self, session: BotSession, intent: Intent, text: str, language: str, context: Mapping[str, Mapping[str, Any]] | None = None
    ) -> tuple[str, str | None]:
        """The answer to a recognised question, from the catalog when it is about the product in
        view, its variables filled from ``context``; with the product id that answered."""
        product = self.catalog.get(session.customer.tenant, session.product) if self.catalog and session.product else None
        if intent.catalog:
            if session.product is None:
                return self._said(intent, language, context), None  # asks which product
            if product is None:
                return UNKNOWN_PRODUCT.in_language(language), None
            return products.answer(product, text, language), product.id
        answer = self._said(intent, language, context)
        if intent.id == SIZE_GUIDE and product is not None and product.sizes:
            return f"{products.describe(product, ['sizes'], language)}\n{answer}", product.id
        return answer, None

    def _declines(self, session: BotSession, text: str) -> bool:
        """The shopper answers a clarifying question with "none of these"."""
        last_bot = next((turn for turn in reversed(session.turns) if turn.role == BOT), None)
        if last_bot is None or not last_bot.clarifying:
            return False
        said = normalise(text)
        return bool(_DECLINES.match(said)) or said in (normalise(self.kb.other.zh), normalise(self.kb.other.en))

    def context_packet(self, session: BotSession) -> dict[str, Any]:
        """What the agent who takes over receives (see ``packet.py``); msgpack-ready."""
        return context_packet(session)

    def _handoff_reason(self, session: BotSession, text: str, top: IntentMatch, intent: Intent | None) -> HandoffReason | None:
        phrase = asks_for_human(text)
        if phrase:
            return HandoffReason(ASKED_FOR_HUMAN, f"the shopper asked for a person ({phrase!r})")
        frustration = session.frustration
        if frustration.score >= self.settings.frustration_threshold:
            why = "; ".join(reason.detail for reason in frustration.reasons)
            return HandoffReason(FRUSTRATED, f"frustration {frustration.score:.2f} (threshold {self.settings.frustration_threshold:.2f}): {why}")
        if intent is not None and intent.human_only:
            return HandoffReason(HUMAN_ONLY_INTENT, f"intent '{intent.id}' ({intent.title.zh}) is handled by people only")
        if session.unclear_streak >= self.settings.clarification_turns:
            best = f"best guess '{top.intent}' at {top.score:.2f}" if top.intent else "nothing recognised"
            return HandoffReason(
                CLARIFICATION_FAILED,
                f"not understood for {session.unclear_streak} messages in a row despite asking ({best}, threshold {self.settings.confidence_threshold:.2f})",
            )
        return None

    def _titles(self, intent_ids, language: str) -> list[str]:
        return [self.kb.intent(intent_id).title.in_language(language) for intent_id in list(intent_ids)[:4]]


# Fitted models per knowledge base file, so that bots for the same file share one fit. The file's
# modification time is part of the key: an edited knowledge base is fitted again.
_FITTED: dict[str, tuple[int, KnowledgeBase, IntentClassifier]] = {}


def load_bot(
    path: str | Path | None = None, settings: BotSettings | None = None, catalog: Catalog | None = None, fits: FitCache | None = None
) -> FaqBot:
    """A bot for the knowledge base at ``path`` (None: the shipped sample shop), fitted once per
    file and version (and with ``fits``, loaded from there when an earlier process fitted the
    same). The first call per file fits (about a second): call it at startup, or in a worker
    thread, not on the event loop in the middle of traffic."""
    resolved = Path(path or DEFAULT_KNOWLEDGE_BASE).resolve()
    try:
        mtime = resolved.stat().st_mtime_ns
    except OSError:
        mtime = -1  # KnowledgeBase.load reports the error
    cached = _FITTED.get(str(resolved))
    if cached is None or cached[0] != mtime:
        kb = KnowledgeBase.load(resolved)
        cached = _FITTED[str(resolved)] = (mtime, kb, IntentClassifier.fit(kb, fits=fits))
    return FaqBot(cached[1], settings, classifier=cached[2], catalog=catalog)


def load_default_bot(settings: BotSettings | None = None, catalog: Catalog | None = None) -> FaqBot:
    """The bot of the shipped sample knowledge base (``data/shop_faq.yaml``)."""
    return load_bot(None, settings, catalog)
