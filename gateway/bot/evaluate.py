"""Measure the bot on a labelled set: ``python -m gateway.bot.evaluate [--set PATH] [--kb PATH]``.

Prints intent accuracy per language and per intent, the top confusions (``--matrix``: the whole
confusion matrix), handoff precision and
recall per reason with the false-handoff rate on dialogues, and the bot's answer latency (p50/p99
over every shopper turn). Everything goes through ``FaqBot.handle`` exactly as routing calls it, so
what is scored is what a shopper sees: a question counts as right only when the bot *answers* it
with the right intent (a clarifying question is not an answer).

A set is a YAML file, or a directory of them. Each file is a list (or a mapping whose values are
lists) of items of two shapes:

- a question: ``{text, lang: zh|en, intent}``. ``intent`` is a knowledge base intent id, or any
  other label (``out_of_scope``, ``chitchat``, …) for a question the knowledge base does not cover:
  right when the bot claims no intent for it. Each question is the first message of a new session.
- a dialogue: ``{id, turns: [shopper texts], handoff: true|false, reason}``. ``reason`` is the
  expected handoff code (``asked_for_human``, ``human_only_intent``, ``frustrated``,
  ``clarification_failed``) or null. Turns are sent 20 s apart; the dialogue ends at the first
  handoff. An optional ``product`` is the id of the product in view.

Keep the set you decide on (a dev set) apart from the one you report (a test set written by
someone else, used once): docs/routing.md says which figure comes from which.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .bot import BotSettings, FaqBot, load_bot
from .catalog import MemoryCatalog
from .classifier import IntentClassifier
from .handoff import HANDOFF_CODES
from .knowledge import KnowledgeBase
from .text import LANGUAGES, normalise

DEV_SET = Path(__file__).resolve().parents[2] / "tests" / "bot" / "dev"
NONE = "(none)"  # the bot claimed no intent
T0 = 1_795_600_000.0
TURN_GAP_S = 20.0
CUSTOMER = {"tenant": "eval", "user": "shopper", "channel": "app", "name": ""}


class EvalSetError(ValueError):
    """The set file is unreadable or an item has the wrong shape; the message says which."""


@dataclass
class Question:
    text: str
    lang: str
    intent: str


@dataclass
class Dialogue:
    id: str
    turns: list[str]
    handoff: bool
    reason: str | None
    product: str | None = None


@dataclass
class Report:
    questions: list[dict[str, Any]] = field(default_factory=list)  # per question: expected, got, raw top
    dialogues: list[dict[str, Any]] = field(default_factory=list)  # per dialogue: expected, got
    latencies: list[float] = field(default_factory=list)  # seconds per handle()


def load_set(path: str | Path) -> tuple[list[Question], list[Dialogue]]:
    """Every question and dialogue in the YAML file ``path``, or in the YAML files of a directory."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    if not files:
        raise EvalSetError(f"{path}: no .yaml files")
    questions: list[Question] = []
    dialogues: list[Dialogue] = []
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise EvalSetError(f"{file}: {exc}") from exc
        items: Iterable[Any] = data if isinstance(data, list) else [
            item for value in (data or {}).values() if isinstance(value, list) for item in value
        ]
        for index, item in enumerate(items):
            where = f"{file.name} item {index + 1}"
            if not isinstance(item, dict):
                raise EvalSetError(f"{where}: must be a mapping")
            if "turns" in item:
                turns = item["turns"]
                if isinstance(turns, list):  # {role, text} turns are accepted too: the shopper's are sent
                    turns = [t.get("text") if isinstance(t, dict) else t for t in turns
                             if not isinstance(t, dict) or t.get("role", "shopper") in ("shopper", "customer", "user")]
                if not isinstance(turns, list) or not turns or not all(isinstance(t, (str, int, float)) for t in turns):
                    raise EvalSetError(f"{where}: 'turns' must be a non-empty list of texts")
                reason = item.get("reason")
                handoff = bool(item.get("handoff", reason is not None))
                dialogues.append(Dialogue(str(item.get("id", where)), [str(t) for t in turns], handoff,
                                          str(reason) if reason else None, item.get("product")))
            elif "text" in item:
                lang = str(item.get("lang") or item.get("language") or "")
                if lang not in LANGUAGES:
                    raise EvalSetError(f"{where}: 'lang' must be one of {', '.join(LANGUAGES)}")
                questions.append(Question(str(item["text"]), lang, str(item.get("intent") or "out_of_scope")))
            else:
                raise EvalSetError(f"{where}: an item has 'text' (a question) or 'turns' (a dialogue)")
    return questions, dialogues


