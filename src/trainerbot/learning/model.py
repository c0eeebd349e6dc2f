"""The trainable model: maps an input to one of the taught outputs, or to "unknown".

Features are word and bigram TF-IDF beside MiniLM sentence embeddings; a logistic
regression over both picks the output. Its probability alone is overconfident on
questions nobody taught, so the confidence also asks how close the input is to
the examples of the chosen output (mean cosine of the nearest few). Negative
examples (answers the bot must not give) scale down an output's probability for
inputs close to them.

Two rules from ``matching`` guard against near-misses: an example with no word characters
answers only its exact text, and an answer whose examples share no content word with the
input needs a very close meaning. Each model chooses its own confidence threshold while it
trains (``choose_threshold``), from its own examples only.

A model is saved as one ``.npz`` of plain arrays and JSON (no pickle), so loading a
file cannot run code and does not depend on the scikit-learn version.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from trainerbot.errors import InvalidInput
from trainerbot.learning.matching import MEANING, content_stems, has_words, normalise
from trainerbot.types import Example

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2 adds the chosen threshold and each output's content words; 1 still loads
READABLE_FORMATS = (1, 2)
NEIGHBOURS = 3  # how many of an output's nearest examples the confidence looks at
NEGATIVE_FLOOR = 0.6  # a negative example starts to count from this cosine similarity
DEFAULT_THRESHOLD = 0.6  # when a model has too few examples to choose its own
FOLDS = 10  # the examples (and the outputs) are split in this many parts to choose the threshold
FOLD_BUDGET = 30_000  # examples × folds fitted to choose it: small sets get every fold, Banking77 two
MIN_HOLDOUT = 5  # fewer held-out questions than this say nothing about a threshold
# The share of right answers a threshold may not go below (see choose_threshold): chosen on Banking77's
# left-out-intent splits and the small FAQs of bench/few_examples.py (docs/benchmarks.md).
KEEP = 0.96
# The thresholds a model chooses from. Not below 0.45: a small FAQ's held-out questions are judged by
# fits that saw fewer examples still (one an answer in a 5 x 2 FAQ), so their confidences understate
# the final model's, and lower thresholds let close untaught questions through (bench/few_examples.py).
THRESHOLDS = np.round(np.arange(0.45, 0.9001, 0.005), 3)
TFIDF_OPTIONS = {"ngram_range": (1, 2), "sublinear_tf": True, "lowercase": True}
# For examples with no word of two letters or more ("a => b", "b 2 => ..."): single letters and marks count.
SHORT_TOKENS = r"(?u)\b\w+\b|[^\w\s]"

Progress = Callable[[float, str], None]


class TextEncoder(Protocol):
    dimension: int

    def encode(
        self, sentences: Sequence[str], workers: int = 1, progress: Callable[[float], None] | None = None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class Prediction:
    output: str | None  # None: not confident enough, the answer is "unknown"
    confidence: float
    best_guess: str


@dataclass(frozen=True)
class TrainingReport:
    examples: int
    positive: int
    negative: int
    outputs: int
    holdout_size: int
    holdout_accuracy: float | None  # held-out examples answered right (not "unknown") at ``threshold``
    threshold: float  # the confidence threshold the model answers with
    threshold_source: str  # "chosen" from its examples, "default" (too few to choose), or "setting" (an override)
    seconds: float
    # Questions of answers left out of a fit answered "unknown" at ``threshold`` (None: too few to say),
    # an estimate of how the model meets questions nobody taught it.
    unknown_size: int = 0
    unknown_share: float | None = None

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Calibration:
    """How a model's questions score when it did not learn them (see ``calibrate``)."""

    known_confidence: np.ndarray  # held-out examples of outputs the fit knew
    known_right: np.ndarray  # whether the fit's best guess for them was right
    unknown_confidence: np.ndarray  # examples of outputs left out of the fit altogether


def choose_threshold(calibration: Calibration) -> float | None:
    """The threshold a model answers with, from how its own held-out questions scored.

    Among thresholds that keep at least ``KEEP`` of the held-out questions the fit answered
    right, the one with the most questions of left-out outputs answered "unknown" (as that
    share only grows with the threshold, the highest such one). None when too few questions
    were held out to say.
    """
    known, right = calibration.known_confidence, calibration.known_right
    if len(known) < MIN_HOLDOUT or not right.any():
        return None
    needed = KEEP * right.mean()
    for threshold in THRESHOLDS[::-1]:
        if (right & (known >= threshold)).mean() >= needed:
            return float(threshold)
    return float(THRESHOLDS[0])


