"""The database: SQLite by default, PostgreSQL with ``TRAINERBOT_DATABASE_URL`` (storage/postgres.py).

Migrations are an append-only list of small functions, one history for both engines; the
``schema_migrations`` table records which have run, so a database of any age is brought up to date.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: one process per data directory is assumed there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _casefold(text: object) -> object:
    return text.casefold() if isinstance(text, str) else text


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would commit the surrounding transaction first; run statement by statement instead.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE datasets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            directory TEXT NOT NULL,
            positive INTEGER NOT NULL,
            files INTEGER NOT NULL,
            examples INTEGER NOT NULL,
            outputs INTEGER NOT NULL,
            archive TEXT NOT NULL,
            manifest TEXT NOT NULL,
            created_by INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE TABLE examples (
            id INTEGER PRIMARY KEY,
            input TEXT NOT NULL,
            output TEXT NOT NULL,
            positive INTEGER NOT NULL,
            source TEXT NOT NULL,
            dataset_id INTEGER REFERENCES datasets(id),
            author_id INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX examples_dataset ON examples(dataset_id);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'interrupted')),
            progress REAL NOT NULL DEFAULT 0,
            stage TEXT NOT NULL DEFAULT '',
            requested_by INTEGER,
            channel_id INTEGER,
            max_example_id INTEGER NOT NULL,
            dataset_id INTEGER REFERENCES datasets(id),
            model_version_id INTEGER,
            result TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE TABLE model_versions (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            path TEXT NOT NULL,
            examples INTEGER NOT NULL,
            outputs INTEGER NOT NULL,
            holdout_accuracy REAL,
            status TEXT NOT NULL CHECK (status IN ('ready', 'rolled_back')),
            created_at TEXT NOT NULL
        );
        CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE replies (
            bot_message_id INTEGER PRIMARY KEY,
            user_message_id INTEGER,
            user_id INTEGER,
            guild_id INTEGER,
            channel_id INTEGER,
            input TEXT NOT NULL,
            reply TEXT NOT NULL,
            source TEXT NOT NULL,
            confidence REAL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            user_id INTEGER,
            user_name TEXT,
            guild_id INTEGER,
            channel_id INTEGER,
            message_id INTEGER,
            text TEXT NOT NULL,
            about_message_id INTEGER,
            about_reply TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE reactions (
            id INTEGER PRIMARY KEY,
            bot_message_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            emoji TEXT NOT NULL,
            rating INTEGER NOT NULL,
            input TEXT,
            reply TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (bot_message_id, user_id, emoji)
        );
        CREATE TABLE corrections (
            id INTEGER PRIMARY KEY,
            bot_message_id INTEGER,
            user_id INTEGER,
            input TEXT NOT NULL,
            bad_reply TEXT NOT NULL,
            correction TEXT NOT NULL,
            positive_example_id INTEGER NOT NULL REFERENCES examples(id),
            negative_example_id INTEGER NOT NULL REFERENCES examples(id),
            created_at TEXT NOT NULL
        );
        CREATE TABLE test_runs (
            id INTEGER PRIMARY KEY,
            user_id INTEGER,
            model_version_id INTEGER,
            total INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            accuracy REAL NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE test_failures (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES test_runs(id),
            input TEXT NOT NULL,
            expected TEXT,
            got TEXT,
            confidence REAL NOT NULL
        );
        """,
    )