def run(bot: FaqBot, questions: list[Question], dialogues: list[Dialogue]) -> Report:
    """Put every question and dialogue to ``bot``, timing each turn."""
    report = Report()
    for question in questions:
        session = bot.start(CUSTOMER, now=T0, language=question.lang)
        started = time.perf_counter()
        reply = bot.handle(session, question.text, T0)
        report.latencies.append(time.perf_counter() - started)
        top = session.turns[0].matches[0].intent if session.turns and session.turns[0].matches else NONE
        report.questions.append({
            "text": question.text, "lang": question.lang, "expected": question.intent,
            "got": reply.intent or NONE, "raw": top, "score": reply.confidence,
            "handoff": reply.handoff.code if reply.handoff else None, "clarifying": reply.clarifying,
        })
    for dialogue in dialogues:
        session = bot.start(CUSTOMER, now=T0)
        reason = None
        at = None
        for index, text in enumerate(dialogue.turns):
            started = time.perf_counter()
            reply = bot.handle(session, text, T0 + TURN_GAP_S * (index + 1), product=dialogue.product if index == 0 else None)
            report.latencies.append(time.perf_counter() - started)
            if reply.handoff is not None:
                reason, at = reply.handoff.code, index
                break
        report.dialogues.append({
            "id": dialogue.id, "expected": dialogue.reason if dialogue.handoff else None,
            "expected_handoff": dialogue.handoff, "got": reason, "at_turn": at,
            "detail": session.handoff.detail if session.handoff else "",
        })
    return report


