"""Connection faults through the loopback Discord: every user message is answered exactly once.

The gateway closes (1000, 4000), drops its TCP connection, asks for a reconnect (op 7),
invalidates the session (op 9, resumable or not) or delivers events again on a RESUME; REST
answers 429 (with and without ``Via``), 500 and 502, before or after carrying the request out.
Each fault strikes in the middle of a conversation (some messages are sent while the bot is
disconnected) and in the middle of a streamed reply (after its first edit). Then, for every
user message: one answer (its messages carry nonces made from the message's id, each once),
a streamed answer complete, and the message and its answer stored once.

The chat engine is ``ScriptedEngine``, a test double: a real model cannot be made to write a
known text at a known pace. Everything else is real: discord.py, SQLite, the MiniLM encoder.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from discord.utils import time_snowflake, utcnow

from tests.conftest import CONFIGURED_OWNER, OWNER_ID, TRAINER, guild_setup
from tests.doubles import ScriptedEngine
from tests.loopback_discord import FakeDiscord, GuildSetup, run_bot
from trainerbot.adapters.discord.delivery import MAX_NONCE, Inbox, answer_nonce
from trainerbot.app import Services, build_services
from trainerbot.config import Settings, load_settings
from trainerbot.storage.database import open_database
from trainerbot.storage.inbox import HandledMessages
from trainerbot.storage.store import Store

pytestmark = pytest.mark.both_databases

SHORT = "Here is what I think about that, in a few words."
LONG = " ".join(f"Word{i}." for i in range(300))  # about 2,400 characters: two messages
ANSWER_NONCE = re.compile(r"(\d+)([a-z])(\d+)")
CREATE = r"POST /channels/\d+/messages$"
EDIT = r"PATCH /channels/\d+/messages/\d+$"

Fault = Callable[[FakeDiscord], Awaitable[None]]


async def _repeat_events(server: FakeDiscord) -> None:
    server.repeat_events_on_resume(100)  # everything since READY: every message is delivered again
    await server.close_gateway(4000)


GATEWAY_FAULTS: dict[str, Fault] = {
    "close 1000": lambda server: server.close_gateway(1000),
    "close 4000": lambda server: server.close_gateway(4000),
    "TCP abort": lambda server: server.abort_gateway(),
    "op 7 reconnect": lambda server: server.send_reconnect(),
    "op 9 resumable": lambda server: server.invalidate_session(resumable=True),
    "op 9 not resumable": lambda server: server.invalidate_session(resumable=False),
    "events delivered again": _repeat_events,
}

# Twice in a row for 429s; once for 5xx, whose every failure costs a second of discord.py's own retrying.
REST_FAULTS: dict[str, dict[str, Any]] = {
    "429 with Via": {"status": 429, "times": 2},  # discord.py waits retry_after and retries
    "429 without Via": {"status": 429, "via_header": False, "times": 2},  # discord.py raises at once: the bot retries
    "500": {"status": 500, "times": 1},  # discord.py retries after 1 s
    "502": {"status": 502, "times": 1},
    "500 after processing": {"status": 500, "processed": True, "times": 1},  # made, but the answer was lost
    "502 after processing": {"status": 502, "processed": True, "times": 1},
    # discord.py raises on a reset connection (it retries only BSD and Windows error numbers): the bot
    # sends again, and only the answer's own nonce keeps Discord from making a second message
    "connection cut after processing": {"processed": True, "disconnect": True, "times": 1},
}


def chat_settings(tmp_path: Path) -> Settings:
    return load_settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        owner_ids=[OWNER_ID],
        admin_roles=["Trainer"],
        chat_engine="local",  # replaced by the ScriptedEngine below
        stt_engine="none",
        tts_engine="none",
    )


@asynccontextmanager
async def running_bot(services: Services, server: FakeDiscord, edit_interval: float = 0.1) -> AsyncIterator[object]:
    from trainerbot.adapters.discord.bot import TrainerBot

    async with run_bot(TrainerBot(services, reply_edit_interval=edit_interval), server) as bot:
        yield bot


@asynccontextmanager
async def bot_session(settings: Settings, engine: ScriptedEngine, server: FakeDiscord) -> AsyncIterator[Services]:
    """One run of the bot on ``server``, from start to stop; a later session on the same settings is a restart."""
    services = build_services(settings, make_engine=lambda settings, busy: engine)
    try:
        async with running_bot(services, server):
            yield services
    finally:
        services.close()


@asynccontextmanager
async def fault_bot(tmp_path: Path, engine: ScriptedEngine) -> AsyncIterator[tuple[FakeDiscord, Services]]:
    async with FakeDiscord(guild_setup()) as server, bot_session(chat_settings(tmp_path), engine, server) as services:
        yield server, services


# -- what "answered exactly once" means -------------------------------------------------------


def answers(server: FakeDiscord) -> dict[int, list[dict[str, Any]]]:
    """The bot's messages by the user message they answer (read from their nonces), oldest first."""
    found: dict[int, list[dict[str, Any]]] = {}
    bot_id = str(server.bot_user.id)
    for message_id in sorted(server.messages):
        message = server.messages[message_id]
        match = ANSWER_NONCE.fullmatch(str(message.get("nonce", "")))
        if message["author"]["id"] == bot_id and match:
            found.setdefault(int(match[1]), []).append(message)
    return found


