"""Simulated users for the load test (tests/test_load.py) and its benchmark (bench/load.py).

Each simulated user has a channel of their own in the loopback guild, so that every answer can be
told apart, and acts like a person: sends a message, waits for the answer, sends the next. The mix
is greetings, taught questions, feedback, 👍 on answers, questions for the chat engine, and a few
heavy commands (a test run, a voice message, and a training job from the admins). Everything runs
for real: discord.py, the fake Discord, SQLite, MiniLM, llama.cpp and Whisper.

``run_load`` drives a bot in this process (``loaded_bot``); ``run_users`` is its part that needs only
the fake Discord and the bot's store, which bench/scale.py uses to drive bots in processes of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.loopback_discord import FakeDiscord, FakeUser, GuildSetup, run_bot
from tests.loopback_discord.payloads import EVERYONE_PERMISSIONS, GUILD_ID_STRIDE
from trainerbot.app import Services, build_services
from trainerbot.config import load_settings
from trainerbot.storage.store import Store
from trainerbot.types import Caller, Place

TAUGHT = {
    "what time do you open": "We open at 9 every morning.",
    "where is the shop": "At 12 Harbour Street, next to the bakery.",
    "how do i reset my password": "Use the 'forgot password' link on the sign-in page.",
    "do you ship abroad": "Yes, to every country in the EU.",
    "can i pay by card": "Yes, every major card is accepted.",
    "how long does delivery take": "Two to four working days.",
}
CHATTER = [
    "tell me one fun fact about otters",
    "what is a good name for a goldfish",
    "say something kind about mondays",
    "give me a tip for learning to juggle",
]
CLIP = Path(__file__).resolve().parent / "data" / "audio" / "cards_001.wav"  # a voice message, if there
ADMIN_ROLE = "Trainer"
LOAD_OWNER_ID = 900_000_000_000_000_999
FIRST_USER_ID = 900_000_000_000_010_000
FIRST_CHANNEL_ID = 900_000_000_000_020_000
PROBLEMS = ("went wrong", "took too long", "failed while", "couldn't", "can't reach")


def load_guild(users: int, admins: int = 2) -> GuildSetup:
    """A guild with ``users`` members, the first ``admins`` of them with the admin role, each with a channel."""
    [setup] = load_guilds(users, admins=admins)
    return setup


def load_guilds(users: int, guilds: int = 1, shard_count: int = 1, admins: int = 2) -> list[GuildSetup]:
    """The ``users`` spread over ``guilds`` guilds in turn (user n in guild n % guilds), guild g on shard
    g % ``shard_count``; users 0 to ``admins`` - 1 hold the admin role in theirs; user n's channel is
    FIRST_CHANNEL_ID + n, whatever the guild. One guild is ``load_guild``'s, with the default guild's ids."""
    setups = []
    for g in range(guilds):
        mine = range(g, users, guilds)
        people = [FakeUser(FIRST_USER_ID + n, f"user{n}", role_names=(ADMIN_ROLE,) if n < admins else ()) for n in mine]
        rooms = {f"room-{n}": FIRST_CHANNEL_ID + n for n in mine}
        shift = g * GUILD_ID_STRIDE  # as GuildSetup.nth moves the rest of the guild's ids
        setup = GuildSetup.on_shard(
            g,
            g % shard_count,
            shard_count,
            extra_users=people,
            text_channels={"general": FIRST_CHANNEL_ID - 1 + shift, **rooms},
        )
        setup.roles[ADMIN_ROLE] = (900_000_000_000_000_303 + shift, EVERYONE_PERMISSIONS)
        setups.append(setup)
    return setups


@asynccontextmanager
async def loaded_bot(data_dir: Path, users: int, **overrides: Any) -> AsyncIterator[tuple[FakeDiscord, Services]]:
    """The real bot with the default engines (short chat replies, no voice channel) on a load guild."""
    from trainerbot.adapters.discord.bot import TrainerBot

    options: dict[str, Any] = {"chat_engine": "local", "chat_max_reply_tokens": 24, "tts_engine": "none"}
    settings = load_settings(
        _env_file=None, data_dir=data_dir, owner_ids=[LOAD_OWNER_ID], admin_roles=["Trainer"], **options | overrides
    )
    services = build_services(settings)
    try:
        async with FakeDiscord(load_guild(users)) as server, run_bot(TrainerBot(services), server):
            yield server, services
    finally:
        services.close()


def rss_mb(services: Services | None = None) -> float:
    """The process's resident memory now (Linux), in MB, with llama-server's when the chat engine runs one."""
    pids = ["self"]
    process = getattr(services.engine, "_process", None) if services is not None else None
    if process is not None and process.poll() is None:
        pids.append(str(process.pid))
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/statm") as statm:
            total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total / 1e6


@dataclass
class Figures:
    users: int
    messages: int = 0
    timed_messages: int = 0  # of ``messages``, those sent in the timed run (after the warm-up)
    seconds: float = 0.0
    hi_ms: list[float] = field(default_factory=list)
    # The same greetings, from the message's creation to the answer's, both by the fake Discord's clock: the
    # bot's part alone, without the time this process took to notice the answer.
    hi_at_fake_ms: list[float] = field(default_factory=list)
    answer_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    slowed_down: int = 0  # cooldown replies: answers, not errors
    warm_up_turns: int = 0
    rss_warm_mb: float = 0.0
    rss_after_mb: float = 0.0
    longest_line: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "messages": self.messages,
            "seconds": round(self.seconds, 1),
            "messages_per_s": round(self.timed_messages / self.seconds, 2) if self.seconds else None,
            "errors": len(self.errors),
            "hi_ms": spread(self.hi_ms),
            "hi_at_fake_ms": spread(self.hi_at_fake_ms),
            "answer_median_ms": {k: round(statistics.median(v)) for k, v in self.answer_ms.items() if v},
            "slowed_down": self.slowed_down,
            "warm_up_turns": self.warm_up_turns,
            "rss_warm_mb": round(self.rss_warm_mb),
            "rss_after_mb": round(self.rss_after_mb),
            "rss_growth": round(self.rss_after_mb / self.rss_warm_mb - 1, 3) if self.rss_warm_mb else None,
            "longest_line": self.longest_line,
        }


def spread(values: list[float]) -> dict[str, Any]:
    """How many, the median, the 99th percentile and the largest."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 1) if ordered else None,
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1) if ordered else None,
        "max": round(ordered[-1], 1) if ordered else None,
    }


