"""Conversation end to end: the real bot on discord.py, the loopback Discord, and a chat engine.

Most tests use the real local model. Two need a reply of a given shape (5,000 characters with
code blocks, or a failure half-way through) and use ``ScriptedEngine``, a test double.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.conftest import OWNER_ID, guild_setup
from tests.doubles import ScriptedEngine
from tests.loopback_discord import FakeDiscord, run_bot
from trainerbot.app import Services, build_services
from trainerbot.chat import build_engine
from trainerbot.chat.openai_compatible import OpenAIEngine
from trainerbot.config import load_settings
from trainerbot.types import Place, ReplyRecord

STORY = "Write a very long story about a dragon who learns to cook. Make it at least ten paragraphs."


@asynccontextmanager
async def chat_bot(
    tmp_path: Path, make_engine: Callable[..., Any] = build_engine, edit_interval: float = 1.0, **settings: Any
) -> AsyncIterator[tuple[FakeDiscord, Services]]:
    from trainerbot.adapters.discord.bot import TrainerBot

    options = {"chat_engine": "local", "chat_max_reply_tokens": 60, **settings}
    config = load_settings(
        _env_file=None, data_dir=tmp_path / "data", owner_ids=[OWNER_ID], admin_roles=["Trainer"], **options
    )
    services = build_services(config, make_engine=make_engine)
    try:
        async with (
            FakeDiscord(guild_setup()) as server,
            run_bot(TrainerBot(services, progress_interval=0.05, reply_edit_interval=edit_interval), server),
        ):
            yield server, services
    finally:
        services.close()


def stored_reply(services: Services, server: FakeDiscord, message: dict) -> ReplyRecord | None:
    """What the bot stored about one of its messages in the guild (None: not stored, or not there)."""
    place = Place(server.guild_id, int(message["channel_id"]))
    return services.store.conversations.reply(place, int(message["id"]))


def scripted(engine: ScriptedEngine) -> Callable[..., ScriptedEngine]:
    return lambda settings, busy: engine


async def answered(services: Services, server: FakeDiscord, sent: dict, channel_id: int | None = None) -> list[dict]:
    """The bot's messages answering ``sent``, once the reply is complete and stored."""
    deadline = time.monotonic() + 60
    while True:
        messages = [
            m
            for m in server.bot_messages(channel_id, after=sent["id"])
            if (record := stored_reply(services, server, m)) is not None and record.user_message_id == int(sent["id"])
        ]
        if messages:
            return messages
        assert time.monotonic() < deadline, f"no stored answer to {sent['content']!r}"
        await asyncio.sleep(0.05)


async def test_a_conversation_in_a_channel_and_in_a_thread(tmp_path: Path) -> None:
    async with chat_bot(tmp_path) as (server, services):
        general, thread = server.channel_id, server.channel_named("questions")
        for text in ("Hello! My name is Sam.", "I like to bake bread.", "What do I like to do?"):
            sent = await server.send_message(text)
            [reply] = await answered(services, server, sent)
            assert reply["content"].strip() and reply["message_reference"]["message_id"] == sent["id"]
        sent = await server.send_message("Hi, who are you?", channel_id=thread)
        [in_thread] = await answered(services, server, sent, thread)
        assert in_thread["channel_id"] == str(thread)
        assert [t.role for t in services.store.conversations.turns(general)] == ["user", "assistant"] * 3
        assert next(t.content for t in services.store.conversations.turns(thread)) == "Hi, who are you?"
        assert len(services.store.conversations.turns(thread)) == 2  # the thread is its own conversation
        assert "Forgotten: 3 messages" in (await wait_reply(server, "!forget", author=server.owner))["content"]
        assert (
            services.store.conversations.turns(general) == [] and len(services.store.conversations.turns(thread)) == 2
        )


async def wait_reply(server: FakeDiscord, content: str, **kwargs: Any) -> dict:
    sent = await server.send_message(content, **kwargs)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=30)
    return reply