def count(services: Services, sql: str, *params: Any) -> int:
    return int(services.store.db.query_one(sql, params)[0])


def is_answered(server: FakeDiscord, services: Services, question: dict[str, Any]) -> bool:
    """Commands: their reply is there. Chat: the streamed answer is finished and stored."""
    if question["content"].startswith("!"):
        return bool(answers(server).get(int(question["id"])))
    return count(services, "SELECT count(*) FROM replies WHERE user_message_id = ?", int(question["id"])) > 0


async def all_answered(
    server: FakeDiscord, services: Services, questions: list[dict[str, Any]], timeout: float = 40.0
) -> None:
    deadline = time.monotonic() + timeout
    while not all(is_answered(server, services, q) for q in questions):
        missing = [q["content"] for q in questions if not is_answered(server, services, q)]
        assert time.monotonic() < deadline, f"not answered after {timeout} s: {missing}"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # time for a second answer, or a second copy, to show up


def assert_answered_once(
    server: FakeDiscord, services: Services, questions: list[dict[str, Any]], reply_text: str
) -> None:
    found = answers(server)
    bot_id = str(server.bot_user.id)
    assert set(found) == {int(q["id"]) for q in questions}, "answers to messages nobody sent"
    every_bot_message = [m for m in server.messages.values() if m["author"]["id"] == bot_id]
    assert sum(len(messages) for messages in found.values()) == len(every_bot_message), "a message without a nonce"
    for question in questions:
        question_id, text = int(question["id"]), question["content"]
        messages = found[question_id]
        nonces = [m["nonce"] for m in messages]
        assert len(set(nonces)) == len(nonces), f"{text!r} got a part twice: {nonces}"
        if text.startswith("!"):
            assert nonces == [f"{question_id}c0"], f"{text!r}: {nonces}"
            continue
        assert nonces == [answer_nonce(question_id, "a", part) for part in range(len(messages))], nonces
        assert messages[0]["message_reference"]["message_id"] == question["id"]
        assert " ".join(m["content"] for m in messages).split() == reply_text.split(), f"{text!r} incomplete"
        users = count(services, "SELECT count(*) FROM chat_turns WHERE role = 'user' AND message_id = ?", question_id)
        mine = "SELECT count(*) FROM chat_turns a JOIN chat_turns q ON a.reply_to = q.id WHERE q.message_id = ?"
        assert (users, count(services, mine, question_id)) == (1, 1), f"{text!r} stored twice"
        stored = services.store.db.query("SELECT bot_message_id FROM replies WHERE user_message_id = ?", (question_id,))
        assert {row[0] for row in stored} == {int(m["id"]) for m in messages}
    for question in questions:
        if question["content"].startswith("!feedback"):
            rows = count(services, "SELECT count(*) FROM feedback WHERE message_id = ?", int(question["id"]))
            assert rows == 1, f"feedback stored {rows} times"


async def disconnected(server: FakeDiscord, fault: Fault) -> None:
    """Inject ``fault`` and wait until the bot's socket is down (op 7 and op 9 close it from the bot's side)."""
    await fault(server)
    await server.wait_until(lambda: not server.gateway.connected, 5, what="the gateway to be down")


