"""PostgreSQL's side of tests/test_migrations.py, and `trainerbot copy-database`.

The migrations are one history for both engines: an empty PostgreSQL database gets SQLite's tables and
columns, and one "of release 0.1.0" is upgraded as SQLite's is. PostgreSQL came after 0.1.0, so such a
database is made here as 0.1.0 would have made it: its migrations applied to an empty database, then the
0.1.0 fixture's rows copied in. `copy-database` moves a bot from SQLite to PostgreSQL, all or nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import core_services
from tests.databases import table_names
from tests.test_migrations import DM, GUILD, MEMBER, OTHER_GUILD, OWNER, RELEASE, ROWS_0_1_0
from trainerbot import cli
from trainerbot.app import Services, build_services
from trainerbot.config import load_settings
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.model import IntentModel
from trainerbot.storage.copying import copy_rows
from trainerbot.storage.database import MIGRATIONS, open_database
from trainerbot.storage.postgres import Connection
from trainerbot.types import GLOBAL_BASE, Caller, Example

SERVERS = (GUILD, OTHER_GUILD, None)  # the server that used the bot, a server new to it, DMs and the console
NOW = "2026-12-01T10:00:00.000+00:00"


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(RELEASE, data, ignore=shutil.ignore_patterns("README.md"))
    return data


@pytest.fixture
def in_data_dir(release_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`trainerbot` commands run here act on ``release_dir``, and on SQLite: as from a shell in it."""
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("TRAINERBOT_DATA_DIR", str(release_dir))
    monkeypatch.delenv("TRAINERBOT_DATABASE_URL", raising=False)
    return release_dir


def _services(data_dir: Path, database_url: str) -> Services:
    settings = load_settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,
        chat_engine="none",
        stt_engine="none",
        tts_engine="none",
    )
    return build_services(settings, chat=False)


def _columns(db: Any) -> dict[str, list[str]]:
    """Every table's columns in order, on either engine (not the task queue's, procrastinate's, on PostgreSQL)."""
    if db.dialect == "sqlite":
        return {t: [row["name"] for row in db.query(f"PRAGMA table_info({t})")] for t in table_names(db)}
    rows = db.query(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name NOT LIKE 'procrastinate%'"
        " ORDER BY table_name, ordinal_position"
    )
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def _indexes(db: Any) -> list[str]:
    """The indexes the migrations create by name (not those of primary keys and UNIQUE constraints)."""
    if db.dialect == "sqlite":
        rows = db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    else:
        rows = db.query(
            "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)"
            " AND c.relname NOT LIKE '%procrastinate%'"
        )
    return sorted(row[0] for row in rows)


def _rows(db: Any, table: str) -> list[tuple[Any, ...]]:
    """A table's rows, in an order that does not depend on the engine."""
    return sorted((tuple(row) for row in db.query(f"SELECT * FROM {table}")), key=repr)


def _sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = open_database(path)
    try:
        return {table: _rows(db, table) for table in table_names(db) if table != "schema_migrations"}
    finally:
        db.close()


def _answers(services: Services, questions: list[str]) -> dict[int | None, list[str | None]]:
    answers = services.answers
    found = {server: answers.answer_many(answers.bases(server), questions) for server in SERVERS}
    return {server: [p.output for p in result[0]] if result else [] for server, result in found.items()}


def test_an_empty_postgresql_database_gets_the_same_tables_and_columns(postgres_url: str, tmp_path: Path) -> None:
    sqlite, postgres = open_database(tmp_path / "new.sqlite3"), open_database(postgres_url)
    try:
        assert _columns(postgres) == _columns(sqlite)  # the types differ by design (storage/postgres.py)
        assert _indexes(postgres) == _indexes(sqlite)
        for db in (sqlite, postgres):
            assert [tuple(row) for row in db.query("SELECT version FROM schema_migrations ORDER BY 1")] == [
                (version,) for version in range(1, len(MIGRATIONS) + 1)
            ]
            assert [tuple(row) for row in db.query("SELECT id, active_model, selected_dataset FROM bases")] == [
                (GLOBAL_BASE, None, None)
            ]
    finally:
        sqlite.close()
        postgres.close()


