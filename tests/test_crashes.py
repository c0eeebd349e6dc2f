"""Crashes: the bot process killed with SIGKILL in the middle of its work, then started again.

The real bot runs in a child process (``BotProcess``) against the loopback Discord, which
lives in the test and outlives the kill. Each kill waits for a state read from outside the
bot (a job row running with progress, a number of confirmations posted, the log line that a
transcription has begun), never for a guessed delay. After the restart, on the same data:
everything the bot had confirmed is stored, an interrupted job says so and can be retried,
the model that answered before still answers, and SQLite's integrity check passes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from tests.conftest import CONFIGURED_OWNER, OWNER_ID, guild_setup
from tests.loopback_discord import FakeDiscord, FakeUser
from tests.loopback_discord.process_bot import BotProcess, is_alive
from trainerbot.app import Services
from trainerbot.errors import NotReady, PermissionDenied
from trainerbot.learning.jobs import TrainingJobs
from trainerbot.speech.audio import decode, wav_bytes
from trainerbot.storage.database import Database, open_database
from trainerbot.storage.store import Store
from trainerbot.types import GLOBAL_BASE, Caller

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="the tests read the bot's processes from Linux's /proc"
    ),
    pytest.mark.both_databases,
]

DATA = Path(__file__).resolve().parent / "data"
BANKING = DATA / "banking77" / "train.csv"
JFK = DATA / "audio" / "jfk.wav"
FIRST_LESSON = "when do you open? => We open at nine.\nwhere are you? => At the old harbour."
T = TypeVar("T")


def bot_env(**settings: str) -> dict[str, str]:
    """The bot's settings: no chat engine or speech unless a test asks, owners and the admin role as conftest's."""
    return {
        "TRAINERBOT_OWNER_IDS": str(OWNER_ID),
        "TRAINERBOT_ADMIN_ROLES": "Trainer",
        "TRAINERBOT_CHAT_ENGINE": "none",
        "TRAINERBOT_STT_ENGINE": "none",
        "TRAINERBOT_TTS_ENGINE": "none",
        "TRAINERBOT_UPLOAD_LIMIT_BYTES": "5000000",
        "TRAINERBOT_AUTO_TRAIN_QUIET_SECONDS": "0",
        **settings,
    }


def bot_database(data_dir: Path) -> Database:
    """The bot's database, opened from outside as another process would: its SQLite file in the data
    directory, or the test's PostgreSQL database (conftest.py's ``database_url``)."""
    return open_database(os.environ.get("TRAINERBOT_DATABASE_URL") or str(data_dir / "trainerbot.sqlite3"))


def snapshot(data_dir: Path, *sqls: str) -> list[list[Any]]:
    """Several reads of the bot's database in one transaction: one moment's data, while the bot may go on writing."""
    db = bot_database(data_dir)
    try:
        with db.transaction() as reads:
            return [reads.execute(sql).fetchall() for sql in sqls]
    finally:
        db.close()


def query(data_dir: Path, sql: str, params: tuple = ()) -> list[Any]:
    """Reads the bot's database from outside, as another process would."""
    db = bot_database(data_dir)
    try:
        return db.query(sql, params)
    finally:
        db.close()


def integrity(data_dir: Path) -> str:
    """SQLite's own check of its file. A PostgreSQL server was not killed: its consistency is not in question."""
    if os.environ.get("TRAINERBOT_DATABASE_URL"):
        return "ok"
    return query(data_dir, "PRAGMA integrity_check")[0][0]


def active_model(data_dir: Path, base: int) -> int | None:
    """The model version that answers in a knowledge base (a guild's id, or 0 for the bot-wide one)."""
    rows = query(data_dir, "SELECT active_model FROM bases WHERE id = ?", (base,))
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


async def poll(condition: Callable[[], T], *, timeout: float, what: str, every: float = 0.02) -> T:
    """Waits for a state outside the fake Discord's view (the database, /proc, a log file)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return result


async def say(
    server: FakeDiscord, content: str, *, author: Any = None, channel_id: int | None = None, **kwargs: Any
) -> dict:
    """Sends a message as a user; returns the bot's first message after it in that channel."""
    sent = await server.send_message(content, author=author, channel_id=channel_id, **kwargs)
    [reply, *_] = await server.wait_for_bot_messages(channel_id, after=sent["id"], timeout=20)
    return reply


