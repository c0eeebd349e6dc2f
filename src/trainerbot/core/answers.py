"""What the bot was taught answers in a place: the server's own base first, then the bot-wide base.

In a direct message (or the console without a server) only the bot-wide base answers. A server's
admins may turn the bot-wide base off for their server; then only the server's own base does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainerbot.learning.jobs import ServingModels
from trainerbot.learning.model import DEFAULT_THRESHOLD, Prediction
from trainerbot.storage.knowledge import Knowledge
from trainerbot.types import GLOBAL_BASE


@dataclass(frozen=True)
class Found:
    """A prediction, and the base whose model made it."""

    prediction: Prediction
    base: int


class TaughtAnswers:
    def __init__(self, knowledge: Knowledge, models: ServingModels, threshold: float | None = None) -> None:
        self.knowledge = knowledge
        self.models = models
        self.threshold = threshold  # the owner's override (TRAINERBOT_CONFIDENCE_THRESHOLD); None: each model's own

    def threshold_of(self, base: int) -> tuple[float, str]:
        """The confidence threshold a base answers with, and where it comes from."""
        if self.threshold is not None:
            return self.threshold, "set by the bot's owner"
        live = self.models.live(base)[1]
        if live is None or live.model is None:
            return DEFAULT_THRESHOLD, "the default until a training chooses one"
        if live.model.threshold is None:
            return DEFAULT_THRESHOLD, "the default: too few examples to choose one"
        return live.model.threshold, "chosen by the model in training"

    def bases(self, guild_id: int | None) -> tuple[int, ...]:
        """The bases that answer in a place, in the order they are asked."""
        if guild_id is None:
            return (GLOBAL_BASE,)
        if self.knowledge.settings(guild_id).use_global:
            return (guild_id, GLOBAL_BASE)
        return (guild_id,)

    def answer(self, bases: tuple[int, ...], text: str, vector: np.ndarray) -> Found | None:
        """The first confident answer along ``bases``; else the most confident guess; None with nothing taught."""
        best: Found | None = None
        for base in bases:
            prediction = self.models.predict(base, text, self.threshold, vector)
            if prediction is None:
                continue
            if prediction.output is not None:
                return Found(prediction, base)
            if best is None or prediction.confidence > best.prediction.confidence:
                best = Found(prediction, base)
        return best

    def answer_many(self, bases: tuple[int, ...], texts: list[str]) -> tuple[list[Prediction], int | None] | None:
        """Every text answered as ``answer`` would; with the version of the first base that was taught anything

        (None when that base has no trained model yet and answers from its fresh examples alone)."""
        chosen: list[Prediction | None] = [None] * len(texts)
        version: int | None = None
        vectors: np.ndarray | None = None  # encoded once, for every base asked
        for base in bases:
            pending = [i for i, p in enumerate(chosen) if p is None or p.output is None]
            if not pending:
                break
            base_version, live = self.models.live(base)
            if live is None:
                continue
            if vectors is None:
                vectors = self.models.encoder.encode(texts)
                version = base_version
            found = live.predict_many([texts[i] for i in pending], vectors[pending], self.threshold)
            for i, prediction in zip(pending, found, strict=True):
                current = chosen[i]
                if current is None or prediction.output is not None or prediction.confidence > current.confidence:
                    chosen[i] = prediction
        if vectors is None:  # nothing was taught to any base here
            return None
        return [p for p in chosen if p is not None], version
