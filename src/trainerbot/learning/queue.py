"""Training on a task queue: with PostgreSQL, jobs go to procrastinate and `trainerbot worker` processes run them.

procrastinate keeps its queue in the bot's own PostgreSQL (no broker to run), wakes workers with
LISTEN/NOTIFY, and runs at most one job per lock at a time: each base is a lock, so a server's jobs
never overlap, on any number of workers on any machine. Fairness between servers follows the
single-process rule (the base that trained least lately goes first) through each job's priority.

The job's row in trainerbot's ``jobs`` table stays the record people see: the worker writes its
progress and outcome there (``run_training_job``), as a training process does in one process.

Who has a job in hand holds an advisory lock named by it: the bot that made it, while it waits for its
quiet spell, then the queue (an entry to do), then the worker that trains it. PostgreSQL lets go of a
lock when its process dies, however it dies. So an unfinished job that no one holds and that is not on
the queue was cut off: it is marked interrupted and can be retried, as after a single bot's restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

import procrastinate
import psycopg
from procrastinate.schema import SchemaManager

from trainerbot.config import Settings
from trainerbot.storage.store import Store
from trainerbot.types import Job

log = logging.getLogger(__name__)

TASK = "trainerbot.train"
JOB_LOCKS = 0x7462  # advisory locks (this, job id): held by the worker that trains the job
SCHEMA_LOCK = 0x7472_6169_6E67  # taken while one process installs procrastinate's tables
HEARTBEAT_SECONDS = 1.0  # a worker says it lives this often ...
STALLED_SECONDS = 6.0  # ... and one silent this long is gone: its queue entries are closed
SWEEP_SECONDS = 2.0
WATCH_SECONDS = 0.25  # how often the bot reads the state of the jobs it queued
RECENT_SECONDS = 3600.0  # the window of past jobs that lowers a base's priority


def install_queue_schema(url: str) -> None:
    """procrastinate's tables and functions, installed once in the database (by whichever process comes first)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        try:
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
                log.info("installing the task queue's tables (procrastinate)")
                conn.execute(SchemaManager.get_schema())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