def test_a_postgresql_database_of_0_1_0_is_upgraded_keeps_everything_and_answers_as_before(
    release_dir: Path,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixture = sqlite3.connect(release_dir / "trainerbot.sqlite3")
    (released,) = fixture.execute("SELECT count(*) FROM schema_migrations").fetchone()
    questions = [row[0] for row in fixture.execute("SELECT content FROM chat_turns WHERE role = 'user'")]
    # The database 0.1.0 would have made: its migrations only, then its rows (and ids numbering on from them).
    with monkeypatch.context() as patch:
        patch.setattr("trainerbot.storage.database.MIGRATIONS", MIGRATIONS[:released])
        old = open_database(postgres_url)
        with old.transaction() as db:
            copy_rows(fixture, db)
        assert _counts(old) == ROWS_0_1_0
        old.close()
    fixture.close()
    # What 0.1.0 answered: its active model (version 2), loaded as it loaded it.
    model = IntentModel.load(release_dir / "models" / "model-00002.npz", MiniLMEncoder())
    before = [p.output for p in model.predict_many(questions, 0.6)]
    assert sum(answer is not None for answer in before) >= 5  # mostly taught answers: the comparison means something

    services = _services(release_dir, postgres_url)
    try:
        upgraded = services.store.knowledge.db
        assert _counts(upgraded) == ROWS_0_1_0  # every conversation, feedback, rating and claim is kept
        assert [tuple(row) for row in upgraded.query("SELECT version FROM schema_migrations ORDER BY 1")] == [
            (version,) for version in range(1, len(MIGRATIONS) + 1)
        ]
        for table in ("examples", "jobs", "model_versions", "datasets", "test_runs", "corrections"):
            assert [tuple(r) for r in upgraded.query(f"SELECT DISTINCT base FROM {table}")] == [(GLOBAL_BASE,)]
        assert [
            tuple(r) for r in upgraded.query("SELECT id, active_model, selected_dataset, use_global FROM bases")
        ] == [(GLOBAL_BASE, 2, 1, 1)]
        assert upgraded.query("SELECT * FROM state") == []  # what it held is the bot-wide base's row now
        active = services.store.knowledge.active_model(GLOBAL_BASE)
        assert active is not None and (active.id, active.path) == (2, "models/model-00002.npz")

        assert _answers(services, questions) == dict.fromkeys(SERVERS, before)
        owner = Caller(OWNER, "owner", is_owner=True, channel_id=DM)
        assert "do you sell gift cards" in services.teaching.errors(owner).text
        assert "Model version 2 answers" in services.teaching.model_info(owner).text
    finally:
        services.close()

    # Opening it again runs nothing more; its schema is an empty database's.
    again, empty = open_database(postgres_url), open_database(tmp_path / "new.sqlite3")
    try:
        assert again.query_one("SELECT count(*) FROM schema_migrations")[0] == len(MIGRATIONS)
        assert (_columns(again), _indexes(again)) == (_columns(empty), _indexes(empty))
    finally:
        again.close()
        empty.close()


def _counts(db: Any) -> dict[str, int]:
    return {table: db.query_one(f"SELECT count(*) FROM {table}")[0] for table in ROWS_0_1_0}


def _fill_the_empty_tables(path: Path) -> None:
    """Rows in the tables 0.1.0 had no use for (a server's own settings, its review inbox, the dashboard's)."""
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO state VALUES ('copy-test', 'kept')")
        db.execute("INSERT INTO sign_in_attempts (address, at) VALUES ('digest of an address', 1.5)")
        db.execute("UPDATE bases SET persona = 'Cheerful.', changed_by = ? WHERE id = ?", (OWNER, GUILD))
        topic = db.execute(
            "INSERT INTO review_topics (base, kind, status, vector_sum, created_at)"
            " VALUES (?, 'questions', 'open', ?, ?) RETURNING id",
            (GUILD, b"\0" * 16, NOW),
        ).fetchone()[0]
        db.execute(
            "INSERT INTO review_items (base, topic_id, kind, user_id, text, vector, created_at)"
            " VALUES (?, ?, 'unknown', ?, 'is there a loyalty card', ?, ?)",
            (GUILD, topic, MEMBER, b"\1" * 16, NOW),
        )
        db.execute("INSERT INTO review_examples VALUES (1, ?, ?)", (MEMBER, topic))
        db.execute(
            "INSERT INTO audit (base, user_id, user_name, via, action, detail, created_at)"
            " VALUES (?, ?, 'owner', 'console', 'settings', 'persona', ?)",
            (GUILD, OWNER, NOW),
        )
        db.execute(
            "INSERT INTO web_sessions VALUES ('digest', ?, 'owner', 1, '[]', 'csrf', ?, '2026-12-31T00:00:00+00:00')",
            (OWNER, NOW),
        )


def _model_versions(sqlite_path: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(sqlite_path) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT id, path FROM model_versions").fetchall()


def test_copy_database_moves_a_bot_from_sqlite_to_postgresql(
    in_data_dir: Path, postgres_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = in_data_dir
    sqlite_path = data / "trainerbot.sqlite3"
    with sqlite3.connect(sqlite_path) as db:
        questions = [row[0] for row in db.execute("SELECT content FROM chat_turns WHERE role = 'user'")]
    questions.append("where can I park")
    # A bot on SQLite: 0.1.0's data brought up to date, and a server that taught its own base.
    services = core_services(data)
    try:
        services.store.knowledge.add_examples(
            GUILD,
            [Example("where can I park", "Behind the shop, free after six.")],
            source="train:message",
            author_id=OWNER,
        )
        on_sqlite = _answers(services, questions)
    finally:
        services.close()
    assert on_sqlite[GUILD][-1] == "Behind the shop, free after six."
    _fill_the_empty_tables(sqlite_path)
    # model_files stays empty on SQLite (the files are in the data directory): the copy fills it from them.
    expected = {table: rows for table, rows in _sqlite_rows(sqlite_path).items() if table != "model_files"}
    assert [table for table, rows in expected.items() if not rows] == []  # the copy is tried on every table
    model_paths = sorted({row["path"] for row in _model_versions(sqlite_path)})

    assert cli.main(["copy-database", "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    assert f"Copied {sum(map(len, expected.values())) + len(model_paths):,} rows" in out
    assert "trained models went into the database too" in out and "must share" in out
    copy = open_database(postgres_url)
    try:
        assert {table: _rows(copy, table) for table in expected} == expected
        models = {row["path"]: bytes(row["data"]) for row in copy.query("SELECT path, data FROM model_files")}
    finally:
        copy.close()
    assert sorted(models) == model_paths
    assert all(content == (data / path).read_bytes() for path, content in models.items())

    # A second copy into the same database is refused, and changes nothing.
    assert cli.main(["copy-database", "--to", postgres_url]) == 1
    assert "already holds trainerbot's rows" in capsys.readouterr().err

    # A bot on another machine, whose data directory is empty, answers the same: its models come from the database.
    elsewhere = _services(tmp_path / "elsewhere", postgres_url)
    try:
        assert _answers(elsewhere, questions) == on_sqlite
    finally:
        elsewhere.close()
    services = _services(data, postgres_url)
    try:
        assert _answers(services, questions) == on_sqlite
        # New rows number on from the copied ones.
        (new_id,) = services.store.knowledge.add_examples(
            GUILD,
            [Example("is there a loyalty card", "Yes: ask at the till.")],
            source="train:message",
            author_id=OWNER,
        )
        assert new_id == max(row[0] for row in expected["examples"]) + 1
    finally:
        services.close()


def test_copy_database_refuses_without_a_sqlite_database_or_a_postgresql_url(
    in_data_dir: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["copy-database", "--to", str(in_data_dir / "other.sqlite3")]) == 1
    assert "give its URL, postgresql://" in capsys.readouterr().err
    (in_data_dir / "trainerbot.sqlite3").unlink()
    assert cli.main(["copy-database", "--to", postgres_url]) == 1
    assert "There is no SQLite database at" in capsys.readouterr().err
    assert not (in_data_dir / "trainerbot.sqlite3").exists()


def test_a_copy_that_fails_halfway_leaves_postgresql_empty(
    in_data_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    insert = Connection.executemany
    batches = 0

    def fails_at_the_sixth_table(self: Connection, sql: str, rows: Any) -> Any:
        nonlocal batches
        batches += 1
        if batches == 6:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return insert(self, sql, rows)

    with monkeypatch.context() as patch:
        patch.setattr(Connection, "executemany", fails_at_the_sixth_table)
        assert cli.main(["copy-database", "--to", postgres_url]) == 1
    assert batches == 6
    assert "Nothing was copied." in capsys.readouterr().err
    db = open_database(postgres_url)
    try:
        held = {table: len(_rows(db, table)) for table in table_names(db) if table != "schema_migrations"}
        assert held == dict.fromkeys(held, 0) | {"bases": 1}
        assert [tuple(row) for row in db.query("SELECT id, active_model, selected_dataset FROM bases")] == [
            (GLOBAL_BASE, None, None)
        ]
    finally:
        db.close()
    # ... and may be copied into again.
    assert cli.main(["copy-database", "--to", postgres_url]) == 0
    assert "Copied" in capsys.readouterr().out