def _tfidf_options(token_pattern: str | None) -> dict[str, object]:
    return TFIDF_OPTIONS if token_pattern is None else {**TFIDF_OPTIONS, "token_pattern": token_pattern}


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    return logits / logits.sum(axis=1, keepdims=True)


class IntentModel:
    """``vectors`` and ``labels`` are the examples with words; those without answer through ``exact`` only."""

    def __init__(
        self,
        *,
        encoder: TextEncoder,
        outputs: list[str],
        vocabulary: dict[str, int],
        idf: np.ndarray,
        coef: np.ndarray | None,
        intercept: np.ndarray | None,
        vectors: np.ndarray,
        labels: np.ndarray,
        negative_vectors: np.ndarray,
        negative_labels: np.ndarray,
        exact: dict[str, int],
        stems: list[frozenset[str]] | None = None,
        threshold: float | None = None,
        token_pattern: str | None = None,
    ) -> None:
        self.encoder = encoder
        self.token_pattern = token_pattern
        self.outputs = outputs
        self.coef, self.intercept = coef, intercept
        self.vectors, self.labels = vectors, labels
        self.negative_vectors, self.negative_labels = negative_vectors, negative_labels
        self.exact = exact
        self.stems = stems  # each output's content words; None (a format 1 file): no word check
        self.threshold = threshold  # chosen in training; None: too few examples to choose, DEFAULT_THRESHOLD
        self._vocabulary, self._idf = vocabulary, idf
        self._by_label = [np.flatnonzero(labels == i) for i in range(len(outputs))]
        if coef is not None:  # the word block and the embedding block, applied separately
            self._tfidf = TfidfVectorizer(**_tfidf_options(token_pattern), vocabulary=vocabulary)
            self._tfidf.idf_ = idf
            self._word_weights = np.ascontiguousarray(coef[:, : len(vocabulary)].T)
            self._vector_weights = np.ascontiguousarray(coef[:, len(vocabulary) :].T)

    @property
    def answers_with(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLD

    # --- prediction ---------------------------------------------------------------

    def predict(self, text: str, threshold: float | None = None, vector: np.ndarray | None = None) -> Prediction:
        """``threshold`` None: the model's own. ``vector``: the text's embedding when already computed."""
        if vector is None:
            return self.predict_many([text], threshold)[0]
        return self._predict_chunk([text], vector[None, :], threshold)[0]

    def predict_many(
        self,
        texts: Sequence[str],
        threshold: float | None = None,
        batch: int = 512,
        vectors: np.ndarray | None = None,
    ) -> list[Prediction]:
        """``vectors``: the texts' embeddings, when the caller has already computed them."""
        results: list[Prediction] = []
        for start in range(0, len(texts), batch):
            chunk = list(texts[start : start + batch])
            encoded = self.encoder.encode(chunk) if vectors is None else vectors[start : start + batch]
            results.extend(self._predict_chunk(chunk, encoded, threshold))
        return results

    def _probabilities(self, texts: list[str], vectors: np.ndarray) -> np.ndarray:
        if self.coef is None:  # at most one output has examples with words: nothing to choose between
            probs = np.zeros((len(texts), len(self.outputs)), dtype=np.float32)
            if len(self.labels):
                probs[:, self.labels[0]] = 1.0
            return probs
        logits = np.asarray(self._tfidf.transform(texts) @ self._word_weights) + vectors @ self._vector_weights
        return _softmax(logits + self.intercept)

    def _predict_chunk(self, texts: list[str], vectors: np.ndarray, threshold: float | None) -> list[Prediction]:
        threshold = self.answers_with if threshold is None else threshold
        probs = self._probabilities(texts, vectors)
        if len(self.negative_labels):
            closeness = vectors @ self.negative_vectors.T
            for label in np.unique(self.negative_labels):
                nearest = closeness[:, self.negative_labels == label].max(axis=1)
                strength = np.clip((nearest - NEGATIVE_FLOOR) / (1 - NEGATIVE_FLOOR), 0.0, 1.0)
                probs[:, label] *= 1.0 - strength
        predictions = []
        for row, text in enumerate(texts):
            label = self.exact.get(normalise(text))
            if label is not None:  # the very question taught (pairs a negative example forbids are not here)
                predictions.append(Prediction(self.outputs[label], 1.0, self.outputs[label]))
                continue
            label = int(probs[row].argmax())
            if not len(self.labels) or not has_words(text):  # emoji and marks: only their exact text answers
                predictions.append(Prediction(None, 0.0, self.outputs[label]))
                continue
            # Compared with the chosen output's examples only, not every example.
            similarity = self.vectors[self._by_label[label]] @ vectors[row]
            near = max(float(np.sort(similarity)[-NEIGHBOURS:].mean()), 0.0)
            chance = float(probs[row, label])
            confidence = (chance + near) / 2 if self.coef is not None else near * chance
            closest = float(similarity.max())
            if self.stems is not None and closest < MEANING and not content_stems(text) & self.stems[label]:
                # No content word in common and no meaning close enough: not this answer.
                confidence = min(confidence, max(closest, 0.0))
                predictions.append(Prediction(None, round(confidence, 4), self.outputs[label]))
                continue
            answer = self.outputs[label] if confidence >= threshold else None
            predictions.append(Prediction(answer, round(confidence, 4), self.outputs[label]))
        return predictions

    # --- persistence ----------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta: dict[str, object] = {
            "format": FORMAT_VERSION,
            "outputs": self.outputs,
            "vocabulary": self._vocabulary,
            "exact": self.exact,
            "threshold": self.threshold,
            "stems": [sorted(words) for words in self.stems] if self.stems is not None else None,
        }
        if self.token_pattern is not None:
            meta["token_pattern"] = self.token_pattern
        arrays = {
            "idf": self._idf,
            "vectors": self.vectors,
            "labels": self.labels,
            "negative_vectors": self.negative_vectors,
            "negative_labels": self.negative_labels,
        }
        if self.coef is not None and self.intercept is not None:
            arrays |= {"coef": self.coef, "intercept": self.intercept}
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)  # a crash never leaves half a model under the real name

    @classmethod
    def load(cls, path: Path, encoder: TextEncoder) -> IntentModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") not in READABLE_FORMATS:
                raise ValueError(f"{path.name}: model format {meta.get('format')} is not supported")
            stems = meta.get("stems")
            return cls(
                encoder=encoder,
                outputs=meta["outputs"],
                vocabulary=meta["vocabulary"],
                token_pattern=meta.get("token_pattern"),
                exact=meta["exact"],
                stems=[frozenset(words) for words in stems] if stems is not None else None,
                threshold=meta.get("threshold"),
                idf=data["idf"],
                coef=data.get("coef"),
                intercept=data.get("intercept"),
                vectors=data["vectors"],
                labels=data["labels"],
                negative_vectors=data["negative_vectors"],
                negative_labels=data["negative_labels"],
            )


