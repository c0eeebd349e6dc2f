"""Two bot processes of two gateway shards each, on one PostgreSQL database: issue 16's end-to-end proof.

Six servers on four shards (server n on shard n % 4). Process ``a`` runs shards 0-1 (four servers, and
the DMs, which Discord sends shard 0), process ``b`` shards 2-3 (two servers). Each is the real
``trainerbot run`` in a child process (``BotProcess``) with a data directory of its own and the same
``TRAINERBOT_DATABASE_URL``. Who answered is read from each process's own log, where it writes every
REST call it makes with its body (``--log-requests``): a reply is a POST whose nonce names the question.

- every message is answered exactly once, by the process that owns its server: one reply in the fake
  Discord, one POST of its nonce, in that process's log and in no other, one finished claim in the
  shared inbox; the fake sent no event to a shard it is not for;
- what a server's admin teaches answers in that server only, whichever process serves the others;
  what an owner teaches the bot-wide knowledge in a server of ``a`` answers in ``b``'s servers and DMs;
- SIGKILL ``b``: ``a`` goes on answering its servers and the DMs; SIGKILL ``a`` too, start it again:
  it answers what it missed and tells every channel whose training job the kills cut off, ``b``'s
  included, once; start ``b`` again (same shards, same data directory): it answers everything said in
  its servers while it was down, once, with what ``a`` was taught meanwhile; SIGKILL ``a`` once more:
  ``b`` goes on answering, and ``a``, back, answers its servers and the DMs.

No model is trained here (the refit waits an hour): what is taught answers at once from the database,
the state the processes share. A model file is written to the data directory of the process that
trained it, where the others do not look.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGURED_OWNER, OWNER_ID
from tests.databases import PostgresServer
from tests.loopback_discord import FakeDiscord, FakeUser, GuildSetup, shard_of
from tests.loopback_discord.process_bot import BotProcess
from trainerbot.storage.database import open_database

SHARDS = 4
PROCESS_SHARDS = {"a": (0, 1), "b": (2, 3)}
SERVERS = [GuildSetup.on_shard(n, n % SHARDS, SHARDS, extra_users=[CONFIGURED_OWNER]) for n in range(6)]
# discord.http's debug line for each request: "POST <url> with <body> has returned <status>".
POSTED = re.compile(r"POST \S+/channels/(\d+)/messages with (\{.*\}) has returned (\d+)$")
NONCE = re.compile(r"(\d+)[a-z]\d+")  # delivery.answer_nonce: the question's id, a kind letter, a part
FALLBACK = "I haven't learned that yet."


def owner_of(server: GuildSetup | None) -> str:
    """The process whose shards receive a server's events; DMs go to shard 0's."""
    shard = 0 if server is None else shard_of(server.guild_id, SHARDS)
    return next(name for name, shards in PROCESS_SHARDS.items() if shard in shards)


@dataclass(frozen=True)
class Asked:
    """A message sent to the bot, the process that must answer it, and how its answer begins."""

    message: dict[str, Any]
    process: str
    expect: str

    @property
    def id(self) -> int:
        return int(self.message["id"])

    @property
    def channel_id(self) -> int:
        return int(self.message["channel_id"])

    def __str__(self) -> str:
        return f"{self.message['content']!r} in channel {self.channel_id} (process {self.process})"


class Conversation:
    """What the test said, and the bot's replies to it as the fake Discord holds them."""

    def __init__(self, server: FakeDiscord) -> None:
        self.server = server
        self.asked: list[Asked] = []

    async def ask(
        self, where: GuildSetup | None, content: str, expect: str, *, author: FakeUser | None = None
    ) -> Asked:
        if where is None:
            message = await self.server.send_dm(content, author=author)
        else:
            message = await self.server.send_message(content, channel_id=where.channel_id, author=author)
        asked = Asked(message, owner_of(where), expect)
        self.asked.append(asked)
        return asked

    async def ask_everywhere(self, content: str, expect: Callable[[GuildSetup | None], str]) -> list[Asked]:
        """The same message in each server and in a DM."""
        return [await self.ask(where, content, expect(where)) for where in [*SERVERS, None]]

    def replies_to(self, asked: Asked) -> list[dict[str, Any]]:
        """The bot's messages whose nonce names this question (every part of every reply to it)."""
        return [
            reply
            for reply in self.server.bot_messages(asked.channel_id, after=asked.id)
            if (found := NONCE.fullmatch(str(reply.get("nonce") or ""))) and int(found.group(1)) == asked.id
        ]

    async def answered(self, asked: list[Asked], timeout: float = 60) -> None:
        """Waits until each question has its reply, and checks how each reply begins."""
        try:
            await self.server.wait_until(
                lambda: all(self.replies_to(q) for q in asked), timeout, what=f"answers to {len(asked)} messages"
            )
        except TimeoutError:
            missing = [str(q) for q in asked if not self.replies_to(q)]
            raise AssertionError(f"no answer to: {missing}") from None
        for q in asked:
            [reply] = self.replies_to(q)
            assert reply["content"].startswith(q.expect), f"{q}: {reply['content']!r}"

    def replied_among(self, asked: list[Asked]) -> list[Asked]:
        return [q for q in asked if self.replies_to(q)]


