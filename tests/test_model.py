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


# --- each model's own threshold, and the word rules (issue 12) ----------------------------------


def test_choose_threshold_keeps_the_right_answers_and_refuses_the_rest() -> None:
    from trainerbot.learning.model import KEEP, Calibration, choose_threshold

    known = np.array([0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45] * 10)
    right = np.ones(len(known), dtype=bool)
    chosen = choose_threshold(Calibration(known, right, np.array([0.3, 0.4])))
    assert chosen is not None
    kept = (known >= chosen).mean()
    assert kept >= KEEP and (known >= chosen + 0.05).mean() < KEEP  # the highest threshold that keeps enough
    assert choose_threshold(Calibration(known[:3], right[:3], np.zeros(0))) is None  # too few to say


def test_training_chooses_a_threshold_and_saves_it(encoder: MiniLMEncoder, tmp_path: Path) -> None:
    faq = [
        *FAQ,
        Example("how do I change my password", "Use the reset link on the login page"),
        Example("are you open on sunday", "We open at 9"),
        Example("how do I find the shop", "Main street 1"),
    ]
    model, report = train(faq, encoder)
    assert report.threshold_source == "chosen" and 0.45 <= report.threshold <= 0.9
    assert model.threshold == report.threshold and report.holdout_size >= 5
    model.save(tmp_path / "m.npz")
    loaded = IntentModel.load(tmp_path / "m.npz", encoder)
    assert loaded.threshold == report.threshold and loaded.stems == model.stems
    overridden, report = train(faq, encoder, threshold=0.95)
    assert (report.threshold, report.threshold_source) == (0.95, "setting")
    assert overridden.threshold is not None  # the model still records its own


def test_a_model_saved_before_thresholds_still_loads(encoder: MiniLMEncoder, tmp_path: Path) -> None:
    import json

    model, _ = train(FAQ, encoder, threshold=0.6)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:  # rewritten as format 1: no threshold, no content words
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta = {k: v for k, v in meta.items() if k not in ("threshold", "stems")} | {"format": 1}
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), **arrays)
    old = IntentModel.load(tmp_path / "old.npz", encoder)
    assert old.threshold is None and old.stems is None and old.answers_with == 0.6
    assert old.predict("when do you open?").output == "We open at 9"


def test_examples_without_words_answer_only_their_own_text(encoder: MiniLMEncoder) -> None:
    model, _ = train([*FAQ, Example("🍕", "pizza emoji question"), Example("?", "Ask away!")], encoder)
    assert model.predict("🍕").output == "pizza emoji question"
    assert model.predict("?").output == "Ask away!"
    for other in ("👍", "😀😀", "🍕🍕", "??", "!!!"):
        assert model.predict(other).output is None, other
    assert model.predict("when do you open").output == "We open at 9"
    alone, _ = train([Example("🍕", "pizza")], encoder)  # nothing with words at all
    assert alone.predict("🍕").output == "pizza" and alone.predict("pizza please").output is None


def test_no_content_word_in_common_needs_a_very_close_meaning(encoder: MiniLMEncoder) -> None:
    model, _ = train([Example("where are you", "12 Main Street."), *FAQ], encoder)
    assert model.predict("Hello! Who are you?").output is None
    assert model.predict("where are you?").output == "12 Main Street."
    assert model.predict("what time do you open").output == "We open at 9"  # "open" in common


def test_content_words_are_stemmed_and_filler_is_not_one() -> None:
    from trainerbot.learning.matching import content_stems, has_words

    assert content_stems("What are your opening hours?") == {"open", "hour"}
    assert content_stems("Hello! Who are you? thanks") == frozenset()
    assert content_stems("my 4 digit pin") == {"4", "digit", "pin"}
    assert not has_words("👍 ?!") and has_words("a")


def test_fresh_examples_answer_and_their_negatives_stop_the_old_answer(encoder: MiniLMEncoder) -> None:
    from trainerbot.learning.live import Fresh, LiveModel

    model, _ = train(FAQ, encoder)
    taught = [
        Example("when do you open", "We open at 10 now"),
        Example("when do you open", "We open at 9", positive=False),
        Example("do you sell gift cards", "Yes, at the counter."),
    ]
    live = LiveModel(model, Fresh.of(taught, encoder.encode([ex.input for ex in taught])), encoder)
    assert live.predict("When do you open?").output == "We open at 10 now"
    assert live.predict("what time do you open").output == "We open at 10 now"
    assert live.predict("can I buy a gift card").output == "Yes, at the counter."
    assert live.predict("where is the shop").output == "Main street 1"  # the model's answers stay
    assert live.predict("tell me a joke").output is None
    nothing_trained = LiveModel(None, Fresh.of(taught[2:], encoder.encode([taught[2].input])), encoder)
    assert nothing_trained.predict("do you sell gift cards?").output == "Yes, at the counter."
    assert nothing_trained.predict("👍").output is None
