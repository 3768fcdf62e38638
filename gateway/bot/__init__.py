"""The built-in 24/7 FAQ bot: answers shoppers from a tenant's knowledge base, hands over to people.

Sans-IO: no sockets, no event loop, no clock (time is passed in). Routing calls it:

    bot = load_bot(path, catalog=catalog)     # fitted once per knowledge base file
    session = bot.start({"tenant": ..., "user": ..., "channel": ..., "name": ...})
    reply = bot.greeting(session)
    reply = bot.handle(session, text, now, product=product_id)   # now: epoch seconds; product: in view
    if reply.handoff: packet = bot.context_packet(session)

Measure it with ``python -m gateway.bot.evaluate`` (docs/routing.md: the set format, the figures).
"""

from .bot import DEFAULT_KNOWLEDGE_BASE, BotReply, BotSessionError, BotSettings, FaqBot, load_bot, load_default_bot
from .catalog import Catalog, CatalogError, MemoryCatalog, Product
from .classifier import IntentClassifier, IntentMatch, TrainingSet
from .fits import FitCache
from .frustration import Frustration, FrustrationMeter, FrustrationReason, FrustrationSettings
from .handoff import (
    ASKED_FOR_HUMAN,
    CLARIFICATION_FAILED,
    FRUSTRATED,
    HANDOFF_CODES,
    HUMAN_ONLY_INTENT,
    HandoffReason,
    asks_for_human,
)
from .knowledge import Bilingual, Intent, KnowledgeBase, KnowledgeBaseError
from .session import BOT, SHOPPER, BotSession, Customer, Turn
from .text import detect_language

__all__ = [
    "ASKED_FOR_HUMAN",
    "BOT",
    "Bilingual",
    "BotReply",
    "BotSession",
    "BotSessionError",
    "BotSettings",
    "CLARIFICATION_FAILED",
    "Catalog",
    "FitCache",
    "CatalogError",
    "Customer",
    "DEFAULT_KNOWLEDGE_BASE",
    "FRUSTRATED",
    "FaqBot",
    "Frustration",
    "FrustrationMeter",
    "FrustrationReason",
    "FrustrationSettings",
    "HANDOFF_CODES",
    "HUMAN_ONLY_INTENT",
    "HandoffReason",
    "Intent",
    "IntentClassifier",
    "IntentMatch",
    "TrainingSet",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "MemoryCatalog",
    "Product",
    "SHOPPER",
    "Turn",
    "asks_for_human",
    "detect_language",
    "load_bot",
    "load_default_bot",
]