class ErrorLog(logging.Handler):
    """Keeps every ERROR the bot logs during the run: a load test passes only without any."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("trainerbot") or record.name.startswith("discord"):
            self.records.append(f"{record.name}: {record.getMessage()}")


class SimulatedUser:
    """``store``: the bot's, where an answer is complete once stored (``services.store``, or the same database
    opened by whoever drives a bot in another process)."""

    def __init__(self, server: FakeDiscord, store: Store, user: FakeUser, channel_id: int, figures: Figures):
        self.server, self.store, self.user, self.channel_id, self.figures = (server, store, user, channel_id, figures)
        guild = server.guild_of(channel_id)
        self.place = Place(guild.guild_id if guild is not None else None, channel_id)
        self.answers: list[dict[str, Any]] = []

    async def send(self, content: str, **kwargs: Any) -> dict[str, Any]:
        self.figures.messages += 1
        return await self.server.send_message(content, author=self.user, channel_id=self.channel_id, **kwargs)

    async def command(self, content: str, kind: str, **kwargs: Any) -> dict[str, Any]:
        """A command; its answer is the bot's next message in this user's channel."""
        started = time.perf_counter()
        sent = await self.send(content, **kwargs)
        [reply, *_] = await self.server.wait_for_bot_messages(self.channel_id, after=sent["id"], timeout=120)
        self._note(kind, started, reply["content"])
        if kind == "hi":
            at_fake = datetime.fromisoformat(reply["timestamp"]) - datetime.fromisoformat(sent["timestamp"])
            self.figures.hi_at_fake_ms.append(at_fake.total_seconds() * 1000)
        return reply

    async def ask(self, content: str, kind: str, **kwargs: Any) -> None:
        """A message the bot answers (taught answer, chat engine, voice): complete once stored."""
        started = time.perf_counter()
        sent = await self.send(content, **kwargs)
        conversations = self.store.conversations

        def answered(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
            for message in candidates:
                reply = conversations.reply(self.place, int(message["id"]))
                if reply is not None and reply.user_message_id == int(sent["id"]):
                    return message
                if any(problem in message["content"] for problem in PROBLEMS):
                    return message
            return None

        # Polled: an answer is complete once stored, and storing it changes nothing the fake Discord sees.
        deadline = time.monotonic() + 300
        while True:
            candidates = self.server.bot_messages(self.channel_id, after=sent["id"])
            message = await asyncio.to_thread(answered, candidates) if candidates else None
            if message is not None:
                break
            if time.monotonic() > deadline:
                self.figures.errors.append(f"{self.user.username}: no answer to {content!r} in 300 s")
                return
            await asyncio.sleep(0.05)
        self.answers.append(message)
        self._note(kind, started, message["content"])

    def _note(self, kind: str, started: float, reply: str) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self.figures.answer_ms.setdefault(kind, []).append(elapsed)
        if kind == "hi":
            self.figures.hi_ms.append(elapsed)
        if reply.startswith("Slow down a little"):
            self.figures.slowed_down += 1
        elif any(problem in reply for problem in PROBLEMS):
            self.figures.errors.append(f"{self.user.username} ({kind}): {reply[:200]}")

    async def act(self, action: str, rng: random.Random, voice: bytes | None) -> None:
        if action == "hi":
            await self.command("!hi", "hi")
        elif action == "taught":
            await self.ask(rng.choice(list(TAUGHT)), "taught")
        elif action == "feedback":
            await self.command(f"!feedback nice bot, number {rng.randint(1, 999)}", "feedback")
        elif action == "rate" and self.answers:
            await self.server.add_reaction(rng.choice(self.answers)["id"], "👍", user=self.user)
            self.figures.messages += 1
        elif action == "chat":
            await self.ask(rng.choice(CHATTER), "chat")
        elif action == "test":
            cases = json.dumps([{"input": q, "output": a} for q, a in list(TAUGHT.items())[:3]])
            await self.command(f"!test {cases}", "test")
        elif action == "voice" and voice is not None:
            await self.ask("", "voice", attachments=[("voice-message.ogg", voice)], voice_seconds=3.0)
        elif action == "train":
            await self.command("!train what are your hours => We open at 9 every morning.", "train")
        else:
            await self.command("!hi", "hi")
        await asyncio.sleep(rng.uniform(0, 0.05))  # a person's pause between messages


def plan(index: int, messages: int, rng: random.Random, *, admin: bool, voice: bool) -> list[str]:
    """What one user will send: mostly light, a little chat, at most one heavy command."""
    light = ["hi"] * 5 + ["taught"] * 6 + ["feedback"] * 3 + ["rate"] * 2 + ["chat"] * 2
    actions = [rng.choice(light) for _ in range(messages - 1)]
    heavy = "train" if admin else "voice" if voice else "test" if index % 3 == 0 else "hi"
    actions.insert(rng.randrange(len(actions) + 1), heavy)
    return actions


async def teach(services: Services, guild_id: int) -> None:
    """The taught answers, trained for real before the run (a job in its worker process), in the guild's base."""
    owner = Caller(user_id=1, name="load", is_owner=True, guild_id=guild_id)
    text = "\n".join(f"{q} => {a}\n{q}? => {a}" for q, a in TAUGHT.items())
    started = await asyncio.to_thread(services.teaching.train, owner, text, [])
    deadline = time.monotonic() + 300
    while not (await asyncio.to_thread(services.teaching.job_status, started.base, started.job_id))[1]:
        assert time.monotonic() < deadline, "the taught answers did not finish training"
        await asyncio.sleep(0.2)