async def test_persona_and_forget_as_slash_commands(tmp_path: Path) -> None:
    engine = ScriptedEngine("Ahoy <@900000000000000204>, matey!")
    async with chat_bot(tmp_path, scripted(engine)) as (server, services):
        handle = await server.invoke_slash("persona", {})
        [shown] = await handle.wait_messages()
        assert "(the default)" in shown["content"]
        handle = await server.invoke_slash("persona", {"text": "You are a pirate."})
        [refused] = await handle.wait_messages()
        assert "only the bot's owners" in refused["content"]
        handle = await server.invoke_slash("persona", {"text": "You are a pirate."}, user=server.owner)
        [accepted] = await handle.wait_messages()
        assert "You are a pirate." in accepted["content"]
        sent = await server.send_message("Hello!")
        [reply] = await answered(services, server, sent)
        assert engine.prompts[-1][0].content == "You are a pirate."
        assert server.message_bodies[int(reply["id"])][0]["allowed_mentions"]["parse"] == []  # pings nobody
        handle = await server.invoke_slash("forget", {})
        [forgotten] = await handle.wait_messages()
        assert "Forgotten: 1 of your messages" in forgotten["content"]


async def test_a_reply_streams_with_typing_first_and_about_one_edit_a_second(tmp_path: Path) -> None:
    text = " ".join(f"Word{i}." for i in range(300))  # about 2,400 characters, so two messages
    engine = ScriptedEngine(text, piece=16, delay=0.02)  # about 3 seconds of writing
    async with chat_bot(tmp_path, scripted(engine)) as (server, services):
        sent = await server.send_message("Tell me many words.")
        messages = await answered(services, server, sent)
        channel = f"/channels/{server.channel_id}"
        requests = [r for r in server.requests if r.path.startswith(channel)]
        typing = next(r for r in requests if r.path == f"{channel}/typing")
        posts = [r for r in requests if r.method == "POST" and r.path == f"{channel}/messages"]
        edits = [r for r in requests if r.method == "PATCH"]
        assert typing.at < posts[0].at  # the typing indicator shows until the first words
        assert len(posts) == 2 and len(messages) == 2
        first_edits = [r for r in edits if r.path.endswith(messages[0]["id"])]
        gaps = [b.at - a.at for a, b in zip([posts[0], *first_edits], first_edits, strict=False)]
        assert first_edits and all(gap > 0.8 for gap in gaps[:-1]), gaps  # the last edit completes the page
        assert len(edits) <= 6
        assert " ".join(m["content"] for m in messages).split() == text.split()


async def test_a_long_reply_is_split_between_paragraphs_and_never_inside_a_code_block(tmp_path: Path) -> None:
    # Varied text: the same paragraph or block written twice would be stopped as a loop (test_loops.py).
    prose = [" ".join(f"Step {p}.{i} explains the next part in plain words." for i in range(20)) for p in range(3)]
    code = ["```python\n" + "\n".join(f"print('block {b}, line {i}')" for i in range(40)) + "\n```" for b in range(2)]
    text = "\n\n".join([prose[0], code[0], prose[1], code[1], prose[2]])
    engine = ScriptedEngine(text, piece=50)
    async with chat_bot(tmp_path, scripted(engine), edit_interval=0.05) as (server, services):
        sent = await server.send_message("Show me some code.")
        messages = await answered(services, server, sent)
        contents = [m["content"] for m in messages]
        assert len(text) > 4000 and len(contents) >= 3
        assert all(len(c) <= 2000 for c in contents)
        assert all(c.count("```") % 2 == 0 for c in contents)  # every message renders on its own
        assert sum(c.count(block) for c in contents for block in code) == 2  # each fits on a page, so it is whole
        assert "\n\n".join(contents) == text
        stored = {stored_reply(services, server, m).reply for m in messages}
        assert stored == {text}  # each part maps to the whole reply, for !correct and reactions


async def test_engine_failures_are_short_messages_and_the_bot_keeps_serving(tmp_path: Path) -> None:
    def unreachable(settings: Any, busy: Any) -> OpenAIEngine:
        return OpenAIEngine(model="any", base_url="http://127.0.0.1:9/v1", timeout=5)  # nothing listens on port 9

    async with chat_bot(tmp_path, unreachable) as (server, services):
        reply = await wait_reply(server, "Hello there!")
        assert reply["content"] == "The chat server can't be reached right now. Try again later."
        assert "Hi member" in (await wait_reply(server, "!hi"))["content"]
        half_way = ScriptedEngine(" ".join(f"Part {n} of the answer." for n in range(10)), piece=20, fail_after=100)
        services.conversation.engine = half_way
        sent = await server.send_message("Tell me everything.")
        [partial] = await answered(services, server, sent)
        assert partial["content"].startswith("Part 0 of the answer. Part 1")
        assert partial["content"].endswith(
            "*(cut off: The chat engine failed while writing; the owners can find why in the log.)*"
        )


