"""SQLite storage: migrations, WAL, all-or-nothing writes, model versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trainerbot.learning.examples import Example
from trainerbot.storage.database import MIGRATIONS, Database
from trainerbot.storage.store import ReplyRecord, Store


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
    assert store.example_counts()["total"] == 0


def test_correction_stores_both_examples(store: Store) -> None:
    asked = store.add_turn(conversation_id=5, guild_id=None, user_id=1, role="user", content="capital of peru")
    reply = ReplyRecord(10, 9, 1, "capital of peru", "I don't know", "fallback", 0.2)
    store.record_answer(conversation_id=5, guild_id=None, channel_id=5, asked=asked, answer=reply, message_ids=[10, 11])
    assert store.reply(11) == ReplyRecord(11, 9, 1, "capital of peru", "I don't know", "fallback", 0.2)
    assert [t.role for t in store.turns(5)] == ["user", "assistant"]
    store.add_correction(reply=store.reply(10), user_id=1, correction="Lima")
    assert store.training_examples(store.max_example_id(), None) == [
        Example("capital of peru", "Lima", True),
        Example("capital of peru", "I don't know", False),
    ]


def test_jobs_versions_and_rollback(store: Store, tmp_path: Path) -> None:
    store.add_examples([Example("a", "b")], source="t", author_id=1)
    result = {"examples": 1, "outputs": 1, "holdout_accuracy": None}
    for _ in range(2):
        job = store.create_job(requested_by=1, channel_id=None)
        store.mark_job_running(job.id)
        store.finish_job(job.id, result=result, model_path=str(tmp_path / f"m{job.id}.npz"))
    assert store.active_model().id == 2
    old, new = store.roll_back()
    assert (old.id, new.id, store.active_model().id) == (2, 1, 1)
    assert store.roll_back() is None  # nothing before version 1
    failed = store.create_job(requested_by=1, channel_id=None)
    store.finish_job(failed.id, error="boom")
    assert store.job(failed.id).status == "failed" and store.active_model().id == 1


def test_unfinished_jobs_are_marked_interrupted(store: Store) -> None:
    running = store.create_job(requested_by=1, channel_id=None)
    store.mark_job_running(running.id)
    queued = store.create_job(requested_by=1, channel_id=None)
    assert store.interrupt_unfinished_jobs() == [running.id, queued.id]
    assert {store.job(running.id).status, store.job(queued.id).status} == {"interrupted"}


def test_reactions_are_stored_once(store: Store) -> None:
    reply = ReplyRecord(10, 9, 1, "q", "a", "taught", 0.9)
    assert store.add_reaction(bot_message_id=10, user_id=5, emoji="👍", rating=1, reply=reply)
    assert not store.add_reaction(bot_message_id=10, user_id=5, emoji="👍", rating=1, reply=reply)
