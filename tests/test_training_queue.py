"""Training on the task queue: with PostgreSQL, jobs go to procrastinate and `trainerbot worker` processes run them.

Real parts throughout: PostgreSQL 16 (tests/databases.py), procrastinate's own tables, `trainerbot worker`
started as the command a person runs, real training on MiniLM embeddings. The bot here starts no
worker of its own (``training_workers=0``), so every job that ends was run by a worker process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from tests.conftest import core_services
from trainerbot.app import Services
from trainerbot.core.conversation import Where
from trainerbot.types import Caller, Job

pytestmark = pytest.mark.slow

A, B = 1_001, 2_002
ADMIN_A = Caller(2, "admin", manages_server=True, guild_id=A, channel_id=11)
ADMIN_B = Caller(3, "admin", manages_server=True, guild_id=B, channel_id=21)
MEMBER_A = Caller(4, "member", guild_id=A, channel_id=11)
LESSON = "when do you open => We open at 9am.\nwhere are you => At the old harbour.\nhow much is it => Ten euros."
T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


@pytest.fixture
def bot(tmp_path: Path, postgres_url: str) -> Iterator[Services]:
    services = core_services(
        tmp_path / "data", database_url=postgres_url, training_workers=0, auto_train_quiet_seconds=600
    )
    yield services
    services.close()


class Workers:
    """`trainerbot worker` processes on the bot's database and (shared) data directory."""

    def __init__(self, data_dir: Path, postgres_url: str) -> None:
        self.env = {**os.environ, "TRAINERBOT_DATABASE_URL": postgres_url, "TRAINERBOT_DATA_DIR": str(data_dir)}
        self.log = data_dir / "trainerbot.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "trainerbot", "worker"], env=self.env)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@pytest.fixture
def workers(tmp_path: Path, postgres_url: str) -> Iterator[Workers]:
    """Workers as on another machine: a data directory of their own; the models reach the bot through the database."""
    started = Workers(tmp_path / "worker-machine", postgres_url)
    yield started
    started.stop()


def ended(services: Services, base: int, job_id: int) -> Job | None:
    job = services.store.jobs.job(base, job_id)
    return job if job is not None and job.finished else None


def ask(services: Services, text: str) -> str | None:
    prepared = services.conversation.prepare(MEMBER_A, text, Where(11))
    answer = prepared.answer
    return answer.text if answer is not None and answer.source == "taught" else None


def test_workers_train_each_servers_jobs_and_the_model_answers(bot: Services, workers: Workers) -> None:
    bot.teaching.train(ADMIN_A, LESSON, [])
    bot.teaching.train(ADMIN_B, "hello => Hi from B.", [])
    a = bot.teaching.retrain(ADMIN_A)
    b = bot.teaching.retrain(ADMIN_B)
    # Queued for a worker: none runs yet, and the bot trains nothing itself.
    time.sleep(1.0)
    assert bot.store.jobs.job(A, a.job_id).status == "queued"  # type: ignore[union-attr]
    for _ in range(2):
        workers.start()
    for base, job_id in ((A, a.job_id), (B, b.job_id)):
        job = wait_for(lambda base=base, job_id=job_id: ended(bot, base, job_id), f"job {job_id}")
        assert job.status == "succeeded", job
    assert bot.store.knowledge.active_model(A) is not None and bot.store.knowledge.active_model(B) is not None
    assert ask(bot, "what time do you open?") == "We open at 9am."
    with psycopg.connect(workers.env["TRAINERBOT_DATABASE_URL"]) as conn:
        left = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')").fetchone()
    assert left == (0,)


