"""Banking77 benchmark of the intent model: accuracy, training time, prediction latency, "unknown".

    .venv/bin/python bench/banking77.py [--data tests/data/banking77] [--runs 3] [--splits 5] [--threshold T]

Prints the figures quoted in docs/benchmarks.md. Training runs in this process the
way a training job runs it (two encoder threads), from a cold start: nothing is
reused between the timed runs. Each model answers at the threshold it chose from its own
training examples (``--threshold`` overrides it, as TRAINERBOT_CONFIDENCE_THRESHOLD does).
The "unknown" part caches embeddings across its splits, since it measures answers, not time.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.examples import Example
from trainerbot.learning.model import IntentModel, train

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "banking77"


def load(path: Path) -> list[Example]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [Example(row["text"], row["category"]) for row in csv.DictReader(handle)]


class MemoEncoder:
    """The encoder with an in-memory cache, so the held-out-intent splits skip re-encoding."""

    def __init__(self, encoder: MiniLMEncoder) -> None:
        self.encoder = encoder
        self.dimension = encoder.dimension
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, sentences: list[str], workers: int = 1, progress: object = None) -> np.ndarray:
        missing = [s for s in dict.fromkeys(sentences) if s not in self.cache]
        if missing:
            for sentence, vector in zip(missing, self.encoder.encode(missing, workers=workers), strict=True):
                self.cache[sentence] = vector
        return np.stack([self.cache[s] for s in sentences])


def timed_training(training: list[Example], runs: int, threshold: float | None) -> IntentModel:
    durations = []
    for run in range(runs):
        encoder = MiniLMEncoder()  # a fresh encoder each run: nothing cached
        started = time.perf_counter()
        model, report = train(training, encoder, threshold=threshold)
        durations.append(time.perf_counter() - started)
        print(
            f"run {run + 1}: trained in {durations[-1]:.1f} s; threshold {report.threshold:.3f}, "
            f"held-out accuracy at it {report.holdout_accuracy:.4f} ({report.holdout_size} questions), "
            f"left-out answers' questions unknown {report.unknown_share:.4f} ({report.unknown_size})"
        )
    print(
        f"training time: median {statistics.median(durations):.1f} s of {runs} runs "
        f"({', '.join(f'{d:.1f}' for d in durations)})"
    )
    return model


def accuracy_and_latency(model: IntentModel, testing: list[Example], threshold: float | None) -> None:
    texts = [ex.input for ex in testing]
    expected = [ex.output for ex in testing]
    with threadpool_limits(1):  # as in the bot process
        predictions = model.predict_many(texts, threshold)
        latencies = []
        for text in texts[:500]:
            started = time.perf_counter()
            model.predict(text, threshold)
            latencies.append((time.perf_counter() - started) * 1000)
    top1 = np.mean([p.best_guess == e for p, e in zip(predictions, expected, strict=True)])
    answered = np.mean([p.output == e for p, e in zip(predictions, expected, strict=True)])
    print(f"accuracy (top-1 on test.csv, {len(testing)} queries): {top1:.4f}")
    used = model.answers_with if threshold is None else threshold
    print(f"answered correctly at the threshold {used:.3f}: {answered:.4f}")
    print(
        f"prediction: median {statistics.median(latencies):.1f} ms, p90 {np.percentile(latencies, 90):.1f} ms "
        f"over {len(latencies)} single queries"
    )


def unknown_answers(
    training: list[Example], testing: list[Example], held_out: int, splits: int, threshold: float | None
) -> None:
    memo = MemoEncoder(MiniLMEncoder())
    intents = sorted({ex.output for ex in training})
    texts = [ex.input for ex in testing]
    expected = [ex.output for ex in testing]
    recalls, in_scope = [], []
    for split in range(splits):
        held = set(random.Random(split).sample(intents, held_out))
        model, report = train([ex for ex in training if ex.output not in held], memo, threshold=threshold)
        guesses = model.predict_many(texts, threshold)
        outside = np.array([e in held for e in expected])
        unknown = np.array([g.output is None for g in guesses])
        correct = np.array([g.output == e for g, e in zip(guesses, expected, strict=True)])
        recalls.append(float(unknown[outside].mean()))
        in_scope.append(float(correct[~outside].mean()))
        print(
            f"split {split}: without {', '.join(sorted(held))}: threshold {report.threshold:.3f}, "
            f"unknown recall {recalls[-1]:.3f}, in-scope accuracy {in_scope[-1]:.3f}"
        )
    print(
        f"unknown recall: mean {np.mean(recalls):.3f} (min {min(recalls):.3f}); "
        f"in-scope accuracy: mean {np.mean(in_scope):.3f} (min {min(in_scope):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=3, help="cold training runs (the median is reported)")
    parser.add_argument("--held-out", type=int, default=5, help="intents left out in the unknown test")
    parser.add_argument("--splits", type=int, default=5, help="random choices of held-out intents")
    parser.add_argument("--threshold", type=float, default=None, help="an override; default: each model's own")
    args = parser.parse_args()
    threshold = args.threshold
    training, testing = load(args.data / "train.csv"), load(args.data / "test.csv")
    model = timed_training(training, args.runs, threshold)
    accuracy_and_latency(model, testing, threshold)
    unknown_answers(training, testing, args.held_out, args.splits, threshold)


if __name__ == "__main__":
    main()
