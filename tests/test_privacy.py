"""`!mydata` and `!forget me`: a person's own data, copied out whole and deleted whole.

The store-level tests seed one person's data in every table beside another person's and an
admin's, and check that the copy holds exactly the person's rows and that forgetting deletes
exactly them, keeping approved examples. The end-to-end tests drive both commands in both
forms through the loopback Discord, with data the bot stored from real messages.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import TRAINER
from tests.databases import foreign_keys_hold, table_names
from tests.loopback_discord import FakeDiscord
from trainerbot.adapters.console.console import Console
from trainerbot.app import Services
from trainerbot.config import Settings
from trainerbot.core.privacy import FORMAT, VERSION, PrivacyService, forget_text
from trainerbot.errors import TooLarge
from trainerbot.storage.database import open_database
from trainerbot.storage.store import Store
from trainerbot.types import Caller, Example, Forgotten, Place, ReplyRecord

pytestmark = pytest.mark.both_databases

PERSON, OTHER, ADMIN = 10**18 + 1, 10**18 + 2, 10**18 + 3  # Discord-sized ids: above what a JSON double holds
GUILD, CHANNEL, THREAD, DM = 50, 60, 61, 70
IN_GUILD = Place(GUILD, CHANNEL)  # the server's replies are found from any of its channels


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """No speech models: nothing here speaks or listens, and loading them only slows the bot's start."""
    return settings.model_copy(update={"stt_engine": "none", "tts_engine": "none"})


@pytest.fixture
def store(database_address: str) -> Store:
    return Store(open_database(database_address))


@dataclass
class Seeded:
    """Ids of one person's rows, by table."""

    chat_turns: set[int]
    replies: set[int]
    feedback: set[int]
    reactions: set[int]
    corrections: set[int]
    examples: set[int]  # all they authored
    approved: set[int]  # of those, the ones kept by forget me
    test_runs: set[int]
    jobs: set[int]
    datasets: set[int]
    audit: set[int]  # changes they made: kept by forget me, without their id and name
    sessions: set[str]  # their dashboard sign-ins: not in the copy (secrets, not their data), deleted by forget me