async def test_an_engine_that_stalls_is_given_up_on_with_a_short_message(tmp_path: Path) -> None:
    slow = ScriptedEngine("Too late.", delay=3)  # slower than the 1 s allowed
    async with chat_bot(tmp_path, scripted(slow), chat_timeout_seconds=1) as (server, _):
        reply = await wait_reply(server, "Are you there?")
        assert reply["content"] == "The chat engine took too long to answer. Try again in a moment."
        assert "Hi member" in (await wait_reply(server, "!hi"))["content"]


async def test_a_correction_of_a_chat_reply_becomes_a_taught_answer(tmp_path: Path) -> None:
    async with chat_bot(tmp_path) as (server, services):
        sent = await server.send_message("What is the capital of Atlantis?")
        [reply] = await answered(services, server, sent)
        assert stored_reply(services, server, reply).source == "chat"
        await server.add_reaction(reply["id"], "👍")
        correction = await wait_reply(
            server, "!correct The capital of Atlantis is Poseidonia.", author=server.owner, reply_to=reply["id"]
        )
        assert "Thanks! From now on" in correction["content"]
        started = await wait_reply(server, "!retrain", author=server.owner)
        await server.wait_for_message(started["id"], lambda m: "now answers" in m["content"], timeout=60)
        again = await server.send_message("What is the capital of Atlantis?")
        [taught] = await answered(services, server, again)
        assert taught["content"] == "The capital of Atlantis is Poseidonia."
        assert stored_reply(services, server, taught).source == "taught"
        rows = services.store.db.query("SELECT rating FROM reactions WHERE bot_message_id = ?", (int(reply["id"]),))
        assert [r["rating"] for r in rows] == [1]


async def test_rating_correcting_and_feedback_during_a_streamed_reply_wait_for_it(tmp_path: Path) -> None:
    text = " ".join(f"Word{i}." for i in range(120))
    engine = ScriptedEngine(text, piece=16, delay=0.03)  # about 2 seconds of writing after the first page
    async with chat_bot(tmp_path, scripted(engine), edit_interval=0.2) as (server, services):
        sent = await server.send_message("Tell me many words.")
        [first, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=30)
        assert stored_reply(services, server, first) is None  # still being written: nothing stored yet
        await server.add_reaction(first["id"], "👍")
        thanks = await wait_reply(server, "!feedback too many words", reply_to=first["id"])
        fixed = await wait_reply(server, "!correct Just one word.", author=server.owner, reply_to=first["id"])
        assert "which reply" in thanks["content"] and "Thanks! From now on" in fixed["content"]
        [reply] = await answered(services, server, sent)
        assert reply["id"] == first["id"]
        [feedback] = services.store.db.query("SELECT about_message_id, about_reply FROM feedback")
        assert feedback["about_message_id"] == int(first["id"]) and feedback["about_reply"].split() == text.split()
        rows = services.store.db.query("SELECT rating FROM reactions WHERE bot_message_id = ?", (int(first["id"]),))
        assert [r["rating"] for r in rows] == [1]


async def test_hi_answers_quickly_while_a_long_reply_is_written(tmp_path: Path) -> None:
    async with chat_bot(tmp_path, chat_max_reply_tokens=400) as (server, services):
        sent = await server.send_message(STORY)
        await server.wait_for_bot_messages(after=sent["id"], timeout=60)  # the reply has begun
        latencies = []
        for _ in range(5):
            begin = time.perf_counter()
            await wait_reply(server, "!hi")
            latencies.append(time.perf_counter() - begin)
        still_writing = services.store.conversations.turns(server.channel_id)[-1].role == "user"
        assert still_writing, "the reply ended before the measurement"
        print(f"!hi while writing: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}")
        assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
        await answered(services, server, sent)


async def test_a_model_that_writes_nothing_still_gets_a_reply_that_can_be_corrected(tmp_path: Path) -> None:
    async with chat_bot(tmp_path, scripted(ScriptedEngine("   "))) as (server, services):
        sent = await server.send_message("What is the password of the staff room?")
        [reply] = await answered(services, server, sent)
        assert reply["content"] == "I couldn't think of a reply to that. Try saying it another way?"
        fixed = await wait_reply(
            server, "!correct It is written on the whiteboard.", author=server.owner, reply_to=reply["id"]
        )
        assert "Thanks! From now on" in fixed["content"]