def cross_validate(kb: KnowledgeBase, folds: int = 5, threshold: float | None = None) -> dict[str, Any]:
    """A split of the training data itself: each example is classified by a model fitted without
    its fold (titles and the out-of-scope set always train). Close paraphrases of one another land
    in different folds, so this flatters the model: a floor check, not a measure on unseen text."""
    threshold = BotSettings().confidence_threshold if threshold is None else threshold
    rows = [(intent.id, language, text)
            for intent in kb.intents
            for language, texts in (("zh", intent.examples_zh), ("en", intent.examples_en))
            for text in texts]
    order = random.Random(0).sample(range(len(rows)), len(rows))
    fold_of = {index: position % folds for position, index in enumerate(order)}
    right: Counter[str] = Counter()
    raw: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for fold in range(folds):
        held = {i for i in range(len(rows)) if fold_of[i] == fold}
        kept = {rows[i][2] for i in range(len(rows)) if i not in held}
        intents = tuple(
            dataclasses.replace(
                intent,
                examples_zh=tuple(t for t in intent.examples_zh if t in kept) or (intent.title.zh,),
                examples_en=tuple(t for t in intent.examples_en if t in kept),
            )
            for intent in kb.intents
        )
        classifier = IntentClassifier.fit(dataclasses.replace(kb, intents=intents))
        texts = [normalise(rows[i][2]) for i in sorted(held)]
        for i, matches in zip(sorted(held), classifier.classify_many(texts, top=1)):
            intent_id, language, _ = rows[i]
            count[language] += 1
            raw[language] += matches[0].intent == intent_id
            right[language] += matches[0].intent == intent_id and matches[0].score >= threshold
    return {language: {"examples": count[language], "answered_right": right[language] / count[language],
                       "raw_top1": raw[language] / count[language]} for language in count}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarise(report: Report, intents: set[str]) -> dict[str, Any]:
    """The figures of ``report`` as plain data (what ``--json`` prints)."""
    out: dict[str, Any] = {}
    rows = report.questions
    if rows:
        def right(r: dict[str, Any]) -> bool:
            return r["got"] == r["expected"] if r["expected"] in intents else r["got"] == NONE

        def raw_right(r: dict[str, Any]) -> bool:
            return r["raw"] == r["expected"] if r["expected"] in intents else True

        by_lang: dict[str, Any] = {}
        for lang in (*LANGUAGES, "all"):
            mine = [r for r in rows if lang in ("all", r["lang"])]
            scoped = [r for r in mine if r["expected"] in intents]
            if mine:
                by_lang[lang] = {
                    "questions": len(mine), "accuracy": sum(map(right, mine)) / len(mine),
                    "in_scope": len(scoped),
                    "in_scope_accuracy": sum(map(right, scoped)) / len(scoped) if scoped else None,
                    "raw_top1_in_scope": sum(map(raw_right, scoped)) / len(scoped) if scoped else None,
                }
        out["intent"] = by_lang
        out["labels_outside_the_knowledge_base"] = sorted({r["expected"] for r in rows} - intents)
        per_intent: dict[str, Any] = {}
        for label in sorted({r["expected"] for r in rows}):
            mine = [r for r in rows if r["expected"] == label]
            per_intent[label] = {"n": len(mine), "accuracy": sum(map(right, mine)) / len(mine)}
        out["per_intent"] = per_intent
        matrix: dict[str, Counter[str]] = defaultdict(Counter)
        for r in rows:
            matrix[r["expected"]][r["got"]] += 1
        out["matrix"] = {expected: dict(got) for expected, got in sorted(matrix.items())}
        confusions = Counter((r["expected"], r["got"]) for r in rows if not right(r))
        out["confusions"] = [{"expected": e, "got": g, "n": n} for (e, g), n in confusions.most_common()]
        out["misses"] = [{k: r[k] for k in ("text", "expected", "got", "score")} for r in rows if not right(r)]
        # a question the bot handed off rather than answered (its intent may still be right)
        out["question_handoffs"] = dict(Counter(r["handoff"] for r in rows if r.get("handoff")))
    if report.dialogues:
        dialogues = report.dialogues
        should = [d for d in dialogues if d["expected_handoff"]]
        should_not = [d for d in dialogues if not d["expected_handoff"]]
        fired = [d for d in dialogues if d["got"]]
        per_reason: dict[str, Any] = {}
        for code in sorted({*HANDOFF_CODES, *(d["expected"] for d in should), *(d["got"] for d in fired)}):
            expected = [d for d in should if d["expected"] == code]
            predicted = [d for d in fired if d["got"] == code]
            if expected or predicted:
                per_reason[code] = {
                    "expected": len(expected),
                    "recall": sum(1 for d in expected if d["got"]) / len(expected) if expected else None,
                    "recall_same_reason": sum(1 for d in expected if d["got"] == code) / len(expected) if expected else None,
                    "fired": len(predicted),
                    "precision": sum(1 for d in predicted if d["expected_handoff"]) / len(predicted) if predicted else None,
                }
        out["handoff"] = {
            "dialogues": len(dialogues),
            "recall": sum(1 for d in should if d["got"]) / len(should) if should else None,
            "precision": sum(1 for d in fired if d["expected_handoff"]) / len(fired) if fired else None,
            "false_handoff_rate": sum(1 for d in should_not if d["got"]) / len(should_not) if should_not else None,
            "per_reason": per_reason,
            "wrong": [d for d in dialogues if bool(d["got"]) != d["expected_handoff"] or (d["got"] and d["got"] != d["expected"])],
        }
    if report.latencies:
        out["latency_ms"] = {
            "turns": len(report.latencies),
            "p50": percentile(report.latencies, 50) * 1000,
            "p99": percentile(report.latencies, 99) * 1000,
            "max": max(report.latencies) * 1000,
        }
    return out