# --- training ---------------------------------------------------------------------


def _exact_answers(positives: list[Example], negatives: list[Example], index: dict[str, int]) -> dict[str, int]:
    forbidden = {(normalise(ex.input), ex.output) for ex in negatives}
    votes: dict[str, Counter[int]] = {}
    for ex in positives:
        key = normalise(ex.input)
        if (key, ex.output) not in forbidden:
            votes.setdefault(key, Counter())[index[ex.output]] += 1
    return {key: counter.most_common(1)[0][0] for key, counter in votes.items()}


def _fit_classifier(
    features: sparse.csr_matrix,
    labels: np.ndarray,
    start: LogisticRegression | None,
    regularisation: float,
    tolerance: float = 1e-4,
) -> LogisticRegression:
    classifier = LogisticRegression(C=regularisation, max_iter=1000, tol=tolerance, warm_start=start is not None)
    if start is not None:  # continue from the calibration fit: the full fit then takes a few steps
        classifier.coef_, classifier.intercept_ = start.coef_.copy(), start.intercept_.copy()
        classifier.classes_ = start.classes_
    return classifier.fit(features, labels)


def _all_outputs(classifier: LogisticRegression, outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's weights with a row for every output; outputs it never saw can never win."""
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # two classes: scikit-learn keeps one logit; softmax over (0, z) is the same sigmoid
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    full_coef = np.zeros((outputs, coef.shape[1]), dtype=np.float32)
    full_intercept = np.full(outputs, -1e4, dtype=np.float32)
    full_coef[classifier.classes_], full_intercept[classifier.classes_] = coef, intercept
    return full_coef, full_intercept


def _widen(classifier: LogisticRegression, classes: np.ndarray) -> LogisticRegression | None:
    """A start for a fit on ``classes`` from one fitted on some of them (None where it cannot be)."""
    if len(classes) < 3 or classifier.coef_.shape[0] == 1:
        return None
    start = LogisticRegression()
    start.classes_ = classes
    start.coef_ = np.zeros((len(classes), classifier.coef_.shape[1]))
    start.intercept_ = np.zeros(len(classes))
    rows = np.searchsorted(classes, classifier.classes_)
    start.coef_[rows], start.intercept_[rows] = classifier.coef_, classifier.intercept_
    return start


def default_regularisation(positives: int, outputs: int) -> float:
    """The logistic regression's C: looser when each output has only a few examples.

    The L2 penalty does not shrink with the data, so with a handful of examples an
    output it keeps every probability near 1 / outputs, and a bot taught a small FAQ
    would call most rephrasings of its own questions "unknown". At 30 or more examples
    an output C is 10, the best value on Banking77; below, it grows to at most 100.
    bench/few_examples.py measures both sides of this choice.
    """
    return float(np.clip(300 * outputs / positives, 10.0, 100.0))


def _folds(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Each output's fold, and each example's (-1: never held out), for choosing the threshold.

    In fold f the outputs of fold f are left out altogether, and the examples of fold f of the
    other outputs are held out; an output keeps at least one example in every fit.
    """
    classes = np.unique(labels)
    count = min(FOLDS, len(classes))
    output_fold = np.full(labels.max() + 1, -1)
    output_fold[rng.permutation(classes)] = np.arange(len(classes)) % count
    example_fold = np.full(len(labels), -1)
    for label in classes:
        rows = rng.permutation(np.flatnonzero(labels == label))
        if len(rows) >= 2:
            example_fold[rows] = (rng.integers(count) + np.arange(len(rows))) % count
    return output_fold[labels], example_fold, count


def train(
    examples: Sequence[Example],
    encoder: TextEncoder,
    *,
    threshold: float | None = None,
    progress: Progress = lambda fraction, stage: None,
    workers: int = 2,
    regularisation: float | None = None,
    seed: int = 0,
) -> tuple[IntentModel, TrainingReport]:
    """Trains a model on all examples, first choosing its threshold from fits that leave some out.

    ``threshold``: an override (``TRAINERBOT_CONFIDENCE_THRESHOLD``); the held-out accuracy is
    then measured at it, and the model still records the threshold it would have chosen.
    """
    started = time.perf_counter()
    positives = [ex for ex in examples if ex.positive]
    negatives = [ex for ex in examples if not ex.positive]
    if not positives:
        raise InvalidInput("nothing to learn yet: teach at least one positive example (`input => output`)")
    outputs = sorted({ex.output for ex in positives})
    index = {output: i for i, output in enumerate(outputs)}
    worded = [ex for ex in positives if has_words(ex.input)]  # the others answer their exact text only
    worded_negatives = [ex for ex in negatives if has_words(ex.input) and ex.output in index]
    labels = np.array([index[ex.output] for ex in worded], dtype=np.int64)
    texts = [ex.input for ex in worded]
    if regularisation is None:
        regularisation = default_regularisation(max(len(worded), 1), len(outputs))

    progress(0.0, "reading examples")
    all_texts = texts + [ex.input for ex in worded_negatives]
    vectors = (
        encoder.encode(all_texts, workers=workers, progress=lambda done: progress(0.75 * done, "reading examples"))
        if all_texts
        else np.zeros((0, encoder.dimension), dtype=np.float32)
    )
    negative_vectors, vectors = vectors[len(texts) :], vectors[: len(texts)]
    negative_labels = np.array([index[ex.output] for ex in worded_negatives], dtype=np.int64)
    stems_of = [content_stems(text) for text in texts]

    token_pattern, vocabulary, idf = None, {}, np.zeros(0, dtype=np.float32)
    features = None
    if len(np.unique(labels)) > 1:
        vectorizer = TfidfVectorizer(**TFIDF_OPTIONS, min_df=2 if len(texts) >= 1000 else 1)
        try:
            tfidf = vectorizer.fit_transform(texts)
        except ValueError:  # an empty vocabulary: no example has a word of two letters or more
            token_pattern = SHORT_TOKENS
            vectorizer = TfidfVectorizer(**_tfidf_options(token_pattern))
            tfidf = vectorizer.fit_transform(texts)
        vocabulary = {k: int(v) for k, v in vectorizer.vocabulary_.items()}
        idf = vectorizer.idf_.astype(np.float32)
        features = sparse.hstack([tfidf, sparse.csr_matrix(vectors)]).tocsr()

    def fit(rows: np.ndarray, start: LogisticRegression | None = None, tolerance: float = 1e-4):
        if features is None or len(np.unique(labels[rows])) < 2:
            return None
        return _fit_classifier(features[rows], labels[rows], start, regularisation, tolerance)

    def build(classifier: LogisticRegression | None, rows: np.ndarray, chosen: float | None) -> IntentModel:
        coef, intercept = _all_outputs(classifier, len(outputs)) if classifier is not None else (None, None)
        stems: list[set[str]] = [set() for _ in outputs]
        for row in rows:
            stems[labels[row]] |= stems_of[row]
        return IntentModel(
            encoder=encoder,
            outputs=outputs,
            vocabulary=vocabulary,
            idf=idf,
            coef=coef,
            intercept=intercept,
            vectors=vectors[rows],
            labels=labels[rows],
            negative_vectors=negative_vectors,
            negative_labels=negative_labels,
            exact=_exact_answers(
                [worded[i] for i in rows] + [ex for ex in positives if not has_words(ex.input)], negatives, index
            ),
            stems=[frozenset(words) for words in stems],
            threshold=chosen,
            token_pattern=token_pattern,
        )

    progress(0.78, "choosing the confidence threshold")
    calibration, start = calibrate(labels, texts, vectors, fit, build, np.random.default_rng(seed))
    chosen = choose_threshold(calibration)
    in_force = threshold if threshold is not None else (chosen if chosen is not None else DEFAULT_THRESHOLD)
    held = len(calibration.known_confidence)
    holdout_accuracy = (
        float((calibration.known_right & (calibration.known_confidence >= in_force)).mean())
        if held >= MIN_HOLDOUT
        else None
    )
    outside = calibration.unknown_confidence
    unknown_share = float((outside < in_force).mean()) if len(outside) >= MIN_HOLDOUT else None
    progress(0.9, "training on all examples")
    everything = np.arange(len(labels))
    classifier = fit(everything, _widen(start, np.unique(labels)) if start is not None else None)
    model = build(classifier, everything, chosen)
    report = TrainingReport(
        examples=len(examples),
        positive=len(positives),
        negative=len(negatives),
        outputs=len(outputs),
        holdout_size=held if holdout_accuracy is not None else 0,
        holdout_accuracy=holdout_accuracy,
        threshold=round(in_force, 3),
        threshold_source="setting" if threshold is not None else "chosen" if chosen is not None else "default",
        seconds=round(time.perf_counter() - started, 2),
        unknown_size=len(outside) if unknown_share is not None else 0,
        unknown_share=unknown_share,
    )
    progress(1.0, "saving the model")
    return model, report


def calibrate(
    labels: np.ndarray,
    texts: list[str],
    vectors: np.ndarray,
    fit: Callable[..., LogisticRegression | None],
    build: Callable[[LogisticRegression | None, np.ndarray, float | None], IntentModel],
    rng: np.random.Generator,
) -> tuple[Calibration, LogisticRegression | None]:
    """Fits that leave some outputs out entirely and hold some examples of the others out, and how those score.

    Small sets get up to ``FOLDS`` fits; large ones fewer, within ``FOLD_BUDGET`` (Banking77: two; one
    fit alone moved the threshold by up to 0.04 between draws). The final fit starts from the last
    classifier, which is returned with the scores.
    """
    empty = np.zeros(0)
    if len(np.unique(labels)) < 2:
        return Calibration(empty, empty.astype(bool), empty), None
    output_fold, example_fold, count = _folds(labels, rng)
    runs = max(1, min(count, FOLD_BUDGET // len(labels)))
    known, right, unknown = [], [], []
    classifier = None
    for fold in range(runs):
        left_out = output_fold == fold
        held = (example_fold == fold) & ~left_out
        rows = np.flatnonzero(~left_out & ~held)
        # A looser tolerance here: these fits only score questions; the final fit goes on to 1e-4.
        classifier = fit(rows, tolerance=1e-3)
        trial = build(classifier, rows, None)
        asked = np.flatnonzero(held | left_out)
        guesses = trial._predict_chunk([texts[i] for i in asked], vectors[asked], 0.0)
        for i, guess in zip(asked, guesses, strict=True):
            # A guess the word check refused is "unknown" at any threshold.
            confidence = guess.confidence if guess.output is not None else 0.0
            if left_out[i]:
                unknown.append(confidence)
            else:
                known.append(confidence)
                right.append(guess.best_guess == trial.outputs[labels[i]])
    return Calibration(np.array(known), np.array(right, dtype=bool), np.array(unknown)), classifier