def test_a_worker_killed_mid_job_leaves_it_interrupted_and_retryable(bot: Services, workers: Workers) -> None:
    bot.teaching.train(ADMIN_A, "\n".join(f"question number {n} => answer {n % 40}" for n in range(2000)), [])
    started = bot.teaching.retrain(ADMIN_A)
    worker = workers.start()
    wait_for(
        lambda: (job := bot.store.jobs.job(A, started.job_id)) is not None and job.status == "running",
        "the job to run",
    )
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    # The bot sees the worker gone (its job lock is free) and ends the job as a restart would.
    job = wait_for(lambda: ended(bot, A, started.job_id), "the job to end", timeout=30)
    assert job.status == "interrupted"
    assert "interrupted" in bot.teaching.job_status(A, started.job_id)[0]
    # Retried, on a new worker: the base's queue lock, held by the dead worker's entry, is let go.
    workers.start()
    retried = bot.teaching.retry(ADMIN_A, started.job_id)
    job = wait_for(lambda: ended(bot, A, retried.job_id), "the retried job", timeout=180)
    assert job.status == "succeeded", job
    assert ask(bot, "question number 7") == "answer 7"


def test_a_restarted_bot_leaves_queued_jobs_to_the_workers(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "data"
    first = core_services(data, database_url=postgres_url, training_workers=0, auto_train_quiet_seconds=600)
    first.teaching.train(ADMIN_A, LESSON, [])
    queued = first.teaching.retrain(ADMIN_A)
    waiting = first.teaching.train(ADMIN_B, "hello => Hi from B.", [])  # waits for its quiet spell, in memory
    first.close()
    again = core_services(data, database_url=postgres_url, training_workers=0, auto_train_quiet_seconds=600)
    try:
        # On the queue: it stays queued for a worker. Held only by the bot that is gone: interrupted.
        assert again.store.jobs.job(A, queued.job_id).status == "queued"  # type: ignore[union-attr]
        assert again.store.jobs.job(B, waiting.job_id).status == "interrupted"  # type: ignore[union-attr]
        workers = Workers(data, postgres_url)
        workers.start()
        try:
            job = wait_for(lambda: ended(again, A, queued.job_id), "the queued job")
            assert job.status == "succeeded"
        finally:
            workers.stop()
    finally:
        again.close()


def test_a_worker_needs_postgresql_and_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRAINERBOT_DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "trainerbot", "worker"],
        env={**env, "TRAINERBOT_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "a worker takes jobs from the task queue in PostgreSQL: set TRAINERBOT_DATABASE_URL" in done.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "trainerbot", "console"],
        env={**env, "TRAINERBOT_DATA_DIR": str(tmp_path), "TRAINERBOT_TRAINING_WORKERS": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        input="",
    )
    assert refused.returncode == 2 and "need PostgreSQL" in refused.stderr


def test_a_model_activated_in_one_process_answers_in_another_at_once(
    bot: Services, workers: Workers, postgres_url: str
) -> None:
    """Each prediction asks the database which version is active (two indexed reads), so no message between
    processes is needed: the other process's next answer comes from the new model."""
    other = core_services(bot.settings.data_dir, database_url=postgres_url, training_workers=0)
    try:
        workers.start()
        bot.teaching.train(ADMIN_A, "when do you open => We open at 9am.", [])
        first = bot.teaching.retrain(ADMIN_A)
        wait_for(lambda: ended(bot, A, first.job_id), "the first model")
        bot.teaching.train(ADMIN_A, "where are you => At the old harbour.", [])
        second = bot.teaching.retrain(ADMIN_A)
        wait_for(lambda: ended(bot, A, second.job_id), "the second model")
        versions = [bot.store.jobs.job(A, job.job_id).model_version_id for job in (first, second)]  # type: ignore[union-attr]
        assert other.models.model(A)[0] == versions[1]
        bot.overview.activate(ADMIN_A, A, versions[0])  # type: ignore[arg-type]
        switched = time.monotonic()
        assert other.models.model(A)[0] == versions[0]  # the other process's very next answer uses it
        assert ask(other, "when do you open?") == "We open at 9am."
        assert time.monotonic() - switched < 1.0
    finally:
        other.close()
