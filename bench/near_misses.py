"""Near-misses: messages that look like a taught FAQ's questions to an encoder but are not.

    .venv/bin/python bench/near_misses.py [--threshold T] [--show]

Trains the model on the small community FAQ of ``bench/data/near_misses.json`` (ten answers,
three questions each) as a training job does, so it chooses its own threshold, then asks:

- rephrasings of the FAQ's questions, which should get their answer;
- near-misses, which should be "unknown": greetings and small talk, questions sharing only
  function words with a taught one ("where are you going" / "where are you"), emoji and
  punctuation, very long or repeated-character messages;
- close topics the FAQ does not answer ("what games do you play" beside game night), reported
  apart: they share content words on purpose, and only the threshold keeps them out.

It then does the same with the FAQ taught one question at a time and no training at all, as the
serving layer answers right after `!train` (``learning/live.py``). ``--show`` prints every
answered near-miss and every missed rephrasing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from banking77 import MemoEncoder
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.live import Fresh, LiveModel
from trainerbot.learning.model import Prediction, train
from trainerbot.types import Example

DATA = Path(__file__).resolve().parent / "data" / "near_misses.json"
APART = "close topics the FAQ does not answer"


def report(name: str, ask, faq: dict, args: argparse.Namespace) -> None:
    rephrasings = [(q, answer) for answer, questions in faq["rephrasings"].items() for q in questions]
    answers = ask([q for q, _ in rephrasings])
    right = [a.output == expected for a, (_, expected) in zip(answers, rephrasings, strict=True)]
    print(f"\n{name}")
    print(f"  rephrasings answered right: {sum(right)}/{len(right)} = {sum(right) / len(right):.1%}")
    if args.show:
        for ok, a, (q, _) in zip(right, answers, rephrasings, strict=True):
            if not ok:
                print(f"    missed: {q!r} -> {a.output!r} ({a.confidence:.2f})")
    counted = total = 0
    for kind, messages in faq["near_misses"].items():
        found: list[Prediction] = ask(messages)
        unknown = sum(a.output is None for a in found)
        if kind != APART:
            counted, total = counted + unknown, total + len(messages)
        print(f"  {kind}: {unknown}/{len(messages)} unknown")
        if args.show:
            for message, a in zip(messages, found, strict=True):
                if a.output is not None:
                    print(f"    answered: {message[:60]!r} -> {a.output[:40]!r} ({a.confidence:.2f})")
    print(f"  near-misses unknown (all kinds but the close topics): {counted}/{total} = {counted / total:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=None, help="an override, as the setting is")
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    faq = json.loads(DATA.read_text(encoding="utf-8"))
    taught = [Example(q, answer) for answer, questions in faq["faq"].items() for q in questions]
    encoder = MemoEncoder(MiniLMEncoder())

    model, result = train(taught, encoder, threshold=args.threshold)
    print(f"trained: {result.outputs} answers from {result.examples} examples; threshold {result.threshold:.3f}")
    report("the trained model", lambda texts: model.predict_many(texts, args.threshold), faq, args)

    fresh = Fresh.of(taught, encoder.encode([ex.input for ex in taught]))
    live = LiveModel(None, fresh, encoder)
    report(
        "taught just now, no training yet (the serving layer's nearest examples)",
        lambda texts: live.predict_many(texts, encoder.encode(texts), args.threshold),
        faq,
        args,
    )


if __name__ == "__main__":
    main()