def seed(store: Store, user: int, *, bot_message: int) -> Seeded:
    """One person's data in every table: chat in a channel, a thread and a DM, feedback, a rating, a
    correction, a taught example, a selected dataset, a test run, a job, a persona, an audit entry and a
    dashboard sign-in; what is taught and tested goes to the server's knowledge base, as a reply in its
    channel is of that base."""
    turns, replies = set(), set()
    for conversation, guild in ((CHANNEL, GUILD), (THREAD, GUILD), (DM, None)):
        asked = store.conversations.add_turn(
            conversation_id=conversation, guild_id=guild, user_id=user, role="user", content=f"question of {user}"
        )
        message_id = bot_message + conversation
        record = ReplyRecord(message_id, message_id - 1, user, f"question of {user}", f"answer to {user}", "chat", 0.1)
        answer = store.conversations.record_answer(
            conversation_id=conversation,
            guild_id=guild,
            channel_id=conversation,
            asked=asked,
            answer=record,
            message_ids=[message_id],
        )
        turns |= {asked, answer}
        replies.add(message_id)
    rated = store.conversations.reply(IN_GUILD, bot_message + CHANNEL)
    assert rated is not None
    feedback = store.feedback.add_feedback(
        user_id=user,
        user_name=f"user {user}",
        guild_id=GUILD,
        channel_id=CHANNEL,
        message_id=None,
        text=f"feedback of {user}",
        about=rated,
    )
    store.feedback.add_reaction(user_id=user, emoji="👍", rating=1, reply=rated)
    reaction = store.db.query_one("SELECT id FROM reactions WHERE user_id = ?", (user,))["id"]
    correction = store.feedback.add_correction(reply=rated, user_id=user, correction=f"correction of {user}")
    rows = store.db.query("SELECT id FROM examples WHERE author_id = ? AND source = 'correction'", (user,))
    made = {row["id"] for row in rows}
    knowledge = store.knowledge
    taught = set(
        knowledge.add_examples(GUILD, [Example(f"taught by {user}", "yes")], source="train:message", author_id=user)
    )
    dataset = knowledge.add_dataset(
        GUILD,
        name=f"set{user}",
        directory=f"set{user}",
        positive=True,
        examples=[Example(f"dataset of {user}", "ok"), Example(f"more of {user}", "ok")],
        files=1,
        archive="datasets/x.zip",
        manifest={"a.txt": "hash"},
        created_by=user,
    )
    in_dataset = {row["id"] for row in store.db.query("SELECT id FROM examples WHERE dataset_id = ?", (dataset,))}
    knowledge.save_example_vectors([(example_id, b"\0" * 8) for example_id in made | taught | in_dataset])
    run = store.evaluations.add_test_run(
        GUILD,
        user_id=user,
        model_version_id=None,
        total=2,
        passed=1,
        accuracy=0.5,
        failures=[{"input": f"test of {user}", "expected": "x", "got": None, "confidence": 0.2}],
    )
    job = store.jobs.create(GUILD, requested_by=user, channel_id=CHANNEL).id
    store.conversations.set_persona(CHANNEL + user % 7, f"persona of {user}", user_id=user)
    store.audit.add(GUILD, user_id=user, user_name=f"user {user}", via="web", action="add example", detail=str(user))
    entry = store.db.query_one("SELECT max(id) AS id FROM audit WHERE user_id = ?", (user,))["id"]
    with store.db.transaction() as db:
        db.execute(
            "INSERT INTO web_sessions (id, user_id, name, operator, guilds, csrf, created_at, expires_at)"
            " VALUES (?, ?, ?, 0, '[]', 'csrf', '2025-01-01', '2099-01-01')",
            (f"session of {user}", user, f"user {user}"),
        )
    return Seeded(
        chat_turns=turns,
        replies=replies,
        feedback={feedback},
        reactions={reaction},
        corrections={correction},
        examples=made | taught | in_dataset,
        approved=taught | in_dataset,
        test_runs={run},
        jobs={job},
        datasets={dataset},
        audit={entry},
        sessions={f"session of {user}"},
    )


def ids(rows: list[dict[str, Any]], key: str = "id") -> set[int]:
    return {int(row[key]) for row in rows}