# -- gateway faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", GATEWAY_FAULTS)
async def test_gateway_fault_mid_conversation(tmp_path: Path, fault: str) -> None:
    async with fault_bot(tmp_path, ScriptedEngine(SHORT)) as (server, services):
        thread = server.channel_named("questions")
        before = [
            await server.send_message("Hello there!"),
            await server.send_message("!hi", author=server.admin),
            await server.send_dm("Hello in private."),
        ]
        await all_answered(server, services, before)
        async with server.hold_reconnects():
            await disconnected(server, GATEWAY_FAULTS[fault])
            during = [
                await server.send_message("What's new?", author=server.owner),
                await server.send_message("!feedback The bot is great.", author=TRAINER),
                await server.send_message("Tell me more.", author=server.admin, channel_id=thread),
                await server.send_dm("Still there?"),
            ]
        after = [await server.send_message("Are you back?", author=CONFIGURED_OWNER)]
        await all_answered(server, services, before + during + after)
        assert_answered_once(server, services, before + during + after, SHORT)
        if fault == "op 9 not resumable":  # Discord drops those events: only a catch-up finds them
            assert server.gateway.identify_count == 2
        else:
            assert server.gateway.resumes and server.gateway.identify_count == 1


@pytest.mark.parametrize("fault", GATEWAY_FAULTS)
async def test_gateway_fault_mid_stream(tmp_path: Path, fault: str) -> None:
    engine = ScriptedEngine(LONG, piece=40, delay=0.02)  # about 1.2 s of writing
    async with fault_bot(tmp_path, engine) as (server, services):
        streaming = await server.send_message("Tell me many words.")
        [first] = await server.wait_for_bot_messages(after=streaming["id"])
        await server.wait_until(lambda: len(server.message_bodies[int(first["id"])]) >= 2, what="the first edit")
        async with server.hold_reconnects():
            await disconnected(server, GATEWAY_FAULTS[fault])
            waiting = await server.send_message("And then?", author=server.admin)
        await all_answered(server, services, [streaming, waiting])
        assert_answered_once(server, services, [streaming, waiting], LONG)


# -- REST faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", REST_FAULTS)
async def test_rest_fault_mid_conversation(tmp_path: Path, fault: str) -> None:
    async with fault_bot(tmp_path, ScriptedEngine(SHORT)) as (server, services):
        failure = server.fail_route(CREATE, **REST_FAULTS[fault])
        questions = [
            await server.send_message("Hello there!"),
            await server.send_message("!hi", author=server.admin),
            await server.send_message("!feedback Nice.", author=TRAINER),
        ]
        await all_answered(server, services, questions)
        assert failure.hits == failure.times
        assert_answered_once(server, services, questions, SHORT)


@pytest.mark.parametrize("fault", REST_FAULTS)
async def test_rest_fault_mid_stream(tmp_path: Path, fault: str) -> None:
    engine = ScriptedEngine(LONG, piece=40, delay=0.02)
    async with fault_bot(tmp_path, engine) as (server, services):
        streaming = await server.send_message("Tell me many words.")
        [first] = await server.wait_for_bot_messages(after=streaming["id"])
        await server.wait_until(lambda: len(server.message_bodies[int(first["id"])]) >= 2, what="the first edit")
        edits = server.fail_route(EDIT, **REST_FAULTS[fault])
        creates = server.fail_route(CREATE, **REST_FAULTS[fault])  # the second page
        await all_answered(server, services, [streaming])
        assert edits.hits == edits.times and creates.hits == creates.times
        assert_answered_once(server, services, [streaming], LONG)


@pytest.mark.parametrize("fault", REST_FAULTS)
async def test_rest_fault_on_an_error_reply_and_a_training_jobs_progress(tmp_path: Path, fault: str) -> None:
    async with fault_bot(tmp_path, ScriptedEngine(SHORT)) as (server, services):
        creates = server.fail_route(CREATE, **REST_FAULTS[fault])
        mistyped = await server.send_message("!trian", author=server.admin)
        await all_answered(server, services, [mistyped])
        edits = server.fail_route(EDIT, **REST_FAULTS[fault])
        train = await server.send_message("!train when do you open => At 9", author=server.owner)
        [started] = await server.wait_for_bot_messages(after=train["id"])
        await server.wait_for_message(started["id"], lambda m: "now answers" in m["content"], timeout=60)
        await asyncio.sleep(0.3)  # time for a second copy to show up
        assert creates.hits == creates.times and edits.hits == edits.times
        found = answers(server)
        assert [m["nonce"] for m in found[int(mistyped["id"])]] == [f"{mistyped['id']}e0"]
        assert "Did you mean `!train`" in found[int(mistyped["id"])][0]["content"]
        assert [m["nonce"] for m in found[int(train["id"])]] == [f"{train['id']}c0"]
        assert len([m for m in server.messages.values() if m["author"]["id"] == str(server.bot_user.id)]) == 2


