"""The evaluate command: the set format, the figures it computes, and its output."""

from __future__ import annotations

import json

import pytest

from gateway.bot.evaluate import EvalSetError, Report, load_set, main, run, summarise

QUESTIONS = """
- {text: 什么时候发货, lang: zh, intent: shipping_time}
- {text: "where is my parcel", lang: en, intent: order_status}
- {text: 今天天气怎么样, lang: zh, intent: out_of_scope}
"""
DIALOGUES = """
dialogues:
  - {id: calm, turns: [在吗, 什么时候发货, 谢谢], handoff: false, reason: null}
  - {id: human, turns: [转人工], handoff: true, reason: asked_for_human}
  - {id: missed, turns: [你好], handoff: true, reason: frustrated}
"""


@pytest.fixture
def eval_set(tmp_path):
    (tmp_path / "questions.yaml").write_text(QUESTIONS, encoding="utf-8")
    (tmp_path / "dialogues.yml").write_text(DIALOGUES, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a set file", encoding="utf-8")
    return tmp_path


def test_a_directory_holds_questions_and_dialogues(eval_set):
    questions, dialogues = load_set(eval_set)
    assert [(q.lang, q.intent) for q in questions] == [("zh", "shipping_time"), ("en", "order_status"), ("zh", "out_of_scope")]
    assert [(d.id, d.handoff, d.reason) for d in dialogues] == [("calm", False, None), ("human", True, "asked_for_human"), ("missed", True, "frustrated")]
    assert load_set(eval_set / "questions.yaml")[1] == []


def test_turns_may_be_role_and_text(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("- {id: x, turns: [{role: shopper, text: 在吗}, {role: bot, text: 您好}, {text: 转人工}], handoff: true, reason: asked_for_human}\n", encoding="utf-8")
    assert load_set(path)[1][0].turns == ["在吗", "转人工"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("- {text: hi, lang: fr, intent: greeting}", "'lang' must be one of zh, en"),
        ("- {turns: [], handoff: true}", "'turns' must be a non-empty list"),
        ("- {question: hi}", "an item has 'text'"),
        ("- just text", "must be a mapping"),
        ("[unclosed", "questions.yaml"),
    ],
)
def test_bad_items_are_named(tmp_path, content, message):
    path = tmp_path / "questions.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalSetError, match=message.replace("[", r"\[")):
        load_set(path)


def test_figures_from_a_known_report():
    report = Report(
        questions=[
            {"text": "a", "lang": "zh", "expected": "x", "got": "x", "raw": "x", "score": 0.9},
            {"text": "b", "lang": "zh", "expected": "x", "got": "(none)", "raw": "x", "score": 0.3},
            {"text": "c", "lang": "en", "expected": "y", "got": "x", "raw": "x", "score": 0.6},
            {"text": "d", "lang": "en", "expected": "out_of_scope", "got": "(none)", "raw": "x", "score": 0.1},
        ],
        dialogues=[
            {"id": "1", "expected": None, "expected_handoff": False, "got": None},
            {"id": "2", "expected": None, "expected_handoff": False, "got": "frustrated"},
            {"id": "3", "expected": "frustrated", "expected_handoff": True, "got": "frustrated"},
            {"id": "4", "expected": "asked_for_human", "expected_handoff": True, "got": None},
            {"id": "5", "expected": "asked_for_human", "expected_handoff": True, "got": "frustrated"},
        ],
        latencies=[0.001] * 99 + [0.1],
    )
    f = summarise(report, {"x", "y"})
    assert f["intent"]["zh"]["accuracy"] == 0.5 and f["intent"]["zh"]["raw_top1_in_scope"] == 1.0
    assert f["intent"]["en"]["accuracy"] == 0.5 and f["intent"]["en"]["in_scope_accuracy"] == 0.0
    assert f["per_intent"]["out_of_scope"]["accuracy"] == 1.0
    assert {(c["expected"], c["got"], c["n"]) for c in f["confusions"]} == {("x", "(none)", 1), ("y", "x", 1)}
    assert f["matrix"] == {"out_of_scope": {"(none)": 1}, "x": {"x": 1, "(none)": 1}, "y": {"x": 1}}
    h = f["handoff"]
    assert (h["recall"], h["precision"], h["false_handoff_rate"]) == (2 / 3, 2 / 3, 0.5)
    assert h["per_reason"]["asked_for_human"] == {"expected": 2, "recall": 0.5, "recall_same_reason": 0.0, "fired": 0, "precision": None}
    assert h["per_reason"]["frustrated"]["precision"] == 2 / 3 and h["per_reason"]["frustrated"]["fired"] == 3
    assert f["latency_ms"]["p50"] == pytest.approx(1.0) and f["latency_ms"]["max"] == pytest.approx(100.0)


def test_run_puts_each_question_to_a_new_session(shop_bot, eval_set):
    questions, dialogues = load_set(eval_set)
    report = run(shop_bot, questions, dialogues)
    got = [q["got"] for q in report.questions]
    assert got == ["shipping_time", "order_status", "(none)"]
    assert [(d["id"], d["got"]) for d in report.dialogues] == [("calm", None), ("human", "asked_for_human"), ("missed", None)]
    assert len(report.latencies) == 3 + 3 + 1 + 1


def test_the_command_prints_every_section(eval_set, capsys):
    assert main(["--set", str(eval_set), "--misses", "--matrix"]) == 0
    out = capsys.readouterr().out
    for heading in ("intent top-1", "per intent", "top confusions", "confusion matrix", "handoff over 3 dialogues", "latency per bot turn"):
        assert heading in out
    assert "missed: expected frustrated, got None" in out


def test_the_command_prints_json(eval_set, capsys):
    assert main(["--set", str(eval_set / "questions.yaml"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["intent"]["all"]["questions"] == 3 and "handoff" not in figures


def test_a_missing_set_is_an_error(tmp_path, capsys):
    assert main(["--set", str(tmp_path / "nope.yaml")]) == 2
    assert "error:" in capsys.readouterr().err


def test_labels_outside_the_knowledge_base_are_named_and_can_be_aliased(tmp_path, capsys):
    path = tmp_path / "q.yaml"
    path.write_text("- {text: 这件外套是什么面料, lang: zh, intent: product}\n", encoding="utf-8")
    assert main(["--set", str(path)]) == 0
    out = capsys.readouterr().out
    assert "scored as out of scope: product" in out
    assert main(["--set", str(path), "--alias", "product=product_question", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["labels_outside_the_knowledge_base"] == [] and figures["intent"]["zh"]["accuracy"] == 1.0
