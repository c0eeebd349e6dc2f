"""Training jobs of different servers share the worker processes fairly (real jobs, real processes).

The timing target (a small training in one server served within 15 s while another trains on
Banking77) is measured in bench/fair_training.py; these tests check the order jobs start in.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import core_services
from trainerbot.learning.jobs import TrainingJobs
from trainerbot.storage.database import open_database
from trainerbot.storage.store import Store
from trainerbot.types import Caller, Example, Job

# On PostgreSQL, the jobs go to the task queue and the `trainerbot worker` processes the bot starts beside itself.
pytestmark = pytest.mark.both_databases

SERVER_A, SERVER_B = 501, 502
BIG = "\n".join(f"question number {n} about topic {n % 7} => answer {n % 7}" for n in range(200))
SMALL = "hi => hello\nhey => hello\nbye => goodbye"
OWNER_B = Caller(1, "owner", is_owner=True, guild_id=SERVER_B, channel_id=1)  # not held to quotas: a big job
ADMIN_A = Caller(2, "admin", manages_server=True, guild_id=SERVER_A, channel_id=2)


def _start(services, b_jobs: int) -> tuple[list[int], int]:  # type: ignore[no-untyped-def]
    """B's big job and ``b_jobs - 1`` more queued behind it, then A's small one: their job ids.

    B's others are queued directly, as `!retry` queues them: teaching again would join one waiting job.
    """
    teaching = services.teaching
    b = [teaching.train(OWNER_B, BIG, []).job_id]
    b += [services.jobs.start(SERVER_B, requested_by=1, channel_id=1).id for _ in range(b_jobs - 1)]
    return b, teaching.train(ADMIN_A, SMALL, []).job_id


def _services(tmp_path: Path, workers: int):  # type: ignore[no-untyped-def]
    return core_services(tmp_path / "data", training_workers=workers)


def _wait_all(store: Store, jobs: list[tuple[int, int]], timeout: float = 300) -> list[Job]:
    deadline = time.monotonic() + timeout
    while True:
        done = [store.jobs.job(base, job_id) for base, job_id in jobs]
        if all(job is not None and job.finished for job in done):
            return done
        assert time.monotonic() < deadline, done
        time.sleep(0.1)


def test_a_servers_small_job_does_not_wait_behind_anothers_queue_of_big_ones(tmp_path: Path) -> None:
    services = _services(tmp_path, workers=1)
    try:
        b_jobs, a_job = _start(services, b_jobs=3)
        assert services.teaching.job_status(SERVER_A, a_job)[0].endswith("queued, 1 ahead of it.")
        b1, b2, b3, a = _wait_all(services.store, [*((SERVER_B, j) for j in b_jobs), (SERVER_A, a_job)])
        assert {job.status for job in (b1, b2, b3, a)} == {"succeeded"}
        started = services.store.db.query("SELECT id, started_at FROM jobs ORDER BY started_at")
        # B's first job had the worker; A waited for it alone, not for B's other two.
        assert [row["id"] for row in started] == [b1.id, a.id, b2.id, b3.id]
        assert services.store.knowledge.active_model(SERVER_A).job_id == a.id  # type: ignore[union-attr]
    finally:
        services.close()


def test_with_two_workers_a_servers_job_runs_beside_anothers(tmp_path: Path) -> None:
    services = _services(tmp_path, workers=2)
    try:
        b_jobs, a_job = _start(services, b_jobs=2)
        # One job of a server at a time: B's second waits, A's starts at once on the free worker.
        assert "queued" in services.teaching.job_status(SERVER_B, b_jobs[1])[0]
        b1, b2, a = _wait_all(services.store, [*((SERVER_B, j) for j in b_jobs), (SERVER_A, a_job)])
        assert a.finished_at is not None and b1.finished_at is not None
        rows = {r["id"]: r for r in services.store.db.query("SELECT id, started_at, finished_at FROM jobs")}
        assert rows[a.id]["started_at"] < rows[b1.id]["finished_at"]  # beside B's first job
        assert rows[b2.id]["started_at"] >= rows[b1.id]["finished_at"]  # B's second only after its first
    finally:
        services.close()


def test_a_failure_after_a_job_does_not_hold_up_the_jobs_behind_it(tmp_path: Path, database_address: str) -> None:
    """What runs when a job ends (loading its model) may fail; the next job starts all the same."""
    store = Store(open_database(database_address))
    store.knowledge.add_examples(SERVER_A, [Example("hi", "hello"), Example("bye", "goodbye")], source="t", author_id=1)
    ended: list[int] = []

    def fails(job: Job) -> None:
        ended.append(job.id)
        raise OSError("the model file cannot be read")

    jobs = TrainingJobs(store, tmp_path, 0.6, on_finished=fails, workers=1)
    try:
        started = [jobs.start(SERVER_A, requested_by=1, channel_id=None).id for _ in range(2)]
        done = _wait_all(store, [(SERVER_A, job_id) for job_id in started])
        assert [job.status for job in done] == ["succeeded", "succeeded"]
        deadline = time.monotonic() + 30  # the job's row is written before the pool calls back
        while ended != started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ended == started
    finally:
        jobs.shutdown()
        store.db.close()