def everything(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to tell what changed."""
    tables = table_names(store.db)
    return {t: sorted(map(tuple, store.db.query(f"SELECT * FROM {t}")), key=repr) for t in tables}


# --- the store and the service ------------------------------------------------------------------


def test_the_copy_holds_exactly_the_persons_rows(store: Store) -> None:
    mine = seed(store, PERSON, bot_message=1000)
    seed(store, OTHER, bot_message=2000)
    seed(store, ADMIN, bot_message=3000)
    document = PrivacyService(store, _NoWindows(), upload_limit=10**6, prefix="!").export(PERSON)
    tables = document["tables"]
    assert document["format"] == FORMAT and document["version"] == VERSION and document["user_id"] == str(PERSON)
    assert ids(tables["chat_turns"]) == mine.chat_turns
    assert {row["role"] for row in tables["chat_turns"]} == {"user", "assistant"}
    assert {row["conversation_id"] for row in tables["chat_turns"]} == {str(CHANNEL), str(THREAD), str(DM)}
    assert ids(tables["replies"], "bot_message_id") == mine.replies
    assert ids(tables["feedback"]) == mine.feedback and tables["feedback"][0]["text"] == f"feedback of {PERSON}"
    assert ids(tables["reactions"]) == mine.reactions
    assert ids(tables["corrections"]) == mine.corrections
    assert ids(tables["examples"]) == mine.examples
    assert ids(tables["test_runs"]) == mine.test_runs and len(tables["test_failures"]) == 1
    assert ids(tables["jobs"]) == mine.jobs and ids(tables["datasets"]) == mine.datasets
    assert [row["text"] for row in tables["personas"]] == [f"persona of {PERSON}"]
    assert ids(tables["audit"]) == mine.audit and tables["audit"][0]["user_name"] == f"user {PERSON}"
    assert "web_sessions" not in tables and "csrf" not in json.dumps(document)
    assert set(document["about"]) == set(tables)
    # Ids are strings, exact: a 64-bit id as a JSON number would lose its last digits in JavaScript.
    text = json.dumps(document)
    assert f'"user_id": "{PERSON}"' in text and str(OTHER) not in text and str(ADMIN) not in text


def test_forget_deletes_exactly_the_persons_rows_and_keeps_approved_examples(store: Store) -> None:
    mine = seed(store, PERSON, bot_message=1000)
    seed(store, OTHER, bot_message=2000)
    others_before = {user: store.people.data(user) for user in (OTHER, ADMIN)}
    forgotten = store.people.forget(PERSON)
    assert forgotten == Forgotten(
        messages=3,
        answers=3,
        reply_records=3,
        feedback=1,
        reactions=1,
        corrections=1,
        examples=2,  # the correction's positive and negative examples
        test_runs=1,
        kept_trained=1,
        kept_dataset=2,
        unlinked=3,  # the job, the dataset and the persona
        conversations=forgotten.conversations,
        audit_entries=1,
        sessions=1,
    )
    assert set(forgotten.conversations) == {CHANNEL, THREAD, DM}
    assert all(rows == [] for rows in store.people.data(PERSON).values()), store.people.data(PERSON)
    assert {user: store.people.data(user) for user in (OTHER, ADMIN)} == others_before
    kept = store.db.query(f"SELECT id, author_id FROM examples WHERE id IN ({','.join(map(str, mine.approved))})")
    assert {row["id"] for row in kept} == mine.approved and {row["author_id"] for row in kept} == {None}
    vectors = {row["example_id"] for row in store.db.query("SELECT example_id FROM example_vectors")}
    assert mine.approved <= vectors and not (mine.examples - mine.approved) & vectors
    assert store.jobs.job(GUILD, next(iter(mine.jobs))).requested_by is None
    # Their change stays in the server's trail (it happened), without who made it; their sign-in is gone.
    [entry] = store.db.query(f"SELECT * FROM audit WHERE id IN ({','.join(map(str, mine.audit))})")
    assert (entry["user_id"], entry["user_name"], entry["detail"]) == (None, None, str(PERSON))
    sessions = {row["id"] for row in store.db.query("SELECT id FROM web_sessions")}
    assert sessions == {f"session of {OTHER}"}
    assert foreign_keys_hold(store.db)


def test_forget_removes_the_persons_words_from_what_others_gave_about_replies_to_them(store: Store) -> None:
    """Another person's 👍, feedback and correction of a reply to PERSON each copy PERSON's question."""
    seed(store, PERSON, bot_message=1000)
    seed(store, OTHER, bot_message=2000)
    # to PERSON; to OTHER
    theirs, own = (
        store.conversations.reply(IN_GUILD, 1000 + CHANNEL),
        store.conversations.reply(IN_GUILD, 2000 + THREAD),
    )
    assert theirs is not None and own is not None
    for reply in (theirs, own):
        store.feedback.add_reaction(user_id=OTHER, emoji="👎", rating=-1, reply=reply)
        store.feedback.add_feedback(
            user_id=OTHER,
            user_name="other",
            guild_id=GUILD,
            channel_id=CHANNEL,
            message_id=None,
            text=f"feedback of {OTHER} about {reply.bot_message_id}",
            about=reply,
        )
    store.feedback.add_correction(reply=theirs, user_id=OTHER, correction="a better answer")
    store.feedback.add_correction(reply=own, user_id=OTHER, correction="another answer")
    examples_before = store.db.query_one("SELECT count(*) AS n FROM examples")["n"]

    forgotten = store.people.forget(PERSON)

    assert (forgotten.corrected_by_others, forgotten.examples_of_others, forgotten.quoted_by_others) == (1, 2, 2)
    left = store.people.data(OTHER)
    assert f"question of {PERSON}" not in json.dumps(left)  # nowhere in what OTHER's rows hold
    assert [r["correction"] for r in left["corrections"]] == [f"correction of {OTHER}", "another answer"]
    ratings = {r["bot_message_id"]: (r["rating"], r["input"]) for r in left["reactions"] if r["emoji"] == "👎"}
    assert ratings == {theirs.bot_message_id: (-1, None), own.bot_message_id: (-1, f"question of {OTHER}")}
    notes = {r["about_message_id"]: (r["text"], r["about_reply"]) for r in left["feedback"] if "about" in r["text"]}
    assert notes[theirs.bot_message_id] == (f"feedback of {OTHER} about {theirs.bot_message_id}", None)
    assert notes[own.bot_message_id][1] == f"answer to {OTHER}"
    # two from PERSON's own correction, two from OTHER's correction of the reply to PERSON
    assert store.db.query_one("SELECT count(*) AS n FROM examples")["n"] == examples_before - 4
    assert foreign_keys_hold(store.db)
    text = forget_text(forgotten)
    assert "1 correction others made to my replies to you, with the 2 examples they made" in text
    assert "Your words are gone from 2 ratings and feedback notes others gave my replies to you" in text


def test_forget_is_all_or_nothing(store: Store) -> None:
    seed(store, PERSON, bot_message=1000)
    seed(store, OTHER, bot_message=2000)
    before = everything(store)
    with store.db.transaction() as db:  # a failure at one of the last steps, after most rows are deleted
        if store.db.dialect == "sqlite":
            db.execute(
                "CREATE TEMP TRIGGER fail_late BEFORE DELETE ON test_runs BEGIN SELECT RAISE(ABORT, 'injected'); END"
            )
        else:
            db.execute(
                "CREATE FUNCTION fail_late() RETURNS trigger LANGUAGE plpgsql"
                " AS 'BEGIN RAISE EXCEPTION ''injected''; END'"
            )
            db.execute("CREATE TRIGGER fail_late BEFORE DELETE ON test_runs FOR EACH ROW EXECUTE FUNCTION fail_late()")
    with pytest.raises(Exception, match="injected"):
        store.people.forget(PERSON)
    assert everything(store) == before


def test_a_training_job_finishing_after_forget_skips_the_deleted_examples(store: Store) -> None:
    seed(store, PERSON, bot_message=1000)
    theirs = [row["id"] for row in store.db.query("SELECT id FROM examples WHERE source = 'correction'")]
    with store.db.transaction() as db:
        db.execute("DELETE FROM example_vectors")
    store.people.forget(PERSON)
    # A job that read its examples before the forget saves their embeddings after it: no error, no orphan.
    store.knowledge.save_example_vectors([(example_id, b"\0" * 8) for example_id in theirs])
    assert store.db.query("SELECT * FROM example_vectors") == []


def test_nothing_stored_says_so(store: Store) -> None:
    service = PrivacyService(store, _NoWindows(), upload_limit=10**6, prefix="!")
    assert service.forget_me(Caller(PERSON, "p")).text == "I had nothing stored about you."
    copy = service.my_data(Caller(PERSON, "p"))
    [file] = copy.files
    assert "0 records" in copy.text and file.name.endswith(".json")
    assert all(rows == [] for rows in json.loads(file.data)["tables"].values())


def test_the_answer_says_what_was_deleted_kept_and_still_learned(store: Store) -> None:
    seed(store, PERSON, bot_message=1000)
    text = PrivacyService(store, _NoWindows(), upload_limit=10**6, prefix="!").forget_me(Caller(PERSON, "p")).text
    assert "3 messages you sent me, 3 replies of mine to them" in text
    assert "1 feedback note, 1 rating, 1 correction, 2 examples your corrections made, 1 test run" in text
    assert "Kept: 1 example taught with `!train` and 2 examples from a dataset you selected" in text
    assert "an admin approved them" in text
    assert "until the next training (`!retrain`)" in text
    assert "3 training jobs, datasets and personas" in text
    assert "1 test run, 1 dashboard sign-in (you are signed out)." in text
    assert "Kept in servers' audit trails, as the changes happened, without your name: 1 change you made" in text
    assert forget_text(Forgotten(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, ())).startswith("There was nothing of yours")


def test_a_large_copy_is_zipped_and_one_too_large_even_zipped_is_refused(store: Store) -> None:
    for n in range(300):  # about 300 KB of repetitive text: over the limit, and it zips well
        store.conversations.add_turn(
            conversation_id=CHANNEL, guild_id=GUILD, user_id=PERSON, role="user", content=f"{n} " * 500
        )
    service = PrivacyService(store, _NoWindows(), upload_limit=100_000, prefix="!")
    reply = service.my_data(Caller(PERSON, "p"))
    [file] = reply.files
    assert file.name.endswith(".zip") and len(file.data) <= 100_000 and "Zipped" in reply.text
    with zipfile.ZipFile(io.BytesIO(file.data)) as archive:
        [name] = archive.namelist()
        assert len(json.loads(archive.read(name))["tables"]["chat_turns"]) == 300
    tiny = PrivacyService(store, _NoWindows(), upload_limit=1_000, prefix="!")
    with pytest.raises(TooLarge, match="even zipped"):
        tiny.my_data(Caller(PERSON, "p"))


class _NoWindows:
    """Stands in for the conversation service, whose only part here is forgetting prompt windows."""

    def reset_windows(self, conversation_ids: object) -> None:
        pass


# --- the console ------------------------------------------------------------------------------


def test_console_runs_mydata_and_forget_me(services: Services) -> None:
    out = io.StringIO()
    console = Console(services, out=out)
    console.handle("!feedback the console works")
    console.handle("!mydata")
    [saved] = (services.settings.data_dir / "outbox").glob("mydata-*.json")
    assert json.loads(saved.read_text())["tables"]["feedback"][0]["text"] == "the console works"
    console.handle("!forget me")
    assert "Forgotten, in every channel and DM: 1 feedback note" in out.getvalue()
    assert services.store.people.data(console.user.user_id)["feedback"] == []


# --- end to end through the loopback Discord ------------------------------------------------------


async def say(server: FakeDiscord, content: str, *, author=None, channel_id=None, reply_to=None) -> dict:
    sent = await server.send_message(content, author=author, channel_id=channel_id, reply_to=reply_to)
    [reply, *_] = await server.wait_for_bot_messages(channel_id, after=sent["id"])
    return reply


async def stored(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Polls the database: the fake Discord cannot tell when the bot's thread has written a row."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not stored in time"
        await asyncio.sleep(0.01)


async def chat_rate_and_correct(server: FakeDiscord, services: Services, user, words: str) -> dict:
    """A person's ordinary use: a message, a 👍 on the answer, a correction (a member's: a suggestion) and feedback."""
    answer = await say(server, f"tell me about {words}", author=user)
    await server.add_reaction(answer["id"], "👍", user=user)
    await stored(lambda: services.store.people.data(user.id)["reactions"])
    corrected = await say(server, f"!correct {words} is the answer", author=user, reply_to=answer["id"])
    thanks = ("Thanks! I passed your correction", "Thanks! From now on")
    assert corrected["content"].startswith(thanks), corrected["content"]
    assert "Thank you" in (await say(server, f"!feedback about {words}", author=user))["content"]
    return answer


def read_copy(server: FakeDiscord, message: dict) -> dict:
    [(name, data)] = server.files_of(message).items()
    assert name.startswith("mydata-") and name.endswith(".json")
    return json.loads(data)


@pytest.mark.usefixtures("bot")
async def test_mydata_in_a_server_comes_by_dm_and_holds_only_the_persons_data(
    discord_server: FakeDiscord, services: Services
) -> None:
    member, admin = discord_server.member, discord_server.admin
    await chat_rate_and_correct(discord_server, services, member, "apples")
    await chat_rate_and_correct(discord_server, services, admin, "pears")
    sent = await discord_server.send_message("!mydata", author=member)
    [note] = await discord_server.wait_for_bot_messages(after=sent["id"])
    assert note["content"] == "I sent you a direct message with everything I have stored about you."
    assert not note["attachments"]
    dm = discord_server.dm_channel_id(member)
    [private] = await discord_server.wait_for_bot_messages(dm, after=sent["id"])
    copy = read_copy(discord_server, private)
    tables = copy["tables"]
    assert copy["user_id"] == str(member.id) and copy["format"] == FORMAT
    assert [t["content"] for t in tables["chat_turns"] if t["role"] == "user"] == ["tell me about apples"]
    assert len([t for t in tables["chat_turns"] if t["role"] == "assistant"]) == 1
    assert [r["emoji"] for r in tables["reactions"]] == ["👍"]
    # A member's correction is a suggestion in the review inbox: no correction, no example
    assert [(i["kind"], i["suggestion"]) for i in tables["review_items"]] == [("suggestion", "apples is the answer")]
    assert tables["corrections"] == [] and tables["examples"] == []
    assert [f["text"] for f in tables["feedback"]] == ["about apples"]
    assert "pears" not in json.dumps(copy) and str(admin.id) not in json.dumps(copy)


@pytest.mark.usefixtures("bot")
async def test_mydata_as_a_slash_command_is_ephemeral_and_works_in_dms(
    discord_server: FakeDiscord, services: Services
) -> None:
    await say(discord_server, "!feedback slash data", author=TRAINER)
    for dm in (False, True):
        handle = await discord_server.invoke_slash("mydata", user=TRAINER, dm=dm)
        [message] = await handle.wait_messages()
        assert message["flags"] & 64, "only the person sees their data"  # EPHEMERAL
        assert read_copy(discord_server, message)["tables"]["feedback"][0]["text"] == "slash data"
    dm = discord_server.dm_channel_id(TRAINER)
    in_dm = await say(discord_server, "!mydata", author=TRAINER, channel_id=dm)
    assert read_copy(discord_server, in_dm)["user_id"] == str(TRAINER.id)


@pytest.mark.usefixtures("bot")
async def test_mydata_with_closed_dms_says_so_and_sends_nothing(discord_server: FakeDiscord) -> None:
    member = discord_server.member
    dm = discord_server.dm_channel_id(member)
    discord_server.fail_route(rf"POST /channels/{dm}/messages", status=403)  # "Cannot send messages to this user"
    sent = await discord_server.send_message("!mydata", author=member)
    [reply] = await discord_server.wait_for_bot_messages(after=sent["id"])
    assert "couldn't send you a direct message" in reply["content"] and "`/mydata`" in reply["content"]
    assert not reply["attachments"] and not discord_server.bot_messages(dm)


@pytest.mark.usefixtures("bot")
async def test_forget_me_deletes_everywhere_keeps_approved_examples_and_says_so(
    discord_server: FakeDiscord, services: Services
) -> None:
    store, member = services.store, discord_server.member
    started = await say(discord_server, "!train what is tea => a drink", author=TRAINER)
    assert "Training job #" in started["content"]
    await chat_rate_and_correct(discord_server, services, TRAINER, "tea")
    dm = discord_server.dm_channel_id(TRAINER)
    await say(discord_server, "hello from a dm", author=TRAINER, channel_id=dm)
    await chat_rate_and_correct(discord_server, services, member, "coffee")
    members_before = store.people.data(member.id)

    reply = await say(discord_server, "!forget me", author=TRAINER)
    text = reply["content"]
    assert "Forgotten, in every channel and DM: 2 messages you sent me, 2 replies of mine to them" in text
    assert "1 feedback note, 1 rating, 1 correction, 2 examples your corrections made" in text
    assert "Kept: 1 example taught with `!train`" in text and "an admin approved them" in text
    assert "until the next training (`!retrain`)" in text
    assert all(rows == [] for rows in store.people.data(TRAINER.id).values())
    assert store.people.data(member.id) == members_before
    assert store.db.query_one("SELECT author_id FROM examples WHERE input = 'what is tea'")["author_id"] is None

    handle = await discord_server.invoke_slash("forget", {"whose": "me"}, user=member, dm=True)
    [answer] = await handle.wait_messages()
    assert answer["flags"] & 64 and "1 message you sent me" in answer["content"]
    assert all(rows == [] for rows in store.people.data(member.id).values())