async def run_load(
    server: FakeDiscord,
    services: Services,
    *,
    users: int,
    messages: int,
    seed: int = 5,
    voice_clip: Path | None = None,
    voice_users: int = 3,
    fill_cache: bool = True,
) -> Figures:
    """Teaches the bot in this process, then ``run_users``; the ERRORs the bot logs meanwhile count as errors.

    ``fill_cache``: warm up until the chat engine's state cache is nearly full (for memory figures).
    """
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        await teach(services, server.guild_id)
        figures = await run_users(
            server,
            services.store,
            users=users,
            messages=messages,
            seed=seed,
            voice_clip=voice_clip,
            voice_users=voice_users,
            # The local engine's cache of conversation states grows to its cap and stays there; most of
            # the memory a run adds otherwise is that cache filling up, so the warm-up runs until it is nearly full.
            warm_up_turns=8 if fill_cache else 1,
            cache_fill=lambda: getattr(services.engine, "cache_fill", 1.0),  # engines without such a cache: one turn
            memory_mb=lambda: rss_mb(services),
        )
    finally:
        logging.getLogger().removeHandler(errors)
    figures.errors += errors.records
    queues = services.queues
    figures.longest_line = {
        "replies": queues.replies.longest_line,
        "transcriptions": queues.transcriptions.longest_line,
    }
    return figures


