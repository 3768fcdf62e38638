"""``/v1/bot/knowledge-base``: what this tenant's built-in bot knows (intents, example questions,
answers, the bot's own texts), managed by the shop's backend.

A PUT replaces the knowledge base whole: it is checked (every mistake named by intent and field,
422), stored, and fitted in a worker thread; the previous bot answers until the new one is fitted,
and on a gateway that decides routing itself the reply comes once it is (a cluster's leader fits
it in the background). A stored knowledge base wins over the routing settings' file; DELETE goes
back to the file (or the shipped sample). GET shows the one in force, every default written out:
fetch the sample, edit it, PUT it back.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import trio
from pydantic import BaseModel, Field

from ...bots import RECORD_KEY, RECORD_KIND, load_knowledge_base_file, parse_knowledge_base
from ...model import DeleteRecord, PutRecords, Record
from ..operations import SUPERVISOR, Body, Call, Operation
from ..problems import Problem

#: A knowledge base is larger than other bodies (the shipped sample is 68 KB of JSON).
MAX_BODY_BYTES = 1024 * 1024
MAX_INTENTS = 500


class KnowledgeBaseIn(Body):
    """A knowledge base in the schema of the shipped sample (gateway/bot/data/shop_faq.yaml)."""

    version: Literal[1] = 1
    name: str = Field(default="", max_length=200)
    bot: dict[str, Any] = Field(default_factory=dict, description="greeting, fallback, clarify, rephrase, other, handoff: {zh, en}; suggestions: [intent ids].")
    intents: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_INTENTS,
        description="{id, title: {zh, en}, category?, human_only?, catalog?, examples: {zh: [...], en: [...]}, answer: {zh, en}, quick_replies?: [intent ids]}",
    )


class TryIn(Body):
    text: str = Field(min_length=1, max_length=500, description="A shopper's question.")


class TryOut(BaseModel):
    intent: str | None = Field(description="The intent recognised (null: not confident enough).")
    confidence: float
    matches: list[dict] = Field(description="[{intent, score}]: the best three guesses.")
    answer: str | None = Field(description="What the bot would say (answers with variables: their version for no context).")
    quick_replies: list[str]
    clarifying: bool = Field(description="The bot would ask which of `quick_replies` was meant.")
    handoff: str | None = Field(description="The reason it would hand the shopper to a person, if it would.")
    language: str


class KnowledgeBaseOut(BaseModel):
    knowledge_base: dict = Field(description="The knowledge base in force, every default written out.")
    source: Literal["api", "file", "default"] = Field(description="Stored through this API, the routing settings' file, or the shipped sample.")
    updated_at: int | None = Field(description="When it was stored through the API (ms since the epoch).")
    intents: int
    examples: int


def described(kb: Any, source: str, updated_at: int | None) -> dict:
    return {
        "knowledge_base": kb.to_dict(), "source": source, "updated_at": updated_at,
        "intents": len(kb.intents), "examples": sum(len(i.examples_zh) + len(i.examples_en) for i in kb.intents),
    }


async def get_knowledge_base(call: Call) -> tuple[int, dict]:
    stored = await call.services.store.record(call.tenant, RECORD_KIND, RECORD_KEY)
    if stored is not None:
        try:
            kb = await trio.to_thread.run_sync(parse_knowledge_base, json.loads(stored.value), f"the knowledge base of tenant {call.tenant}")
        except ValueError as exc:  # stored by a version that read it differently: the bot uses the file's (logged there)
            raise Problem("internal", f"the stored knowledge base no longer loads ({exc}); PUT a corrected one or DELETE it") from None
        return 200, described(kb, "api", stored.updated_at)
    path = (await call.services.routing_settings(call.tenant)).knowledge_base
    kb = await trio.to_thread.run_sync(load_knowledge_base_file, path)
    return 200, described(kb, "file" if path else "default", None)


async def put_knowledge_base(call: Call) -> tuple[int, dict]:
    document = call.body.model_dump()
    try:
        kb = await trio.to_thread.run_sync(parse_knowledge_base, document, "the knowledge base")
    except ValueError as exc:  # gateway.bot.KnowledgeBaseError: names the intent and the field
        raise Problem("bad_request", str(exc), status=422) from None
    record = Record(call.tenant, RECORD_KIND, RECORD_KEY, json.dumps(document, ensure_ascii=False), int(time.time() * 1000))
    await call.services.store.execute(PutRecords((record,)))
    await call.services.use_knowledge_base(call.tenant)
    return 200, described(kb, "api", record.updated_at)


async def try_bot(call: Call) -> tuple[int, dict]:
    """How this tenant's bot would answer a question, as a shopper opening a conversation would
    be answered: for shop staff editing the knowledge base (the answer is not sent anywhere)."""
    routing = call.services.routing
    if routing is None or routing.bots is None:
        raise Problem("conflict", "routing is off on this gateway: no bot runs here (--routing on)", status=409)
    await routing.bots.ready_for(call.tenant)
    bot = routing.bots.for_tenant(call.tenant, routing.config.for_tenant(call.tenant))
    now = time.time()
    session = bot.start({"tenant": call.tenant, "user": "kefu-try", "channel": "web"}, now=now)
    matches = bot.classifier.classify(call.body.text)
    reply = bot.handle(session, call.body.text, now)
    return 200, {
        "intent": reply.intent, "confidence": round(reply.confidence, 3), "matches": [{"intent": m.intent, "score": round(m.score, 3)} for m in matches],
        "answer": reply.answer, "quick_replies": list(reply.quick_replies), "clarifying": reply.clarifying,
        "handoff": reply.handoff.code if reply.handoff is not None else None, "language": reply.language,
    }


async def delete_knowledge_base(call: Call) -> tuple[int, None]:
    await call.services.store.execute(DeleteRecord(call.tenant, RECORD_KIND, RECORD_KEY))
    await call.services.use_knowledge_base(call.tenant)
    return 204, None


OPERATIONS = (
    Operation("GET", "/v1/bot/knowledge-base", get_knowledge_base, "The knowledge base this tenant's built-in bot answers from.", frozenset({"read"}), response=KnowledgeBaseOut, token_roles=SUPERVISOR),
    Operation(
        "PUT", "/v1/bot/knowledge-base", put_knowledge_base, "Replace this tenant's bot knowledge base (checked, stored, fitted in the background).",
        frozenset(), body=KnowledgeBaseIn, response=KnowledgeBaseOut, max_body_bytes=MAX_BODY_BYTES, token_roles=SUPERVISOR,
    ),
    Operation("POST", "/v1/bot/try", try_bot, "How this tenant's bot would answer a question (nothing is sent).", frozenset({"read"}), body=TryIn, response=TryOut, errors=(409,), token_roles=SUPERVISOR),
    Operation("DELETE", "/v1/bot/knowledge-base", delete_knowledge_base, "Forget the stored knowledge base: the routing settings' file (or the sample) again.", frozenset(), status=204, token_roles=SUPERVISOR),
)
