"""Training jobs of each knowledge base, and the model version a successful one adds."""

from __future__ import annotations

import json
from typing import Any

from trainerbot.storage.database import Database, utc_now
from trainerbot.storage.knowledge import ensure_base
from trainerbot.types import Job


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        base=row["base"],
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


class Jobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, base: int, *, requested_by: int | None, channel_id: int | None, same_inputs_as: int | None = None
    ) -> Job:
        """A queued job on everything the base was taught so far, or on exactly what job ``same_inputs_as`` had."""
        with self.db.transaction() as db:
            ensure_base(db, base)
            if same_inputs_as is None:
                max_id = db.execute("SELECT coalesce(max(id), 0) FROM examples WHERE base = ?", (base,)).fetchone()[0]
                dataset_id = db.execute("SELECT selected_dataset FROM bases WHERE id = ?", (base,)).fetchone()[0]
            else:
                max_id, dataset_id = db.execute(
                    "SELECT max_example_id, dataset_id FROM jobs WHERE base = ? AND id = ?", (base, same_inputs_as)
                ).fetchone()
            job_id = db.execute(
                "INSERT INTO jobs (base, status, requested_by, channel_id, max_example_id, dataset_id, created_at)"
                " VALUES (?, 'queued', ?, ?, ?, ?, ?) RETURNING id",
                (base, requested_by, channel_id, max_id, dataset_id, utc_now()),
            ).fetchone()[0]
        job = self.job(base, job_id)
        assert job is not None
        return job

    def job(self, base: int, job_id: int) -> Job | None:
        row = self.db.query_one("SELECT * FROM jobs WHERE base = ? AND id = ?", (base, job_id))
        return _job(row) if row else None

    def inputs(self, base: int, job_id: int) -> tuple[int, int | None]:
        row = self.db.query_one("SELECT max_example_id, dataset_id FROM jobs WHERE base = ? AND id = ?", (base, job_id))
        assert row is not None
        return row["max_example_id"], row["dataset_id"]

    def input_counts(self, base: int, job_id: int) -> dict[str, int]:
        """How many examples and outputs a job trains on."""
        row = self.db.query_one(
            "SELECT count(e.id) AS total, count(DISTINCT e.output) AS outputs FROM jobs j"
            " JOIN examples e ON e.base = j.base AND e.id <= j.max_example_id"
            " AND (e.dataset_id IS NULL OR e.dataset_id IS j.dataset_id) WHERE j.base = ? AND j.id = ?",
            (base, job_id),
        )
        assert row is not None
        return {"total": row["total"], "outputs": row["outputs"]}

    def later_job(self, base: int, job_id: int) -> Job | None:
        """The base's first job after ``job_id`` that succeeded or is on its way (queued or running), if any."""
        row = self.db.query_one(
            "SELECT * FROM jobs WHERE base = ? AND id > ? AND status IN ('queued', 'running', 'succeeded')"
            " ORDER BY id LIMIT 1",
            (base, job_id),
        )
        return _job(row) if row else None

    def recent(self, base: int, limit: int = 10) -> list[Job]:
        rows = self.db.query("SELECT * FROM jobs WHERE base = ? ORDER BY id DESC LIMIT ?", (base, limit))
        return [_job(r) for r in rows]

    def unfinished(self, limit: int = 50) -> list[Job]:
        """Every base's queued and running jobs, oldest first (the owners' status page: one bot, all its work)."""
        rows = self.db.query("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY id LIMIT ?", (limit,))
        return [_job(r) for r in rows]

    def started_since(self, base: int, since: str) -> int:
        """How many jobs the base started at or after ``since`` (an ISO time), for its hourly quota."""
        row = self.db.query_one("SELECT count(*) AS n FROM jobs WHERE base = ? AND created_at >= ?", (base, since))
        return int(row["n"]) if row else 0

    def mark_running(self, base: int, job_id: int, *, take_current_inputs: bool = False) -> bool:
        """False when the job is no longer queued (a restart marked it interrupted).

        ``take_current_inputs``: the job trains on everything the base has now (a coalesced job,
        queued before the last of it was taught), not on what it had when the job was queued.
        """
        with self.db.transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'running', started_at = ? WHERE base = ? AND id = ? AND status = 'queued'",
                (utc_now(), base, job_id),
            )
            if cursor.rowcount == 1 and take_current_inputs:
                db.execute(
                    "UPDATE jobs SET max_example_id = (SELECT coalesce(max(id), 0) FROM examples WHERE base = ?1),"
                    " dataset_id = (SELECT selected_dataset FROM bases WHERE id = ?1) WHERE id = ?2",
                    (base, job_id),
                )
            return cursor.rowcount == 1

    def update_progress(self, base: int, job_id: int, progress: float, stage: str) -> None:
        with self.db.transaction() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, stage = ? WHERE base = ? AND id = ? AND status = 'running'",
                (progress, stage, base, job_id),
            )

    def finish(
        self,
        base: int,
        job_id: int,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        model_path: str | None = None,
    ) -> bool:
        """Records the outcome; a success also adds the model version and makes it the one that serves the base.

        Only a job still queued or running is finished: one a restart marked interrupted stays so,
        and its model never serves. ``model_path`` is relative to the data directory. Returns
        whether the outcome was recorded.
        """
        now = utc_now()
        with self.db.transaction() as db:
            status = db.execute("SELECT status FROM jobs WHERE base = ? AND id = ?", (base, job_id)).fetchone()
            if status is None or status[0] not in ("queued", "running"):
                return False
            version_id = None
            if error is None and result is not None and model_path is not None:
                version_id = db.execute(
                    "INSERT INTO model_versions (base, job_id, path, examples, outputs, holdout_accuracy, status,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, 'ready', ?) RETURNING id",
                    (
                        base,
                        job_id,
                        model_path,
                        result["examples"],
                        result["outputs"],
                        result.get("holdout_accuracy"),
                        now,
                    ),
                ).fetchone()[0]
                ensure_base(db, base)
                db.execute("UPDATE bases SET active_model = ? WHERE id = ?", (version_id, base))
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

    def running(self, job_ids: list[int] | None = None) -> list[tuple[int, int]]:
        """(base, job id) of the jobs running now, of ``job_ids`` or of every base."""
        if job_ids is None:
            rows = self.db.query("SELECT base, id FROM jobs WHERE status = 'running' ORDER BY id")
        elif not job_ids:
            return []
        else:
            marks = ", ".join("?" * len(job_ids))
            rows = self.db.query(f"SELECT base, id FROM jobs WHERE status = 'running' AND id IN ({marks})", job_ids)
        return [(row["base"], row["id"]) for row in rows]

    def ended(self, job_ids: list[int]) -> list[int]:
        """Which of these jobs have ended (succeeded, failed or interrupted)."""
        if not job_ids:
            return []
        marks = ", ".join("?" * len(job_ids))
        sql = f"SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'interrupted') AND id IN ({marks})"
        return [row["id"] for row in self.db.query(sql, job_ids)]

    def unfinished_ids(self) -> list[tuple[int, int, str]]:
        """(base, job id, status) of every queued or running job."""
        rows = self.db.query("SELECT base, id, status FROM jobs WHERE status IN ('queued', 'running') ORDER BY id")
        return [(row["base"], row["id"], row["status"]) for row in rows]

    def interrupt(self, base: int, job_id: int, *, queued: bool = False) -> Job | None:
        """A running job (or with ``queued``, a waiting one too) whose process is gone ends as interrupted,
        retryable; None when it ended meanwhile."""
        statuses = "('queued', 'running')" if queued else "('running')"
        with self.db.transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'interrupted', stage = 'interrupted', finished_at = ?"
                f" WHERE base = ? AND id = ? AND status IN {statuses}",
                (utc_now(), base, job_id),
            )
            if cursor.rowcount != 1:
                return None
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def interrupt_unfinished(self) -> list[Job]:
        """At start-up, every base's jobs that were queued or running belong to a process that is gone."""
        with self.db.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')")]
            db.execute(
                "UPDATE jobs SET status = 'interrupted', stage = 'interrupted', finished_at = ?"
                " WHERE status IN ('queued', 'running')",
                (utc_now(),),
            )
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({marks}) ORDER BY id", ids).fetchall()
        return [_job(r) for r in rows]