async def run_users(
    server: FakeDiscord,
    store: Store,
    *,
    users: int,
    messages: int,
    seed: int = 5,
    voice_clip: Path | None = None,
    voice_users: int = 3,
    warm_up_turns: int = 1,
    cache_fill: Callable[[], float] = lambda: 1.0,
    memory_mb: Callable[[], float] = lambda: 0.0,
) -> Figures:
    """Warms up, reads memory, runs every user's plan at once, reads memory again; returns the figures.

    The users are the load guilds' (``load_guilds``), in every guild of ``server``; the bot is taught already.
    The warm-up: every user asks the chat engine, up to ``warm_up_turns`` times until ``cache_fill()`` is
    0.9 or more, and each heavy kind runs once, so that what is loaded on first use is loaded before
    ``memory_mb()`` is read.
    """
    from tests.test_speech import to_ogg_opus

    figures = Figures(users=users)
    rng = random.Random(seed)
    voice = to_ogg_opus(voice_clip.read_bytes()) if voice_clip is not None and voice_clip.exists() else None
    people = sorted(
        (u for guild in server.guilds for u in guild.extra_users if u.id >= FIRST_USER_ID), key=lambda u: u.id
    )
    simulated = [
        SimulatedUser(server, store, person, FIRST_CHANNEL_ID + n, figures) for n, person in enumerate(people[:users])
    ]
    for turn in range(warm_up_turns):
        warm = [user.ask(CHATTER[(n + turn) % len(CHATTER)], "warm-up") for n, user in enumerate(simulated)]
        await asyncio.gather(*warm)
        figures.warm_up_turns = turn + 1
        if cache_fill() >= 0.9:
            break
    await simulated[-1].act("test", rng, voice)
    if voice is not None:
        await simulated[-1].act("voice", rng, voice)
    figures.rss_warm_mb = memory_mb()
    before = figures.messages
    started = time.perf_counter()
    plans = [
        plan(
            n,
            messages,
            random.Random(rng.random()),
            admin=ADMIN_ROLE in user.user.role_names,
            voice=2 <= n < 2 + voice_users,  # the first two are admins
        )
        for n, user in enumerate(simulated)
    ]

    async def run(user: SimulatedUser, actions: list[str]) -> None:
        user_rng = random.Random(user.user.id)
        for action in actions:
            await user.act(action, user_rng, voice)

    await asyncio.gather(*(run(user, actions) for user, actions in zip(simulated, plans, strict=True)))
    figures.seconds = time.perf_counter() - started
    figures.timed_messages = figures.messages - before
    figures.rss_after_mb = memory_mb()
    return figures
