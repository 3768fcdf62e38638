"""Intent recognition: character n-gram TF-IDF, a linear classifier, and a calibrated confidence.

Character n-grams (``char_wb``, 1–3) need no word segmentation, so Chinese works as well as English
and typos (发或/发货) still share most n-grams. Each language gets its own model: in one shared
vocabulary the English n-grams would all look rare next to the Chinese majority and weigh too much.

A classifier's probability alone is a poor confidence: it always sums to 1 over the known intents,
so "你们老板叫什么名字" still gets a winner. So the score of a candidate intent is calibrated from three
signals: its probability, its margin over the runner-up, and its highest cosine similarity to any
example of that intent (far from every example = out of scope). A second, tiny logistic regression
maps those signals to an estimate of "this intent is the right one", trained at fit time on
cross-validated predictions for the knowledge base's own examples (right or wrong) and on a shipped
set of generic out-of-scope questions (``data/out_of_scope.yaml``), which also train an explicit
out-of-scope class. A score of 0.5 is therefore the natural threshold, whatever the knowledge base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from .knowledge import KnowledgeBase
from .text import LANGUAGES, detect_language, normalise

OUT_OF_SCOPE_PATH = Path(__file__).parent / "data" / "out_of_scope.yaml"

_OUT_OF_SCOPE = "__out_of_scope__"  # the label of the negative class; never returned as an intent
_NGRAMS = (1, 3)
_C = 10.0  # inverse regularisation of the intent classifier
_FOLDS = 5


@dataclass(frozen=True, slots=True)
class IntentMatch:
    intent: str
    score: float  # calibrated confidence in [0, 1]: >= 0.5 means "probably this intent"


def load_out_of_scope(path: str | Path = OUT_OF_SCOPE_PATH) -> dict[str, list[str]]:
    """The generic out-of-scope questions per language, as shipped."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return {language: list(data.get(language, [])) for language in LANGUAGES}


class IntentClassifier:
    """Fitted intent models, one per language the knowledge base has examples in."""

    def __init__(self, models: Mapping[str, _LanguageModel]) -> None:
        if not models:
            raise ValueError("an IntentClassifier needs at least one language model")
        self._models = dict(models)

    @classmethod
    def fit(cls, kb: KnowledgeBase, out_of_scope: Mapping[str, Sequence[str]] | None = None) -> IntentClassifier:
        """Train on ``kb``'s examples and titles; ``out_of_scope`` defaults to the shipped set.

        Takes about a second for a knowledge base of a few hundred examples: do it once per
        knowledge base (``load_default_bot`` caches it), never per conversation.
        """
        if out_of_scope is None:
            out_of_scope = load_out_of_scope()
        with _one_blas_thread():
            return cls(cls._fit_models(kb, out_of_scope))

    @staticmethod
    def _fit_models(kb: KnowledgeBase, out_of_scope: Mapping[str, Sequence[str]]) -> dict[str, _LanguageModel]:
        models = {}
        for language in LANGUAGES:
            texts, labels = [], []
            for intent in kb.intents:
                examples = intent.examples_zh if language == "zh" else intent.examples_en
                if examples:
                    for text in (*examples, intent.title.in_language(language)):
                        texts.append(normalise(text))
                        labels.append(intent.id)
            if texts:
                negatives = [normalise(text) for text in out_of_scope.get(language, ())]
                models[language] = _LanguageModel.fit(texts, labels, negatives)
        return models

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._models)

    def classify(self, text: str, top: int = 3) -> list[IntentMatch]:
        """The ``top`` most likely intents, best first. Empty for text with nothing to match."""
        normalised = normalise(text)
        if not normalised:
            return []
        language = detect_language(normalised)
        model = self._models.get(language) or next(iter(self._models.values()))
        return model.classify(normalised)[:top]


