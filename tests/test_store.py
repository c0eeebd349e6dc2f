"""SQLite storage: migrations, WAL, all-or-nothing writes, model versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trainerbot.storage.database import MIGRATIONS, Database
from trainerbot.storage.store import Store
from trainerbot.types import GLOBAL_BASE, Example, Place, ReplyRecord


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(Database(tmp_path / "db.sqlite3"))


def test_migrations_are_recorded_and_run_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    Database(path).close()
    db = Database(path)  # a second start applies nothing new
    rows = db.query("SELECT version, name FROM schema_migrations")
    assert [tuple(r) for r in rows] == [(i + 1, m.__name__) for i, m in enumerate(MIGRATIONS)]
    assert db.query_one("PRAGMA journal_mode")[0] == "wal"
    assert db.query_one("PRAGMA integrity_check")[0] == "ok"


def test_a_failed_transaction_stores_nothing(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError), store.db.transaction() as db:
        db.execute(
            "INSERT INTO examples (input, output, positive, source, created_at) VALUES ('a', 'b', 1, 's', 'now')"
        )
        db.execute("INSERT INTO examples (input) VALUES ('no output')")
    assert store.knowledge.example_counts(GLOBAL_BASE)["total"] == 0


def test_correction_stores_both_examples(store: Store) -> None:
    conversations = store.conversations
    asked = conversations.add_turn(conversation_id=5, guild_id=None, user_id=1, role="user", content="capital of peru")
    reply = ReplyRecord(10, 9, 1, "capital of peru", "I don't know", "fallback", 0.2)
    conversations.record_answer(
        conversation_id=5, guild_id=None, channel_id=5, asked=asked, answer=reply, message_ids=[10, 11]
    )
    dm = Place(None, 5)
    assert conversations.reply(dm, 11) == ReplyRecord(
        11, 9, 1, "capital of peru", "I don't know", "fallback", 0.2, None, 5
    )
    assert [t.role for t in conversations.turns(5)] == ["user", "assistant"]
    store.feedback.add_correction(reply=conversations.reply(dm, 10), user_id=1, correction="Lima")
    # A reply given in a DM is of the bot-wide base: the correction's examples go there.
    assert [example for _, example in store.knowledge.training_rows(GLOBAL_BASE, 2**62, None)] == [
        Example("capital of peru", "Lima", True),
        Example("capital of peru", "I don't know", False),
    ]


def test_jobs_versions_and_rollback(store: Store) -> None:
    base, knowledge, jobs = GLOBAL_BASE, store.knowledge, store.jobs
    knowledge.add_examples(base, [Example("a", "b")], source="t", author_id=1)
    result = {"examples": 1, "outputs": 1, "holdout_accuracy": None}
    for _ in range(2):
        job = jobs.create(base, requested_by=1, channel_id=None)
        jobs.mark_running(base, job.id)
        jobs.finish(base, job.id, result=result, model_path=f"models/m{job.id}.npz")
    assert knowledge.active_model(base).id == 2
    old, new = knowledge.roll_back(base)
    assert (old.id, new.id, knowledge.active_model(base).id) == (2, 1, 1)
    assert knowledge.roll_back(base) is None  # nothing before version 1
    failed = jobs.create(base, requested_by=1, channel_id=None)
    jobs.finish(base, failed.id, error="boom")
    assert jobs.job(base, failed.id).status == "failed" and knowledge.active_model(base).id == 1


def test_unfinished_jobs_are_marked_interrupted(store: Store) -> None:
    jobs = store.jobs
    running = jobs.create(GLOBAL_BASE, requested_by=1, channel_id=None)
    jobs.mark_running(GLOBAL_BASE, running.id)
    queued = jobs.create(GLOBAL_BASE, requested_by=1, channel_id=None)
    assert [job.id for job in jobs.interrupt_unfinished()] == [running.id, queued.id]
    assert {jobs.job(GLOBAL_BASE, running.id).status, jobs.job(GLOBAL_BASE, queued.id).status} == {"interrupted"}


def test_reactions_are_stored_once(store: Store) -> None:
    reply = ReplyRecord(10, 9, 1, "q", "a", "taught", 0.9)
    assert store.feedback.add_reaction(user_id=5, emoji="👍", rating=1, reply=reply)
    assert not store.feedback.add_reaction(user_id=5, emoji="👍", rating=1, reply=reply)