def _m002_conversations(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE chat_turns (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL,
            guild_id INTEGER,
            user_id INTEGER,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content TEXT NOT NULL,
            context TEXT,
            message_id INTEGER,
            reply_to INTEGER REFERENCES chat_turns(id) ON DELETE CASCADE,
            source TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX chat_turns_conversation ON chat_turns(conversation_id, id);
        CREATE INDEX chat_turns_reply_to ON chat_turns(reply_to);
        CREATE TABLE personas (
            conversation_id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            set_by INTEGER,
            set_at TEXT NOT NULL
        );
        CREATE TABLE example_vectors (
            example_id INTEGER PRIMARY KEY REFERENCES examples(id) ON DELETE CASCADE,
            vector BLOB NOT NULL
        )
        """,
    )


def _m003_handled_messages(db: sqlite3.Connection) -> None:
    # One row per Discord message the bot took on, so an event delivered twice (a replay after
    # a resume, a catch-up after a new session, a restart) is answered once, and one whose handling
    # a restart cut off (``finished`` still 0) is taken up again. Ids only, no content: a snowflake
    # carries its creation time, which is all that pruning needs.
    _run_script(
        db,
        """
        CREATE TABLE handled_messages (
            message_id INTEGER PRIMARY KEY,
            channel_id INTEGER NOT NULL,
            finished INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX handled_messages_channel ON handled_messages(channel_id, message_id);
        CREATE INDEX chat_turns_message ON chat_turns(message_id);
        CREATE INDEX replies_user_message ON replies(user_message_id)
        """,
    )


def _m004_knowledge_bases(db: sqlite3.Connection) -> None:
    # One knowledge base per Discord server beside the bot-wide one (id 0). What was taught before
    # bases existed goes to the bot-wide base, which answers in every server that has not turned it
    # off: a bot used by one server answers exactly as it did. What the ``state`` table held for
    # the one base (the active model, the selected dataset) becomes the bot-wide base's row.
    _run_script(
        db,
        """
        CREATE TABLE bases (
            id INTEGER PRIMARY KEY,
            active_model INTEGER REFERENCES model_versions(id),
            selected_dataset INTEGER REFERENCES datasets(id),
            use_global INTEGER NOT NULL DEFAULT 1,
            admin_roles TEXT,
            persona TEXT,
            changed_by INTEGER,
            changed_at TEXT NOT NULL
        );
        ALTER TABLE examples ADD COLUMN base INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE datasets ADD COLUMN base INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN base INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE model_versions ADD COLUMN base INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE test_runs ADD COLUMN base INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE corrections ADD COLUMN base INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX examples_base ON examples(base, id);
        CREATE INDEX datasets_base ON datasets(base, id);
        CREATE INDEX jobs_base ON jobs(base, id);
        CREATE INDEX jobs_status ON jobs(status);
        CREATE INDEX model_versions_base ON model_versions(base, id);
        CREATE INDEX test_runs_base ON test_runs(base, id);
        CREATE INDEX test_failures_run ON test_failures(run_id);
        CREATE INDEX chat_turns_user ON chat_turns(user_id);
        CREATE INDEX replies_user ON replies(user_id)
        """,
    )

    def state(key: str) -> int | None:
        row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    db.execute(
        "INSERT INTO bases (id, active_model, selected_dataset, changed_at) VALUES (0, ?, ?, ?)",
        (state("active_model"), state("selected_dataset"), utc_now()),
    )
    db.execute("DELETE FROM state WHERE key IN ('active_model', 'selected_dataset')")
    # The console's replies had no channel; its conversation outside a server is channel 0 now.
    db.execute("UPDATE replies SET channel_id = 0 WHERE guild_id IS NULL AND channel_id IS NULL")
    # Model files were named by the path the bot was started with (relative to its working directory,
    # or absolute); they are named relative to the data directory now, so the folder can move.
    for version_id, path in db.execute("SELECT id, path FROM model_versions").fetchall():
        db.execute("UPDATE model_versions SET path = ? WHERE id = ?", (f"models/{Path(path).name}", version_id))


def _m005_review(db: sqlite3.Connection) -> None:
    # Each base's review inbox (storage/review.py): what the taught model could not answer, replies
    # rated 👎, corrections, and members' suggested corrections, grouped by meaning into topics. A
    # topic keeps the running sum of its items' embeddings, so its centroid costs one read.
    # ``review_examples`` names whose question each example `!answer` made came from: `!forget me`
    # deletes them with the person's other words, however old the inbox's items are.
    _run_script(
        db,
        """
        CREATE TABLE review_topics (
            id INTEGER PRIMARY KEY,
            base INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('questions', 'suggestion', 'correction')),
            status TEXT NOT NULL CHECK (status IN ('open', 'answered', 'dismissed')),
            vector_sum BLOB NOT NULL,
            answer TEXT,
            closed_by INTEGER,
            closed_at TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX review_topics_base ON review_topics(base, status, kind);
        CREATE TABLE review_items (
            id INTEGER PRIMARY KEY,
            base INTEGER NOT NULL,
            topic_id INTEGER NOT NULL REFERENCES review_topics(id),
            kind TEXT NOT NULL CHECK (kind IN ('unknown', 'disliked', 'corrected', 'suggestion')),
            user_id INTEGER,
            user_name TEXT,
            asked_by INTEGER,
            text TEXT NOT NULL,
            reply TEXT,
            suggestion TEXT,
            bot_message_id INTEGER,
            vector BLOB NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX review_items_base ON review_items(base, id);
        CREATE INDEX review_items_topic ON review_items(topic_id);
        CREATE INDEX review_items_user ON review_items(user_id);
        CREATE INDEX review_items_asked_by ON review_items(asked_by);
        CREATE TABLE review_examples (
            example_id INTEGER NOT NULL REFERENCES examples(id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL,
            topic_id INTEGER NOT NULL,
            PRIMARY KEY (example_id, user_id)
        );
        CREATE INDEX review_examples_user ON review_examples(user_id)
        """,
    )


def _m006_dashboard(db: sqlite3.Connection) -> None:
    # ``audit``: every change to a base (its knowledge, model, inbox and settings), who made it and through
    # which front end, newest last; the dashboard lists it per server. ``web_sessions``: the dashboard's
    # signed-in people; the cookie holds a random token whose SHA-256 is the id, so a copy of the
    # database signs nobody in. ``guilds`` is what Discord said of their servers at sign-in (JSON).
    _run_script(
        db,
        """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            base INTEGER NOT NULL,
            user_id INTEGER,
            user_name TEXT,
            via TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX audit_base ON audit(base, id);
        CREATE INDEX audit_user ON audit(user_id);
        CREATE TABLE web_sessions (
            id TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            operator INTEGER NOT NULL,
            guilds TEXT NOT NULL,
            csrf TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        );
        CREATE INDEX web_sessions_user ON web_sessions(user_id);
        CREATE INDEX feedback_guild ON feedback(guild_id, id);
        """,
    )


def _m007_knowledge_revision(db: sqlite3.Connection) -> None:
    # The serving layers know a base's examples changed from cheap fingerprints: the active model, and the
    # count and largest id of what came after it. Editing or deleting examples the model was trained on
    # changes neither, so each such change also counts up ``revision`` (storage/knowledge.py). No index is
    # added for the dashboard's pages of answers: grouping a base's 10,000 examples over ``examples_base``
    # takes a few milliseconds.
    db.execute("ALTER TABLE bases ADD COLUMN revision INTEGER NOT NULL DEFAULT 0")


def _m008_many_processes(db: sqlite3.Connection) -> None:
    # ``model_files``: trained models' files, for PostgreSQL. The worker that trains a model and the bots that
    # answer with it may share no disk, so the file's bytes go in the database beside its version
    # (storage/knowledge.py), and a process that lacks the file writes it to its own data directory before
    # loading it. A bot on SQLite has one data directory and keeps its models there only: the table stays empty.
    # ``handled_messages.direct``: whether a claimed message was a DM (1) or in a server (0), so that the
    # process running shard 0 catches up DMs without asking Discord about the channels of other processes'
    # servers; NULL for claims made before, which are asked about as they were.
    # ``sign_in_attempts``: the dashboard's limit on sign-in attempts, shared by every dashboard on the database
    # (the SHA-256 of the address, and when, in seconds since 1970: the machines' clocks, not one process's).
    _run_script(
        db,
        """
        CREATE TABLE model_files (
            path TEXT PRIMARY KEY,
            data BLOB NOT NULL,
            created_at TEXT NOT NULL
        );
        ALTER TABLE handled_messages ADD COLUMN direct INTEGER;
        CREATE TABLE sign_in_attempts (
            address TEXT NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX sign_in_attempts_address ON sign_in_attempts(address, at)
        """,
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_initial,
    _m002_conversations,
    _m003_handled_messages,
    _m004_knowledge_bases,
    _m005_review,
    _m006_dashboard,
    _m007_knowledge_revision,
    _m008_many_processes,
]


@dataclass(frozen=True)
class ProcessLock:
    alone: bool  # no other process held it when this one joined
    release: Callable[[], None]


def migrate(db: Any) -> None:
    """Brings the schema up to date, inside the caller's transaction (either engine's connection)."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    for version, migration in enumerate(MIGRATIONS, start=1):
        if version in done:
            continue
        log.info("applying migration %d (%s)", version, migration.__name__)
        migration(db)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, migration.__name__, utc_now()))


def is_postgres(address: str) -> bool:
    return address.startswith(("postgresql://", "postgres://"))


def open_database(address: str | Path) -> Database:
    """The database at ``address``: a PostgreSQL URL, or the path of a SQLite file."""
    if isinstance(address, str) and is_postgres(address):
        from trainerbot.storage.postgres import PostgresDatabase  # psycopg is loaded only where it is used

        return PostgresDatabase(address)  # type: ignore[return-value]  (the same interface)
    return Database(Path(address))


class Database:
    """One SQLite connection in WAL mode, shared by threads through a lock."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.address = str(path)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # SQLite's LIKE and lower() fold ASCII letters only; searches of people's words in any language use this.
        self._conn.create_function("casefold", 1, _casefold, deterministic=True)
        self._lock = threading.RLock()
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction() as db:
            migrate(db)

    @contextmanager
    def transaction(self, *, serialized: bool = True) -> Iterator[sqlite3.Connection]:
        """All or nothing: the block's writes commit together or not at all.

        SQLite has one writer at a time whatever ``serialized`` says (PostgreSQL's lets some writes run
        side by side: storage/postgres.py).
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def backup(self, target: Path) -> None:
        """A consistent copy of the whole database in ``target``, taken while others keep writing.

        SQLite's online backup copies page by page and starts again if a write comes between;
        the copy is written beside the target and renamed, so a failed backup leaves nothing half-made.
        """
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        source, copy = sqlite3.connect(self.path, timeout=10), sqlite3.connect(partial)
        try:
            source.backup(copy)  # a connection of its own: the bot's threads keep theirs meanwhile
            copy.execute("PRAGMA journal_mode=DELETE")  # one file, readable without a -wal beside it
        finally:
            source.close()
            copy.close()
        partial.replace(target)

    def join_training_processes(self) -> ProcessLock:
        """Says, until released, that this process runs training jobs on the database (learning/jobs.py).

        Each such process holds a shared lock on a file beside the database (the kernel lets go when the
        process dies, however it dies); one that could take it exclusively first was alone.
        """
        if fcntl is None:
            return ProcessLock(alone=True, release=lambda: None)
        handle = open(f"{self.path}.jobs-lock", "a")  # noqa: SIM115 (held until released)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        fcntl.flock(handle, fcntl.LOCK_SH)
        return ProcessLock(alone=alone, release=handle.close)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