@pytest.mark.slow
async def test_5xx_after_discord_py_gives_up_is_retried_once_more(tmp_path: Path) -> None:
    # discord.py tries a 500 five times over 25 s and then raises; the delivery policy tries again,
    # and the nonce makes Discord return the message its lost answers had already made.
    async with fault_bot(tmp_path, ScriptedEngine(SHORT)) as (server, services):
        failure = server.fail_route(CREATE, status=500, processed=True, times=6)
        question = await server.send_message("Hello there!")
        await all_answered(server, services, [question], timeout=60)
        assert failure.hits == 6
        assert_answered_once(server, services, [question], SHORT)
        assert len(server.nonce_repeats) == 6


# -- across a restart -------------------------------------------------------------------------


async def test_a_restart_answers_what_was_said_meanwhile_and_nothing_twice(tmp_path: Path) -> None:
    engine = ScriptedEngine(SHORT)
    settings = chat_settings(tmp_path)
    async with FakeDiscord(guild_setup()) as server:
        async with bot_session(settings, engine, server) as services:
            before = [await server.send_message("Hello there!"), await server.send_dm("Hello in private.")]
            await all_answered(server, services, before)
        meanwhile = [  # the bot is down: no session gets these
            await server.send_message("Anyone home?", author=server.admin),
            await server.send_message("!hi", author=server.owner),
            await server.send_dm("Still there?"),
        ]
        async with bot_session(settings, engine, server) as services:
            await all_answered(server, services, before + meanwhile)
            assert_answered_once(server, services, before + meanwhile, SHORT)


async def test_messages_a_restart_cut_off_are_taken_up_again_and_no_command_runs_twice(tmp_path: Path) -> None:
    """The bot had taken these on (claimed, and the question stored) when it died: as a SIGKILL leaves them."""
    engine = ScriptedEngine(SHORT)
    settings = chat_settings(tmp_path)
    async with FakeDiscord(guild_setup()) as server:
        async with bot_session(settings, engine, server) as services:
            before = [await server.send_message("Hello there!")]
            await all_answered(server, services, before)
        async with server.hold_reconnects():
            cut_off = [
                await server.send_message("Are you still thinking?", author=server.admin),
                await server.send_message("!feedback Nice work.", author=TRAINER),
            ]
        # What a killed bot leaves behind: the messages claimed, a question already in memory.
        left_behind = Store(open_database(settings.database_address))
        for message in cut_off:
            assert left_behind.inbox.claim_message(int(message["id"]), server.channel_id, forget_before=0)
        left_behind.conversations.add_turn(
            conversation_id=server.channel_id,
            guild_id=server.guild_id,
            user_id=server.admin.id,
            role="user",
            content=cut_off[0]["content"],
            message_id=int(cut_off[0]["id"]),
        )
        left_behind.db.close()
        async with bot_session(settings, engine, server) as services:
            question, command = cut_off
            await all_answered(server, services, [*before, question])
            [note] = await server.wait_for_bot_messages(
                after=command["id"], predicate=lambda m: m.get("nonce") == f"{command['id']}r0"
            )
            assert note["content"].startswith("I was restarted while working on this command")
            assert note["message_reference"]["message_id"] == command["id"]
            assert count(services, "SELECT count(*) FROM feedback") == 0  # not run a second time by itself
            assert [m["nonce"] for m in answers(server)[int(command["id"])]] == [f"{command['id']}r0"]
            answer = answers(server)[int(question["id"])]
            assert [m["nonce"] for m in answer] == [f"{question['id']}a0"]
            assert answer[0]["content"] == SHORT and answer[0]["message_reference"]["message_id"] == question["id"]
            turns = "SELECT count(*) FROM chat_turns WHERE role = 'user' AND message_id = ?"
            assert count(services, turns, int(question["id"])) == 1  # its memory reused, not stored twice
            assert services.store.inbox.unfinished_among([int(m["id"]) for m in [*before, *cut_off]]) == set()


