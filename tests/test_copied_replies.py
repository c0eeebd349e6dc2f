"""A reply that repeats the previous one word for word (issue 14): found, explained, and kept away.

SmolLM2-135M, given a long message after a few turns, answers with its previous reply verbatim.
It does so on a fresh read of the same prompt too, at temperature 0 (see ``Conversation.write``):
the model copies; no conversation state is reused. So the conversation layer holds back a reply
while it repeats an earlier one, and writes it again without the history once it has repeated
``COPIED`` characters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.doubles import ScriptedEngine
from tests.loopback_discord import FakeDiscord
from tests.test_chat_e2e import answered, chat_bot, scripted
from trainerbot.app import Services
from trainerbot.chat.engine import ChatMessage
from trainerbot.core.conversation import COPIED

# About 3,000 characters of varied prose, as a "Please summarise this" would bring.
ARTICLE = (
    "The town council met on Tuesday evening to decide the future of the old library on Mill Street. "
    "The building, opened in 1911, has a leaking roof, no lift and wiring that fails inspection. "
    "Residents filled the hall: parents asked for a children's corner and longer Saturday hours, "
    "students wanted quiet rooms and more power sockets, and older readers asked that the large-print "
    "shelves stay on the ground floor. The treasurer said the repair alone would cost four million, "
    "twice what a new branch beside the station would, and that grants cover only half of either. "
    "A local architect offered a third way: keep the facade, rebuild behind it in timber, and share the "
    "ground floor with a café whose rent would pay the heating. Several speakers worried that a café "
    "would make the reading room noisy; others said it would bring in people who never visit now. "
    "The youth club asked for a maker space with printers and sewing machines, open after school. "
    "The historical society reminded the council that the reading room's ceiling is listed and may "
    "not be altered. After two hours the council voted seven to four to commission a detailed study "
    "of the architect's plan, to hold a public exhibition of the designs in March, and to keep the "
    "library open in the meantime, with the upper floor closed for safety. The mayor promised a final "
    "decision before the summer, and thanked the residents for a long and civil evening. "
) * 2


class CopyingEngine(ScriptedEngine):
    """A test double that behaves as SmolLM2 was seen to: with a reply in its prompt's history it
    writes that reply again; without history it answers the message. The real model does this only
    for some prompts, so the mechanism is tested here deterministically and the model below."""

    def __init__(self) -> None:
        super().__init__("", piece=7)

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        earlier = [m.content for m in messages if m.role == "assistant"]
        self.text = earlier[-1] if earlier else f"A fresh answer to: {messages[-1].content[:30]}"
        return super().stream(messages, max_tokens=max_tokens, cancel=cancel)


async def test_a_reply_that_repeats_the_previous_one_is_written_again_without_the_history(tmp_path: Path) -> None:
    engine = CopyingEngine()
    async with chat_bot(tmp_path, make_engine=scripted(engine), edit_interval=0.01) as (server, services):
        first = await server.send_message("what's the plan for the library?")
        [said] = await answered(services, server, first)
        assert said["content"] == "A fresh answer to: what's the plan for the librar", said["content"]
        second = await server.send_message(f"Please summarise this: {ARTICLE}")
        [again] = await answered(services, server, second)
        assert again["content"] == "A fresh answer to: Please summarise this: The tow", again["content"]
        assert [m.role for m in engine.prompts[-1]] == ["system", "user"]  # written again without the history
        assert len(engine.prompts) == 3  # the first reply, the copy dropped, the second reply
        shown = [m for m in server.bot_messages() if said["content"] in m["content"]]
        assert shown == [said], shown  # the copy never reached Discord, not even for an edit


async def ask_each(
    services: Services, server: FakeDiscord, texts: list[str], channel: int | None = None
) -> list[tuple[str, str]]:
    """Each message and the reply it got, asked one after the other."""
    replies = []
    for text in texts:
        sent = await server.send_message(text, channel_id=channel)
        replies.append((text, "".join(m["content"] for m in await answered(services, server, sent, channel))))
    return replies


def copies(turns: list[tuple[str, str]]) -> list[tuple[int, str]]:
    """The replies that begin as an earlier reply of the same conversation, for COPIED characters.

    A reply that begins with its own message's words (a small model echoing the text it was asked
    to summarise) is no copy of an earlier reply, even when an earlier one echoed the same text.
    """
    found = []
    for index, (asked, reply) in enumerate(turns):
        start = reply.strip()[:COPIED]
        if len(start) < COPIED or start in asked:
            continue
        if any(earlier.strip().startswith(start) for _, earlier in turns[:index]):
            found.append((index, reply))
    return found


async def test_the_sequence_that_got_the_previous_reply_and_others_that_move_the_history(tmp_path: Path) -> None:
    """The real SmolLM2 through the loopback Discord: five short turns, then a long message to summarise
    (where the copy was seen, three times of three), many turns that move the history window, and two
    channels taking turns; no reply starts as an earlier reply of its conversation."""
    # At temperature 0, so that it is the same each run: without the guard SmolLM2 copies in turns 2 to 4.
    short = ["tell me a joke", "cool, and what time is it?", "who made you?", "what's your name?", "what can you do?"]
    async with chat_bot(tmp_path, chat_temperature=0.0, chat_max_reply_tokens=120) as (server, services):
        issue = await ask_each(services, server, [*short, f"Please summarise this: {ARTICLE[:2990]}"])
        assert copies(issue) == [], issue
        many = [f"tell me one fact about the number {n}" for n in range(1, 9)] + [f"summarise: {ARTICLE[:1500]}"]
        issue += await ask_each(services, server, many)
        assert copies(issue) == [], issue  # the window moves: 15 turns
        other = server.channel_named("bot-commands")  # two channels taking turns, each its own conversation
        here, there = [], []
        for index, text in enumerate([f"what rhymes with {word}?" for word in ("cat", "sun", "tree", "day")]):
            (there if index % 2 else here).extend(
                await ask_each(
                    services, server, [text, f"Please summarise this: {ARTICLE[:2000]}"], other if index % 2 else None
                )
            )
        assert copies(issue + here) == [] and copies(there) == [], (here, there)


async def test_the_same_answer_to_the_same_question_asked_again_is_no_copy(tmp_path: Path) -> None:
    engine = CopyingEngine()
    async with chat_bot(tmp_path, make_engine=scripted(engine), edit_interval=0.01) as (server, services):
        [first] = await answered(services, server, await server.send_message("What's the plan for the library?"))
        [again] = await answered(services, server, await server.send_message("what's the plan for the library"))
        assert again["content"] == first["content"]  # the earlier answer, as the model wrote it
        assert len(engine.prompts) == 2  # and not written again without the history