def job_number(message: dict) -> int:
    found = re.search(r"Training job #(\d+)", message["content"])
    assert found, message["content"]
    return int(found.group(1))


async def teach_first_model(server: FakeDiscord) -> int:
    """Trains the model that answers before the crash; returns its version."""
    started = await say(server, f"!train {FIRST_LESSON}", author=CONFIGURED_OWNER)
    done = await server.wait_for_message(started["id"], lambda m: "now answers" in m["content"], timeout=60)
    found = re.search(r"Model version (\d+) now answers", done["content"])
    assert found, done["content"]
    return int(found.group(1))


async def assert_still_serves(server: FakeDiscord, version: int, channel_id: int | None = None) -> None:
    """The model version that answered before the crash answers now, with what it was taught."""
    assert f"Model version {version} answers" in (await say(server, "!model", channel_id=channel_id))["content"]
    assert (await say(server, "when do you open?", channel_id=channel_id))["content"] == "We open at nine."


def banking_csv(rows: int) -> tuple[bytes, int]:
    """The first ``rows`` Banking77 questions (training on them takes seconds), and how many intents they have."""
    with BANKING.open(newline="", encoding="utf-8") as source:
        reader = csv.reader(source)
        lines = [next(reader)] + [row for _, row in zip(range(rows), reader, strict=False)]
    out = io.StringIO()
    csv.writer(out).writerows(lines)
    return out.getvalue().encode(), len({row[1] for row in lines[1:]})


# --- the training process dies with the bot --------------------------------------------------

_STAND_IN_BOT = """
import functools, multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from trainerbot.learning.jobs import die_with_parent

how = sys.argv[1]
initializer = None if how == "none" else functools.partial(die_with_parent, kernel=how == "kernel")
pool = ProcessPoolExecutor(
    1, mp_context=multiprocessing.get_context("spawn"), initializer=initializer, initargs=(os.getpid(),)
)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 120)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["kernel", "watching", "none"])
async def test_a_training_process_dies_with_the_process_that_started_it(how: str) -> None:
    """`kernel`: Linux's parent-death signal; `watching`: the fallback elsewhere; `none`: why either is needed."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _STAND_IN_BOT, how], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert parent.stdout is not None
        worker = int(await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 60))
        await asyncio.sleep(0.2)  # the worker is now inside its two-minute job
        parent.kill()
        parent.wait()
        began = time.monotonic()
        if how == "none":
            await asyncio.sleep(2)
            assert is_alive(worker), "without die_with_parent the busy worker outlives the bot"
            os.kill(worker, 9)
            return
        await poll(lambda: not is_alive(worker), timeout=3, what=f"worker {worker} to end ({how})")
        print(f"worker ended {time.monotonic() - began:.2f} s after its parent was killed ({how})")
    finally:
        parent.kill()


def test_only_jobs_whose_process_has_ended_are_marked_interrupted(tmp_path: Path) -> None:
    """`trainerbot test` started beside a training bot must not mark the bot's running job interrupted."""
    path = os.environ.get("TRAINERBOT_DATABASE_URL") or str(tmp_path / "trainerbot.sqlite3")

    def jobs_on(store: Store) -> TrainingJobs:
        return TrainingJobs(store, tmp_path, 0.6, on_finished=lambda job: None)

    store = Store(open_database(path))
    bot = jobs_on(store)
    assert bot.recover() == []
    job = store.jobs.create(GLOBAL_BASE, requested_by=None, channel_id=None)
    assert store.jobs.mark_running(GLOBAL_BASE, job.id)
    beside = jobs_on(Store(open_database(path)))
    assert beside.recover() == []
    assert store.jobs.job(GLOBAL_BASE, job.id).status == "running"  # type: ignore[union-attr]
    beside.shutdown()
    bot.shutdown()  # as a kill would end it: the job never finished

    restarted = jobs_on(store)
    assert [interrupted.id for interrupted in restarted.recover()] == [job.id]
    assert [taken.id for taken in restarted.take_interrupted()] == [job.id] and restarted.take_interrupted() == []
    assert store.jobs.job(GLOBAL_BASE, job.id).status == "interrupted"  # type: ignore[union-attr]
    # An outcome arriving late (a worker that outlived its bot) is not recorded, and its model never serves.
    late = {"examples": 1, "outputs": 1, "holdout_accuracy": None}
    assert not store.jobs.finish(GLOBAL_BASE, job.id, result=late, model_path="models/late.npz")
    assert store.jobs.job(GLOBAL_BASE, job.id).status == "interrupted"  # type: ignore[union-attr]
    assert store.knowledge.active_model(GLOBAL_BASE) is None
    restarted.shutdown()


