"""The chat prompt: persona first, history trimmed to the budget in steps, examples beside their message."""

from __future__ import annotations

from trainerbot.chat.engine import MESSAGE_OVERHEAD
from trainerbot.chat.prompt import build_prompt, examples_note
from trainerbot.learning.retrieval import Retrieved
from trainerbot.types import Turn


def words(text: str) -> int:
    return len(text.split())


def conversation(turns: int, size: int = 20) -> list[Turn]:
    history = []
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        history.append(Turn(i + 1, role, " ".join([f"w{i}"] * size), 7, None if role == "user" else "chat"))
    return history


def build(history: list[Turn], budget: int, keep_from: int | None = None, note: str | None = None):
    return build_prompt(
        persona="Be kind.",
        history=history,
        note=note,
        message="hello there",
        budget=budget,
        count=words,
        keep_from=keep_from,
    )


def test_everything_fits_when_the_conversation_is_short() -> None:
    prompt = build(conversation(4), budget=1000)
    assert [m.role for m in prompt.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt.messages[0].content == "Be kind." and prompt.messages[-1].content == "hello there"
    assert prompt.first_turn == 1
    assert prompt.tokens == sum(words(m.content) + MESSAGE_OVERHEAD for m in prompt.messages)


def test_old_turns_go_in_steps_so_the_start_stays_put() -> None:
    history = conversation(40)  # 40 turns of 28 tokens each
    first = build(history, budget=400)
    assert first.tokens <= 400
    assert first.messages[1].role == "user"  # never starts with an answer
    kept = len(first.messages) - 2
    assert kept * 28 <= (400 - 2 * 10) * 2 / 3  # trimmed to two thirds, leaving room to grow
    # The next turns keep the same start while they fit, so the engine's cached prefix holds.
    longer = [*history, Turn(41, "user", "more " * 20, 7, None), Turn(42, "assistant", "ok", 7, "chat")]
    second = build(longer, budget=400, keep_from=first.first_turn)
    assert second.first_turn == first.first_turn and second.tokens <= 400
    # Until they no longer fit: then the start jumps forward again.
    much_longer = longer + [Turn(43 + i, "user", "x " * 28, 7, None) for i in range(10)]
    third = build(much_longer, budget=400, keep_from=first.first_turn)
    assert third.first_turn > first.first_turn and third.tokens <= 400


def test_examples_sit_just_before_the_message_and_stay_with_it_in_history() -> None:
    note = examples_note([Retrieved("what is the wifi password", "pancake42", 0.8)])
    assert note is not None and "Q: what is the wifi password\nA: pancake42" in note
    prompt = build(conversation(2), budget=1000, note=note)
    assert [m.role for m in prompt.messages[-2:]] == ["system", "user"]
    assert prompt.messages[-2].content == note
    earlier = Turn(1, "user", "asked before", 7, None, context=note)
    again = build([earlier, Turn(2, "assistant", "answered", 7, "chat")], budget=1000)
    assert [m.content for m in again.messages[1:3]] == [note, "asked before"]


def test_a_message_too_long_for_the_budget_is_cut_and_examples_give_way() -> None:
    long = " ".join(["word"] * 500)
    prompt = build_prompt(
        persona="Be kind.", history=conversation(6), note="Q: a\nA: b", message=long, budget=200, count=words
    )
    assert prompt.tokens <= 200
    assert [m.role for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[-1].content.startswith("word word")
    assert examples_note([]) is None
