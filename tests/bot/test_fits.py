"""gateway.bot.fits: a model fitted once is loaded by the next process instead of fitted again; a
changed knowledge base, or a damaged file, is fitted afresh."""

from __future__ import annotations

import logging
import os

import pytest

from gateway.bot import FitCache, IntentClassifier, KnowledgeBase

KB = {"intents": [
    {"id": "hours", "title": {"zh": "营业时间"}, "answer": {"zh": "每天9点到21点"}, "examples": {"zh": ["几点开门", "营业时间", "你们几点关门"]}},
    {"id": "returns", "title": {"zh": "退货"}, "answer": {"zh": "七天无理由退货"}, "examples": {"zh": ["怎么退货", "可以退吗", "退货流程"]}},
    {"id": "shipping", "title": {"zh": "发货"}, "answer": {"zh": "48小时内发货"}, "examples": {"zh": ["什么时候发货", "多久发货", "发货时间"]}},
]}


def knowledge_base(**change) -> KnowledgeBase:
    document = {"intents": [dict(intent) for intent in KB["intents"]]}
    document["intents"][0].update(change)
    return KnowledgeBase.from_dict(document, source="test")


@pytest.fixture
def fits_counted(monkeypatch):
    """How many fits really ran (``fit_on``), however many models were asked for."""
    ran = []
    real = IntentClassifier.fit_on.__func__

    def counted(cls, training):
        ran.append(training.key)
        return real(cls, training)

    monkeypatch.setattr(IntentClassifier, "fit_on", classmethod(counted))
    return ran


def test_a_model_kept_by_one_process_is_loaded_by_the_next(tmp_path, fits_counted):
    first = IntentClassifier.fit(knowledge_base(), fits=FitCache(tmp_path))
    assert len(fits_counted) == 1 and len(list(tmp_path.glob("*.fit"))) == 1
    again = IntentClassifier.fit(knowledge_base(), fits=FitCache(tmp_path))  # a new cache object: as a restart makes
    assert len(fits_counted) == 1  # loaded, not fitted
    for question in ("怎么退货", "几点开门啊", "多久能发货"):
        assert again.classify(question) == first.classify(question)


def test_a_changed_knowledge_base_or_no_cache_fits_again(tmp_path, fits_counted):
    IntentClassifier.fit(knowledge_base(), fits=FitCache(tmp_path))
    IntentClassifier.fit(knowledge_base(examples={"zh": ["几点开门", "营业时间", "周末开门吗"]}), fits=FitCache(tmp_path))
    assert len(fits_counted) == 2 and len(set(fits_counted)) == 2 and len(list(tmp_path.glob("*.fit"))) == 2
    IntentClassifier.fit(knowledge_base())  # no cache: always a fit
    assert len(fits_counted) == 3


def test_a_damaged_model_is_fitted_again_and_replaced(tmp_path, fits_counted, caplog):
    caplog.set_level(logging.WARNING, logger="kefu.bot")
    IntentClassifier.fit(knowledge_base(), fits=FitCache(tmp_path))
    (kept,) = tmp_path.glob("*.fit")
    kept.write_bytes(kept.read_bytes()[:1000])  # cut short, as a full disk would leave it
    fitted = IntentClassifier.fit(knowledge_base(), fits=FitCache(tmp_path))
    assert len(fits_counted) == 2 and "unreadable" in caplog.text
    assert fitted.classify("怎么退货")[0].intent == "returns"
    IntentClassifier.fit(knowledge_base(), fits=FitCache(tmp_path))
    assert len(fits_counted) == 2  # the new one was kept whole


def test_only_the_most_recently_used_models_are_kept(tmp_path):
    cache = FitCache(tmp_path, keep=2)
    for n, key in enumerate(("a", "b", "c")):
        cache.put(key, {"model": key})
        os.utime(tmp_path / f"{key}.fit", (1_000 + n, 1_000 + n))  # put in this order, a second apart
    assert sorted(p.stem for p in tmp_path.glob("*.fit")) == ["b", "c"]
    assert cache.get("b") == {"model": "b"}  # used: now the most recent
    cache.put("d", {"model": "d"})
    assert sorted(p.stem for p in tmp_path.glob("*.fit")) == ["b", "d"]
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind
