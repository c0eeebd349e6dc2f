"""The walls between servers: every command, in both forms, run from outside server A by four kinds
of people, against A's data and files, through the real bot on a loopback Discord hosting two guilds.

Server A has taught its bot an FAQ, trained three model versions, run a test, corrected a reply,
set a persona and its own admin roles, keeps files in its folder, has a question and a member's
suggestion waiting in its review inbox, and an audit trail of who changed what; every piece of it
carries a secret word. The people, none of whom is an admin of A:

- ``owner``: a bot owner (TRAINERBOT_OWNER_IDS), a member of both guilds, acting in server B;
- ``B's admin``: holds B's Administrator role, and is a plain member of A; acting in B;
- ``B's member``: a plain member of B; acting in B;
- ``DM user``: A's own admin, in a direct message with the bot (DMs only reach the bot-wide base).

``TABLE`` is written by hand: for each command (and variants that aim at A's things by name, id
or path), what each person must be told. Every cell also checks that nothing of A's reached the
person (message text, attached files, zips unpacked, DMs) and that A's data is exactly as it was.
A command the table does not cover fails ``test_the_table_covers_every_command``; the final tests
ask A's own members that A still answers as taught, and check that no chat prompt written for
B or a DM held A's examples.
"""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import CONFIGURED_OWNER, OWNER_ID
from tests.doubles import ScriptedEngine
from tests.loopback_discord import FakeDiscord, FakeUser, GuildSetup, run_bot
from trainerbot.app import Services, build_services
from trainerbot.config import load_settings
from trainerbot.core.review import SAME_TOPIC
from trainerbot.core.text import split_message
from trainerbot.learning.jobs import model_file
from trainerbot.learning.model import train
from trainerbot.types import Example, Place, ReplyRecord, ReviewItem

pytestmark = pytest.mark.asyncio(loop_scope="module")

# --- server A and its secrets ---------------------------------------------------------------------

A_ANSWER = "Guild A opens at seven, secret-answer."
A_WHERE = "Guild A is at the harbour, secret-answer."
A_FILE = b"secret-file of guild A"
A_CASE = "secret-case of guild A"
A_QUESTION = "secret-question asked in guild A"
A_PERSONA = "You are the secret-persona of guild A."
A_ROLE = "Secret-Keepers"
SECRETS = ("secret-answer", "secret-file", "secret-case", "secret-question", "secret-persona", A_ROLE)
B_ANSWER = "Guild B opens at noon."
CHAT = "A chat reply, written for whoever asked."

A = GuildSetup()
B = GuildSetup.nth(1, extra_users=[CONFIGURED_OWNER, A.admin.with_roles()])  # A's admin: a plain member of B
A.extra_users.append(CONFIGURED_OWNER)  # the bot's owner is in both servers, with no role
A.extra_users.append(B.admin.with_roles())  # B's admin is a plain member of A


@dataclass
class Seeded:
    """Ids of A's things that the commands aim at."""

    reply_id: int = 0  # a reply of the bot in A
    failed_job: int = 0
    succeeded_job: int = 0
    trained: list[int] = field(default_factory=list)  # jobs that made A's three model versions
    topic: int = 0  # an open question topic of A's review inbox
    suggestion: int = 0  # a member's suggestion waiting there


# --- the table ------------------------------------------------------------------------------------

ACTORS = ("owner", "B's admin", "B's member", "DM user")
ADMIN_ONLY = "Sorry, only the bot's owners and members with an admin role can"
OWNER_ONLY = "Sorry, only the bot's owners can"
SERVER_ONLY = "only works in a server, not in direct messages."
BOT_WIDE_ONLY = "In direct messages this would show the bot-wide knowledge"
DM_CORRECT = "In direct messages only the bot's owners can correct me"
DM_REVIEW = "In direct messages the review inbox is the bot-wide knowledge's"
NO_TOPIC = "There is no topic #{a_topic} here."
OUTSIDE = "is outside this server's folder"
NO_REPLY = "I can't find a reply of mine with that link or id in this channel."
NOT_TRAINED = "No model has been trained for this server yet."
Expect = str | tuple[str, ...]  # a text the answer holds, or any one of several


def each(owner: Expect, admin: Expect, member: Expect, dm: Expect) -> dict[str, Expect]:
    return dict(zip(ACTORS, (owner, admin, member, dm), strict=True))


def admins(allowed: Expect, dm: Expect = SERVER_ONLY) -> dict[str, Expect]:
    """A command for B's admins (and owners): B's member is refused, the DM user told it is for servers."""
    return each(allowed, allowed, ADMIN_ONLY, dm)


TEST_CASES = '[{"input": "when do you open?", "output": "whenever"}]'

#   row                    prefix form (no prefix)          slash options                 what each is told
TABLE: dict[str, tuple[str, dict[str, Any], dict[str, Expect]]] = {
    "hi": ("hi", {}, each("Hi ", "Hi ", "Hi ", "Hi ")),
    "help": ("help", {}, each("Teach this server's bot", "Teach this server's bot", "For admins: ", "These work here")),
    "help train": ("help train", {"command": "train"}, each("train", "train", "train", "train")),
    "instruction": ("instruction", {}, each("How to use trainerbot", *["How to use trainerbot"] * 3)),
    "test": ("test " + TEST_CASES, {"cases": TEST_CASES}, each(*["Passed 0 of 1"] * 3, BOT_WIDE_ONLY)),
    "errors": ("errors", {}, each(*[("No failures", "Failures of the last test run")] * 3, BOT_WIDE_ONLY)),
    "jobs": ("jobs", {}, each(*["Recent training jobs:"] * 3, BOT_WIDE_ONLY)),
    "job of A": ("job {a_job}", {"job_id": "{a_job}"}, each(*["There is no job #{a_job} here."] * 3, BOT_WIDE_ONLY)),
    "model": ("model", {}, each(*["Model version"] * 3, BOT_WIDE_ONLY)),
    "retry A's job": ("retry {a_failed}", {"job_id": "{a_failed}"}, admins("There is no job #{a_failed} here.")),
    "rollback": ("rollback", {}, admins("There is no earlier model version to return to.")),
    "train": ("train q{token} => a{token}", {"data": "q{token} => a{token}"}, admins("Training job #")),
    "train --global": (
        "train --global g{token} => h{token}",
        {"data": "g{token} => h{token}", "bot_wide": True},
        each("to the bot-wide knowledge", OWNER_ONLY, OWNER_ONLY, SERVER_ONLY),
    ),
    "train A's file": ("train notes/secret.txt", {"data": "notes/secret.txt"}, admins("is neither")),
    "train A's folder by path": (
        "train ../{a_id}/tiny",
        {"data": "../{a_id}/tiny"},
        admins(OUTSIDE),
    ),
    "retrain": ("retrain", {}, admins("Training job #")),
    "select_dataset A's": ("select_dataset tiny", {"directory": "tiny"}, admins("There is no directory `tiny`")),
    "select_dataset by path": (
        "select_dataset ../{a_id}/tiny",
        {"directory": "../{a_id}/tiny"},
        admins(OUTSIDE),
    ),
    "getfile A's": ("getfile notes/secret.txt", {"path": "notes/secret.txt"}, admins("There is no file")),
    "getfile by path": (
        "getfile ../{a_id}/notes/secret.txt",
        {"path": "../{a_id}/notes/secret.txt"},
        admins(OUTSIDE),
    ),
    "getfile the database": (
        "getfile ../../trainerbot.sqlite3",
        {"path": "../../trainerbot.sqlite3"},
        admins(OUTSIDE),
    ),
    "getfile a model": ("getfile ../../models", {"path": "../../models"}, admins(OUTSIDE)),
    "archive its own folder": ("archive .", {"directory": "."}, admins("Archived 1 file from `.`")),
    "archive the servers": ("archive ..", {"directory": ".."}, admins(OUTSIDE)),
    "correct A's reply": (
        "correct {a_reply} {token}",
        {"message": "{a_reply}", "correction": "{token}"},
        each(NO_REPLY, NO_REPLY, NO_REPLY, DM_CORRECT),
    ),
    "review": ("review", {}, admins(("Nothing to review in this server's", "Review inbox (this server's)"), DM_REVIEW)),
    "answer A's topic": (
        "answer {a_topic} {token}",
        {"topic": "{a_topic}", "answer": "{token}"},
        admins(NO_TOPIC, DM_REVIEW),
    ),
    "answer A's topic like A's answer": (
        "answer {a_topic} like Guild A opens",
        {"topic": "{a_topic}", "answer": "like Guild A opens"},
        admins(NO_TOPIC, DM_REVIEW),
    ),
    "accept A's suggestion": (
        "answer {a_suggestion}",
        {"topic": "{a_suggestion}"},
        admins("There is no topic #{a_suggestion} here.", DM_REVIEW),
    ),
    "dismiss A's topic": ("dismiss {a_topic}", {"topic": "{a_topic}"}, admins(NO_TOPIC, DM_REVIEW)),
    "feedback": ("feedback {token}", {"text": "{token}"}, each(*["Thank you for the feedback!"] * 4)),
    "forget": ("forget", {}, each(*["Forgotten:"] * 4)),
    "forget mine": ("forget mine", {"whose": "mine"}, each(*["Forgotten:"] * 4)),
    "forget all": ("forget all", {"whose": "all"}, each("Forgotten:", "Forgotten:", ADMIN_ONLY, ADMIN_ONLY)),
    "forget me": ("forget me", {"whose": "me"}, each(*[("Forgotten, in every", "nothing stored")] * 4)),
    "mydata": ("mydata", {}, each(*[("direct message", "Everything I have stored")] * 4)),
    "persona": ("persona", {}, each("The persona here", "The persona here", "The persona here", SERVER_ONLY)),
    "persona <text>": ("persona Be {token}", {"text": "Be {token}"}, admins("From now on, here I am")),
    "config": ("config", {}, each(*["This server's settings"] * 3, SERVER_ONLY)),
    "config admin-roles": (
        "config admin-roles Mods{token}",
        {"setting": "admin-roles Mods{token}"},
        admins("Admin roles here are now: `Mods"),
    ),
    "config bot-wide": ("config bot-wide on", {"setting": "bot-wide on"}, admins("bot-wide knowledge answers here")),
    "join": ("join", {}, each(*["text-to-speech is turned off"] * 3, SERVER_ONLY)),
    "leave": ("leave", {}, each(*["I'm not in a voice channel here."] * 3, SERVER_ONLY)),
    "sync here": ("sync here", {"scope": "here"}, each("Synced", OWNER_ONLY, OWNER_ONLY, SERVER_ONLY)),
    "sync": ("sync", {}, each("Synced", OWNER_ONLY, OWNER_ONLY, SERVER_ONLY)),
    # Not commands: the same in both forms. The second is word for word one of A's taught questions.
    "a message": ("tell me about your day", {}, each(CHAT, CHAT, CHAT, CHAT)),
    "A's question": ("address please", {}, each(CHAT, CHAT, CHAT, CHAT)),
}
CHAT_ROWS = {"a message", "A's question"}


# --- one bot session per form ---------------------------------------------------------------------


@dataclass
class Session:
    form: str
    server: FakeDiscord
    services: Services
    bot: Any
    engine: ScriptedEngine
    seeded: Seeded
    users: dict[str, FakeUser]
    tokens: itertools.count = field(default_factory=itertools.count)

    @property
    def folder_a(self) -> Path:
        return self.services.settings.data_dir / "servers" / str(A.guild_id)


def seed(services: Services) -> Seeded:
    """Server A's life so far, with a secret in every piece; and server B's one FAQ answer."""
    store, data = services.store, services.settings.data_dir
    folder = data / "servers" / str(A.guild_id)
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "secret.txt").write_bytes(A_FILE)
    (folder / "tiny").mkdir()
    (folder / "tiny" / "a.txt").write_text(f"{A_QUESTION} => {A_ANSWER}\n")
    (data / "servers" / str(B.guild_id) / "notes").mkdir(parents=True)
    (data / "servers" / str(B.guild_id) / "notes" / "b.txt").write_text("B's own notes")
    seeded = Seeded()
    faq = [Example(q, A_ANSWER) for q in ("when do you open?", "what are your hours", "opening times")]
    faq += [Example(q, A_WHERE) for q in ("where are you", "address please", "how to find you")]
    encoder = services.models.encoder

    def trained(base: int, examples: list[Example]) -> int:
        store.knowledge.add_examples(base, examples, source="train:message", author_id=A.owner.id)
        job = store.jobs.create(base, requested_by=A.owner.id, channel_id=None)
        model, report = train(examples, encoder, threshold=services.settings.confidence_threshold)
        model.save(data / model_file(job.id))
        store.jobs.mark_running(base, job.id)
        store.jobs.finish(base, job.id, result=report.as_dict(), model_path=model_file(job.id))
        return job.id

    seeded.trained = [trained(A.guild_id, faq) for _ in range(3)]
    seeded.succeeded_job = seeded.trained[-1]
    failed = store.jobs.create(A.guild_id, requested_by=A.owner.id, channel_id=A.channel_id)
    store.jobs.finish(A.guild_id, failed.id, error="the training process stopped unexpectedly")
    seeded.failed_job = failed.id
    trained(B.guild_id, [Example("when do you open?", B_ANSWER), Example("hours", B_ANSWER)])
    store.evaluations.add_test_run(
        A.guild_id,
        user_id=A.owner.id,
        model_version_id=store.jobs.job(A.guild_id, seeded.trained[0]).model_version_id,  # type: ignore[union-attr]
        total=1,
        passed=0,
        accuracy=0.0,
        failures=[{"input": A_CASE, "expected": A_ANSWER, "got": None, "confidence": 0.1}],
    )
    asked = store.conversations.add_turn(
        conversation_id=A.channel_id, guild_id=A.guild_id, user_id=A.owner.id, role="user", content=A_QUESTION
    )
    seeded.reply_id = 1_111_111_111_111_111_111
    record = ReplyRecord(seeded.reply_id, 5, A.owner.id, A_QUESTION, A_ANSWER, "taught", 0.9)
    store.conversations.record_answer(
        conversation_id=A.channel_id,
        guild_id=A.guild_id,
        channel_id=A.channel_id,
        asked=asked,
        answer=record,
        message_ids=[seeded.reply_id],
    )
    reply = store.conversations.reply(Place(A.guild_id, A.channel_id), seeded.reply_id)
    assert reply is not None
    store.feedback.add_correction(reply=reply, user_id=A.owner.id, correction=A_ANSWER)
    store.conversations.set_persona(A.channel_id, A_PERSONA, user_id=A.owner.id)
    store.knowledge.change_settings(A.guild_id, A.owner.id, admin_roles=[A_ROLE], persona=A_PERSONA)
    store.audit.add(
        A.guild_id,
        user_id=A.owner.id,
        user_name="owner of A",
        via="web",
        action="add example",
        detail=f"A positive example for `{A_ANSWER}`",
    )
    [vector] = encoder.encode([A_QUESTION])
    item = ReviewItem("unknown", A_QUESTION, A.member.id, asked_by=A.member.id)
    seeded.topic = store.review.add(A.guild_id, item, vector, SAME_TOPIC)
    suggestion = ReviewItem(
        "suggestion", A_QUESTION, A.member.id, "member", A.owner.id, A_ANSWER, "secret-answer suggested", 5
    )
    seeded.suggestion = store.review.add(A.guild_id, suggestion, vector, SAME_TOPIC)
    return seeded


# Every wall through `!` commands and slash commands on SQLite, and through `!` commands on PostgreSQL.
FORMS = ["prefix", "slash", pytest.param("prefix-postgresql", marks=pytest.mark.slow)]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=FORMS)
async def session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    from trainerbot.adapters.discord.bot import TrainerBot

    form, _, engine_name = request.param.partition("-")
    database_url = request.getfixturevalue("postgres_server").new_database() if engine_name else None
    settings = load_settings(
        _env_file=None,
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp(f"walls-{request.param}") / "data",
        owner_ids=[OWNER_ID],
        upload_limit_bytes=100_000,
        stt_engine="none",
        tts_engine="none",
    )
    engine = ScriptedEngine(CHAT)
    services = build_services(settings, make_engine=lambda settings, busy: engine)
    seeded = seed(services)
    try:
        async with (
            FakeDiscord([A, B]) as server,
            run_bot(TrainerBot(services, progress_interval=0.05), server) as bot,
        ):
            bot.remove_check(bot.cooldowns)  # many cells run one command: the walls, not the allowances, are tested
            users = dict(zip(ACTORS, (CONFIGURED_OWNER, B.admin, B.member, A.admin), strict=True))
            yield Session(form, server, services, bot, engine, seeded, users)
    finally:
        services.close()


# --- what A has, and what must not leave it --------------------------------------------------------


def a_snapshot(session: Session) -> dict[str, Any]:
    """Everything of server A's: its rows in every table, its settings, its folder's files."""
    db, a = session.services.store.db, A.guild_id
    rows: dict[str, Any] = {}
    for table in ("examples", "datasets", "jobs", "model_versions", "test_runs", "corrections"):
        rows[table] = [tuple(r) for r in db.query(f"SELECT * FROM {table} WHERE base = ? ORDER BY id", (a,))]
    runs = "SELECT id FROM test_runs WHERE base = ?"
    rows["failures"] = [tuple(r) for r in db.query(f"SELECT * FROM test_failures WHERE run_id IN ({runs})", (a,))]
    for table in ("chat_turns", "feedback"):
        rows[table] = [tuple(r) for r in db.query(f"SELECT * FROM {table} WHERE guild_id = ? ORDER BY id", (a,))]
    rows["replies"] = [tuple(r) for r in db.query("SELECT * FROM replies WHERE guild_id = ?", (a,))]
    rows["personas"] = [tuple(r) for r in db.query("SELECT * FROM personas WHERE conversation_id = ?", (A.channel_id,))]
    rows["bases"] = [tuple(r) for r in db.query("SELECT * FROM bases WHERE id = ?", (a,))]
    for table in ("review_topics", "review_items", "audit"):  # audit: nothing done elsewhere enters A's trail
        rows[table] = [tuple(r) for r in db.query(f"SELECT * FROM {table} WHERE base = ? ORDER BY id", (a,))]
    # Not web_sessions: a sign-in is a person's, not a server's (the dashboard's own tests wall them).
    examples = "SELECT id FROM examples WHERE base = ?"
    rows["review_examples"] = [
        tuple(r) for r in db.query(f"SELECT * FROM review_examples WHERE example_id IN ({examples})", (a,))
    ]
    folder = session.folder_a
    rows["files"] = sorted((p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file())
    return rows


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret.lower() in text.lower()]


def attachment_texts(server: FakeDiscord, message: dict[str, Any]) -> list[str]:
    """Every attached file's text, and each member's of an attached zip."""
    texts = []
    for name, data in server.files_of(message).items():
        texts.append(data.decode("utf-8", "replace"))
        if name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                texts += [archive.read(member).decode("utf-8", "replace") for member in archive.namelist()]
    return texts


def fill(text: str, session: Session, token: str) -> str:
    seeded = session.seeded
    return (
        text.replace("{token}", token)
        .replace("{a_job}", str(seeded.succeeded_job))
        .replace("{a_failed}", str(seeded.failed_job))
        .replace("{a_reply}", str(seeded.reply_id))
        .replace("{a_topic}", str(seeded.topic))
        .replace("{a_suggestion}", str(seeded.suggestion))
        .replace("{a_id}", str(A.guild_id))
    )


def pages(session: Session, name: str) -> int:
    """How many messages the answer takes: one, but for the guide."""
    if name != "instruction":
        return 1
    return len(split_message(session.services.conversation.instructions().text))


