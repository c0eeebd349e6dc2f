"""Repositories: every SQL statement trainerbot runs, grouped by table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from trainerbot.learning.examples import Example
from trainerbot.storage.database import Database, utc_now


@dataclass(frozen=True)
class Job:
    id: int
    status: str
    progress: float
    stage: str
    requested_by: int | None
    channel_id: int | None
    model_version_id: int | None
    result: dict[str, Any] | None
    error: str | None
    created_at: str
    finished_at: str | None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "interrupted")


@dataclass(frozen=True)
class ModelVersion:
    id: int
    job_id: int
    path: str
    examples: int
    outputs: int
    holdout_accuracy: float | None
    status: str
    created_at: str


@dataclass(frozen=True)
class ReplyRecord:
    bot_message_id: int
    user_message_id: int | None
    user_id: int | None
    input: str
    reply: str
    source: str
    confidence: float | None


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: what a user said, or what the bot answered."""

    id: int
    role: str  # "user" or "assistant"
    content: str
    user_id: int | None
    source: str | None  # for the bot's turns: "taught", "chat" or "fallback"
    context: str | None = None  # for users' turns: the taught examples the chat engine was shown with it


@dataclass(frozen=True)
class IndexedExample:
    id: int
    input: str
    output: str
    vector: bytes | None  # float32 MiniLM embedding, None until computed


