"""Test runs of each knowledge base and their failures (`!test`, `!errors`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainerbot.storage.database import Database, utc_now

_LAST_RUN = "(SELECT max(id) FROM test_runs WHERE base = ?)"


class Evaluations:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_test_run(
        self,
        base: int,
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
                "INSERT INTO test_runs (base, user_id, model_version_id, total, passed, accuracy, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (base, user_id, model_version_id, total, passed, accuracy, utc_now()),
            ).fetchone()[0]
            db.executemany(
                "INSERT INTO test_failures (run_id, input, expected, got, confidence) VALUES (?, ?, ?, ?, ?)",
                [(run_id, f["input"], f["expected"], f["got"], f["confidence"]) for f in failures],
            )
            return run_id

    def recent_failures(self, base: int, limit: int = 20) -> list[dict[str, Any]]:
        """The failures of the base's last test run."""
        rows = self.db.query(
            "SELECT run_id, input, expected, got, confidence FROM test_failures"
            f" WHERE run_id = {_LAST_RUN} ORDER BY id LIMIT ?",
            (base, limit),
        )
        return [dict(r) for r in rows]

    def failure_count(self, base: int) -> int:
        row = self.db.query_one(f"SELECT count(*) AS n FROM test_failures WHERE run_id = {_LAST_RUN}", (base,))
        return int(row["n"]) if row else 0

    def runs(self, base: int, limit: int = 20) -> list[dict[str, Any]]:
        """The base's newest test runs, newest first."""
        rows = self.db.query(
            "SELECT id, user_id, model_version_id, total, passed, accuracy, created_at FROM test_runs"
            " WHERE base = ? ORDER BY id DESC LIMIT ?",
            (base, limit),
        )
        return [dict(r) for r in rows]

    def failures(self, base: int, run_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """One run's failures; a run of another base has none here."""
        rows = self.db.query(
            "SELECT f.input, f.expected, f.got, f.confidence FROM test_failures f JOIN test_runs r ON r.id = f.run_id"
            " WHERE r.base = ? AND r.id = ? ORDER BY f.id LIMIT ?",
            (base, run_id, limit),
        )
        return [dict(r) for r in rows]
