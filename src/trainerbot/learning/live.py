"""What a knowledge base answers between trainings: its model, and what was taught since.

Training takes seconds to minutes and runs in the background, coalesced; people expect a
correction to count the next time they ask. So the examples a base was taught after its model
was trained (``Fresh``) answer at once, beside the model:

- a fresh example answers its own question exactly, and a close rephrasing when the message's
  embedding is at least ``NEAR_MATCH`` similar to it and the word rules of ``matching`` hold;
- a fresh negative example (a correction's "not this answer") stops that answer for its own
  question at once, and weakens it for questions close to it, as negatives in a model do.

The next training takes them into the model, and they stop being fresh.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainerbot.learning.matching import MEANING, content_stems, has_words, normalise
from trainerbot.learning.model import DEFAULT_THRESHOLD, NEGATIVE_FLOOR, IntentModel, Prediction, TextEncoder
from trainerbot.types import Example

# A fresh example answers a rephrasing from this cosine similarity on (or the threshold, if higher):
# the model's confidence mixes a probability in, a bare similarity needs a bar of its own.
# bench/near_misses.py measures it on a FAQ's rephrasings and near-misses.
NEAR_MATCH = 0.65


class Fresh:
    """Examples taught since the serving model's training, ready to match (empty: none)."""

    def __init__(
        self,
        exact: dict[str, str],
        forbidden: set[tuple[str, str]],
        outputs: list[str],
        vectors: np.ndarray,
        stems: dict[str, frozenset[str]],
        negative_outputs: list[str],
        negative_vectors: np.ndarray,
    ) -> None:
        self.exact = exact  # normalised question -> its newest answer
        self.forbidden = forbidden  # (normalised question, answer) pairs a negative example rules out
        self.outputs, self.vectors = outputs, vectors  # the examples with words
        self.stems = stems  # each answer's content words, over its fresh examples
        self.negative_outputs, self.negative_vectors = negative_outputs, negative_vectors

    @classmethod
    def of(cls, examples: Sequence[Example], vectors: np.ndarray) -> Fresh:
        """From examples in the order they were taught, and one embedding per example."""
        exact: dict[str, str] = {}
        forbidden: set[tuple[str, str]] = set()
        outputs, rows, negative_outputs, negative_rows = [], [], [], []
        stems: dict[str, frozenset[str]] = {}
        for row, example in enumerate(examples):
            key = normalise(example.input)
            if example.positive:
                exact[key] = example.output
                forbidden.discard((key, example.output))  # taught again after a "not this": it holds again
                if has_words(example.input):
                    outputs.append(example.output)
                    rows.append(row)
                    stems[example.output] = stems.get(example.output, frozenset()) | content_stems(example.input)
            else:
                forbidden.add((key, example.output))
                if exact.get(key) == example.output:
                    del exact[key]
                if has_words(example.input):
                    negative_outputs.append(example.output)
                    negative_rows.append(row)
        dimension = vectors.shape[1] if vectors.ndim == 2 else 0
        empty = np.zeros((0, dimension), dtype=np.float32)
        return cls(
            exact,
            forbidden,
            outputs,
            vectors[rows] if rows else empty,
            stems,
            negative_outputs,
            vectors[negative_rows] if negative_rows else empty,
        )

    def __bool__(self) -> bool:
        return bool(self.exact or self.forbidden or self.outputs)

    def weakening(self, output: str, vector: np.ndarray) -> float:
        """How much the fresh negatives of ``output`` weaken it for a message (0: not at all, 1: fully)."""
        rows = [i for i, other in enumerate(self.negative_outputs) if other == output]
        if not rows:
            return 0.0
        nearest = float((self.negative_vectors[rows] @ vector).max())
        return float(np.clip((nearest - NEGATIVE_FLOOR) / (1 - NEGATIVE_FLOOR), 0.0, 1.0))


