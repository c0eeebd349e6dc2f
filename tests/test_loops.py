"""Replies that go round in circles are stopped as the loop starts, and end cleanly (issue 14, item 3).

SmolLM2-135M answered "hey, how's it going?" with forty seedling emoji and tips with a loop of
lines. The loop guard (trainerbot/chat/loops.py) holds back what repeats earlier text, and stops
the model once the repeat is a loop; nothing of the loop is ever shown.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.doubles import ScriptedEngine
from tests.test_chat_e2e import answered, chat_bot, scripted
from trainerbot.chat.engine import CUT_SHORT, ChatMessage
from trainerbot.chat.loops import stop_loops

PROSE = (
    "The capital of France is Paris. Paris is known for the Eiffel Tower and the Louvre, and many people "
    "visit Paris every year. The city is also known for its cafés, its bakeries and the river Seine."
)
TABLE = "| name | score |\n|------|-------|\n| Ana  | 10    |\n| Ben  | 10    |\n| Cy   | 9     |\n" + "-" * 30
CODE = "```python\nfor row in rows:\n    print(row)\nfor row in rows:\n    print(row)\n```\nThat prints each row twice."
LOOPS = [
    # (what the model wrote, what the reply must be)
    ("Hey! I'm doing great " + "🌱" * 40, "Hey! I'm doing great 🌱"),
    (
        "Here are my tips:\n" + "".join(f"{n}. Be kind to others.\n" for n in range(1, 30)),
        "Here are my tips:\n1. Be kind to others.",
    ),
    ("Sure! A poem.\n" + "Roses are red, the sky is blue,\n" * 6, "Sure! A poem.\nRoses are red, the sky is blue,"),
    ("I love you" + " love you" * 30, "I love you"),
    ("👉 " * 25, "👉"),
    (
        "Thanks for asking. " + "Let me know if there is anything else I can help you with today! " * 5,
        "Thanks for asking. Let me know if there is anything else I can help you with today!",
    ),
]


def pieces(text: str, how: str) -> Iterator[str]:
    """The text as a model streams it: one character, three characters, or a word at a time."""
    if how == "words":
        yield from re.findall(r"\s*\S+|\s+", text)
    else:
        size = 1 if how == "chars" else 3
        yield from (text[i : i + size] for i in range(0, len(text), size))


@pytest.mark.parametrize("how", ["chars", "threes", "words"])
@pytest.mark.parametrize(("written", "kept"), LOOPS)
def test_a_loop_is_cut_where_it_began_and_none_of_it_is_shown(written: str, kept: str, how: str) -> None:
    shown = ""
    for piece in stop_loops(pieces(written, how)):
        shown += piece
        assert shown.rstrip().startswith(kept.rstrip()[: len(shown.rstrip())]), shown  # never more than the kept text
    assert shown.strip() == kept.strip()


NUMBERED = "Teams: " + ", ".join(f"Player{n}" for n in range(1, 30)) + "."


@pytest.mark.parametrize(
    "text", [PROSE, TABLE, CODE, NUMBERED, "hahaha that's funny", "1000000 is a million. 2000000 is two."]
)
def test_text_that_repeats_a_little_is_shown_whole(text: str) -> None:
    for how in ("chars", "threes", "words"):
        assert "".join(stop_loops(pieces(text, how))) == text


def test_a_loop_inside_a_code_block_leaves_the_block_closed() -> None:
    written = "Here:\n```\n" + "print('hi there, everyone')\n" * 12
    reply = "".join(stop_loops(pieces(written, "threes")))
    assert reply == "Here:\n```\nprint('hi there, everyone')\n```", reply


def test_the_length_limit_passes_through() -> None:
    out = list(stop_loops(iter(["Hello ", "there", CUT_SHORT])))
    assert "".join(out[:-1]) == "Hello there" and out[-1] is CUT_SHORT


class EndlessEngine(ScriptedEngine):
    """A test double of a model stuck in a loop: it writes one emoji forever, until it is stopped.
    It notes whether its stream was closed (the real engine frees the model for the next reply then)."""

    def __init__(self) -> None:
        super().__init__("")
        self.closed = threading.Event()

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        self.prompts.append(list(messages))
        try:
            yield "Hey! I'm doing great, thanks for asking "
            while True:
                yield "🌱"
        finally:
            self.closed.set()


async def test_a_looping_model_is_stopped_and_discord_gets_the_clean_reply(tmp_path: Path) -> None:
    engine = EndlessEngine()
    async with chat_bot(tmp_path, make_engine=scripted(engine), edit_interval=0.01) as (server, services):
        sent = await server.send_message("hey, how's it going?")
        [said] = await answered(services, server, sent)
        assert said["content"] == "Hey! I'm doing great, thanks for asking 🌱", said["content"]
        assert engine.closed.is_set()  # the model was stopped, not left writing
        channel = int(sent["channel_id"])
        assert services.store.conversations.turns(channel)[-1].content == said["content"]  # stored as shown
        every_version = [m["content"] for m in server.bot_messages()] + [
            r.json.get("content", "") for r in server.requests if r.method == "PATCH" and isinstance(r.json, dict)
        ]
        assert all(text.count("🌱") <= 1 for text in every_version), every_version  # not even an edit showed the loop


async def test_a_reply_held_back_while_it_repeats_is_not_taken_for_a_stalled_engine(tmp_path: Path) -> None:
    """The stall timeout counts the engine's pieces, also those the loop guard holds back: here the
    guard holds "I like tea. I like t" for about 2 s, twice the timeout, before it diverges."""
    text = "I like tea. I like tea. I like coffee too."
    slow = ScriptedEngine(text, piece=1, delay=0.1)
    async with chat_bot(tmp_path, make_engine=scripted(slow), chat_timeout_seconds=1) as (server, services):
        sent = await server.send_message("what do you like to drink?")
        [said] = await answered(services, server, sent)
        assert said["content"] == text


async def test_a_long_reply_written_slowly_but_steadily_is_never_cut_off_as_too_slow(tmp_path: Path) -> None:
    """A 400-token reply at 8 tokens a second takes 50 s: the timeout is for silence, not for the whole
    reply. Scaled down: 60 pieces at 0.05 s each (3 s) under a 1 s timeout."""
    text = " ".join(f"word{n}" for n in range(60))
    steady = ScriptedEngine(text, piece=len("word00 "), delay=0.05)
    async with chat_bot(tmp_path, make_engine=scripted(steady), chat_timeout_seconds=1) as (server, services):
        sent = await server.send_message("tell me a long story")
        [said] = await answered(services, server, sent)
        assert said["content"] == text