async def test_a_fresh_install_does_not_answer_what_came_before_it(tmp_path: Path, discord_server: FakeDiscord) -> None:
    old = await discord_server.send_message("Said before the bot ever ran.")
    async with bot_session(chat_settings(tmp_path), ScriptedEngine(SHORT), discord_server) as services:
        question = await discord_server.send_message("Hello there!")
        await all_answered(discord_server, services, [question])
        await discord_server.invalidate_session(resumable=False)  # a catch-up now looks back 15 minutes
        await discord_server.wait_until(lambda: discord_server.gateway.identify_count == 2)
        await asyncio.sleep(0.5)
        assert int(old["id"]) not in answers(discord_server)
        assert_answered_once(discord_server, services, [question], SHORT)


async def test_a_catch_up_reads_only_the_channels_with_something_new(tmp_path: Path) -> None:
    """Across many servers most channels are quiet: a catch-up asks Discord for none of their history."""
    a, b, c = guild_setup(), GuildSetup.nth(1), GuildSetup.nth(2)
    async with (
        FakeDiscord([a, b, c]) as server,
        bot_session(chat_settings(tmp_path), ScriptedEngine(SHORT), server) as services,
    ):
        first = await server.send_message("Hello there!")
        await all_answered(server, services, [first])
        quiet_b = b.text_channels["general"]
        busy_b = b.text_channels["bot-commands"]
        async with server.hold_reconnects():
            await disconnected(server, GATEWAY_FAULTS["op 9 not resumable"])
            missed = await server.send_message("Anyone here?", author=b.member, channel_id=busy_b)
            began = time.monotonic()
        await all_answered(server, services, [first, missed])  # only the catch-up finds it
        read = {
            int(r.path.split("/")[2])
            for r in server.requests
            if r.method == "GET" and r.path.endswith("/messages") and r.at >= began
        }
        # A's channel had the first exchange, B's busy channel the missed message; nothing else was read.
        assert read == {a.channel_id, busy_b}, read
        assert quiet_b not in read and not read & set(c.text_channels.values())
        assert_answered_once(server, services, [first, missed], SHORT)


def test_answer_nonces_fit_discord_limit() -> None:
    assert len(answer_nonce(2**64 - 1, "a", 999)) <= MAX_NONCE
    assert answer_nonce(123, "h", 2) == "123h2"
    with pytest.raises(ValueError):
        answer_nonce(123, "ab", 0)


def test_a_claim_holds_once_and_old_claims_are_dropped(services: Services) -> None:
    inbox = services.store.inbox
    assert inbox.claim_message(1_000, 7, forget_before=0) is True
    assert inbox.claim_message(1_000, 7, forget_before=0) is False  # the same message delivered again
    assert inbox.claim_message(2_000, 8, forget_before=0, direct=True) is True
    assert inbox.claim_message(2_500, 9, forget_before=0) is True
    assert (inbox.first_handled_message(), inbox.handled_among([1_000, 1_500, 2_000])) == (1_000, {1_000, 2_000})
    # The DM channels to look at after a new session: a server's channel is read through its server, by its shard.
    assert inbox.channels_handled_since(1_000) == [8]
    assert inbox.claim_message(3_000, 7, forget_before=1_500) is True  # claims older than 1,500 go
    assert inbox.handled_among([1_000, 2_000, 3_000]) == {2_000, 3_000}


class StaleInbox(HandledMessages):
    """A test double of the claims table that answers "unfinished" as a catch-up's snapshot can, read just
    before this process finished the message: the race of a command sent right after a restart."""

    def unfinished_among(self, message_ids: Sequence[int]) -> set[int]:
        return set(message_ids)


async def test_a_message_this_process_took_on_is_never_taken_up_as_cut_off(services: Services) -> None:
    inbox = Inbox(StaleInbox(services.store.db))
    message = SimpleNamespace(
        id=time_snowflake(utcnow()), author=SimpleNamespace(bot=False), channel=SimpleNamespace(id=7), guild=None
    )

    class Channel:
        id = 7

        async def history(self, limit: int) -> AsyncIterator[SimpleNamespace]:
            yield message

    handled, taken_up = [], []

    async def handle(found: object) -> None:
        handled.append(found)

    async def take_up(found: object) -> None:
        taken_up.append(found)

    assert await inbox.claim(message)  # type: ignore[arg-type]
    await inbox.finish(message)  # type: ignore[arg-type]
    assert await inbox._catch_up_channel(Channel(), 0, handle, take_up) == 0  # type: ignore[arg-type]
    assert handled == taken_up == []
    inbox.close()