class LiveModel:
    """A base's model (None before its first training) with its fresh examples on top.

    ``withdrawn``: answers the model learned that the base no longer teaches (their examples were
    deleted, or renamed to another answer, since its training); ``retracted``: (normalised question,
    answer) pairs it learned whose example was deleted or edited since. The model's guesses of those
    count for nothing: the question is then answered by the fresh examples, or not at all.
    """

    def __init__(
        self,
        model: IntentModel | None,
        fresh: Fresh,
        encoder: TextEncoder,
        withdrawn: frozenset[str] = frozenset(),
        retracted: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self.model = model
        self.fresh = fresh
        self.encoder = encoder
        self.withdrawn = withdrawn
        self.retracted = retracted

    @property
    def threshold(self) -> float:
        """The threshold the model chose in training (the default before there is one)."""
        return self.model.answers_with if self.model is not None else DEFAULT_THRESHOLD

    def predict(self, text: str, threshold: float | None = None, vector: np.ndarray | None = None) -> Prediction:
        vector = self.encoder.encode([text])[0] if vector is None else vector
        return self.predict_many([text], vector[None, :], threshold)[0]

    def predict_many(
        self, texts: Sequence[str], vectors: np.ndarray | None = None, threshold: float | None = None
    ) -> list[Prediction]:
        """``threshold`` None: the model's own."""
        texts = list(texts)
        vectors = self.encoder.encode(texts) if vectors is None else vectors
        threshold = self.threshold if threshold is None else threshold
        # The model's guesses are thresholded below, once the fresh examples have had their say.
        found: list[Prediction | None] = [None] * len(texts)
        if self.model is not None:
            found = list(self.model.predict_many(texts, 0.0, vectors=vectors))
        return [
            self._one(text, vector, guess, threshold) for text, vector, guess in zip(texts, vectors, found, strict=True)
        ]

    def _one(self, text: str, vector: np.ndarray, guess: Prediction | None, threshold: float) -> Prediction:
        fresh = self.fresh
        key = normalise(text)
        if key in fresh.exact:
            output = fresh.exact[key]
            return Prediction(output, 1.0, output)
        best: Prediction | None = None
        if guess is not None and (guess.best_guess in self.withdrawn or (key, guess.best_guess) in self.retracted):
            guess = None  # not even a guess: an unconfident one would still name it (a review, a test report)
        if guess is not None:
            confidence = guess.confidence
            if (key, guess.best_guess) in fresh.forbidden:
                confidence = 0.0
            else:
                confidence *= 1.0 - fresh.weakening(guess.best_guess, vector)
            answered = guess.output is not None and confidence >= threshold  # output None: refused by the word rules
            best = Prediction(guess.best_guess if answered else None, round(confidence, 4), guess.best_guess)
        if len(fresh.outputs) and has_words(text):
            # Each fresh example's similarity, weakened by the fresh negatives of its answer; the
            # pairs a negative rules out for this very question do not count at all.
            similarity = fresh.vectors @ vector
            weakening = {output: fresh.weakening(output, vector) for output in set(fresh.outputs)}
            scores = [
                -1.0 if (key, output) in fresh.forbidden else float(similarity[row]) * (1.0 - weakening[output])
                for row, output in enumerate(fresh.outputs)
            ]
            row = int(np.argmax(scores))
            output, confidence = fresh.outputs[row], max(scores[row], 0.0)
            supported = float(similarity[row]) >= MEANING or bool(content_stems(text) & fresh.stems[output])
            matches = supported and confidence >= max(NEAR_MATCH, threshold)
            if matches and (best is None or best.output is None or confidence > best.confidence):
                return Prediction(output, round(confidence, 4), output)
            if best is None:
                best = Prediction(None, round(confidence, 4), output)
        if best is None:  # only emoji or marks, and no fresh example of that very text
            return Prediction(None, 0.0, next(iter(fresh.exact.values()), ""))
        return best
