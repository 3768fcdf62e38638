"""One shopper's conversation with the bot: who they are, what was said, and the bot's state.

A session is plain data owned by the caller (routing keeps one per conversation while the bot
serves it); ``FaqBot`` reads and updates it. Times are seconds since the Unix epoch (floats), passed
in by the caller: nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .classifier import IntentMatch
from .frustration import Frustration
from .handoff import HandoffReason

SHOPPER = "shopper"
BOT = "bot"


@dataclass(frozen=True, slots=True)
class Customer:
    """Who the bot is serving, as the gateway authenticated them."""

    tenant: str
    user: str
    channel: str  # "app", "miniprogram" or "web"
    name: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Customer:
        """From routing's ``{"tenant", "user", "channel", "name"}`` (``user_id`` also accepted)."""
        user = data.get("user", data.get("user_id"))
        if not data.get("tenant") or not user:
            raise ValueError(f"a customer needs 'tenant' and 'user', got {dict(data)!r}")
        return cls(str(data["tenant"]), str(user), str(data.get("channel") or ""), str(data.get("name") or ""))


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # SHOPPER or BOT
    text: str
    at: float | None  # seconds since the epoch; None only for a greeting sent with no time given
    matches: tuple[IntentMatch, ...] = ()  # shopper turns: the classifier's top intents
    intent: str | None = None  # shopper turns: the intent acted on (None: not confident enough)
    category: str = ""  # that intent's category
    topic: str = ""  # shopper turns: what was asked, when finer than the intent ("product_question:care:P1001")
    answered: bool = False  # bot turns: an answer (not a greeting, clarifying question or handoff notice)
    clarifying: bool = False  # bot turns: asked which of its guesses the shopper meant


@dataclass(eq=False, slots=True)
class BotSession:
    customer: Customer
    started_at: float | None = None
    language: str = "zh"  # the language of the shopper's latest message that showed one
    turns: list[Turn] = field(default_factory=list)
    product: str | None = None  # id of the product in view (the shopper's app says), for product questions
    unclear_streak: int = 0  # consecutive shopper turns the bot did not understand (each got a clarifying question)
    frustration: Frustration = Frustration(0.0, ())  # as of the latest shopper turn
    handoff: HandoffReason | None = None  # set once: the bot has stepped aside
    handoff_at: float | None = None

    @property
    def handed_off(self) -> bool:
        return self.handoff is not None

    @property
    def last_intent(self) -> Turn | None:
        """The latest shopper turn whose intent the bot recognised with confidence."""
        for turn in reversed(self.turns):
            if turn.role == SHOPPER and turn.intent:
                return turn
        return None