def test_retry_says_why_when_there_is_nothing_to_retry(services: Services) -> None:
    owner = Caller(OWNER_ID, "owner", is_owner=True)  # outside a server: the bot-wide base's jobs
    with pytest.raises(NotReady, match="There is no job #7"):
        services.teaching.retry(owner, 7)
    job = services.store.jobs.create(GLOBAL_BASE, requested_by=OWNER_ID, channel_id=None)
    services.store.jobs.mark_running(GLOBAL_BASE, job.id)
    with pytest.raises(NotReady, match=f"Training job #{job.id} is still running"):
        services.teaching.retry(owner, job.id)
    with pytest.raises(PermissionDenied):
        services.teaching.retry(Caller(1, "member"), job.id)
    services.store.jobs.finish(GLOBAL_BASE, job.id, result={"examples": 0, "outputs": 0}, model_path="models/model.npz")
    with pytest.raises(NotReady, match=f"Training job #{job.id} succeeded; there is nothing to retry"):
        services.teaching.retry(owner, job.id)


# --- (a) killed during a training job ------------------------------------------------------


async def test_killed_during_a_training_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with FakeDiscord(guild_setup()) as server, BotProcess(server, data, tmp_path, bot_env()) as bot:
        await bot.start()
        version = await teach_first_model(server)

        examples, intents = banking_csv(1200)
        outputs = intents + 2  # and the first lesson's two answers
        started = await say(server, "!train", author=CONFIGURED_OWNER, attachments=[("banking.csv", examples)])
        assert "Stored 1,200 positive examples from banking.csv" in started["content"]  # acknowledged
        job = job_number(started)

        def running() -> bool:
            row = query(data, "SELECT status, progress FROM jobs WHERE id = ?", (job,))[0]
            return row["status"] == "running" and row["progress"] > 0

        await poll(running, timeout=60, what=f"job #{job} to be running with progress")
        # The process training it (of the bot's training processes: with PostgreSQL, its `trainerbot worker`s).
        log = bot.log_file.read_text()
        [worker] = [
            child
            for child in bot.children()
            if child.is_training_worker
            and f"training job {job} of base {server.guild_id} on 1202 examples (process {child.pid})" in log
        ]
        bot.kill()
        killed = time.monotonic()
        await poll(lambda: not is_alive(worker.pid), timeout=5, what="the training process to die with the bot")
        worker_gone = time.monotonic() - killed
        [row] = query(data, "SELECT status FROM jobs WHERE id = ?", (job,))
        assert row["status"] == "running"  # as the kill left it: no one recorded an outcome
        assert active_model(data, server.guild_id) == version

        restart = await bot.start()
        [notice] = await server.wait_for_bot_messages(
            after=started["id"], predicate=lambda m: "interrupted" in m["content"]
        )
        assert notice["content"] == (
            f"Training job #{job} was interrupted by a restart. `!retry {job}` trains on the same examples again."
        )
        assert query(data, "SELECT status FROM jobs WHERE id = ?", (job,))[0]["status"] == "interrupted"
        assert f"#{job} was interrupted by a restart" in (await say(server, f"!job {job}"))["content"]
        assert re.search(rf"`#{job}` interrupted", (await say(server, "!jobs"))["content"])
        assert query(data, "SELECT count(*) FROM examples")[0][0] == 2 + 1200
        assert integrity(data) == "ok"
        await assert_still_serves(server, version)

        refused = await say(server, f"!retry {job}", author=server.member)
        assert refused["content"].startswith("Sorry, only the bot's owners and members with an admin role can train")
        retried = await say(server, f"!retry {job}", author=CONFIGURED_OWNER)
        assert f"started in place of #{job}, on the same 1202 examples ({outputs} outputs)" in retried["content"]
        again = job_number(retried)
        done = await server.wait_for_message(retried["id"], lambda m: "now answers" in m["content"], timeout=120)
        assert f"Learned {outputs} answers from 1,202 examples" in done["content"]
        inputs = "SELECT max_example_id, dataset_id FROM jobs WHERE id = ?"
        assert tuple(query(data, inputs, (again,))[0]) == tuple(query(data, inputs, (job,))[0])
        assert active_model(data, server.guild_id) == version + 1
        assert (await say(server, "when do you open?"))["content"] == "We open at nine."
        retried_twice = await say(server, f"!retry {job}", author=CONFIGURED_OWNER)
        assert f"Training job #{again}, started after #{job}, succeeded" in retried_twice["content"]
        print(f"training worker gone {worker_gone:.2f} s after the kill; restart to ready {restart:.2f} s")