def posted_messages(bot: BotProcess) -> list[tuple[int, dict[str, Any]]]:
    """(channel id, body) of each message one process posted, over all its starts (they append to one log file)."""
    found = (POSTED.search(line) for line in bot.log_file.read_text(errors="replace").splitlines())
    return [(int(post.group(1)), json.loads(post.group(2))) for post in found if post and post.group(3) == "200"]


def posted_nonces(bot: BotProcess) -> Counter[str]:
    return Counter(str(body["nonce"]) for _, body in posted_messages(bot) if body.get("nonce") is not None)


@asynccontextmanager
async def two_processes(server: FakeDiscord, database_url: str, home: Path) -> AsyncIterator[dict[str, BotProcess]]:
    env = {
        "TRAINERBOT_DATABASE_URL": database_url,
        "TRAINERBOT_OWNER_IDS": str(OWNER_ID),
        "TRAINERBOT_CHAT_ENGINE": "none",  # the fixed "not learned yet" reply for what nobody taught
        "TRAINERBOT_STT_ENGINE": "none",
        "TRAINERBOT_TTS_ENGINE": "none",
        "TRAINERBOT_AUTO_TRAIN_QUIET_SECONDS": "3600",  # no model: the shared state is the database's
    }
    bots = {
        name: BotProcess(
            server,
            home / name / "data",
            home / name,
            env,
            ["--log-requests", "--shard-count", str(SHARDS), "--shard-ids", ",".join(map(str, shards))],
        )
        for name, shards in PROCESS_SHARDS.items()
    }
    try:
        yield bots
    finally:
        for bot in bots.values():
            bot.kill()


@pytest.fixture
def shared_database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.new_database()
    yield url
    postgres_server.drop(url)