def worker_is_gone(conn: psycopg.Connection[Any], job_id: int) -> bool:
    """Whether nobody holds the job's lock (its worker ended). Takes it only for the time of the question."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (JOB_LOCKS, job_id)).fetchone()[0]:
        return False
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (JOB_LOCKS, job_id))
    return True


def on_the_queue(conn: psycopg.Connection[Any]) -> set[int]:
    """The jobs with an entry waiting on the queue for a worker (procrastinate's own table)."""
    rows = conn.execute(
        "SELECT (args->>'job_id')::bigint FROM procrastinate_jobs WHERE task_name = %s AND status = 'todo'", (TASK,)
    )
    return {row[0] for row in rows}


def interrupt_orphans(store: Store, conn: psycopg.Connection[Any], job_ids: list[int] | None = None) -> list[int]:
    """Marks interrupted the running jobs (of ``job_ids``, or all) whose worker is gone; returns their ids."""
    cut_off = []
    for base, job_id in store.jobs.running(job_ids):
        if worker_is_gone(conn, job_id) and store.jobs.interrupt(base, job_id):
            log.warning("training job %d of base %d lost its worker: marked interrupted", job_id, base)
            cut_off.append(job_id)
    return cut_off


class QueuedRunner:
    """The bot's side: puts a job on the queue and learns when it ends (``TrainingJobs`` with PostgreSQL).

    ``local_workers``: `trainerbot worker` processes the bot starts beside itself (when it first queues a
    job) and stops with itself; 0 leaves the work to workers started elsewhere.
    """

    def __init__(self, store: Store, settings: Settings, *, local_workers: int) -> None:
        assert settings.database_url is not None
        url = settings.database_url.get_secret_value()
        install_queue_schema(url)
        self._store = store
        self._url = url
        self._settings = settings
        self._local_workers = local_workers
        self._children: list[subprocess.Popen[bytes]] = []
        self._app = procrastinate.App(
            connector=procrastinate.SyncPsycopgConnector(conninfo=url, min_size=1, max_size=2)
        )
        self._app.open()
        self._watched: dict[int, tuple[int, Future[None]]] = {}  # job id -> (base, future)
        self._holder = psycopg.connect(url, autocommit=True)  # holds the locks of the jobs waiting here
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="training-queue-watch", daemon=True)
        self._watcher.start()

    def hold(self, job_id: int) -> None:
        """A job made here waits in this process (its quiet spell) until ``launch`` queues it."""
        with self._lock:
            self._holder.execute("SELECT pg_advisory_lock(%s, %s)", (JOB_LOCKS, job_id))

    def recover(self) -> list[Job]:
        """At start-up: the unfinished jobs no one has in hand (their bot or worker died) end as interrupted."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            waiting = on_the_queue(conn)
            ended = [  # running: its worker is gone; queued: neither on the queue nor held by a bot
                (base, job_id)
                for base, job_id, status in self._store.jobs.unfinished_ids()
                if (status == "running" or job_id not in waiting) and worker_is_gone(conn, job_id)
            ]
        interrupted = [job for base, job_id in ended if (job := self._store.jobs.interrupt(base, job_id, queued=True))]
        return interrupted

    def launch(self, base: int, job_id: int, open_inputs: bool) -> Future[None]:
        """Queues the job; the future completes when its row says it ended (succeeded, failed, interrupted)."""
        future: Future[None] = Future()
        with self._lock:
            self._watched[job_id] = (base, future)
            self._start_local_workers()
        since = datetime.now(UTC) - timedelta(seconds=RECENT_SECONDS)
        priority = -self._store.jobs.started_since(base, since.isoformat(timespec="milliseconds"))
        self._app.configure_task(TASK, lock=f"base-{base}", priority=priority).defer(
            base=base, job_id=job_id, open_inputs=open_inputs
        )
        with self._lock:  # on the queue now: the queue's entry, then its worker, have it in hand
            self._holder.execute("SELECT pg_advisory_unlock(%s, %s)", (JOB_LOCKS, job_id))
        log.info("training job %d of base %d queued (priority %d)", job_id, base, priority)
        return future

    def position(self, job_id: int | None) -> tuple[int, bool]:
        """How many queue entries a worker takes before this job's (all of them for None: a job not yet
        queued), and whether every live worker is busy now."""
        db = self._store.db  # the pool's connections: this is asked at every look at a queued job
        entries = db.query(
            "SELECT id, priority, status, CAST(args->>'job_id' AS BIGINT) FROM procrastinate_jobs"
            " WHERE task_name = ? AND status IN ('todo', 'doing')",
            (TASK,),
        )
        workers = db.query_one(
            "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => ?)",
            (STALLED_SECONDS,),
        )[0]
        todo = [(-priority, entry) for entry, priority, status, _ in entries if status == "todo"]
        # With no worker alive yet (they are starting), the entries ahead are all there is to wait for.
        busy = 0 < workers <= sum(1 for *_, status, _ in entries if status == "doing")
        mine = next(((-priority, entry) for entry, priority, _, job in entries if job == job_id), None)
        ahead = sum(1 for key in todo if mine is None or key < mine)
        return ahead, busy

    def _start_local_workers(self) -> None:
        if self._children or not self._local_workers:
            return
        env = {
            **os.environ,
            "TRAINERBOT_DATABASE_URL": self._url,
            "TRAINERBOT_DATA_DIR": str(self._settings.data_dir),
        }
        if self._settings.confidence_threshold is not None:
            env["TRAINERBOT_CONFIDENCE_THRESHOLD"] = str(self._settings.confidence_threshold)
        command = [sys.executable, "-m", "trainerbot", "worker", "--parent", str(os.getpid())]
        self._children = [
            subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL) for _ in range(self._local_workers)
        ]
        log.info("started %d training workers beside the bot", len(self._children))

    def _watch(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.wait(WATCH_SECONDS):
            with self._lock:
                watched = dict(self._watched)
            if not watched:
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url, autocommit=True)
                interrupt_orphans(self._store, conn, list(watched))
                for job_id in self._store.jobs.ended(list(watched)):
                    with self._lock:
                        _, future = self._watched.pop(job_id)
                    future.set_result(None)
            except Exception:  # the database is briefly away: the next round asks again
                log.exception("reading the queued training jobs' state")
                conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=5)
        with self._lock:
            for _, future in self._watched.values():
                future.cancel()  # as a local job not yet started: it stays queued for a worker
            self._watched.clear()
            self._holder.close()
        self._app.close()
        for child in self._children:
            child.terminate()  # a worker finishes the job in hand first (procrastinate's graceful stop) ...
        for child in self._children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()  # ... or ends now: its job is marked interrupted, as a killed worker's is
                child.wait()


def run_worker(settings: Settings, *, concurrency: int = 1, parent: int | None = None) -> None:
    """`trainerbot worker`: takes training jobs off the queue until stopped (Ctrl-C or SIGTERM finish the job first).

    ``parent``: a bot that started this worker beside itself; the worker ends when it does.
    """
    from trainerbot.learning.jobs import die_with_parent, run_training_job
    from trainerbot.storage.database import open_database

    if parent is not None:
        die_with_parent(parent, kernel=False)  # the thread that started it is a passing one: no kernel signal
        os.nice(5)  # beside the bot, training yields to it, as its own training processes do

    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    store = Store(open_database(url))  # brings the schema up to date, as the bot does
    install_queue_schema(url)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    def train_now(base: int, job_id: int, open_inputs: bool) -> None:
        with psycopg.connect(url, autocommit=True) as conn:  # the lock lives as long as this connection
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (JOB_LOCKS, job_id))
            run_training_job(
                url, str(settings.data_dir), base, job_id, settings.confidence_threshold, open_inputs, nice=False
            )

    @app.task(name=TASK)
    async def train(base: int, job_id: int, open_inputs: bool) -> None:
        await asyncio.to_thread(train_now, base, job_id, open_inputs)

    async def sweep() -> None:
        """Closes what dead workers left: their jobs' rows, and their queue entries (which hold the base's lock)."""
        conn = await asyncio.to_thread(psycopg.connect, url, autocommit=True)
        try:
            while True:
                await asyncio.sleep(SWEEP_SECONDS)
                try:
                    await asyncio.to_thread(interrupt_orphans, store, conn)
                    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_SECONDS):
                        log.warning("queue entry %s was left by a worker that is gone: closed", job.id)
                        await app.job_manager.finish_job(job, procrastinate.jobs.Status.FAILED, delete_job=False)
                except Exception:
                    log.exception("sweeping after dead workers")
        finally:
            conn.close()

    async def main() -> None:
        async with app.open_async():
            sweeper = asyncio.create_task(sweep())
            try:
                await app.run_worker_async(
                    concurrency=concurrency,
                    update_heartbeat_interval=HEARTBEAT_SECONDS,
                    stalled_worker_timeout=STALLED_SECONDS,
                    delete_jobs="successful",
                )
            finally:
                sweeper.cancel()

    log.info("training worker %s taking jobs (concurrency %d)", settings.data_dir, concurrency)
    try:
        asyncio.run(main())
    finally:
        store.db.close()