# --- (b) killed during a burst of feedback and corrections ---------------------------------

CROWD = [FakeUser(900_000_000_000_001_000 + i, f"visitor{i}") for i in range(8)]
BURST = 240  # messages: feedback, corrections and 👍, a third each
KILL_AFTER = 15  # confirmations seen before the kill


def crowd_setup():
    setup = guild_setup()
    setup.extra_users += CROWD
    return setup


async def test_killed_during_a_burst_of_feedback_and_corrections(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with FakeDiscord(crowd_setup()) as server, BotProcess(server, data, tmp_path, bot_env()) as bot:
        await bot.start()
        version = await teach_first_model(server)
        replies = [await say(server, f"something untaught number {i}") for i in range(4)]
        assert all("haven't learned that yet" in r["content"] for r in replies)

        first = await server.send_message("!hi")
        await server.wait_for_bot_messages(after=first["id"])

        async def burst() -> None:
            for i in range(BURST):
                user, target = CROWD[i % len(CROWD)], replies[i % len(replies)]["id"]
                if i % 3 == 0:
                    await server.send_message(f"!feedback burst feedback {i}", author=user)
                elif i % 3 == 1:
                    await server.send_message(f"!correct burst correction {i}", author=user, reply_to=target)
                else:
                    await server.add_reaction(target, "👍", user=user)
                await asyncio.sleep(0)  # as fast as the socket takes them: the bot falls behind

        def confirmations() -> list[dict]:
            return [
                m
                for m in server.bot_messages(after=first["id"])
                if m["content"].startswith(("Thank you for the feedback", "Thanks! I passed your correction"))
            ]

        sender = asyncio.create_task(burst())
        await server.wait_until(lambda: len(confirmations()) >= KILL_AFTER, timeout=60, what="confirmations")
        bot.kill()
        acknowledged = confirmations()
        sender.cancel()
        feedback_acks = sum(m["content"].startswith("Thank you") for m in acknowledged)
        corrections_acked = {  # the crowd are members: their corrections are suggestions for the admins
            re.search(r"correction \(`(burst correction \d+)`\)", m["content"]).group(1)  # type: ignore[union-attr]
            for m in acknowledged
            if m["content"].startswith("Thanks! I passed")
        }
        sent = sum(
            1 for m in server.messages.values() if m["content"].startswith(("!feedback burst", "!correct burst"))
        )
        assert len(acknowledged) < sent, "the kill came after the burst was all handled: nothing was tested"

        restart = await bot.start()
        assert integrity(data) == "ok"
        stored_feedback = [r["text"] for r in query(data, "SELECT text FROM feedback")]
        assert len(stored_feedback) >= feedback_acks
        assert len(set(stored_feedback)) == len(stored_feedback), "a feedback was stored twice"
        assert all(re.fullmatch(r"burst feedback \d+", text) for text in stored_feedback)
        # Read in one snapshot: the restarted bot may still be catching up on the burst, storing more.
        suggestions, whole, topics, from_corrections = snapshot(
            data,
            "SELECT suggestion FROM review_items WHERE kind = 'suggestion'",
            "SELECT count(*) FROM review_items i JOIN review_topics t ON t.id = i.topic_id"
            " AND t.kind = 'suggestion' AND t.status = 'open' WHERE i.kind = 'suggestion'",
            "SELECT count(*) FROM review_topics WHERE kind = 'suggestion'",
            "SELECT count(*) FROM examples WHERE source = 'correction'",
        )
        stored_corrections = [r["suggestion"] for r in suggestions]
        assert corrections_acked <= set(stored_corrections)
        assert len(set(stored_corrections)) == len(stored_corrections), "a suggestion was stored twice"
        # A suggestion is its item and its own open topic, together or not at all, and it teaches nothing.
        assert whole[0][0] == topics[0][0] == len(stored_corrections) and from_corrections[0][0] == 0
        ratings = query(data, "SELECT count(*), count(DISTINCT bot_message_id || ' ' || user_id) FROM reactions")[0]
        assert ratings[0] == ratings[1]  # once per person and reply
        # Elsewhere: in the burst's channel the bot may still be catching up on what it missed.
        quiet = server.channel_named("bot-commands")
        await assert_still_serves(server, version, quiet)
        after = await say(server, "!feedback after the restart", channel_id=quiet)
        assert after["content"].startswith("Thank you for the feedback")
        print(
            f"burst: {sent} commands sent, {len(acknowledged)} confirmed before the kill; stored afterwards: "
            f"{len(stored_feedback)} feedback ({feedback_acks} confirmed), {len(stored_corrections)} corrections "
            f"({len(corrections_acked)} confirmed), {ratings[0]} ratings; restart to ready {restart:.2f} s"
        )


# --- (c) killed during a voice message's transcription --------------------------------------


def long_speech(times: int) -> bytes:
    """The JFK clip said ``times`` times over, as one WAV: seconds of Whisper's work."""
    samples = decode(JFK.read_bytes(), "jfk.wav", max_seconds=60).samples
    return wav_bytes((np.clip(np.tile(samples, times), -1, 1) * 32767).astype("<i2").tobytes(), 16000)


@pytest.mark.slow  # Whisper at both starts and twenty seconds in all
async def test_killed_during_a_voice_message_transcription(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = bot_env(TRAINERBOT_STT_ENGINE="whisper")
    async with FakeDiscord(guild_setup()) as server, BotProcess(server, data, tmp_path, env) as bot:
        await bot.start()
        version = await teach_first_model(server)
        assert (await say(server, "!feedback said before the crash"))["content"].startswith("Thank you")
        await poll(lambda: "loaded the Whisper model" in bot.log_file.read_text(), timeout=60, what="Whisper")

        log_size = bot.log_file.stat().st_size
        sent = await server.send_message(attachments=[("speech.wav", long_speech(6))], voice_seconds=66.0)

        def transcribing() -> bool:
            with bot.log_file.open() as log:
                log.seek(log_size)
                return "transcribing 66.0 s of audio" in log.read()

        await poll(transcribing, timeout=30, what="the transcription to begin")
        bot.kill()
        assert not server.bot_messages(after=sent["id"]), "the transcription had ended before the kill"

        restart = await bot.start()
        assert integrity(data) == "ok"
        assert [r["text"] for r in query(data, "SELECT text FROM feedback")] == ["said before the crash"]
        turns = [r["content"] for r in query(data, "SELECT content FROM chat_turns WHERE role = 'user'")]
        # The killed message is in memory only as a whole question, or not at all: never a part.
        voiced = [t for t in turns if "fellow americans" in t.lower()]
        assert all(t.lower().count("ask not what your country") == 6 for t in voiced), voiced
        await assert_still_serves(server, version)

        # The voice message the kill cut off is taken up again: transcribed and answered, once.
        def replies_to(message: dict) -> list[dict]:
            return [
                m
                for m in server.bot_messages()
                if (m.get("message_reference") or {}).get("message_id") == message["id"]
            ]

        await poll(lambda: len(replies_to(sent)) >= 2, timeout=120, what="the cut-off voice message's answer")
        heard, answer = replies_to(sent)[:2]
        assert heard["content"].startswith(">") and heard["content"].lower().count("ask not what your country") == 6
        assert "haven't learned that yet" in answer["content"], answer["content"]  # the chat engine is off here
        await asyncio.sleep(0.5)
        assert len(replies_to(sent)) == 2, [m["content"][:60] for m in replies_to(sent)]
        asked = "SELECT count(*) AS n FROM chat_turns WHERE role = 'user' AND message_id = ?"
        assert query(data, asked, (int(sent["id"]),))[0]["n"] == 1

        again = await server.send_message(attachments=[("again.wav", JFK.read_bytes())], voice_seconds=11.0)
        [heard, *_] = await server.wait_for_bot_messages(
            after=again["id"], timeout=60, predicate=lambda m: m["content"].startswith(">")
        )
        assert "ask not what your country can do for you" in heard["content"].lower()
        print(f"restart to ready {restart:.2f} s; the cut-off voice message was answered after the restart")