async def poll(condition: Callable[[], object], *, timeout: float, what: str) -> None:
    """Waits for a state outside the fake Discord's view (here, the database), as test_crashes.py does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def claims(database_url: str) -> dict[int, int]:
    """The inbox of the shared database: each message taken on, and whether its handling finished."""
    db = open_database(database_url)
    try:
        return {
            row["message_id"]: row["finished"] for row in db.query("SELECT message_id, finished FROM handled_messages")
        }
    finally:
        db.close()


async def handled_to_the_end(database_url: str, asked: list[Asked]) -> None:
    """Waits until every message is claimed in the shared inbox and its handling has finished."""
    ids = {q.id for q in asked}
    await poll(
        lambda: {i: f for i, f in claims(database_url).items() if i in ids} == dict.fromkeys(ids, 1),
        timeout=30,
        what="every message's handling to finish",
    )


def jobs(database_url: str) -> list[dict[str, Any]]:
    db = open_database(database_url)
    try:
        return [dict(row) for row in db.query("SELECT id, base, status, channel_id FROM jobs ORDER BY id")]
    finally:
        db.close()


async def test_two_processes_of_two_shards_share_one_database(shared_database: str, tmp_path: Path) -> None:
    async with FakeDiscord(SERVERS, shards=SHARDS) as server, two_processes(server, shared_database, tmp_path) as bots:
        a, b = bots["a"], bots["b"]
        talk = Conversation(server)
        # Servers 0, 1, 4, 5 are a's (shards 0, 1); 2 and 3 are b's (shards 2, 3).
        in_a, in_b = SERVERS[0], SERVERS[3]
        assert [owner_of(s) for s in SERVERS] == ["a", "a", "b", "b", "a", "a"]

        for bot in (a, b):  # one after the other: two encoders loading at once on two cores take longer
            await bot.start(timeout=120)
        for shard in range(SHARDS):
            assert [session.connected for session in server.gateway.sessions_of_shard(shard)] == [True]

        # 1. Each process answers its own servers; the DMs are a's.
        greetings = await talk.ask_everywhere("!hi", lambda where: "Hi ")
        await talk.answered(greetings)

        # 2. A server's teaching answers there alone; an owner's bot-wide teaching in a's server answers everywhere.
        taught = [
            await talk.ask(in_a, "!train when do you open? => Server A0 opens at nine.", "Stored 1", author=in_a.admin),
            await talk.ask(in_b, "!train when do you open? => Server B3 opens at ten.", "Stored 1", author=in_b.admin),
            await talk.ask(
                SERVERS[1],
                "!train --global who made you? => The owners made me.",
                "Stored 1 positive example from your message to the bot-wide knowledge",
                author=CONFIGURED_OWNER,
            ),
        ]
        await talk.answered(taught)
        opening = {in_a.guild_id: "Server A0 opens at nine.", in_b.guild_id: "Server B3 opens at ten."}

        def opens(where: GuildSetup | None) -> str:
            return opening.get(where.guild_id, FALLBACK) if where is not None else FALLBACK

        asked = await talk.ask_everywhere("when do you open?", opens)
        asked += await talk.ask_everywhere("who made you?", lambda where: "The owners made me.")
        await talk.answered(asked)

        # 3. b is killed: a goes on answering; what is said in b's servers waits for b. Each kill comes when
        # every message so far is handled to the end (a kill in the middle is test_crashes.py's matter).
        await handled_to_the_end(shared_database, talk.asked)
        b.kill()
        b_down = await talk.ask_everywhere("!hi", lambda where: "Hi ")
        b_down += await talk.ask_everywhere("when do you open?", opens)
        meanwhile = await talk.ask(
            in_a, "!train --global where are you? => At the old harbour.", "Stored 1", author=CONFIGURED_OWNER
        )
        await talk.answered([q for q in [*b_down, meanwhile] if q.process == "a"])
        waiting = [q for q in b_down if q.process == "b"]
        assert len(waiting) == 4 and talk.replied_among(waiting) == [], "someone answered b's servers while b was down"

        # 4. a is killed too, and started again before b: it answers what was said to it meanwhile, and tells
        # the channels of the jobs the kills cut off, b's among them, that they were interrupted.
        await handled_to_the_end(shared_database, [q for q in talk.asked if q.process == "a"])
        a.kill()
        both_down = await talk.ask_everywhere("!hi", lambda where: "Hi ")
        a_ready = await a.start(timeout=120)
        await talk.answered([q for q in both_down if q.process == "a"])
        waiting += [q for q in both_down if q.process == "b"]
        assert talk.replied_among(waiting) == [], "a answered b's servers"
        b_ready = await b.start(timeout=120)
        await talk.answered(waiting)  # b's catch-up, once its shards are back, finds all six
        # b answers with what a was taught while b was down.
        await talk.answered(await talk.ask_everywhere("where are you?", lambda where: "At the old harbour."))

        # 5. a is killed once more, and b goes on answering; the DMs (shard 0's) and a's servers wait for a.
        await handled_to_the_end(shared_database, talk.asked)
        a.kill()
        a_down = await talk.ask_everywhere("!hi", lambda where: "Hi ")
        await talk.answered([q for q in a_down if q.process == "b"])
        waiting = [q for q in a_down if q.process == "a"]
        assert len(waiting) == 5 and talk.replied_among(waiting) == [], "someone answered a's servers while a was down"
        await a.start(timeout=120)
        await talk.answered(waiting)
        await talk.answered(await talk.ask_everywhere("!hi", lambda where: "Hi "))
        await handled_to_the_end(shared_database, talk.asked)

        # Each job a kill cut off (it waited for its quiet spell in the killed process) is said to be
        # interrupted in the channel that started it, once, whichever process found it.
        def notices(job_id: int, channel_id: int) -> list[dict[str, Any]]:
            said = f"Training job #{job_id} was interrupted by a restart."
            return [m for m in server.bot_messages(channel_id) if said in m["content"]]

        interrupted = [job for job in jobs(shared_database) if job["status"] == "interrupted"]
        # Server A0's and the bot-wide base's (a's), and server B3's (b's): all found by a's restart.
        assert {job["base"] for job in interrupted} == {in_a.guild_id, 0, in_b.guild_id}, interrupted
        await server.wait_until(
            lambda: all(notices(job["id"], job["channel_id"]) for job in interrupted),
            timeout=30,
            what="every restart notice",
        )
        assert all(len(notices(job["id"], job["channel_id"])) == 1 for job in interrupted)
        [b_job] = [job for job in interrupted if job["base"] == in_b.guild_id]
        told_by = {
            name
            for name, bot in bots.items()
            for channel_id, body in posted_messages(bot)
            if channel_id == in_b.channel_id and f"Training job #{b_job['id']} was interrupted" in body["content"]
        }
        assert told_by == {"a"}, "b's server was told by a, which found b's job: the channel is not on a's shards"

        # Exactly once, by the owner of its server: one reply in Discord, one POST of it, in that process's log.
        posted = {name: posted_nonces(bot) for name, bot in bots.items()}
        for q in talk.asked:
            [reply] = talk.replies_to(q)
            by = {name: nonces[reply["nonce"]] for name, nonces in posted.items() if nonces[reply["nonce"]]}
            assert by == {q.process: 1}, f"{q}: posted by {by}"
        # (discord.py gives a message sent without a nonce, such as a restart notice, a random number.)
        answer_nonces = (NONCE.fullmatch(nonce) for nonces in posted.values() for nonce in nonces)
        answered_ids = {int(found.group(1)) for found in answer_nonces if found}
        assert answered_ids == {q.id for q in talk.asked}, "a process posted an answer to a message the test never sent"
        assert server.gateway.misrouted() == []
        assert await a.stop() == 0 and await b.stop() == 0
        print(f"{len(talk.asked)} messages answered once each; ready again in {b_ready:.1f} s (b), {a_ready:.1f} s (a)")