class _LanguageModel:
    """Vectoriser, intent classifier and calibrator for the examples of one language."""

    def __init__(
        self,
        vectorizer: TfidfVectorizer,
        classifier: LogisticRegression,
        calibrator: LogisticRegression,
        examples,  # sparse TF-IDF rows of the examples, sorted by intent
        starts: np.ndarray,  # index of each intent's first row in `examples`
        intents: list[str],  # the intents in the order of `starts`
    ) -> None:
        self.vectorizer = vectorizer
        self.classifier = classifier
        self.calibrator = calibrator
        self.examples = examples
        self.starts = starts
        self.intents = intents
        # the classifier's column of each intent, in the order of `intents`
        columns = {label: i for i, label in enumerate(classifier.classes_)}
        self.columns = np.array([columns[intent] for intent in intents])

    @classmethod
    def fit(cls, texts: list[str], labels: list[str], negatives: list[str]) -> _LanguageModel:
        calibrator = _fit_calibrator(texts, labels, negatives)
        return cls._fit_classifier(texts, labels, negatives, calibrator)

    @classmethod
    def _fit_classifier(cls, texts, labels, negatives, calibrator) -> _LanguageModel:
        order = sorted(range(len(texts)), key=lambda i: labels[i])
        texts = [texts[i] for i in order]
        labels = [labels[i] for i in order]
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=_NGRAMS, sublinear_tf=True)
        matrix = vectorizer.fit_transform(texts + negatives)
        classifier = LogisticRegression(C=_C, solver="newton-cg", max_iter=1000)
        classifier.fit(matrix, labels + [_OUT_OF_SCOPE] * len(negatives))
        intents = sorted(set(labels))
        starts = np.array([labels.index(intent) for intent in intents])
        return cls(vectorizer, classifier, calibrator, matrix[: len(texts)], starts, intents)

    def signals(self, texts: list[str]) -> np.ndarray:
        """The calibrator's inputs, shaped (texts, intents, 3): for each text and each of
        ``self.intents``, its probability, its margin over the best other intent, and its highest
        cosine similarity to one of the intent's examples."""
        query = self.vectorizer.transform(texts)
        probabilities = self.classifier.predict_proba(query)[:, self.columns]
        similarities = (query @ self.examples.T).toarray()
        best_similarity = np.maximum.reduceat(similarities, self.starts, axis=1)
        if probabilities.shape[1] > 1:
            top_two = -np.sort(-probabilities, axis=1)[:, :2]
            best_other = np.where(probabilities == top_two[:, :1], top_two[:, 1:2], top_two[:, :1])
        else:
            best_other = np.zeros_like(probabilities)
        return np.stack([probabilities, probabilities - best_other, best_similarity], axis=-1)

    def classify(self, text: str) -> list[IntentMatch]:
        signals = self.signals([text])[0]
        scores = self.calibrator.predict_proba(signals)[:, 1]
        ranked = np.argsort(-scores, kind="stable")
        return [IntentMatch(self.intents[i], round(float(scores[i]), 4)) for i in ranked]


def _one_blas_thread():
    """The vectors here are small: BLAS threads only add overhead (10x slower fits on a busy
    2-core machine), and a gateway process has better uses for its other cores."""
    return threadpool_limits(limits=1, user_api="blas")


def _fit_calibrator(texts: list[str], labels: list[str], negatives: list[str]) -> LogisticRegression:
    """Learn "is the top intent right?" from held-out predictions: each fold's examples and
    out-of-scope questions are classified by a model that never saw them."""
    texts_array, labels_array = np.array(texts, dtype=object), np.array(labels, dtype=object)
    negatives_array = np.array(negatives, dtype=object)
    folds = KFold(n_splits=_FOLDS, shuffle=True, random_state=0)
    negative_folds = list(folds.split(negatives_array)) if len(negatives) >= _FOLDS else None
    features, outcomes = [], []
    for fold, (train, test) in enumerate(folds.split(texts_array)):
        train_negatives, test_negatives = (
            (negatives_array[negative_folds[fold][0]], negatives_array[negative_folds[fold][1]])
            if negative_folds
            else (negatives_array, negatives_array[:0])
        )
        train_labels = list(labels_array[train])
        if len(set(train_labels)) + bool(len(train_negatives)) < 2:
            continue  # a single class cannot be trained; the fold adds nothing
        model = _LanguageModel._fit_classifier(
            list(texts_array[train]), train_labels, list(train_negatives), calibrator=None
        )
        held_out = list(texts_array[test]) + list(test_negatives)
        truths = list(labels_array[test]) + [_OUT_OF_SCOPE] * len(test_negatives)
        for signals, truth in zip(model.signals(held_out), truths):
            best = int(np.argmax(signals[:, 0]))
            features.append(signals[best])
            outcomes.append(int(model.intents[best] == truth))
    calibrator = LogisticRegression(class_weight="balanced")
    if len(set(outcomes)) < 2:  # degenerate knowledge base: fall back to "probability is confidence"
        features = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
        outcomes = [0, 1]
    calibrator.fit(np.array(features), np.array(outcomes))
    return calibrator
