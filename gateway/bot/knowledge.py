"""The knowledge base: a tenant's intents, example questions and answers, loaded from YAML or JSON.

The file is written by shop staff, not programmers, so loading checks everything up front and every
error names the intent and the field (``intent 'returns': field 'answer.zh' is missing``) instead of
failing later inside a conversation. The schema is described at the top of ``data/shop_faq.yaml``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import variables

SMALLTALK = "smalltalk"  # the category of greetings and thanks: never a "repeated question"

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_TOP_FIELDS = {"version", "name", "bot", "intents"}
_BOT_FIELDS = {"greeting", "fallback", "clarify", "rephrase", "other", "handoff", "suggestions"}
_INTENT_FIELDS = {"id", "title", "category", "human_only", "catalog", "examples", "answer", "answer_without_context", "quick_replies"}


class KnowledgeBaseError(ValueError):
    """The knowledge base file is unreadable or breaks the schema; the message says where."""


@dataclass(frozen=True, slots=True)
class Bilingual:
    """A user-facing text in Chinese and English (English falls back to Chinese when not given)."""

    zh: str
    en: str

    def in_language(self, language: str) -> str:
        return self.en if language == "en" else self.zh


@dataclass(frozen=True, slots=True)
class Intent:
    id: str
    title: Bilingual
    answer: Bilingual
    examples_zh: tuple[str, ...]
    examples_en: tuple[str, ...]
    quick_replies: tuple[str, ...] = ()  # ids of intents offered as follow-up buttons
    human_only: bool = False
    category: str = ""
    catalog: bool = False  # answered from the catalog entry of the product in view (`answer` asks which)
    # said instead of `answer` when the customer context cannot fill its variables
    # ({order.status}: gateway.variables); required when `answer` has any
    answer_without_context: Bilingual | None = None

    @property
    def examples(self) -> tuple[str, ...]:
        """Everything a shopper might type for this intent, titles included (buttons send them)."""
        return (*self.examples_zh, *self.examples_en, self.title.zh, self.title.en)


DEFAULT_GREETING = Bilingual(
    "亲，您好！我是智能客服，24小时在线，有什么可以帮您？",
    "Hi! I'm the shop's 24/7 assistant. How can I help?",
)
DEFAULT_FALLBACK = Bilingual(
    "抱歉亲，我没太明白您的意思，您可以换个说法再问一次，或者输入“人工”转人工客服。",
    'Sorry, I didn\'t quite get that. Could you rephrase it? Type "agent" to talk to a person.',
)
DEFAULT_CLARIFY = Bilingual(
    "亲，您是想问下面哪个问题呢？点一下就好～",
    "Did you mean one of these? Just tap it.",
)
DEFAULT_REPHRASE = Bilingual(
    "好的亲，请用一句话说说您遇到的问题，比如“退款什么时候到账”；也可以输入“人工”转人工客服。",
    'OK! Could you describe your question in a sentence, like "when will my refund arrive"? Or type "agent" to talk to a person.',
)
DEFAULT_OTHER = Bilingual("其他", "Something else")
DEFAULT_HANDOFF = Bilingual(
    "好的亲，正在为您转接人工客服，请稍等片刻～",
    "Sure, I'm connecting you with a member of our team. Please hold on a moment.",
)


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    name: str
    intents: tuple[Intent, ...]
    greeting: Bilingual = DEFAULT_GREETING
    fallback: Bilingual = DEFAULT_FALLBACK  # said when nothing at all is recognised
    clarify: Bilingual = DEFAULT_CLARIFY  # asks which of its best guesses the shopper meant
    rephrase: Bilingual = DEFAULT_REPHRASE  # after "none of these": asks for the question in words
    other: Bilingual = DEFAULT_OTHER  # the "none of these" button offered with the guesses
    handoff: Bilingual = DEFAULT_HANDOFF  # said when the conversation goes to a person
    suggestions: tuple[str, ...] = ()  # intent ids offered with the greeting and the fallback
    source: str = "<dict>"

    @classmethod
    def load(cls, path: str | Path) -> KnowledgeBase:
        """Read a ``.yaml``/``.yml`` or ``.json`` file. Raises KnowledgeBaseError."""
        path = Path(path)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KnowledgeBaseError(f"{path}: cannot read the knowledge base: {exc}") from exc
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(raw)
            elif path.suffix.lower() in (".yaml", ".yml"):
                data = yaml.safe_load(raw)
            else:
                raise KnowledgeBaseError(f"{path}: a knowledge base is a .yaml, .yml or .json file")
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise KnowledgeBaseError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> KnowledgeBase:
        """Build from the parsed file. Raises KnowledgeBaseError naming the intent and field."""
        return _Parser(source).knowledge_base(data)

    def to_dict(self) -> dict[str, Any]:
        """The knowledge base in the schema ``from_dict`` reads, every default written out."""

        def texts(b: Bilingual) -> dict[str, str]:
            return {"zh": b.zh, "en": b.en}

        return {
            "version": 1,
            "name": self.name,
            "bot": {
                "greeting": texts(self.greeting), "fallback": texts(self.fallback), "clarify": texts(self.clarify),
                "rephrase": texts(self.rephrase), "other": texts(self.other), "handoff": texts(self.handoff),
                "suggestions": list(self.suggestions),
            },
            "intents": [
                {
                    "id": i.id, "title": texts(i.title), "category": i.category, "human_only": i.human_only, "catalog": i.catalog,
                    "examples": {"zh": list(i.examples_zh), "en": list(i.examples_en)}, "answer": texts(i.answer),
                    **({"answer_without_context": texts(i.answer_without_context)} if i.answer_without_context else {}),
                    "quick_replies": list(i.quick_replies),
                }
                for i in self.intents
            ],
        }

    @property
    def uses_context(self) -> bool:
        """Whether an answer has variables: the bot then needs the customer context to answer."""
        return any(variables.used(i.answer.zh) or variables.used(i.answer.en) for i in self.intents)

    def intent(self, intent_id: str) -> Intent:
        for intent in self.intents:
            if intent.id == intent_id:
                return intent
        raise KeyError(intent_id)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> KnowledgeBaseError:
        return KnowledgeBaseError(f"{self.source}: {where}: {problem}")

    def knowledge_base(self, data: Any) -> KnowledgeBase:
        if not isinstance(data, dict):
            raise self.fail("top level", "must be a mapping with an 'intents' list")
        self.no_unknown(data, _TOP_FIELDS, "top level")
        if data.get("version", 1) != 1:
            raise self.fail("field 'version'", f"unsupported version {data['version']!r} (this gateway reads 1)")
        name = self.string(data, "name", "top level", default="")
        raw_intents = data.get("intents")
        if not isinstance(raw_intents, list) or not raw_intents:
            raise self.fail("field 'intents'", "must be a non-empty list of intents")
        intents = [self.intent(raw, index) for index, raw in enumerate(raw_intents)]
        ids = [intent.id for intent in intents]
        for intent_id in ids:
            if ids.count(intent_id) > 1:
                raise self.fail(f"intent '{intent_id}'", "the id is used by more than one intent")
        for intent in intents:
            for target in intent.quick_replies:
                if target not in ids:
                    raise self.fail(f"intent '{intent.id}'", f"field 'quick_replies' names unknown intent '{target}'")
        bot = data.get("bot", {})
        if not isinstance(bot, dict):
            raise self.fail("field 'bot'", "must be a mapping")
        self.no_unknown(bot, _BOT_FIELDS, "field 'bot'")
        suggestions = tuple(self.id_list(bot, "suggestions", "field 'bot'"))
        for target in suggestions:
            if target not in ids:
                raise self.fail("field 'bot'", f"field 'suggestions' names unknown intent '{target}'")
        return KnowledgeBase(
            name=name,
            intents=tuple(intents),
            greeting=self.bilingual(bot, "greeting", "field 'bot'", default=DEFAULT_GREETING),
            fallback=self.bilingual(bot, "fallback", "field 'bot'", default=DEFAULT_FALLBACK),
            clarify=self.bilingual(bot, "clarify", "field 'bot'", default=DEFAULT_CLARIFY),
            rephrase=self.bilingual(bot, "rephrase", "field 'bot'", default=DEFAULT_REPHRASE),
            other=self.bilingual(bot, "other", "field 'bot'", default=DEFAULT_OTHER),
            handoff=self.bilingual(bot, "handoff", "field 'bot'", default=DEFAULT_HANDOFF),
            suggestions=suggestions,
            source=self.source,
        )

    def intent(self, raw: Any, index: int) -> Intent:
        if not isinstance(raw, dict):
            raise self.fail(f"intent #{index + 1}", "must be a mapping")
        intent_id = raw.get("id")
        if not isinstance(intent_id, str) or not _ID.match(intent_id):
            problem = "field 'id' is missing" if intent_id is None else f"field 'id' must be snake_case, not {intent_id!r}"
            raise self.fail(f"intent #{index + 1}", problem)
        where = f"intent '{intent_id}'"
        self.no_unknown(raw, _INTENT_FIELDS, where)
        examples = raw.get("examples")
        if examples is None:
            raise self.fail(where, "field 'examples' is missing")
        if not isinstance(examples, dict):
            raise self.fail(where, "field 'examples' must be a mapping with 'zh' and/or 'en' lists")
        self.no_unknown(examples, {"zh", "en"}, f"{where}: field 'examples'")
        examples_zh = self.text_list(examples, "zh", where, "examples.zh")
        examples_en = self.text_list(examples, "en", where, "examples.en")
        if not examples_zh and not examples_en:
            raise self.fail(where, "field 'examples' needs at least one question in 'zh' or 'en'")
        human_only = raw.get("human_only", False)
        if not isinstance(human_only, bool):
            raise self.fail(where, "field 'human_only' must be true or false")
        catalog = raw.get("catalog", False)
        if not isinstance(catalog, bool):
            raise self.fail(where, "field 'catalog' must be true or false")
        answer = self.bilingual(raw, "answer", where)
        without = self.bilingual(raw, "answer_without_context", where) if raw.get("answer_without_context") is not None else None
        uses = variables.used(answer.zh) + variables.used(answer.en)
        if uses and without is None:
            raise self.fail(where, f"field 'answer' uses {{{uses[0]}}}: add 'answer_without_context', said when the customer's context cannot fill it")
        if without is not None and (variables.used(without.zh) or variables.used(without.en)):
            raise self.fail(where, "field 'answer_without_context' must not use variables")
        return Intent(
            id=intent_id,
            title=self.bilingual(raw, "title", where),
            answer=answer,
            answer_without_context=without,
            examples_zh=examples_zh,
            examples_en=examples_en,
            quick_replies=tuple(self.id_list(raw, "quick_replies", where)),
            human_only=human_only,
            catalog=catalog,
            category=self.string(raw, "category", where, default=""),
        )

    def bilingual(self, raw: dict, key: str, where: str, default: Bilingual | None = None) -> Bilingual:
        value = raw.get(key)
        if value is None:
            if default is not None:
                return default
            raise self.fail(where, f"field '{key}' is missing")
        if not isinstance(value, dict):
            raise self.fail(where, f"field '{key}' must be a mapping with 'zh' and 'en' texts")
        self.no_unknown(value, {"zh", "en"}, f"{where}: field '{key}'")
        zh = value.get("zh")
        if not isinstance(zh, str) or not zh.strip():
            problem = "is missing" if zh is None else "must be a non-empty text"
            raise self.fail(where, f"field '{key}.zh' {problem}")
        en = value.get("en", zh)
        if not isinstance(en, str) or not en.strip():
            raise self.fail(where, f"field '{key}.en' must be a non-empty text")
        return Bilingual(zh.strip(), en.strip())

    def text_list(self, raw: dict, key: str, where: str, field: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(where, f"field '{field}' must be a list of non-empty texts")
        return tuple(v.strip() for v in value)

    def id_list(self, raw: dict, key: str, where: str) -> list[str]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, f"field '{key}' must be a list of intent ids")
        return value

    def string(self, raw: dict, key: str, where: str, default: str) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str):
            raise self.fail(where, f"field '{key}' must be a text")
        return value

    def no_unknown(self, raw: dict, known: set[str], where: str) -> None:
        unknown = sorted(str(key) for key in raw if key not in known)
        if unknown:
            raise self.fail(where, f"unknown field '{unknown[0]}' (expected one of: {', '.join(sorted(known))})")