@dataclass(frozen=True)
class Forgotten:
    """What ``Store.forget_user`` deleted, kept and unlinked, counted by kind."""

    messages: int  # chat turns the person wrote
    answers: int  # the bot's chat turns answering them
    reply_records: int  # which bot message answered which of their messages
    feedback: int
    reactions: int
    corrections: int
    examples: int  # examples their corrections made (deleted, with their embeddings)
    test_runs: int
    kept_trained: int  # examples they taught with !train: kept, without their name
    kept_dataset: int  # examples of a dataset they selected: kept, without their name
    unlinked: int  # jobs, datasets and personas they started, selected or set: kept, without their name
    conversations: tuple[int, ...]  # where their turns were
    # Others' rows that carry the person's words, from being about the bot's replies to them:
    corrected_by_others: int = 0  # corrections of those replies: deleted, their examples hold the person's question
    examples_of_others: int = 0  # the examples those corrections made
    quoted_by_others: int = 0  # ratings and feedback notes of those replies: kept, without the copied text

    @property
    def deleted(self) -> int:
        return (
            self.messages
            + self.answers
            + self.reply_records
            + self.feedback
            + self.reactions
            + self.corrections
            + self.examples
            + self.test_runs
            + self.corrected_by_others
            + self.examples_of_others
        )


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        status=row["status"],
        progress=row["progress"],
        stage=row["stage"],
        requested_by=row["requested_by"],
        channel_id=row["channel_id"],
        model_version_id=row["model_version_id"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=row["error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def _model(row: Any) -> ModelVersion:
    return ModelVersion(**{key: row[key] for key in row.keys()})  # noqa: SIM118 (sqlite3.Row)


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- examples and datasets -------------------------------------------------

    def add_examples(
        self, examples: Iterable[Example], *, source: str, author_id: int | None, dataset_id: int | None = None
    ) -> list[int]:
        now = utc_now()
        with self.db.transaction() as db:
            return [
                db.execute(
                    "INSERT INTO examples (input, output, positive, source, dataset_id, author_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ex.input, ex.output, int(ex.positive), source, dataset_id, author_id, now),
                ).lastrowid
                for ex in examples
            ]

    def add_dataset(
        self,
        *,
        name: str,
        directory: str,
        positive: bool,
        examples: Sequence[Example],
        files: int,
        archive: str,
        manifest: dict[str, str],
        created_by: int | None,
    ) -> int:
        """Stores a dataset and its examples in one transaction, and makes it the selected one."""
        now = utc_now()
        with self.db.transaction() as db:
            dataset_id = db.execute(
                "INSERT INTO datasets (name, directory, positive, files, examples, outputs, archive, manifest,"
                " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    directory,
                    int(positive),
                    files,
                    len(examples),
                    len({ex.output for ex in examples}),
                    archive,
                    json.dumps(manifest),
                    created_by,
                    now,
                ),
            ).lastrowid
            db.executemany(
                "INSERT INTO examples (input, output, positive, source, dataset_id, author_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (ex.input, ex.output, int(ex.positive), f"dataset:{name}", dataset_id, created_by, now)
                    for ex in examples
                ],
            )
            db.execute("INSERT OR REPLACE INTO state VALUES ('selected_dataset', ?)", (str(dataset_id),))
            return dataset_id

    def selected_dataset_id(self) -> int | None:
        row = self.db.query_one("SELECT value FROM state WHERE key = 'selected_dataset'")
        return int(row["value"]) if row else None

    def training_rows(self, max_example_id: int, dataset_id: int | None) -> list[tuple[int, Example]]:
        """What a job trains on, with the examples' ids: everything taught up to its start, plus its dataset."""
        rows = self.db.query(
            "SELECT id, input, output, positive FROM examples WHERE id <= ?"
            " AND (dataset_id IS NULL OR dataset_id IS ?) ORDER BY id",
            (max_example_id, dataset_id),
        )
        return [(r["id"], Example(r["input"], r["output"], bool(r["positive"]))) for r in rows]

    def training_examples(self, max_example_id: int, dataset_id: int | None) -> list[Example]:
        return [example for _, example in self.training_rows(max_example_id, dataset_id)]

    # --- example embeddings, for retrieval into chat prompts -------------------------

    def save_example_vectors(self, rows: Iterable[tuple[int, bytes]]) -> None:
        """Stores embeddings; one whose example was deleted meanwhile (`!forget me`) is left out."""
        with self.db.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO example_vectors SELECT ?1, ?2"
                " WHERE EXISTS (SELECT 1 FROM examples WHERE id = ?1)",
                rows,
            )

    def retrievable_state(self) -> tuple[int, int, int | None]:
        """Changes whenever the positive examples in use change: (largest id, count, selected dataset)."""
        dataset_id = self.selected_dataset_id()
        row = self.db.query_one(
            "SELECT coalesce(max(id), 0) AS top, count(*) AS n FROM examples"
            " WHERE positive = 1 AND (dataset_id IS NULL OR dataset_id IS ?)",
            (dataset_id,),
        )
        assert row is not None
        return int(row["top"]), int(row["n"]), dataset_id

    def retrievable_examples(self) -> list[IndexedExample]:
        """The positive examples in use (taught ones and the selected dataset), with stored embeddings."""
        rows = self.db.query(
            "SELECT e.id, e.input, e.output, v.vector FROM examples e LEFT JOIN example_vectors v"
            " ON v.example_id = e.id WHERE e.positive = 1 AND (e.dataset_id IS NULL OR e.dataset_id IS"
            " (SELECT CAST(value AS INT) FROM state WHERE key = 'selected_dataset')) ORDER BY e.id"
        )
        return [IndexedExample(r["id"], r["input"], r["output"], r["vector"]) for r in rows]

    def example_counts(self) -> dict[str, int]:
        dataset_id = self.selected_dataset_id()
        row = self.db.query_one(
            "SELECT count(*) AS total, coalesce(sum(positive), 0) AS positive,"
            " count(DISTINCT output) AS outputs FROM examples WHERE dataset_id IS NULL OR dataset_id IS ?",
            (dataset_id,),
        )
        assert row is not None
        return {"total": row["total"], "positive": row["positive"], "outputs": row["outputs"]}

    def max_example_id(self) -> int:
        row = self.db.query_one("SELECT coalesce(max(id), 0) AS id FROM examples")
        return int(row["id"]) if row else 0

    # --- jobs and model versions ------------------------------------------------

    def create_job(self, *, requested_by: int | None, channel_id: int | None, same_inputs_as: int | None = None) -> Job:
        """A queued job on everything taught so far, or on exactly what job ``same_inputs_as`` had."""
        with self.db.transaction() as db:
            if same_inputs_as is None:
                max_id = db.execute("SELECT coalesce(max(id), 0) FROM examples").fetchone()[0]
                row = db.execute("SELECT value FROM state WHERE key = 'selected_dataset'").fetchone()
                dataset_id = int(row[0]) if row else None
            else:
                max_id, dataset_id = db.execute(
                    "SELECT max_example_id, dataset_id FROM jobs WHERE id = ?", (same_inputs_as,)
                ).fetchone()
            job_id = db.execute(
                "INSERT INTO jobs (status, requested_by, channel_id, max_example_id, dataset_id, created_at)"
                " VALUES ('queued', ?, ?, ?, ?, ?)",
                (requested_by, channel_id, max_id, dataset_id, utc_now()),
            ).lastrowid
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: int) -> Job | None:
        row = self.db.query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    def job_inputs(self, job_id: int) -> tuple[int, int | None]:
        row = self.db.query_one("SELECT max_example_id, dataset_id FROM jobs WHERE id = ?", (job_id,))
        assert row is not None
        return row["max_example_id"], row["dataset_id"]

    def job_input_counts(self, job_id: int) -> dict[str, int]:
        """How many examples and outputs a job trains on."""
        row = self.db.query_one(
            "SELECT count(e.id) AS total, count(DISTINCT e.output) AS outputs FROM jobs j"
            " JOIN examples e ON e.id <= j.max_example_id AND (e.dataset_id IS NULL OR e.dataset_id IS j.dataset_id)"
            " WHERE j.id = ?",
            (job_id,),
        )
        assert row is not None
        return {"total": row["total"], "outputs": row["outputs"]}

    def later_job(self, job_id: int) -> Job | None:
        """The first job after ``job_id`` that succeeded or is on its way (queued or running), if any."""
        row = self.db.query_one(
            "SELECT * FROM jobs WHERE id > ? AND status IN ('queued', 'running', 'succeeded') ORDER BY id LIMIT 1",
            (job_id,),
        )
        return _job(row) if row else None

    def recent_jobs(self, limit: int = 10) -> list[Job]:
        return [_job(r) for r in self.db.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))]

    def mark_job_running(self, job_id: int) -> bool:
        """False when the job is no longer queued (a restart marked it interrupted)."""
        with self.db.transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
                (utc_now(), job_id),
            )
            return cursor.rowcount == 1

    def update_job_progress(self, job_id: int, progress: float, stage: str) -> None:
        with self.db.transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, stage = ? WHERE id = ? AND status = 'running'", (progress, stage, job_id)
            )

    def finish_job(
        self,
        job_id: int,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        model_path: str | None = None,
    ) -> bool:
        """Records the outcome; a success also adds the model version and makes it the one that serves.

        Only a job still queued or running is finished: one a restart marked interrupted stays so,
        and its model never serves. Returns whether the outcome was recorded.
        """
        now = utc_now()
        with self.db.transaction() as db:
            status = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if status is None or status[0] not in ("queued", "running"):
                return False
            version_id = None
            if error is None and result is not None and model_path is not None:
                version_id = db.execute(
                    "INSERT INTO model_versions (job_id, path, examples, outputs, holdout_accuracy, status,"
                    " created_at) VALUES (?, ?, ?, ?, ?, 'ready', ?)",
                    (job_id, model_path, result["examples"], result["outputs"], result.get("holdout_accuracy"), now),
                ).lastrowid
                db.execute("INSERT OR REPLACE INTO state VALUES ('active_model', ?)", (str(version_id),))
            db.execute(
                "UPDATE jobs SET status = ?, progress = ?, stage = ?, error = ?, result = ?, model_version_id = ?,"
                " finished_at = ? WHERE id = ?",
                (
                    "failed" if error else "succeeded",
                    0.0 if error else 1.0,
                    "failed" if error else "done",
                    error,
                    json.dumps(result) if result else None,
                    version_id,
                    now,
                    job_id,
                ),
            )
        return True

    def interrupt_unfinished_jobs(self) -> list[int]:
        """At start-up, jobs that were queued or running belong to a process that is gone."""
        with self.db.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')")]
            db.execute(
                "UPDATE jobs SET status = 'interrupted', stage = 'interrupted', finished_at = ?"
                " WHERE status IN ('queued', 'running')",
                (utc_now(),),
            )
        return ids

    def active_model(self) -> ModelVersion | None:
        row = self.db.query_one(
            "SELECT m.* FROM model_versions m JOIN state s ON s.key = 'active_model' AND m.id = CAST(s.value AS INT)"
        )
        return _model(row) if row else None

    def model_versions(self, limit: int = 10) -> list[ModelVersion]:
        return [_model(r) for r in self.db.query("SELECT * FROM model_versions ORDER BY id DESC LIMIT ?", (limit,))]

    def roll_back(self) -> tuple[ModelVersion, ModelVersion] | None:
        """Retires the serving model and serves the newest good one before it; None if there is none."""
        with self.db.transaction() as db:
            row = db.execute("SELECT value FROM state WHERE key = 'active_model'").fetchone()
            if row is None:
                return None
            current = int(row[0])
            previous = db.execute(
                "SELECT id FROM model_versions WHERE id < ? AND status = 'ready' ORDER BY id DESC LIMIT 1",
                (current,),
            ).fetchone()
            if previous is None:
                return None
            db.execute("UPDATE model_versions SET status = 'rolled_back' WHERE id = ?", (current,))
            db.execute("UPDATE state SET value = ? WHERE key = 'active_model'", (str(previous[0]),))
            old = _model(db.execute("SELECT * FROM model_versions WHERE id = ?", (current,)).fetchone())
            new = _model(db.execute("SELECT * FROM model_versions WHERE id = ?", (previous[0],)).fetchone())
        return old, new

    # --- conversation records ---------------------------------------------------

    def next_local_message_id(self) -> int:
        """Message ids for the console: small numbers that never meet Discord's 64-bit snowflakes."""
        row = self.db.query_one(
            "SELECT coalesce(max(bot_message_id), 0) AS id FROM replies WHERE bot_message_id < ?", (1 << 32,)
        )
        return int(row["id"]) + 1 if row else 1

    def reply(self, bot_message_id: int) -> ReplyRecord | None:
        row = self.db.query_one(
            "SELECT bot_message_id, user_message_id, user_id, input, reply, source, confidence"
            " FROM replies WHERE bot_message_id = ?",
            (bot_message_id,),
        )
        return ReplyRecord(**dict(row)) if row else None

    def add_feedback(
        self,
        *,
        user_id: int | None,
        user_name: str,
        guild_id: int | None,
        channel_id: int | None,
        message_id: int | None,
        text: str,
        about: ReplyRecord | None,
    ) -> int:
        with self.db.transaction() as db:
            return db.execute(
                "INSERT INTO feedback (user_id, user_name, guild_id, channel_id, message_id, text,"
                " about_message_id, about_reply, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    user_name,
                    guild_id,
                    channel_id,
                    message_id,
                    text,
                    about.bot_message_id if about else None,
                    about.reply if about else None,
                    utc_now(),
                ),
            ).lastrowid

    def add_reaction(self, *, bot_message_id: int, user_id: int, emoji: str, rating: int, reply: ReplyRecord) -> bool:
        """Stores a rating once per user, message and emoji; False when it was already there."""
        with self.db.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO reactions (bot_message_id, user_id, emoji, rating, input, reply, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bot_message_id, user_id, emoji, rating, reply.input, reply.reply, utc_now()),
            )
            return cursor.rowcount == 1

    def add_correction(self, *, reply: ReplyRecord, user_id: int | None, correction: str) -> int:
        """The correction and its two examples are stored together or not at all."""
        now = utc_now()
        with self.db.transaction() as db:
            insert = (
                "INSERT INTO examples (input, output, positive, source, author_id, created_at)"
                " VALUES (?, ?, ?, 'correction', ?, ?)"
            )
            good = db.execute(insert, (reply.input, correction, 1, user_id, now)).lastrowid
            bad = db.execute(insert, (reply.input, reply.reply, 0, user_id, now)).lastrowid
            return db.execute(
                "INSERT INTO corrections (bot_message_id, user_id, input, bad_reply, correction,"
                " positive_example_id, negative_example_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (reply.bot_message_id, user_id, reply.input, reply.reply, correction, good, bad, now),
            ).lastrowid

    # --- conversation memory ------------------------------------------------------

    def add_turn(
        self,
        *,
        conversation_id: int,
        guild_id: int | None,
        user_id: int | None,
        role: str,
        content: str,
        message_id: int | None = None,
        reply_to: int | None = None,
        source: str | None = None,
    ) -> int:
        """Stores a turn; a user's message already stored (taken up again after a restart) is not stored twice."""
        with self.db.transaction() as db:
            if role == "user" and message_id is not None:
                row = db.execute(
                    "SELECT id FROM chat_turns WHERE conversation_id = ? AND role = 'user' AND message_id = ?",
                    (conversation_id, message_id),
                ).fetchone()
                if row is not None:
                    return int(row["id"])
            return db.execute(
                "INSERT INTO chat_turns (conversation_id, guild_id, user_id, role, content, message_id, reply_to,"
                " source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, guild_id, user_id, role, content, message_id, reply_to, source, utc_now()),
            ).lastrowid

    def set_turn_context(self, turn_id: int, context: str | None) -> None:
        with self.db.transaction() as db:
            db.execute("UPDATE chat_turns SET context = ? WHERE id = ?", (context, turn_id))

    def record_answer(
        self,
        *,
        conversation_id: int,
        guild_id: int | None,
        channel_id: int | None,
        asked: int,
        answer: ReplyRecord,
        message_ids: Sequence[int],
    ) -> int:
        """The bot's turn and the messages that carried it, stored together; returns the turn's id."""
        now = utc_now()
        with self.db.transaction() as db:
            turn_id = db.execute(
                "INSERT INTO chat_turns (conversation_id, guild_id, user_id, role, content, message_id, reply_to,"
                " source, created_at) VALUES (?, ?, ?, 'assistant', ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    guild_id,
                    answer.user_id,
                    answer.reply,
                    message_ids[0] if message_ids else None,
                    asked,
                    answer.source,
                    now,
                ),
            ).lastrowid
            db.executemany(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        message_id,
                        answer.user_message_id,
                        answer.user_id,
                        guild_id,
                        channel_id,
                        answer.input,
                        answer.reply,
                        answer.source,
                        answer.confidence,
                        now,
                    )
                    for message_id in message_ids
                ],
            )
            return turn_id

    def turns(self, conversation_id: int, *, before: int | None = None, limit: int = 200) -> list[Turn]:
        """The newest ``limit`` turns of a conversation before turn ``before``, oldest first."""
        rows = self.db.query(
            "SELECT id, role, content, user_id, source, context FROM chat_turns WHERE conversation_id = ? AND id < ?"
            " ORDER BY id DESC LIMIT ?",
            (conversation_id, before if before is not None else 1 << 62, limit),
        )
        return [Turn(**dict(r)) for r in reversed(rows)]

    def forget_conversation(self, conversation_id: int, user_id: int | None = None) -> int:
        """Deletes a conversation's turns, or only one user's (with the bot's answers to them).

        Returns how many of the users' messages were forgotten.
        """
        with self.db.transaction() as db:
            mine = "" if user_id is None else " AND user_id = ?"
            params = (conversation_id,) if user_id is None else (conversation_id, user_id)
            count = db.execute(
                f"SELECT count(*) FROM chat_turns WHERE conversation_id = ? AND role = 'user'{mine}", params
            ).fetchone()[0]
            db.execute(f"DELETE FROM chat_turns WHERE conversation_id = ?{mine}", params)
            return int(count)

    def persona(self, conversation_id: int) -> str | None:
        row = self.db.query_one("SELECT text FROM personas WHERE conversation_id = ?", (conversation_id,))
        return row["text"] if row else None

    def set_persona(self, conversation_id: int, text: str | None, *, user_id: int | None) -> None:
        """Sets a conversation's persona; None returns it to the default."""
        with self.db.transaction() as db:
            if text is None:
                db.execute("DELETE FROM personas WHERE conversation_id = ?", (conversation_id,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO personas VALUES (?, ?, ?, ?)", (conversation_id, text, user_id, utc_now())
                )

    # --- test runs ----------------------------------------------------------------

    def add_test_run(
        self,
        *,
        user_id: int | None,
        model_version_id: int | None,
        total: int,
        passed: int,
        accuracy: float,
        failures: Sequence[dict[str, Any]],
    ) -> int:
        with self.db.transaction() as db:
            run_id = db.execute(
                "INSERT INTO test_runs (user_id, model_version_id, total, passed, accuracy, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, model_version_id, total, passed, accuracy, utc_now()),
            ).lastrowid
            db.executemany(
                "INSERT INTO test_failures (run_id, input, expected, got, confidence) VALUES (?, ?, ?, ?, ?)",
                [(run_id, f["input"], f["expected"], f["got"], f["confidence"]) for f in failures],
            )
            return run_id

    def recent_failures(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT f.run_id, f.input, f.expected, f.got, f.confidence FROM test_failures f"
            " WHERE f.run_id = (SELECT max(id) FROM test_runs) ORDER BY f.id LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    def failure_count(self) -> int:
        row = self.db.query_one(
            "SELECT count(*) AS n FROM test_failures WHERE run_id = (SELECT max(id) FROM test_runs)"
        )
        return int(row["n"]) if row else 0

    # --- messages taken on, for answering each exactly once -----------------------------

    def claim_message(self, message_id: int, channel_id: int, *, forget_before: int) -> bool:
        """Marks a message as taken on; False when it already was (an event delivered again).

        Claims with ids below ``forget_before`` are dropped in the same transaction (an index
        range, so nearly free when there are none).
        """
        with self.db.transaction() as db:
            db.execute("DELETE FROM handled_messages WHERE message_id < ?", (forget_before,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO handled_messages (message_id, channel_id) VALUES (?, ?)",
                (message_id, channel_id),
            )
            return cursor.rowcount == 1

    def handled_among(self, message_ids: Sequence[int]) -> set[int]:
        """Which of these messages were already taken on."""
        if not message_ids:
            return set()
        marks = ", ".join("?" * len(message_ids))
        sql = f"SELECT message_id FROM handled_messages WHERE message_id IN ({marks})"
        rows = self.db.query(sql, tuple(message_ids))
        return {row["message_id"] for row in rows}

    def finish_message(self, message_id: int) -> None:
        """The message's handling ended (answered, or refused with a reason)."""
        with self.db.transaction() as db:
            db.execute("UPDATE handled_messages SET finished = 1 WHERE message_id = ?", (message_id,))

    def unfinished_among(self, message_ids: Sequence[int]) -> set[int]:
        """Which of these messages were taken on but never finished (a restart cut them off)."""
        if not message_ids:
            return set()
        marks = ", ".join("?" * len(message_ids))
        sql = f"SELECT message_id FROM handled_messages WHERE finished = 0 AND message_id IN ({marks})"
        return {row["message_id"] for row in self.db.query(sql, tuple(message_ids))}

    def has_answer(self, user_message_id: int) -> bool:
        """Whether an answer to this message was stored (it was given in full)."""
        row = self.db.query_one("SELECT 1 FROM replies WHERE user_message_id = ? LIMIT 1", (user_message_id,))
        return row is not None

    def first_handled_message(self) -> int | None:
        """The oldest message still on record as taken on (None: nothing handled yet)."""
        row = self.db.query_one("SELECT min(message_id) AS id FROM handled_messages")
        return row["id"] if row else None

    def channels_handled_since(self, message_id: int) -> list[int]:
        """Channels (DMs included) where a message newer than ``message_id`` was taken on."""
        rows = self.db.query("SELECT DISTINCT channel_id FROM handled_messages WHERE message_id > ?", (message_id,))
        return [row["channel_id"] for row in rows]

    # --- privacy: everything stored about one person ----------------------------------------

    def user_data(self, user_id: int) -> dict[str, list[dict[str, Any]]]:
        """Every row about one person, by table, read in one transaction so the copy is consistent."""
        with self.db.transaction() as db:
            return {
                table: [dict(row) for row in db.execute(sql, (user_id,))] for table, sql in _ROWS_ABOUT_A_USER.items()
            }

    def forget_user(self, user_id: int) -> Forgotten:
        """Deletes what one person gave the bot, all or nothing; see ``Forgotten`` for what is kept.

        Examples count as approved (kept) when an admin put them in: through `!train` or a
        selected dataset. Examples made by the person's own corrections are deleted.
        """
        with self.db.transaction() as db:

            def count(sql: str) -> int:
                return int(db.execute(sql, (user_id,)).fetchone()[0])

            def change(sql: str) -> int:
                return db.execute(sql, (user_id,)).rowcount

            # First what others gave about the bot's replies to this person, while those replies are known
            answered = "SELECT bot_message_id FROM replies WHERE user_id = ?1"
            others = f"FROM corrections WHERE user_id IS NOT ?1 AND bot_message_id IN ({answered})"
            made = f"SELECT positive_example_id {others} UNION SELECT negative_example_id {others}"
            made_ids = [(row[0],) for row in db.execute(made, (user_id,))]
            corrected_by_others = change(f"DELETE {others}")
            db.executemany("DELETE FROM example_vectors WHERE example_id = ?", made_ids)
            examples_of_others = sum(
                db.execute(f"DELETE FROM examples WHERE id = ? AND NOT {_APPROVED}", row).rowcount for row in made_ids
            )
            quoted_by_others = change(
                "UPDATE reactions SET input = NULL, reply = NULL WHERE user_id IS NOT ?1"
                f" AND bot_message_id IN ({answered}) AND (input IS NOT NULL OR reply IS NOT NULL)"
            ) + change(
                "UPDATE feedback SET about_reply = NULL"
                f" WHERE user_id IS NOT ?1 AND about_message_id IN ({answered}) AND about_reply IS NOT NULL"
            )
            where = db.execute("SELECT DISTINCT conversation_id FROM chat_turns WHERE user_id = ?", (user_id,))
            conversations = tuple(row[0] for row in where)
            messages = count("SELECT count(*) FROM chat_turns WHERE user_id = ? AND role = 'user'")
            answers = count("SELECT count(*) FROM chat_turns WHERE user_id = ? AND role = 'assistant'")
            change("DELETE FROM chat_turns WHERE user_id = ?")
            reply_records = change("DELETE FROM replies WHERE user_id = ?")
            feedback = change("DELETE FROM feedback WHERE user_id = ?")
            reactions = change("DELETE FROM reactions WHERE user_id = ?")
            corrections = change("DELETE FROM corrections WHERE user_id = ?")  # first: they point at the examples
            theirs = f"FROM examples WHERE author_id = ? AND NOT {_APPROVED}"
            change(f"DELETE FROM example_vectors WHERE example_id IN (SELECT id {theirs})")
            examples = change(f"DELETE {theirs}")
            kept_trained = count("SELECT count(*) FROM examples WHERE author_id = ? AND dataset_id IS NULL")
            kept_dataset = count("SELECT count(*) FROM examples WHERE author_id = ? AND dataset_id IS NOT NULL")
            change("UPDATE examples SET author_id = NULL WHERE author_id = ?")
            change("DELETE FROM test_failures WHERE run_id IN (SELECT id FROM test_runs WHERE user_id = ?)")
            test_runs = change("DELETE FROM test_runs WHERE user_id = ?")
            unlinked = (
                change("UPDATE jobs SET requested_by = NULL WHERE requested_by = ?")
                + change("UPDATE datasets SET created_by = NULL WHERE created_by = ?")
                + change("UPDATE personas SET set_by = NULL WHERE set_by = ?")
            )
        return Forgotten(
            messages=messages,
            answers=answers,
            reply_records=reply_records,
            feedback=feedback,
            reactions=reactions,
            corrections=corrections,
            examples=examples,
            test_runs=test_runs,
            kept_trained=kept_trained,
            kept_dataset=kept_dataset,
            unlinked=unlinked,
            conversations=conversations,
            corrected_by_others=corrected_by_others,
            examples_of_others=examples_of_others,
            quoted_by_others=quoted_by_others,
        )


# An admin put these examples in: `!train` (admins only) or a selected dataset.
_APPROVED = "(source LIKE 'train:%' OR dataset_id IS NOT NULL)"

# Every table with a column naming a person, and the query for one person's rows. The bot's
# chat turns carry the id of the person they answer, so "their history" is one condition.
_ROWS_ABOUT_A_USER = {
    "chat_turns": "SELECT * FROM chat_turns WHERE user_id = ? ORDER BY id",
    "replies": "SELECT * FROM replies WHERE user_id = ? ORDER BY created_at, bot_message_id",
    "feedback": "SELECT * FROM feedback WHERE user_id = ? ORDER BY id",
    "reactions": "SELECT * FROM reactions WHERE user_id = ? ORDER BY id",
    "corrections": "SELECT * FROM corrections WHERE user_id = ? ORDER BY id",
    "examples": "SELECT * FROM examples WHERE author_id = ? ORDER BY id",
    "test_runs": "SELECT * FROM test_runs WHERE user_id = ? ORDER BY id",
    "test_failures": "SELECT * FROM test_failures WHERE run_id IN (SELECT id FROM test_runs WHERE user_id = ?)"
    " ORDER BY id",
    "jobs": "SELECT * FROM jobs WHERE requested_by = ? ORDER BY id",
    "datasets": "SELECT * FROM datasets WHERE created_by = ? ORDER BY id",
    "personas": "SELECT * FROM personas WHERE set_by = ? ORDER BY conversation_id",
}
