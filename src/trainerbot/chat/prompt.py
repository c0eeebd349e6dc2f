"""The chat engine's prompt: persona, the conversation so far, taught examples, the new message.

Two choices keep a local model quick. The taught examples go in a system message just
before the message they were found for, and are kept with that message in the history,
so the prompt of the next turn starts with the whole prompt of this one and llama.cpp
reads only what is new. And when the history outgrows the budget, the oldest turns are
dropped down to two thirds of it at once, not one by one, so the start of the prompt
stays put (and its evaluation stays cached) for the next several turns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trainerbot.chat.engine import MESSAGE_OVERHEAD, ChatMessage
from trainerbot.learning.matching import normalise
from trainerbot.learning.retrieval import Retrieved
from trainerbot.types import Turn

EXAMPLE_CHARACTERS = 300  # of each side of an example shown to the engine
REFILL_SHARE = 2 / 3  # history kept, as a share of its budget, when old turns must go


def examples_note(examples: Sequence[Retrieved]) -> str | None:
    if not examples:
        return None
    lines = [
        "What this community taught you (when the message asks about one of these, answer with its facts, "
        "and never contradict them):"
    ]
    for example in examples:
        lines.append(f"Q: {example.input[:EXAMPLE_CHARACTERS]}\nA: {example.output[:EXAMPLE_CHARACTERS]}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Prompt:
    messages: list[ChatMessage]
    tokens: int  # as the engine counts them, template overhead included
    first_turn: int | None  # id of the oldest history turn kept, None when none is
    alone: list[ChatMessage] = field(default_factory=list)  # the same prompt without the history

    def earlier_replies(self) -> list[str]:
        """The bot's replies that the history shows, as the model could copy them: all but those that
        answered the very message asked now (giving the same answer to the same question is no copy)."""
        asked = normalise(self.messages[-1].content)
        replies, question = [], None
        for message in self.messages[:-1]:
            if message.role == "user":
                question = message.content
            elif message.role == "assistant" and (question is None or normalise(question) != asked):
                replies.append(message.content.strip())
        return replies


def _turn_messages(turn: Turn) -> list[ChatMessage]:
    if turn.role == "user" and turn.context:
        return [ChatMessage("system", turn.context), ChatMessage("user", turn.content)]
    return [ChatMessage(turn.role, turn.content)]


def build_prompt(
    *,
    persona: str,
    history: Sequence[Turn],
    note: str | None,
    message: str,
    budget: int,
    count: Callable[[str], int],
    keep_from: int | None = None,
) -> Prompt:
    """Fits the prompt in ``budget`` tokens; ``keep_from`` is where the last prompt's history began."""

    def cost(messages: Sequence[ChatMessage]) -> int:
        return sum(count(m.content) + MESSAGE_OVERHEAD for m in messages)

    head = [ChatMessage("system", persona)]
    tail = ([ChatMessage("system", note)] if note else []) + [ChatMessage("user", message)]
    fixed = cost(head) + cost(tail)
    if fixed > budget and note:  # a very long message: the examples give way first
        tail = tail[1:]
        fixed = cost(head) + cost(tail)
    if fixed > budget:  # then the message itself is cut to what fits
        room = max(budget - cost(head) - MESSAGE_OVERHEAD, 1)
        ratio = room / max(count(message), 1)
        tail = [ChatMessage("user", message[: int(len(message) * ratio * 0.9)])]
        fixed = cost(head) + cost(tail)

    room = budget - fixed
    costs = [cost(_turn_messages(turn)) for turn in history]
    start = len(history)
    if keep_from is not None:  # the last prompt's window, if it still fits
        kept = next((i for i, turn in enumerate(history) if turn.id >= keep_from), len(history))
        if sum(costs[kept:]) <= room:
            start = kept
    if start == len(history) or keep_from is None:
        total = sum(costs)
        if total <= room:
            start = 0
        else:
            start, used = len(history), 0
            while start > 0 and used + costs[start - 1] <= room * REFILL_SHARE:
                start -= 1
                used += costs[start]
    while start < len(history) and history[start].role != "user":  # begin with a question, not an answer
        start += 1
    kept_turns = history[start:]
    messages = head + [m for turn in kept_turns for m in _turn_messages(turn)] + tail
    return Prompt(messages, fixed + sum(costs[start:]), kept_turns[0].id if kept_turns else None, head + tail)
