"""Upgrading: a data directory written by release 0.1.0 (tests/data/release-0.1.0, see its README)
is brought up to date by the migrations, loses nothing, and answers exactly as 0.1.0 did;
an empty database gets the same schema from the same migrations."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from trainerbot.app import build_services
from trainerbot.config import load_settings
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.model import IntentModel
from trainerbot.storage.database import MIGRATIONS, Database
from trainerbot.types import GLOBAL_BASE, Caller, Place

RELEASE = Path(__file__).parent / "data" / "release-0.1.0"
OWNER, MEMBER = 111_111_111_111_111_111, 222_222_222_222_222_222
GUILD, GENERAL, DM = 444_444_444_444_444_444, 555_555_555_555_555_501, 666_666_666_666_666_601
OTHER_GUILD = 777_777_777_777_777_777
ROWS_0_1_0 = {  # the fixture's README
    "examples": 18,
    "example_vectors": 17,
    "jobs": 2,
    "model_versions": 2,
    "datasets": 1,
    "chat_turns": 18,
    "replies": 9,
    "feedback": 2,
    "reactions": 1,
    "corrections": 1,
    "test_runs": 1,
    "test_failures": 1,
    "personas": 1,
    "handled_messages": 18,
}


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ROWS_0_1_0}


def _schema(path: Path) -> dict[str, str]:
    """Every table's and index's definition, as SQLite keeps it."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").fetchall()
    return dict(rows)


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(RELEASE, data, ignore=shutil.ignore_patterns("README.md"))
    return data


def test_the_fixture_is_what_0_1_0_wrote(release_dir: Path) -> None:
    database = release_dir / "trainerbot.sqlite3"
    with sqlite3.connect(database) as db:
        assert [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2, 3]
    assert _counts(database) == ROWS_0_1_0


def test_upgrading_0_1_0_keeps_everything_and_answers_as_before(release_dir: Path) -> None:
    database = release_dir / "trainerbot.sqlite3"
    with sqlite3.connect(database) as db:
        paths = dict(db.execute("SELECT id, path FROM model_versions"))
    questions = [
        row[0] for row in sqlite3.connect(database).execute("SELECT content FROM chat_turns WHERE role = 'user'")
    ]
    # What 0.1.0 would answer: its active model (version 2), loaded as it loaded it.
    old = IntentModel.load(release_dir / Path(paths[2]).relative_to("data"), MiniLMEncoder())
    before = [p.output for p in old.predict_many(questions, 0.6)]
    assert sum(answer is not None for answer in before) >= 5  # mostly taught answers: the comparison means something

    settings = load_settings(
        _env_file=None, data_dir=release_dir, chat_engine="none", stt_engine="none", tts_engine="none"
    )
    services = build_services(settings)
    try:
        store = services.store
        assert _counts(database) == ROWS_0_1_0  # every conversation, feedback, rating and claim is kept
        with sqlite3.connect(database) as db:
            versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations")]
            assert versions == list(range(1, len(MIGRATIONS) + 1))
            # Everything taught so far is the bot-wide base's.
            for table in ("examples", "jobs", "model_versions", "datasets", "test_runs", "corrections"):
                assert db.execute(f"SELECT DISTINCT base FROM {table}").fetchall() == [(GLOBAL_BASE,)], table
            assert db.execute(
                "SELECT count(*) FROM state WHERE key IN ('active_model', 'selected_dataset')"
            ).fetchone() == (0,)
            assert db.execute("SELECT id, active_model, selected_dataset, use_global FROM bases").fetchall() == [
                (GLOBAL_BASE, 2, 1, 1)
            ]
            for table in ("audit", "web_sessions"):  # the dashboard's: empty until someone changes or signs in
                assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
            assert db.execute("SELECT revision FROM bases").fetchall() == [(0,)]  # nothing edited yet
        active = store.knowledge.active_model(GLOBAL_BASE)
        assert active is not None and (active.id, active.path) == (2, "models/model-00002.npz")
        assert store.knowledge.selected_dataset_id(GLOBAL_BASE) == 1

        # The server that used the bot, a server new to it, a DM and the console all answer as 0.1.0 did.
        for guild in (GUILD, OTHER_GUILD, None):
            caller = Caller(MEMBER, "member", guild_id=guild, channel_id=GENERAL if guild else DM)
            bases = services.answers.bases(guild)
            after = [services.answers.answer(bases, q, old.encoder.encode([q])[0]) for q in questions]
            assert [found.prediction.output if found else None for found in after] == before, caller

        # Replies stay where they were given: found in their server and DM, nowhere else.
        (in_guild,) = (
            sqlite3.connect(database)
            .execute(
                "SELECT bot_message_id FROM replies WHERE guild_id = ? AND source = 'fallback' ORDER BY 1 LIMIT 1",
                (GUILD,),
            )
            .fetchone()
        )
        conversations = store.conversations
        assert conversations.reply(Place(GUILD, GENERAL), in_guild) is not None
        assert conversations.reply(Place(OTHER_GUILD, GENERAL), in_guild) is None
        assert conversations.reply(Place(None, DM), in_guild) is None
        # The old test run and its failure are the bot-wide base's: its owner sees them.
        owner = Caller(OWNER, "owner", is_owner=True, channel_id=DM)
        assert "do you sell gift cards" in services.teaching.errors(owner).text
        assert "Model version 2 answers" in services.teaching.model_info(owner).text
    finally:
        services.close()

    # Opening it again runs nothing more.
    Database(database).close()
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


def test_an_empty_database_and_an_upgraded_one_have_the_same_schema(release_dir: Path, tmp_path: Path) -> None:
    Database(release_dir / "trainerbot.sqlite3").close()
    Database(tmp_path / "new.sqlite3").close()
    assert _schema(release_dir / "trainerbot.sqlite3") == _schema(tmp_path / "new.sqlite3")
    with sqlite3.connect(tmp_path / "new.sqlite3") as db:
        assert db.execute("SELECT id, active_model, selected_dataset FROM bases").fetchall() == [
            (GLOBAL_BASE, None, None)
        ]


def test_a_failed_migration_changes_nothing(release_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All migrations run in one transaction: one that fails leaves the database as it was."""
    database = release_dir / "trainerbot.sqlite3"
    before = _schema(database)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_made (id INTEGER)")
        raise RuntimeError("a migration that fails half-way")

    monkeypatch.setattr("trainerbot.storage.database.MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(RuntimeError):
        Database(database)
    assert _schema(database) == before
    assert _counts(database) == ROWS_0_1_0
