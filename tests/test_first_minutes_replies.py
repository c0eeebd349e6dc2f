"""Issue 13, the replies a new server meets first: "not learned yet", a reply cut at the length limit,
and flags written inside a file's lines. Through the loopback Discord and in the console.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGURED_OWNER, TRAINER
from tests.doubles import ScriptedEngine
from tests.loopback_discord import FakeDiscord
from tests.test_chat_e2e import STORY, answered, chat_bot, scripted, stored_reply
from trainerbot.adapters.console.console import Console
from trainerbot.app import Services, build_services
from trainerbot.chat.engine import CUT_SHORT, ChatMessage
from trainerbot.config import load_settings

TRAINER_ROLE = 900_000_000_000_000_303  # the Trainer role of conftest's guild
CUT_NOTE = "*(cut off: that's as long as my replies get. Ask me to go on.)*"


async def say(server: FakeDiscord, content: str, *, author: Any = None, dm: bool = False) -> dict:
    send = server.send_dm if dm else server.send_message
    sent = await send(content, author=author)
    channel = int(sent["channel_id"])
    [reply, *_] = await server.wait_for_bot_messages(channel, after=sent["id"], timeout=10)
    return reply


def pinged(server: FakeDiscord, message: dict) -> list[str]:
    """Whom a bot message pings, as Discord decides it: the mentions in its text that its allowed_mentions allow."""
    found = []
    for body in server.message_bodies[int(message["id"])]:
        allowed = body.get("allowed_mentions") or {"parse": ["users", "roles", "everyone"]}
        parse, content = allowed.get("parse", []), body.get("content") or ""
        for user in re.findall(r"<@!?(\d+)>", content):
            if "users" in parse or user in allowed.get("users", []):
                found.append(user)
        for role in re.findall(r"<@&(\d+)>", content):
            if "roles" in parse or role in allowed.get("roles", []):
                found.append(f"role {role}")
        if "everyone" in parse and ("@everyone" in content or "@here" in content):
            found.append("everyone")
    return found


def hostile_questions(server: FakeDiscord) -> list[str]:
    return [
        f"<@{server.member.id}> what is this?",
        "```py\nprint('hi')\n``` why does this fail?",
        "@everyone when is the meeting?",
        f"<@&{TRAINER_ROLE}> who runs this?",
        "what does `ls` do?",
        "first line\nsecond line",
        "why " * 400,
    ]


# --- "not learned yet" ------------------------------------------------------------------------------


async def test_not_learned_yet_tells_a_member_to_suggest_with_correct_and_quotes_nothing(
    bot: object, discord_server: FakeDiscord
) -> None:
    for question in ["when do you open?", *hostile_questions(discord_server)]:
        reply = await say(discord_server, question)
        content = reply["content"]
        assert content.startswith("I haven't learned that yet."), content
        assert "Reply to this message with `!correct <the right answer>`" in content, content
        assert "admins review it" in content and "!train" not in content, content
        assert content.count("`") % 2 == 0 and "```" not in content and "<@" not in content, content
        assert "@everyone" not in content and pinged(discord_server, reply) == [], content


async def test_not_learned_yet_gives_an_admin_the_train_line_only_when_it_can_be_quoted_safely(
    bot: object, discord_server: FakeDiscord
) -> None:
    plain = await say(discord_server, "when do you open?", author=TRAINER)
    assert "Teach me with `!train when do you open? => <the answer>`" in plain["content"], plain["content"]
    assert "reply to this message with `!correct <the right answer>`" in plain["content"]
    for question in [*hostile_questions(discord_server), "is it on => off?", "what does --negative do?"]:
        reply = await say(discord_server, question, author=TRAINER)
        content = reply["content"]
        assert "Teach me with `!train <the question> => <the answer>`" in content, (question, content)
        assert content.count("`") % 2 == 0 and "```" not in content and "<@" not in content, content
        assert "@everyone" not in content and pinged(discord_server, reply) == [], content


async def test_not_learned_yet_in_a_dm_says_who_teaches_there(bot: object, discord_server: FakeDiscord) -> None:
    member = await say(discord_server, "<@1> when do you open?", dm=True)
    assert "In direct messages only the bot's owners teach me" in member["content"], member["content"]
    assert "`!feedback <the right answer>`" in member["content"]
    assert "!train" not in member["content"] and "!correct" not in member["content"]
    owner = await say(discord_server, "when do you open?", author=CONFIGURED_OWNER, dm=True)
    assert "Teach me with `!train when do you open? => <the answer>`" in owner["content"], owner["content"]


def test_the_console_says_what_each_person_can_do(services: Services) -> None:
    out = io.StringIO()
    Console(services, out).run(io.StringIO("when do you open?\n```\nx\n```\n"))  # the owner, outside any server
    printed = out.getvalue()
    assert "Teach me with `!train when do you open? => <the answer>`" in printed, printed
    assert "Teach me with `!train <the question> => <the answer>`" in printed, printed
    out = io.StringIO()
    Console(services, out, server=5, role="member").run(io.StringIO("when do you open?\n"))
    printed = out.getvalue()
    named = re.search(r"^\[#(\d+)\] .*Send `!correct (\d+) <the right answer>`", printed, re.MULTILINE)
    assert named and named[1] == named[2] and "!train" not in printed, printed  # the reply, by its number


# --- a reply cut at the length limit ----------------------------------------------------------------


async def test_a_reply_cut_at_the_length_limit_says_so_and_is_stored_without_the_note(tmp_path: Path) -> None:
    async with chat_bot(tmp_path, chat_max_reply_tokens=16) as (server, services):  # the real local model
        sent = await server.send_message(STORY)
        messages = await answered(services, server, sent)
        shown = messages[-1]["content"]
        assert shown.endswith(f"\n\n{CUT_NOTE}"), shown
        stored = stored_reply(services, server, messages[-1])
        assert stored is not None and stored.reply == shown.removesuffix(f"\n\n{CUT_NOTE}").strip()
        assert "cut off" not in stored.reply and not stored.reply.endswith("…"), stored.reply
        [turn] = [t for t in services.store.conversations.turns(server.channel_id) if t.role == "assistant"]
        assert turn.content == stored.reply  # what the model sees again when asked to go on


def test_the_console_says_when_a_reply_was_cut_at_the_length_limit(tmp_path: Path) -> None:
    settings = load_settings(
        _env_file=None, data_dir=tmp_path / "data", chat_engine="local", chat_max_reply_tokens=16, tts_engine="none"
    )
    services = build_services(settings)
    try:
        out = io.StringIO()
        Console(services, out).run(io.StringIO(STORY + "\n"))
        printed = out.getvalue()
        assert printed.rstrip().endswith(" (cut off: that's as long as my replies get. Ask me to go on.)"), printed
        [turn] = [t for t in services.store.conversations.turns(0) if t.role == "assistant"]
        assert "cut off" not in turn.content and not turn.content.endswith("…") and turn.content in printed
    finally:
        services.close()


class LengthLimitedEngine(ScriptedEngine):
    """Writes its text, then stops as an engine does at the length limit (a real model cannot be made to
    stop at a chosen character)."""

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int, cancel: threading.Event) -> Iterator[str]:
        yield from super().stream(messages, max_tokens=max_tokens, cancel=cancel)
        yield CUT_SHORT


@pytest.mark.parametrize(
    "text",
    # 1,994 characters; a code block left open (varied: a line written again and again is stopped as a loop)
    [
        " ".join(f"w{n:03d}" for n in range(399)),
        "```python\n" + "".join(f"print('line {n:03d}')\n" for n in range(120)),
    ],
)
async def test_the_note_of_a_cut_reply_fits_discords_limit_and_stays_out_of_code(tmp_path: Path, text: str) -> None:
    engine = LengthLimitedEngine(text, piece=100)
    async with chat_bot(tmp_path, scripted(engine), edit_interval=0.05) as (server, services):
        sent = await server.send_message("Tell me everything.")
        messages = await answered(services, server, sent)
        contents = [m["content"] for m in messages]
        assert all(len(c) <= 2000 for c in contents), [len(c) for c in contents]
        assert contents[-1].endswith(f"```\n\n{CUT_NOTE}" if "```" in text else CUT_NOTE), contents[-1]
        assert all(c.count("```") % 2 == 0 for c in contents)
        assert stored_reply(services, server, messages[0]).reply == text.strip()


async def test_a_reply_that_ends_with_an_ellipsis_of_its_own_gets_no_note(tmp_path: Path) -> None:
    engine = ScriptedEngine("And then … and then …", piece=3)
    async with chat_bot(tmp_path, scripted(engine)) as (server, services):
        sent = await server.send_message("Tell me a story.")
        [reply] = await answered(services, server, sent)
        assert reply["content"] == "And then … and then …"


# --- flags written inside a file's lines --------------------------------------------------------------

FLAGGED = b"when do you open? => We open at 9\nhours? => We open at 9 positive=false\n"
REFUSAL = "hours.txt, line 2: the answer ends with `positive=false`, a flag of the `!train` command"


async def test_a_file_line_ending_with_a_flag_is_refused_and_nothing_is_stored(
    bot: object, discord_server: FakeDiscord, services: Services
) -> None:
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=[("hours.txt", FLAGGED)])
    [reply, *_] = await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    assert REFUSAL in reply["content"], reply["content"]
    assert "lines of a file take no flags" in reply["content"]
    slash = await discord_server.invoke_slash("train", {"file": ("hours.txt", FLAGGED)}, user=TRAINER)
    refused = (await slash.wait_messages())[0]["content"]
    assert "hours.txt, line 2: the answer ends with `positive=false`" in refused, refused
    question = b"what time --negative => At nine\n"
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=[("q.txt", question)])
    [reply, *_] = await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    assert "q.txt, line 1: the question ends with `--negative`" in reply["content"], reply["content"]
    assert services.store.knowledge.example_counts(discord_server.guild_id)["total"] == 0

    # The flag in the command, a flag-like word inside an answer: taught as written.
    inside = b"how do I hide it? => Run it with --negative first, then look.\n"
    sent = await discord_server.send_message("!train positive=false", author=TRAINER, attachments=[("ok.txt", inside)])
    [reply, *_] = await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    assert "Stored 1 negative example from ok.txt" in reply["content"], reply["content"]


def test_the_console_refuses_a_file_line_ending_with_a_flag(services: Services, tmp_path: Path) -> None:
    (tmp_path / "hours.txt").write_bytes(FLAGGED)
    out = io.StringIO()
    Console(services, out).run(io.StringIO(f"!train --attach {tmp_path / 'hours.txt'}\n"))
    assert REFUSAL in out.getvalue(), out.getvalue()
    assert services.store.knowledge.example_counts(0)["total"] == 0
