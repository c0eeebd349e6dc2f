"""How the model does when taught a small FAQ, as a server owner would teach it.

    .venv/bin/python bench/few_examples.py [--data tests/data/banking77] [--seeds 5] [--threshold T]
                                           [--regularisation C]

Small sets are drawn from Banking77's train.csv (a few intents, a few queries each)
and asked every test.csv query of those intents, 300 test.csv queries of other
banking intents (close to what was taught) and ten off-topic questions. Printed per
size, as means over the seeds: the threshold each model chose, top-1 accuracy, the
share answered right at that threshold, and the shares of the two kinds of untaught
questions answered "unknown". ``--threshold`` overrides the models' own, as the setting
does; ``--regularisation`` fixes the regression's C instead of the default rule.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from banking77 import DEFAULT_DATA, MemoEncoder, load
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.examples import Example
from trainerbot.learning.model import train

SIZES = ((3, 1), (5, 2), (10, 3), (20, 5), (30, 10), (40, 20))  # (outputs, examples of each)
OFF_TOPIC = [
    "what's the weather like today",
    "tell me a joke",
    "who won the game last night",
    "how do I bake bread",
    "what is the capital of france",
    "recommend a good movie",
    "how old are you",
    "what time is it in tokyo",
    "can you sing a song",
    "what's your favourite colour",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--regularisation", type=float, default=None)
    parser.add_argument("--threshold", type=float, default=None, help="an override; default: each model's own")
    args = parser.parse_args()
    threshold = args.threshold
    training, testing = load(args.data / "train.csv"), load(args.data / "test.csv")
    intents = sorted({ex.output for ex in training})
    memo = MemoEncoder(MiniLMEncoder())
    print(f"threshold {threshold or 'chosen by each model'}, C {args.regularisation or 'by the default rule'}")
    print("taught            threshold  top-1  answered right  other banking unknown  off-topic unknown")
    for outputs, each in SIZES:
        rows = []
        for seed in range(args.seeds):
            rng = random.Random(seed)
            chosen = rng.sample(intents, outputs)
            taught: list[Example] = []
            for intent in chosen:
                taught += rng.sample([ex for ex in training if ex.output == intent], each)
            model, report = train(taught, memo, threshold=threshold, regularisation=args.regularisation)
            asked = [ex for ex in testing if ex.output in chosen]
            others = rng.sample([ex.input for ex in testing if ex.output not in chosen], 300)
            answers = model.predict_many([ex.input for ex in asked], threshold)
            rows.append(
                (
                    report.threshold,
                    np.mean([a.best_guess == ex.output for a, ex in zip(answers, asked, strict=True)]),
                    np.mean([a.output == ex.output for a, ex in zip(answers, asked, strict=True)]),
                    np.mean([a.output is None for a in model.predict_many(others, threshold)]),
                    np.mean([a.output is None for a in model.predict_many(OFF_TOPIC, threshold)]),
                )
            )
        used, top1, right, near, far = np.mean(rows, axis=0)
        print(f"{outputs:>2} x {each:>2} examples  {used:9.3f}  {top1:5.2f}  {right:14.2f}  {near:21.2f}  {far:17.2f}")


if __name__ == "__main__":
    main()
