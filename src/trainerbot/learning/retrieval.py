"""The taught examples closest to a message, given to the chat engine so teaching steers it too."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trainerbot.learning.model import TextEncoder
from trainerbot.storage.knowledge import Knowledge

log = logging.getLogger(__name__)

# Examples taught since the last training are encoded here, this many at a time, so a large
# new dataset never holds up a reply; the next training job stores the rest.
ENCODE_PER_REFRESH = 64


@dataclass(frozen=True)
class Retrieved:
    input: str
    output: str
    similarity: float


class ExampleIndex:
    """Embeddings of the positive examples one knowledge base uses, rebuilt whenever they change.

    It asks the database for a cheap fingerprint before each search, so an example taught
    a moment ago is found at once, before any training job has run.
    """

    def __init__(self, knowledge: Knowledge, base: int, encoder: TextEncoder, min_similarity: float = 0.25) -> None:
        self._knowledge = knowledge
        self.base = base
        self._encoder = encoder
        self.min_similarity = min_similarity
        self._lock = threading.Lock()
        self._state: tuple[int, int, int | None, int] | None = None
        self._incomplete = False
        self._vectors = np.zeros((0, encoder.dimension), dtype=np.float32)
        self._pairs: list[tuple[str, str]] = []

    def refresh(self) -> None:
        with self._lock:
            state = self._knowledge.retrievable_state(self.base)
            if state == self._state and not self._incomplete:
                return
            rows = self._knowledge.retrievable_examples(self.base)
            missing = [row for row in rows if row.vector is None]
            encoded: dict[int, bytes] = {}
            if missing:
                batch = missing[:ENCODE_PER_REFRESH]
                vectors = self._encoder.encode([row.input for row in batch]).astype(np.float32)
                encoded = {row.id: vector.tobytes() for row, vector in zip(batch, vectors, strict=True)}
                self._knowledge.save_example_vectors(encoded.items())
            usable = [(row, row.vector or encoded.get(row.id)) for row in rows]
            usable = [(row, blob) for row, blob in usable if blob is not None]
            self._vectors = (
                np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in usable])
                if usable
                else np.zeros((0, self._encoder.dimension), dtype=np.float32)
            )
            self._pairs = [(row.input, row.output) for row, _ in usable]
            self._incomplete = len(usable) < len(rows)
            self._state = state
            log.debug(
                "example index of base %d: %d examples (%d waiting to be encoded)",
                self.base,
                len(usable),
                len(rows) - len(usable),
            )

    def nearest(self, vector: np.ndarray, k: int = 3) -> list[Retrieved]:
        """The ``k`` most similar examples with different answers, closest first."""
        if k <= 0:
            return []
        self.refresh()
        with self._lock:
            if not self._pairs:
                return []
            similarity = self._vectors @ vector.astype(np.float32)
            found: list[Retrieved] = []
            answers: set[str] = set()
            for row in np.argsort(-similarity):
                if similarity[row] < self.min_similarity or len(found) == k:
                    break
                question, answer = self._pairs[row]
                if answer not in answers:
                    answers.add(answer)
                    found.append(Retrieved(question, answer, round(float(similarity[row]), 4)))
            return found


class ExampleIndexes:
    """One ``ExampleIndex`` per knowledge base, made when first searched; at most ``capacity`` kept."""

    def __init__(self, knowledge: Knowledge, encoder: TextEncoder, capacity: int = 256) -> None:
        self._knowledge = knowledge
        self._encoder = encoder
        self.capacity = capacity
        self._lock = threading.Lock()
        self._indexes: OrderedDict[int, ExampleIndex] = OrderedDict()

    def index(self, base: int) -> ExampleIndex:
        with self._lock:
            index = self._indexes.get(base)
            if index is None:
                index = self._indexes[base] = ExampleIndex(self._knowledge, base, self._encoder)
            self._indexes.move_to_end(base)
            while len(self._indexes) > self.capacity:
                self._indexes.popitem(last=False)
            return index

    def nearest(self, bases: Sequence[int], vector: np.ndarray, k: int = 3) -> list[Retrieved]:
        """The ``k`` closest examples with different answers among these bases, closest first.

        Only the bases named are searched: a server's prompt never sees another server's examples.
        """
        found = sorted(
            (item for base in bases for item in self.index(base).nearest(vector, k)),
            key=lambda item: -item.similarity,
        )
        chosen: list[Retrieved] = []
        for item in found:
            if len(chosen) < k and all(item.output != other.output for other in chosen):
                chosen.append(item)
        return chosen
