"""The intent model with the real MiniLM encoder: answers, "unknown", negatives, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.model import IntentModel, train
from trainerbot.types import Example

FAQ = [
    Example("how do I reset my password", "Use the reset link on the login page"),
    Example("I forgot my password", "Use the reset link on the login page"),
    Example("when do you open", "We open at 9"),
    Example("what are your opening hours", "We open at 9"),
    Example("where is the shop", "Main street 1"),
    Example("what is your address", "Main street 1"),
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_embeddings_are_unit_length_and_meaningful(encoder: MiniLMEncoder) -> None:
    vectors = encoder.encode(["how do I reset my password", "I forgot my password", "the weather is nice"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]
    assert np.allclose(encoder.encode(["I forgot my password"], workers=2)[0], vectors[1], atol=1e-5)


def test_paraphrases_get_the_taught_answer_and_strangers_get_unknown(encoder: MiniLMEncoder) -> None:
    model, report = train(FAQ, encoder, threshold=0.6)
    assert (report.outputs, report.positive, report.negative) == (3, 6, 0)
    assert model.predict("how can I reset my password?", 0.6).output == "Use the reset link on the login page"
    assert model.predict("what time do you open", 0.6).output == "We open at 9"
    unknown = model.predict("who won the football match yesterday", 0.6)
    assert unknown.output is None and unknown.confidence < 0.6


def test_a_small_faq_is_fitted_loosely_enough_to_answer_rephrasings(encoder: MiniLMEncoder) -> None:
    # Two examples an output: the default C is 100, not Banking77's 10 (bench/few_examples.py).
    tight, _ = train(FAQ, encoder, threshold=0.6, regularisation=10.0)
    default, _ = train(FAQ, encoder, threshold=0.6)
    for question in ("what time does the shop open", "where are you located", "are you open in the morning"):
        assert default.predict(question, 0.6).confidence > tight.predict(question, 0.6).confidence + 0.02
    assert default.predict("are you open in the morning", 0.6).output == "We open at 9"
    assert default.predict("tell me a joke", 0.6).output is None


def test_negative_examples_remove_an_answer(encoder: MiniLMEncoder) -> None:
    negative = Example("where is the shop", "Main street 1", positive=False)
    model, _ = train([*FAQ[:4], Example("where is the shop", "Main street 1"), negative], encoder, threshold=0.6)
    assert model.predict("where is the shop", 0.6).output is None
    assert model.predict("when do you open", 0.6).output == "We open at 9"


def test_a_single_output_still_says_unknown(encoder: MiniLMEncoder) -> None:
    model, _ = train(FAQ[:1], encoder, threshold=0.6)
    assert model.predict("how do i reset my password?", 0.6).output == FAQ[0].output
    assert model.predict("tell me a joke", 0.6).output is None


def test_held_out_check_on_a_larger_set(encoder: MiniLMEncoder) -> None:
    examples = [Example(f"{q} number {i}", a) for i in range(10) for q, a in [(e.input, e.output) for e in FAQ]]
    _, report = train(examples, encoder, threshold=0.6)
    assert report.holdout_size >= 5 and report.holdout_accuracy is not None and report.holdout_accuracy > 0.8


def test_save_and_load_give_the_same_answers(encoder: MiniLMEncoder, tmp_path: Path) -> None:
    model, _ = train(FAQ, encoder, threshold=0.6)
    model.save(tmp_path / "m.npz")
    loaded = IntentModel.load(tmp_path / "m.npz", encoder)
    questions = ["how can I reset my password?", "what is your address?", "sing a song"]
    assert model.predict_many(questions, 0.6) == loaded.predict_many(questions, 0.6)
    assert not list(tmp_path.glob("*.tmp*"))


def test_nothing_positive_is_refused(encoder: MiniLMEncoder) -> None:
    from trainerbot.errors import InvalidInput

    with pytest.raises(InvalidInput):
        train([Example("a", "b", positive=False)], encoder, threshold=0.6)


def test_examples_without_a_two_letter_word_still_train(encoder: MiniLMEncoder, tmp_path: Path) -> None:
    # Word features count words of two letters or more; these have none, which once stopped training.
    examples = [Example("a", "the letter a"), Example("b", "the letter b"), Example("?", "a question mark")]
    model, report = train(examples, encoder, threshold=0.0)
    assert report.outputs == 3 and model.token_pattern is not None
    model.save(tmp_path / "m.npz")
    loaded = IntentModel.load(tmp_path / "m.npz", encoder)
    assert [loaded.predict(t, 0.0).output for t in ("a", "b", "?")] == [
        "the letter a",
        "the letter b",
        "a question mark",
    ]
    assert train(FAQ, encoder, threshold=0.6)[0].token_pattern is None  # ordinary examples keep ordinary words