async def run_cell(session: Session, name: str, actor: str) -> list[dict[str, Any]]:
    text, options, _ = TABLE[name]
    server, user = session.server, session.users[actor]
    token = f"tok{next(session.tokens)}x"
    dm = actor == "DM user"
    channel_id = server.dm_channel_id(user) if dm else B.channel_id
    since = server.ids.next()
    if name in CHAT_ROWS or session.form == "prefix":
        content = fill(text, session, token)
        sent = await server.send_message(
            content if name in CHAT_ROWS else "!" + content, author=user, channel_id=channel_id
        )
        messages = await server.wait_for_bot_messages(channel_id, after=sent["id"], count=pages(session, name))
    else:
        filled = {k: fill(v, session, token) if isinstance(v, str) else v for k, v in options.items()}
        if "job_id" in filled:
            filled["job_id"] = int(filled["job_id"])
        handle = await server.invoke_slash(text.split()[0], filled, user=user, channel_id=channel_id, dm=dm)
        messages = await handle.wait_messages(pages(session, name))
    # Whatever else reached the person privately (`!mydata` sends a DM).
    messages += [m for m in server.bot_messages(server.dm_channel_id(user), after=since) if m not in messages]
    return messages


# --- the tests ------------------------------------------------------------------------------------

CELLS = [(name, actor) for name in TABLE for actor in ACTORS]


@pytest.mark.parametrize(("name", "actor"), CELLS, ids=[f"{n}-{a}".replace(" ", "_") for n, a in CELLS])
async def test_wall(session: Session, name: str, actor: str) -> None:
    before = a_snapshot(session)
    messages = await run_cell(session, name, actor)
    texts = [m["content"] for m in messages]
    expected = TABLE[name][2][actor]
    wanted = [fill(e, session, "") for e in (expected if isinstance(expected, tuple) else (expected,))]
    assert any(w in texts[0] for w in wanted), (wanted, texts)
    for message in messages:
        seen = [message["content"], *attachment_texts(session.server, message)]
        assert not [s for s in seen if leaked(s)], (leaked("\n".join(seen)), seen)
    assert a_snapshot(session) == before


async def test_what_admins_changed_went_to_their_own_base(session: Session) -> None:
    """The allowed cells above changed server B's base (and the owner's `--global`, the bot-wide one)."""
    db = session.services.store.db
    taught = {
        row["input"]: row["base"] for row in db.query("SELECT input, base FROM examples WHERE input LIKE 'q%tok%'")
    }
    assert taught and set(taught.values()) == {B.guild_id}, taught
    bot_wide = {row["base"] for row in db.query("SELECT base FROM examples WHERE input LIKE 'g%tok%'")}
    assert bot_wide == {0}
    settings = session.services.store.knowledge.settings(B.guild_id)
    assert settings.admin_roles is not None and settings.admin_roles[0].startswith("Mods")
    assert session.services.store.knowledge.settings(A.guild_id).admin_roles == (A_ROLE,)


async def test_a_still_answers_as_it_was_taught_and_b_as_it_was(session: Session) -> None:
    server = session.server
    for guild, author, answer in ((A, A.member, A_ANSWER), (B, B.member, B_ANSWER)):
        sent = await server.send_message("when do you open?", author=author, channel_id=guild.channel_id)
        [reply] = await server.wait_for_bot_messages(guild.channel_id, after=sent["id"])
        assert reply["content"] == answer


async def test_no_chat_prompt_outside_a_held_a_secret(session: Session) -> None:
    """The chat engine wrote every reply in B and in DMs: A's examples, turns and persona were never in its prompts."""
    assert session.engine.prompts, "the chat rows reached the chat engine"
    for prompt in session.engine.prompts:
        assert not leaked(json.dumps([message.as_dict() for message in prompt]))


async def test_the_table_covers_every_command(session: Session) -> None:
    prefix_commands = {command.qualified_name for command in session.bot.walk_commands()}
    slash_commands = {command.name for command in session.bot.tree.get_commands()}
    covered = {text.split()[0] for name, (text, _, _) in TABLE.items() if name not in CHAT_ROWS}
    assert covered == prefix_commands == slash_commands