def render(figures: dict[str, Any], source: str, show_misses: bool, show_matrix: bool = False) -> str:
    lines = [f"set: {source}"]

    def pct(value: float | None) -> str:
        return "  -  " if value is None else f"{value:5.2f}"

    if "intent" in figures:
        lines.append("\nintent top-1 (answered with the right intent; out-of-scope: nothing claimed)")
        lines.append(f"  {'':4} {'n':>4} {'all':>6} {'in-scope n':>11} {'in-scope':>9} {'raw top-1':>10}")
        for lang, f in figures["intent"].items():
            lines.append(f"  {lang:4} {f['questions']:4d} {pct(f['accuracy']):>6} {f['in_scope']:11d} "
                         f"{pct(f['in_scope_accuracy']):>9} {pct(f['raw_top1_in_scope']):>10}")
        outside = figures.get("labels_outside_the_knowledge_base") or []
        if outside:
            lines.append(f"  labels that are not intents of the knowledge base, scored as out of scope: {', '.join(outside)}")
        lines.append("\nper intent")
        for label, f in figures["per_intent"].items():
            lines.append(f"  {label:20} {f['n']:4d} {pct(f['accuracy'])}")
        handed = figures.get("question_handoffs") or {}
        lines.append("\nsingle questions handed to a person: " + (", ".join(f"{k} {v}" for k, v in sorted(handed.items())) or "none"))
        lines.append("\ntop confusions (expected -> got)")
        for c in figures["confusions"][:15]:
            lines.append(f"  {c['expected']:20} -> {c['got']:20} {c['n']}")
        if not figures["confusions"]:
            lines.append("  none")
        if show_matrix:
            lines.append("\nconfusion matrix (rows: expected, columns: answered with; . is 0)")
            labels = sorted({*figures["matrix"], *(g for row in figures["matrix"].values() for g in row)})
            lines.append("  columns: " + ", ".join(f"{i} {label}" for i, label in enumerate(labels, 1)))
            lines.append(f"  {'':24} " + " ".join(f"{i:>3}" for i in range(1, len(labels) + 1)))
            for expected, row in figures["matrix"].items():
                cells = " ".join(f"{row.get(g, 0) or '.':>3}" for g in labels)
                lines.append(f"  {labels.index(expected) + 1:>2} {expected:21} {cells}")
        if show_misses:
            lines.append("\nmisses")
            for m in figures["misses"]:
                lines.append(f"  {m['text']!r}: expected {m['expected']}, got {m['got']} ({m['score']:.2f})")
    if "handoff" in figures:
        h = figures["handoff"]
        lines.append(f"\nhandoff over {h['dialogues']} dialogues: recall {pct(h['recall'])}, precision {pct(h['precision'])}, "
                     f"false handoffs {pct(h['false_handoff_rate'])} (of dialogues that needed no person)")
        lines.append(f"  {'reason':22} {'expected':>8} {'recall':>7} {'same reason':>12} {'fired':>6} {'precision':>10}")
        for code, f in h["per_reason"].items():
            lines.append(f"  {code:22} {f['expected']:8d} {pct(f['recall']):>7} {pct(f['recall_same_reason']):>12} "
                         f"{f['fired']:6d} {pct(f['precision']):>10}")
        if show_misses and h["wrong"]:
            lines.append("\ndialogues handed off wrongly, or not, or for another reason")
            for d in h["wrong"]:
                lines.append(f"  {d['id']}: expected {d['expected']}, got {d['got']} at turn {d['at_turn']} {d['detail']}")
    if "latency_ms" in figures:
        lat = figures["latency_ms"]
        lines.append(f"\nlatency per bot turn over {lat['turns']} turns: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bot.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="path", default=str(DEV_SET), help="a set file or directory (default: the dev set)")
    parser.add_argument("--kb", default=None, help="knowledge base file (default: the shipped sample shop)")
    parser.add_argument("--catalog", default=None, help="catalog YAML for product questions (default: none)")
    parser.add_argument("--threshold", type=float, default=None, help="override the confidence threshold")
    parser.add_argument("--misses", action="store_true", help="list every wrong question and dialogue")
    parser.add_argument("--matrix", action="store_true", help="print the whole confusion matrix")
    parser.add_argument("--alias", action="append", default=[], metavar="LABEL=INTENT",
                        help="read a set's label as an intent id (repeatable), e.g. product=product_question")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="also K-fold cross-validate over the knowledge base's own examples")
    args = parser.parse_args(argv)
    try:
        questions, dialogues = load_set(args.path)
    except (EvalSetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    aliases = dict(alias.split("=", 1) for alias in args.alias if "=" in alias)
    for question in questions:
        question.intent = aliases.get(question.intent, question.intent)
    settings = BotSettings(confidence_threshold=args.threshold) if args.threshold is not None else None
    catalog = MemoryCatalog.load(args.catalog) if args.catalog else None
    started = time.perf_counter()
    bot = load_bot(args.kb, settings, catalog)
    fitted = time.perf_counter() - started
    report = run(bot, questions, dialogues)
    figures = summarise(report, {intent.id for intent in bot.kb.intents})
    figures["load_and_fit_s"] = fitted
    if args.cv:
        figures["cross_validation"] = cross_validate(bot.kb, args.cv, args.threshold)
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, indent=1))
    else:
        print(render(figures, args.path, args.misses, args.matrix))
        for language, f in figures.get("cross_validation", {}).items():
            print(f"cross-validation ({args.cv} folds) over the knowledge base's {f['examples']} {language} examples: "
                  f"answered right {f['answered_right']:.2f}, raw top-1 {f['raw_top1']:.2f}")
        print(f"\nknowledge base loaded and fitted in {fitted:.2f} s (the first fit in a process also loads the segmenter's dictionary)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
