"""Who may use which command: every command, against five kinds of user, in a server and in a DM,
as a prefix command and as a slash command, through the real bot on the loopback Discord.

``TABLE`` is the expected answer, written out by hand (it is the table in docs/reliability.md and
the README); it is not derived from the code. ``CASES`` says how to run each row cheaply and how
to tell that it ran: a command that is allowed must do what it does (a job created, a file sent,
a row stored), and one that is refused must say why and change nothing (no row, no file, no job,
no DM, no registration). A command the table does not cover fails ``test_the_table_covers_every_command``.

Each form runs in one bot session (module-scoped, one event loop), so the 340 cells of a form
share one start-up; each cell checks only what it changed itself.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from tests.conftest import CONFIGURED_OWNER, OWNER_ID, TRAINER, guild_setup
from tests.loopback_discord import FakeDiscord, FakeUser, run_bot
from trainerbot.app import Services, build_services
from trainerbot.config import load_settings
from trainerbot.core.review import SAME_TOPIC
from trainerbot.core.text import split_message
from trainerbot.learning.examples import Example
from trainerbot.learning.model import train
from trainerbot.types import GLOBAL_BASE, ReplyRecord, ReviewItem

pytestmark = pytest.mark.asyncio(loop_scope="module")

# --- the table ---------------------------------------------------------------------------------

ROLES = ("member", "trainer", "administrator", "server owner", "configured owner")
EVERYONE = frozenset(ROLES)
ADMINS = frozenset({"trainer", "administrator", "server owner", "configured owner"})
OWNERS = frozenset({"configured owner"})
NOBODY: frozenset[str] = frozenset()

# member: no role. trainer: holds "Trainer", the configured admin role. administrator: the
# Administrator permission. server owner: owns the guild. configured owner: in TRAINERBOT_OWNER_IDS,
# holds no role. In a server, commands act on its knowledge base. In a DM only the bot's owners are
# admins: what the bot knows there is the bot-wide base, which only owners see (test, errors, jobs,
# job, model) and change (correct; review, answer, dismiss: its review inbox); server-only commands
# are refused there for everyone. In a server, a member's correction is a suggestion for the admins.
#
#   case                who may use it in a server    who may use it in a DM
TABLE: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "hi": (EVERYONE, EVERYONE),
    "help": (EVERYONE, EVERYONE),
    "instruction": (EVERYONE, EVERYONE),
    "test": (EVERYONE, OWNERS),
    "errors": (EVERYONE, OWNERS),
    "jobs": (EVERYONE, OWNERS),
    "job": (EVERYONE, OWNERS),
    "model": (EVERYONE, OWNERS),
    "feedback": (EVERYONE, EVERYONE),
    "correct": (EVERYONE, OWNERS),
    "review": (ADMINS, OWNERS),
    "answer": (ADMINS, OWNERS),
    "dismiss": (ADMINS, OWNERS),
    "forget": (EVERYONE, EVERYONE),  # members: their own messages; admins: the whole channel
    "forget mine": (EVERYONE, EVERYONE),
    "forget all": (ADMINS, OWNERS),
    "forget me": (EVERYONE, EVERYONE),
    "mydata": (EVERYONE, EVERYONE),
    "persona": (EVERYONE, NOBODY),
    "persona <text>": (ADMINS, NOBODY),
    "join": (EVERYONE, NOBODY),
    "leave": (EVERYONE, NOBODY),
    "train": (ADMINS, NOBODY),
    "train --global": (OWNERS, NOBODY),
    "retrain": (ADMINS, NOBODY),
    "retry": (ADMINS, NOBODY),
    "rollback": (ADMINS, NOBODY),
    "select_dataset": (ADMINS, NOBODY),
    "getfile": (ADMINS, NOBODY),
    "archive": (ADMINS, NOBODY),
    "config": (EVERYONE, NOBODY),
    "config <setting>": (ADMINS, NOBODY),
    "sync": (OWNERS, NOBODY),
    "sync here": (OWNERS, NOBODY),
}

ADMIN_ONLY = "Sorry, only the bot's owners and members with an admin role can"
OWNER_ONLY = "Sorry, only the bot's owners can use this command."
SERVER_ONLY = "only works in a server, not in direct messages."
BOT_WIDE_ONLY = "In direct messages this would show the bot-wide knowledge"
DM_CORRECT = "In direct messages only the bot's owners can correct me"
DM_REVIEW = "In direct messages the review inbox is the bot-wide knowledge's"

BYSTANDER = 900_000_000_000_000_777  # someone else whose data must survive every cell


# --- one bot session per form ------------------------------------------------------------------


@dataclass
class Session:
    form: str  # "prefix" or "slash"
    server: FakeDiscord
    services: Services
    bot: Any
    users: dict[str, FakeUser]
    tokens: itertools.count = field(default_factory=itertools.count)

    @property
    def prefix(self) -> str:
        return "!" if self.form == "prefix" else "/"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["prefix", "slash"])
async def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    from trainerbot.adapters.discord.bot import TrainerBot

    settings = load_settings(
        _env_file=None,
        data_dir=tmp_path_factory.mktemp(request.param) / "data",
        owner_ids=[OWNER_ID],
        admin_roles=["Trainer"],
        upload_limit_bytes=100_000,
        chat_engine="none",
        stt_engine="none",
        tts_engine="none",  # `join` then answers without a voice: what matters here is that it ran
    )
    services = build_services(settings)
    prepare_data(services, guild_setup().guild_id)
    try:
        async with (
            FakeDiscord(guild_setup()) as server,
            run_bot(TrainerBot(services, progress_interval=0.05), server) as bot,
        ):
            bot.remove_check(bot.cooldowns)  # who may, not how often: the allowances have tests of their own
            users = dict(
                zip(ROLES, (server.member, TRAINER, server.admin, server.owner, CONFIGURED_OWNER), strict=True)
            )
            yield Session(request.param, server, services, bot, users)
    finally:
        services.close()


def prepare_data(services: Services, guild_id: int) -> None:
    """What the cells need to do something real: files and a dataset directory in the server's folder,
    model versions of the server's base (jobs 1-10) and of the bot-wide base (11-12)."""
    data = services.settings.data_dir
    folder = data / "servers" / str(guild_id)
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "hello.txt").write_bytes(b"hello")
    (folder / "tiny").mkdir()
    (folder / "tiny" / "a.txt").write_text("what is x => x is a letter\n")
    model, _ = train(
        [Example("hello", "hi there"), Example("bye", "see you"), Example("good morning", "hi there")],
        services.models.encoder,
        threshold=services.settings.confidence_threshold,
    )
    model.save(data / "models" / "seed.npz")
    jobs = services.store.jobs
    result = {"examples": 3, "outputs": 2, "holdout_accuracy": None}
    for base, versions in ((guild_id, 10), (GLOBAL_BASE, 2)):  # 10: every rollback a session makes (4 admins)
        for _ in range(versions):
            job = jobs.create(base, requested_by=None, channel_id=None)
            jobs.finish(base, job.id, result=result, model_path="models/seed.npz")


