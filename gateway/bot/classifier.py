"""Intent recognition: character n-grams, words and pinyin into one calibrated linear model.

Features (all TF-IDF, sublinear, over ``text.normalise``d text, so traditional characters, width
and case are already folded):

- character n-grams (``char_wb``, 1–3): no dictionary needed, and typos (发或/发货) still share most
  n-grams, in Chinese and English alike;
- words, word pairs and pinyin (``tokens.features``): jieba's segmentation tells words from chance
  character pairs, and pinyin makes homophone typos (物留/物流) and typed pinyin ("fahuo") sound
  like the knowledge base.

One model serves both languages: the feature blocks barely overlap, and a shared model reads mixed
messages ("hello 包邮吗", "我要cancel") without having to pick a language first.

The model is a linear SVM whose scores are calibrated into probabilities by cross-validation
(temperature scaling, ``CalibratedClassifierCV``: one softmax over all intents, its temperature
fitted on held-out folds), so a score of 0.7 means "right about 70 % of the time". Per-class Platt
scaling was measured too (docs/routing.md): normalised over 20 one-vs-rest sigmoids it came out
under-confident on the dev set (mean score 0.62 for 0.89 accuracy; temperature: 0.77 for 0.90). A shipped set of generic out-of-scope questions
(``data/out_of_scope.yaml``) trains an explicit "none of these" class, so "你们老板叫什么名字" puts
its probability there instead of on some intent. A knowledge base too small to cross-validate
(fewer than ``_FOLDS`` examples of some intent, or a single intent) gets a logistic regression's
own probabilities.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import scipy
import sklearn
import yaml
from scipy.sparse import hstack
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from .fits import FitCache
from .knowledge import SMALLTALK, KnowledgeBase
from .text import LANGUAGES, normalise
from .tokens import features

OUT_OF_SCOPE_PATH = Path(__file__).parent / "data" / "out_of_scope.yaml"

_OUT_OF_SCOPE = "__out_of_scope__"  # the label of the negative class; never returned as an intent
_NGRAMS = (1, 3)
_C = 0.5  # the SVM's inverse regularisation (chosen on the dev set, docs/routing.md)
_FOLDS = 3  # cross-validation folds of the calibration
MAX_CHARS = 300  # a message's head says what it is about; reading 5,000 characters took 50 ms
FIT_FORMAT = 1  # raise when what a fitted model holds changes in a way the digest below cannot see
# The code that turns text into features and fits the model: a change to it misses every kept fit.
CODE_DIGEST = hashlib.sha256(b"".join((Path(__file__).parent / name).read_bytes() for name in ("classifier.py", "text.py", "tokens.py"))).hexdigest()


@dataclass(frozen=True)
class TrainingSet:
    """What a fit learns from: normalised texts, their labels, and the languages present."""

    texts: list[str]
    labels: list[str]
    languages: tuple[str, ...]

    @property
    def key(self) -> str:
        """What the fitted model depends on: this set, the model's settings, and the code and
        library versions that fit and read it (``FitCache``'s key)."""
        made_by = [FIT_FORMAT, CODE_DIGEST, sklearn.__version__, scipy.__version__, np.__version__, _NGRAMS, _C, _FOLDS]
        said = json.dumps([made_by, self.texts, self.labels, self.languages], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(said.encode()).hexdigest()


def training_set(kb: KnowledgeBase, out_of_scope: Mapping[str, Sequence[str]]) -> TrainingSet:
    """``kb``'s examples and titles (with small talk around them) and the out-of-scope questions."""
    texts, labels = [], []
    languages = []
    for language in LANGUAGES:
        if any(intent.examples_zh if language == "zh" else intent.examples_en for intent in kb.intents):
            languages.append(language)
    for intent in kb.intents:
        titles = [intent.title.zh] + ([intent.title.en] if intent.title.en != intent.title.zh else [])
        for text in (*intent.examples_zh, *intent.examples_en, *titles):
            texts.append(normalise(text))
            labels.append(intent.id)
        if intent.category != SMALLTALK:
            for text in _with_smalltalk(intent.examples_zh, _SMALLTALK_ZH) + _with_smalltalk(intent.examples_en, _SMALLTALK_EN):
                texts.append(normalise(text))
                labels.append(intent.id)
    for language in LANGUAGES:
        for text in out_of_scope.get(language, ()):
            texts.append(normalise(text))
            labels.append(_OUT_OF_SCOPE)
    return TrainingSet(texts, labels, tuple(languages))


@dataclass(frozen=True, slots=True)
class IntentMatch:
    intent: str
    score: float  # calibrated probability in [0, 1] that this is the shopper's intent


def load_out_of_scope(path: str | Path = OUT_OF_SCOPE_PATH) -> dict[str, list[str]]:
    """The generic out-of-scope questions per language, as shipped."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return {language: [str(text) for text in data.get(language, [])] for language in LANGUAGES}


class IntentClassifier:
    """A fitted intent model for one knowledge base (both languages)."""

    def __init__(self, vectorizers: list[TfidfVectorizer], model, languages: tuple[str, ...]) -> None:
        self._vectorizers = vectorizers
        self._model = model
        self._languages = languages
        classes = list(model.classes_)
        self._intents = [str(c) for c in classes if c != _OUT_OF_SCOPE]
        self._columns = np.array([classes.index(c) for c in self._intents])

    @classmethod
    def fit(cls, kb: KnowledgeBase, out_of_scope: Mapping[str, Sequence[str]] | None = None, fits: FitCache | None = None) -> IntentClassifier:
        """Train on ``kb``'s examples and titles; ``out_of_scope`` defaults to the shipped set.

        Takes under a second for the shipped knowledge base (about 2,000 examples) on an idle core,
        plus a fraction of a second the first time in a process (the segmenter's dictionary): do it
        once per knowledge base (``load_bot`` caches it), never per conversation, and off the event
        loop. With ``fits``, a model fitted on the same training set before (by this or an earlier
        process) is loaded instead, and a new one is kept there.
        """
        training = training_set(kb, load_out_of_scope() if out_of_scope is None else out_of_scope)
        if fits is not None:
            found = fits.get(training.key)
            if isinstance(found, cls):
                return found
        fitted = cls.fit_on(training)
        if fits is not None:
            fits.put(training.key, fitted)
        return fitted

    @classmethod
    def fit_on(cls, training: TrainingSet) -> IntentClassifier:
        texts, labels = training.texts, training.labels
        with _one_blas_thread():
            vectorizers = [
                TfidfVectorizer(analyzer="char_wb", ngram_range=_NGRAMS, sublinear_tf=True),
                TfidfVectorizer(analyzer=features, sublinear_tf=True),
            ]
            matrix = hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
            smallest = min(labels.count(label) for label in set(labels))
            if smallest >= _FOLDS and len(set(labels)) >= 3:
                model = CalibratedClassifierCV(LinearSVC(C=_C), method="temperature", cv=_FOLDS)
            else:  # too few examples to hold some out: the regression's own probabilities
                model = LogisticRegression(C=10.0, max_iter=1000)
            model.fit(matrix, labels)
        if isinstance(model, CalibratedClassifierCV):
            model = CalibratedFolds.from_sklearn(model)
        return cls(vectorizers, model, training.languages)

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages the knowledge base has examples in."""
        return self._languages

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(self._intents)

    def classify(self, text: str, top: int = 3) -> list[IntentMatch]:
        """The ``top`` most likely intents, best first. Empty for text with nothing to match."""
        normalised = normalise(text[: MAX_CHARS * 2])[:MAX_CHARS]
        if not normalised:
            return []
        return self.classify_many([normalised], top)[0]

    def classify_many(self, normalised: list[str], top: int = 3) -> list[list[IntentMatch]]:
        """``classify`` for already normalised texts at once (evaluation, calibration checks)."""
        query = hstack([v.transform(normalised) for v in self._vectorizers]).tocsr()
        probabilities = self._model.predict_proba(query)[:, self._columns]
        out = []
        for row in probabilities:
            ranked = np.argsort(-row, kind="stable")[:top]
            out.append([IntentMatch(self._intents[i], round(float(row[i]), 4)) for i in ranked])
        return out


# Greetings and thanks around a question ("谢谢，那运费谁出", "hi, I want to return this"): a few
# examples of every other intent are also trained with one of these around them, so that the
# question, not the pleasantry, decides.
_SMALLTALK_ZH = ("你好，", "在吗 ", "谢谢，那", "好的，", "亲，", "哈喽 ", "嗯嗯 还有", "好的谢谢 ")
_SMALLTALK_EN = ("hi, ", "hello ", "thanks, and ", "ok thanks, ", "hey, ", "great, ", "thank you. ", "ok so ")
_SMALLTALK_EVERY = 10  # one example in this many gets a pleasantry


def _with_smalltalk(examples: Sequence[str], openers: Sequence[str]) -> list[str]:
    return [openers[i % len(openers)] + text for i, text in enumerate(examples[::_SMALLTALK_EVERY])]


class CalibratedFolds:
    """The fitted ``CalibratedClassifierCV(LinearSVC, method="temperature")`` as plain arrays.

    scikit-learn's ``predict_proba`` spends most of its time validating input (several checks per
    fold: about 3 ms a message, 10 ms on a busy machine); the same arithmetic on the same arrays
    takes a fraction of that. For each fold: the SVM's decision values, scaled by the fold's
    inverse temperature, through a softmax; then the mean over the folds, as scikit-learn does.
    """

    def __init__(self, classes: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray, float]]) -> None:
        self.classes_ = classes
        self.folds = folds  # (coef (features, classes), intercept (classes,), inverse temperature) per fold

    @classmethod
    def from_sklearn(cls, model: CalibratedClassifierCV) -> CalibratedFolds:
        if model.method != "temperature" or len(model.classes_) < 3:
            raise ValueError("expects temperature scaling over at least three classes")
        folds = []
        for fold in model.calibrated_classifiers_:
            svm, (scaling,) = fold.estimator, fold.calibrators
            if len(svm.classes_) != len(model.classes_):
                raise ValueError("every fold must see every class")
            folds.append((svm.coef_.T.copy(), svm.intercept_.copy(), float(scaling.beta_)))
        return cls(model.classes_, folds)

    def predict_proba(self, query) -> np.ndarray:
        total = np.zeros((query.shape[0], len(self.classes_)))
        for coef, intercept, beta in self.folds:
            logits = beta * (np.asarray(query @ coef) + intercept)
            logits -= logits.max(axis=1, keepdims=True)
            odds = np.exp(logits)
            total += odds / odds.sum(axis=1, keepdims=True)
        return total / len(self.folds)


def _one_blas_thread():
    """The vectors here are small: BLAS threads only add overhead (10x slower fits on a busy
    2-core machine), and a gateway process has better uses for its other cores."""
    return threadpool_limits(limits=1, user_api="blas")