# --- one cell ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One command by one user in one place, and what came back."""

    session: Session
    role: str
    user: FakeUser
    place: str  # "server" or "dm"
    token: str  # unique words for this cell
    channel_id: int
    since: int  # a snowflake older than anything the cell causes
    messages: list[dict[str, Any]] = field(default_factory=list)
    bystander_turns: int = 0  # someone else's messages in the conversation before the command
    reply_id: int = 0  # a reply of the bot where the command is used, for `correct`
    topic_id: int = 0  # an open topic of the review inbox where the command is used

    @property
    def guild_id(self) -> int | None:
        return self.session.server.guild_id if self.place == "server" else None

    @property
    def text(self) -> str:
        return "\n".join(message["content"] for message in self.messages)

    @property
    def store(self) -> Any:
        return self.session.services.store

    def newest(self, table: str) -> dict[str, Any]:
        return dict(self.store.db.query_one(f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1"))

    def files(self, message: dict[str, Any]) -> dict[str, bytes]:
        return self.session.server.files_of(message)

    def dms_since(self) -> list[dict[str, Any]]:
        return self.session.server.bot_messages(self.session.server.dm_channel_id(self.user), after=self.since)


@dataclass(frozen=True)
class Case:
    """How to run one row of the table and how to tell that it did its work."""

    text: str  # the prefix form without the prefix; {token} is replaced
    slash: dict[str, Any]  # the slash form's options; string values have {token} replaced
    did_its_work: Callable[[Run], None]
    refusal: str = ADMIN_ONLY  # what refusing it in a server says
    dm_refusal: str = f"{ADMIN_ONLY} clear everyone's messages from my memory, and only in a server."
    server_only: bool = False  # refused in DMs by the command's check (else by the core, with ``dm_refusal``)
    arrange: Callable[[Run], None] | None = None
    replies: Callable[[Session], int] = lambda session: 1

    @property
    def command(self) -> str:
        return self.text.split()[0]


def turns_in(run: Run, user_id: int) -> int:
    row = run.store.db.query_one(
        "SELECT count(*) AS n FROM chat_turns WHERE conversation_id = ? AND user_id = ?", (run.channel_id, user_id)
    )
    return int(row["n"])


def two_speakers(run: Run) -> None:
    """The conversation where `forget` runs holds a message of the caller's and one of someone else's."""
    for user_id in (run.user.id, BYSTANDER):
        run.store.conversations.add_turn(
            conversation_id=run.channel_id, guild_id=run.guild_id, user_id=user_id, role="user", content="hey"
        )
    run.bystander_turns = turns_in(run, BYSTANDER)


def forgot(*, everyone: Callable[[Run], bool]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert run.text.startswith("Forgotten:"), run.text
        assert turns_in(run, run.user.id) == 0
        assert turns_in(run, BYSTANDER) == (0 if everyone(run) else run.bystander_turns)

    return check


def forgot_me(run: Run) -> None:
    assert run.text.startswith("Forgotten, in every channel and DM:"), run.text
    assert all(rows == [] for rows in run.store.people.data(run.user.id).values())
    assert turns_in(run, BYSTANDER) == run.bystander_turns


def sent_my_data(run: Run) -> None:
    if run.session.form == "slash":
        [message] = run.messages
        assert message["flags"] & 64, "only the person sees their data"  # EPHEMERAL
    elif run.place == "dm":
        [message] = run.messages
    else:
        assert run.text == "I sent you a direct message with everything I have stored about you."
        [message] = run.dms_since()
    [(name, data)] = run.files(message).items()
    assert name.endswith(".json") and json.loads(data)["user_id"] == str(run.user.id)


def ran_the_test(run: Run) -> None:
    assert run.text.startswith("Passed") and " of 1 " in run.text, run.text
    assert set(run.files(run.messages[-1])) == {"test-chart.png", "test-report.json"}
    assert run.newest("test_runs")["user_id"] == run.user.id


def trained(base: Callable[[Run], int]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert "Training job #" in run.text, run.text
        example = run.newest("examples")
        assert (example["input"], example["author_id"], example["base"]) == (f"q{run.token}", run.user.id, base(run))
        assert job_named(run)["base"] == base(run)  # the refit that takes them in (perhaps joined, not new)

    return check


def job_named(run: Run) -> dict[str, Any]:
    """The job a reply names: teaching in a row joins one waiting job, so it need not be the caller's own."""
    named = re.search(r"Training job #(\d+)", run.text)
    assert named, run.text
    return dict(run.store.db.query_one("SELECT * FROM jobs WHERE id = ?", (int(named[1]),)))


def a_reply_here(run: Run) -> None:
    """A reply of the bot where the command is used (a correction finds only a reply given there)."""
    conversations = run.store.conversations
    asked = conversations.add_turn(
        conversation_id=run.channel_id, guild_id=run.guild_id, user_id=BYSTANDER, role="user", content="what is x"
    )
    run.reply_id = run.session.server.ids.next()
    conversations.record_answer(
        conversation_id=run.channel_id,
        guild_id=run.guild_id,
        channel_id=run.channel_id,
        asked=asked,
        answer=ReplyRecord(run.reply_id, None, BYSTANDER, "what is x", "no idea", "fallback", None),
        message_ids=[run.reply_id],
    )


def corrected(run: Run) -> None:
    """An admin's correction is stored as one; anyone else's is a suggestion in the review inbox."""
    if run.role in ADMINS:
        stored("corrections", "correction", "{token}")(run)
        assert run.text.startswith("Thanks! From now on"), run.text
        return
    item = run.newest("review_items")
    assert (item["kind"], item["suggestion"], item["user_id"]) == ("suggestion", run.token, run.user.id), item
    assert run.text.startswith("Thanks! I passed your correction"), run.text


def a_topic_here(run: Run) -> None:
    """An open topic in the review inbox of the base where the command is used: a bystander's question."""
    vector = np.random.default_rng(list(run.token.encode())).standard_normal(384).astype(np.float32)
    item = ReviewItem("unknown", f"question {run.token}", BYSTANDER, asked_by=BYSTANDER)
    base = run.guild_id if run.guild_id is not None else GLOBAL_BASE
    run.topic_id = run.store.review.add(base, item, vector / np.linalg.norm(vector), SAME_TOPIC)


def reviewed(run: Run) -> None:
    assert run.text.startswith("Review inbox (") and f"**#{run.topic_id}**" in run.text, run.text
    assert set(run.files(run.messages[-1])) == {"review-topics.png"}


def answered(run: Run) -> None:
    assert run.text.startswith(f"Topic #{run.topic_id} answered"), run.text
    example = run.newest("examples")
    base = run.guild_id if run.guild_id is not None else GLOBAL_BASE
    assert (example["input"], example["output"], example["author_id"], example["base"], example["source"]) == (
        f"question {run.token}",
        f"answer {run.token}",
        run.user.id,
        base,
        f"review:{run.topic_id}",
    )


def dismissed(run: Run) -> None:
    assert run.text.startswith(f"Topic #{run.topic_id} dismissed"), run.text
    row = run.store.db.query_one("SELECT status, closed_by FROM review_topics WHERE id = ?", (run.topic_id,))
    assert (row["status"], row["closed_by"]) == ("dismissed", run.user.id)


def retrained(run: Run) -> None:
    job = job_named(run)
    assert job["base"] == run.guild_id and job["status"] in ("queued", "running", "succeeded"), job


def rolled_back(run: Run) -> None:
    retired = re.search(r"\(version (\d+) is retired\)", run.text)
    assert retired, run.text
    status = run.store.db.query_one("SELECT status FROM model_versions WHERE id = ?", (int(retired[1]),))["status"]
    assert status == "rolled_back"


def selected(run: Run) -> None:
    assert "Dataset `tiny` selected" in run.text, run.text
    assert run.newest("datasets")["created_by"] == run.user.id


def archived(run: Run) -> None:
    made = re.search(r"into `(archives/notes-[\w-]+\.zip)`", run.text)
    assert made and run.text.startswith("Archived 1 file from `notes`"), run.text
    assert (run.session.services.settings.data_dir / "servers" / str(run.guild_id) / made[1]).is_file()


def synced(where: str, commands: Callable[[FakeDiscord], list[dict[str, Any]]]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert run.text.startswith("Synced") and where in run.text, run.text
        assert {c["name"] for c in commands(run.session.server)} == {c.name for c in run.session.bot.commands}

    return check


def where(*, server: Callable[[Run], None], dm: Callable[[Run], None]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        (server if run.place == "server" else dm)(run)

    return check


def config_set(run: Run) -> None:
    assert run.text.startswith("Admin roles here are now: `Trainer`, `Keepers"), run.text
    roles = run.store.knowledge.settings(run.guild_id).admin_roles
    assert roles == ("Trainer", f"Keepers{run.token}"), roles


def says(*words: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert all(word in run.text for word in words), run.text

    return check


def prefixed(word: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert f"`{run.session.prefix}{word}`" in run.text, run.text

    return check


def stored(table: str, column: str, value: str, by: str = "user_id") -> Callable[[Run], None]:
    def check(run: Run) -> None:
        row = run.newest(table)
        assert row[column] == value.replace("{token}", run.token) and row[by] == run.user.id, row

    return check


def sent_the_file(run: Run) -> None:
    assert run.files(run.messages[-1]) == {"hello.txt": b"hello"}, run.text


def persona_set(run: Run) -> None:
    row = run.store.db.query_one("SELECT text FROM personas WHERE conversation_id = ?", (run.channel_id,))
    assert row is not None and row["text"] == f"Be {run.token}", run.text


TEST_CASES = '[{"input": "hello", "output": "hi there"}]'
CASES: dict[str, Case] = {
    "hi": Case("hi", {}, says("Hi ")),
    "help": Case("help", {}, prefixed("hi")),
    "instruction": Case(
        "instruction",
        {},
        says("How to use trainerbot", "this server's folder"),
        replies=lambda s: len(split_message(s.services.conversation.instructions().text.replace("{prefix}", "!"))),
    ),
    "test": Case(f"test {TEST_CASES}", {"cases": TEST_CASES}, ran_the_test, dm_refusal=BOT_WIDE_ONLY),
    # "No failures ..." or "Failures of the last test run"
    "errors": Case("errors", {}, says("ailures"), dm_refusal=BOT_WIDE_ONLY),
    "jobs": Case("jobs", {}, says("Recent training jobs:", "succeeded"), dm_refusal=BOT_WIDE_ONLY),
    # Job 1 is the server's: in a DM, where the bot-wide base's jobs are, it is not found.
    "job": Case(
        "job 1",
        {"job_id": 1},
        where(server=says("Training job #1 done"), dm=says("There is no job #1 here.")),
        dm_refusal=BOT_WIDE_ONLY,
    ),
    "model": Case("model", {}, says("answers (job #"), dm_refusal=BOT_WIDE_ONLY),
    "feedback": Case("feedback {token}", {"text": "{token}"}, stored("feedback", "text", "{token}")),
    "correct": Case(
        "correct {reply} {token}",
        {"message": "{reply}", "correction": "{token}"},
        corrected,
        dm_refusal=DM_CORRECT,
        arrange=a_reply_here,
    ),
    "review": Case("review", {}, reviewed, dm_refusal=DM_REVIEW, arrange=a_topic_here),
    "answer": Case(
        "answer {topic} answer {token}",
        {"topic": "{topic}", "answer": "answer {token}"},
        answered,
        dm_refusal=DM_REVIEW,
        arrange=a_topic_here,
    ),
    "dismiss": Case("dismiss {topic}", {"topic": "{topic}"}, dismissed, dm_refusal=DM_REVIEW, arrange=a_topic_here),
    "forget": Case(
        "forget",
        {},
        forgot(everyone=lambda run: run.role in (ADMINS if run.place == "server" else OWNERS)),
        arrange=two_speakers,
    ),
    "forget mine": Case("forget mine", {"whose": "mine"}, forgot(everyone=lambda run: False), arrange=two_speakers),
    "forget all": Case("forget all", {"whose": "all"}, forgot(everyone=lambda run: True), arrange=two_speakers),
    "forget me": Case("forget me", {"whose": "me"}, forgot_me, arrange=two_speakers),
    "mydata": Case("mydata", {}, sent_my_data),
    "persona": Case("persona", {}, says("The persona here"), server_only=True),
    "persona <text>": Case("persona Be {token}", {"text": "Be {token}"}, persona_set, server_only=True),
    "join": Case("join", {}, says("text-to-speech is turned off"), server_only=True),
    "leave": Case("leave", {}, says("I'm not in a voice channel here."), server_only=True),
    "train": Case(
        "train q{token} => a{token}",
        {"data": "q{token} => a{token}"},
        trained(lambda run: run.session.server.guild_id),
        server_only=True,
    ),
    "train --global": Case(
        "train --global q{token} => a{token}",
        {"data": "q{token} => a{token}", "bot_wide": True},
        trained(lambda run: GLOBAL_BASE),
        refusal="Sorry, only the bot's owners can teach the bot-wide knowledge",
        server_only=True,
    ),
    "retrain": Case("retrain", {}, retrained, server_only=True),
    # Job 1 succeeded, so the retry stops at once with why: the command passed the permission check.
    "retry": Case("retry 1", {"job_id": 1}, says("#1 succeeded; there is nothing to retry"), server_only=True),
    "rollback": Case("rollback", {}, rolled_back, server_only=True),
    "select_dataset": Case("select_dataset tiny", {"directory": "tiny"}, selected, server_only=True),
    "getfile": Case(
        "getfile notes/hello.txt",
        {"path": "notes/hello.txt"},
        sent_the_file,
        server_only=True,
    ),
    "archive": Case("archive notes", {"directory": "notes"}, archived, server_only=True),
    "config": Case("config", {}, says("This server's settings", "admin roles"), server_only=True),
    "config <setting>": Case(
        "config admin-roles Trainer, Keepers{token}",
        {"setting": "admin-roles Trainer, Keepers{token}"},
        config_set,
        server_only=True,
    ),
    "sync": Case("sync", {}, synced("every server", lambda s: s.global_commands), refusal=OWNER_ONLY, server_only=True),
    "sync here": Case(
        "sync here",
        {"scope": "here"},
        synced("this server", lambda s: s.guild_commands.get(s.guild_id, [])),
        refusal=OWNER_ONLY,
        server_only=True,
    ),
}


def snapshot(session: Session, user: FakeUser) -> dict[str, Any]:
    """What a refused command must leave as it was. Training jobs started by earlier cells may still
    be running: what they write (progress, model versions, embeddings, model files) is left out."""
    db = session.services.store.db
    counted = ("examples", "datasets", "jobs", "feedback", "reactions", "corrections", "test_runs", "replies")
    counted += ("review_items", "review_topics", "review_examples")
    data = session.services.settings.data_dir
    return {
        "rows": {table: db.query_one(f"SELECT count(*) AS n FROM {table}")["n"] for table in counted},
        "turns": [tuple(r) for r in db.query("SELECT id, conversation_id, user_id FROM chat_turns ORDER BY id")],
        "personas": [tuple(r) for r in db.query("SELECT conversation_id, text FROM personas ORDER BY 1")],
        "topics": [tuple(r) for r in db.query("SELECT id, status, closed_by FROM review_topics ORDER BY id")],
        "rolled back": [r["id"] for r in db.query("SELECT id FROM model_versions WHERE status = 'rolled_back'")],
        "selected": session.services.store.knowledge.selected_dataset_id(session.server.guild_id),
        "settings": session.services.store.knowledge.settings(session.server.guild_id),
        "files": sorted(
            path.relative_to(data).as_posix()
            for path in data.rglob("*")
            if path.is_file() and path.parts[len(data.parts)] != "models" and path.parent != data  # the database
        ),
        "registrations": [r.path for r in session.server.requests if r.method == "PUT" and "commands" in r.path],
        "dms": len(session.server.bot_messages(session.server.dm_channel_id(user))),
    }


async def run_cell(session: Session, name: str, role: str, place: str) -> tuple[Run, dict[str, Any], bool]:
    case, user = CASES[name], session.users[role]
    server = session.server
    token = f"tok{next(session.tokens)}x"
    channel_id = server.dm_channel_id(user) if place == "dm" else server.channel_id
    run = Run(session, role, user, place, token, channel_id, since=0)
    if case.arrange is not None:
        case.arrange(run)
    before = snapshot(session, user)
    run.since = server.ids.next()
    allowed = role in TABLE[name][0 if place == "server" else 1]
    count = case.replies(session) if allowed else 1

    def fill(text: str) -> str:
        return (
            text.replace("{token}", token).replace("{reply}", str(run.reply_id)).replace("{topic}", str(run.topic_id))
        )

    if session.form == "prefix":
        sent = await server.send_message(session.prefix + fill(case.text), author=user, channel_id=channel_id)
        run.messages = await server.wait_for_bot_messages(channel_id, after=sent["id"], count=count)
    else:
        options = {k: fill(v) if isinstance(v, str) else v for k, v in case.slash.items()}
        handle = await server.invoke_slash(case.command, options, user=user, dm=place == "dm")
        run.messages = await handle.wait_messages(count)
    assert len(run.messages) == count, [m["content"] for m in run.messages]
    return run, before, allowed


# --- the tests ---------------------------------------------------------------------------------


CELLS = [(name, role, place) for name in TABLE for place in ("server", "dm") for role in ROLES]


@pytest.mark.parametrize(("name", "role", "place"), CELLS, ids=[f"{n}-{r}-{p}".replace(" ", "_") for n, r, p in CELLS])
async def test_permission(session: Session, name: str, role: str, place: str) -> None:
    case = CASES[name]
    run, before, allowed = await run_cell(session, name, role, place)
    if allowed:
        assert not any(text in run.text for text in (ADMIN_ONLY, OWNER_ONLY, SERVER_ONLY)), run.text
        case.did_its_work(run)
        return
    if place == "dm" and case.server_only:
        expected = f"`{session.prefix}{case.command}` {SERVER_ONLY}"
    elif place == "dm":
        expected = case.dm_refusal
    else:
        expected = case.refusal
    [message] = run.messages
    assert expected in message["content"], message["content"]
    assert not message["attachments"]
    assert snapshot(session, run.user) == {**before, "dms": before["dms"] + (place == "dm")}


async def test_the_table_covers_every_command(session: Session) -> None:
    prefix_commands = {command.qualified_name for command in session.bot.walk_commands()}
    slash_commands = {command.name for command in session.bot.tree.get_commands()}
    assert set(CASES) == set(TABLE)
    assert {case.command for case in CASES.values()} == prefix_commands == slash_commands


async def test_slash_commands_are_offered_in_dms_only_where_they_work(session: Session) -> None:
    """What Discord is told when the commands are registered: server-only commands are not listed in DMs."""
    server = session.server
    sent = await server.send_message("!sync", author=CONFIGURED_OWNER)
    await server.wait_for_bot_messages(after=sent["id"], predicate=lambda m: m["content"].startswith("Synced"))
    registered = {command["name"]: command for command in server.global_commands}
    usable_in_dms = {case.command for name, case in CASES.items() if TABLE[name][1]}
    for name, command in registered.items():
        if name in usable_in_dms:
            assert command["dm_permission"] is True and command.get("contexts") in (None, [0, 1, 2]), command
        else:
            assert command["dm_permission"] is False and command["contexts"] == [0], command
