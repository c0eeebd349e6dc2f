"""Training jobs: each runs in a separate process and reports progress through the database.

A separate process keeps the bot answering while two cores are busy training, and
a crash or kill there cannot take the bot down or leave a half-written model: the
model file is renamed into place before the job is marked as succeeded.

The training process also dies with the bot's: were the bot killed mid-job, a worker left
running would finish later and make its model the active one behind the back of the bot
restarted in its place, which has already marked that job interrupted.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TextIO

import numpy as np

from trainerbot.core.errors import UserError
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.model import IntentModel, Prediction, TextEncoder, train
from trainerbot.storage.database import Database
from trainerbot.storage.store import Job, Store

try:
    import fcntl
except ImportError:  # Windows: no flock; recovery then assumes no other process shares the data directory
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5  # seconds between progress writes
PARENT_CHECK_INTERVAL = 0.2  # seconds between checks that the bot still lives, where the kernel cannot tell
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int, *, kernel: bool = True) -> None:
    """Initializer of a training process: it ends when the bot's process ends, however that ends.

    On Linux the kernel sends SIGKILL when the parent goes (``prctl(PR_SET_PDEATHSIG)``); it is
    armed for the life of the thread that started this process, so ``TrainingJobs`` starts its
    processes from a thread that lives as long as it does. Elsewhere, or with ``kernel=False``,
    a thread checks every ``PARENT_CHECK_INTERVAL`` that the parent is still the one that started it.
    """
    if kernel and _set_parent_death_signal():
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    # An orphan is adopted by init (or a subreaper), so its parent's pid changes.
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_INTERVAL)
    os._exit(1)


LogFiles = list[tuple[str, logging.Formatter | None]]


def log_files() -> LogFiles:
    """The files this process logs to, with their formatters: a training process writes to them too."""
    return [(h.baseFilename, h.formatter) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def start_training_process(parent_pid: int, files: LogFiles, level: int) -> None:
    """Initializer of a training process: it dies with the bot, and logs where the bot logs.

    Without the second, a failed job's traceback (with the reference its message gives the
    user) would go to the terminal instead of the log file the message sends the owners to.
    """
    die_with_parent(parent_pid)
    root = logging.getLogger()
    root.setLevel(level)
    for path, formatter in files:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(formatter)
        root.addHandler(handler)


def run_training_job(database_path: str, models_dir: str, job_id: int, threshold: float) -> None:
    """The body of a training process: read the job's examples, train, save, record the outcome."""
    os.nice(5)  # training yields to the bot's own process on a busy machine
    store = Store(Database(Path(database_path)))
    try:
        if not store.mark_job_running(job_id):
            log.warning("training job %d is no longer queued; not starting it", job_id)
            return
        max_example_id, dataset_id = store.job_inputs(job_id)
        rows = store.training_rows(max_example_id, dataset_id)
        examples = [example for _, example in rows]
        log.info("training job %d on %d examples (process %d)", job_id, len(examples), os.getpid())
        last = 0.0

        def progress(fraction: float, stage: str) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL or fraction >= 1.0:
                last = now
                store.update_job_progress(job_id, fraction, stage)

        model, report = train(examples, MiniLMEncoder(), threshold=threshold, progress=progress)
        path = Path(models_dir) / f"model-{job_id:05d}.npz"
        model.save(path)
        # The embeddings are computed anyway: kept, chat prompts retrieve examples without encoding them again.
        positive_ids = [example_id for example_id, example in rows if example.positive]
        vectors = model.vectors.astype(np.float32)
        store.save_example_vectors(zip(positive_ids, (v.tobytes() for v in vectors), strict=True))
        if not store.finish_job(job_id, result=report.as_dict(), model_path=str(path)):
            log.warning("training job %d was marked interrupted meanwhile; its model will not be used", job_id)
    except UserError as exc:
        store.finish_job(job_id, error=str(exc))
    except Exception:
        reference = uuid.uuid4().hex[:8]
        log.exception("training job %d failed (reference %s)", job_id, reference)
        store.finish_job(job_id, error=f"an unexpected error stopped training (reference {reference})")
    finally:
        store.db.close()


class ServingModel:
    """The model version that answers messages.

    Before each prediction it asks the database which version is active (one indexed
    read), so a finished job, a rollback, or another process sharing the data
    directory is picked up at once, without waiting for a notification.
    """

    def __init__(self, store: Store, encoder: TextEncoder) -> None:
        self._store = store
        self.encoder = encoder
        self._lock = threading.Lock()
        self._model: IntentModel | None = None
        self.version_id: int | None = None

    def reload(self) -> IntentModel | None:
        """Loads the active version if it is not the one in memory; returns the current model."""
        with self._lock:
            version = self._store.active_model()
            wanted = version.id if version else None
            if wanted != self.version_id:
                self._model = IntentModel.load(Path(version.path), self.encoder) if version else None
                self.version_id = wanted
                log.info("serving model version %s", wanted)
            return self._model

    def predict(self, text: str, threshold: float, vector: np.ndarray | None = None) -> Prediction | None:
        """None when nothing has been trained yet; ``vector`` is the text's embedding if already computed."""
        model = self.reload()
        return model.predict(text, threshold, vector) if model is not None else None

    def predict_many(self, texts: list[str], threshold: float) -> list[Prediction] | None:
        model = self.reload()
        return model.predict_many(texts, threshold) if model is not None else None


class TrainingJobs:
    """Starts jobs one at a time in a worker process; queued jobs wait their turn."""

    def __init__(self, store: Store, models_dir: Path, threshold: float, on_finished: Callable[[int], None]) -> None:
        self._store = store
        self._models_dir = models_dir
        self._threshold = threshold
        self._on_finished = on_finished
        self._pool: ProcessPoolExecutor | None = None
        # The pool starts its process in the thread that submits; Linux ties the parent-death
        # signal to that thread, so it must be one that lives as long as the pool, not a passing one.
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-launcher")
        self._pending: dict[int, Future[None]] = {}
        self._lock = threading.Lock()
        self._interrupted: list[int] = []
        self._process_lock: TextIO | None = None

    def recover(self) -> list[int]:
        """Marks jobs left unfinished by processes that have ended as interrupted.

        Every process that runs jobs on a database holds a shared lock on a file beside it for as
        long as it lives (the kernel lets go when it dies, however it dies). Only a process that
        finds no one else holding it may mark unfinished jobs: otherwise they may be the running
        jobs of a live bot (`trainerbot test` run beside it, on the same data directory).
        """
        if not self._hold_process_lock():
            log.info("another trainerbot process uses this database: its unfinished jobs are left to it")
            return []
        interrupted = self._store.interrupt_unfinished_jobs()
        if interrupted:
            log.warning("jobs %s were interrupted by a restart", interrupted)
        with self._lock:
            self._interrupted += interrupted
        return interrupted

    def _hold_process_lock(self) -> bool:
        """Takes the shared lock for this process's life; True when no other process held it."""
        if fcntl is None:
            return True
        if self._process_lock is None:
            self._process_lock = open(f"{self._store.db.path}.jobs-lock", "a")  # noqa: SIM115 (held until shutdown)
        try:
            fcntl.flock(self._process_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        fcntl.flock(self._process_lock, fcntl.LOCK_SH)
        return alone

    def take_interrupted(self) -> list[int]:
        """The jobs ``recover`` found interrupted, once: whoever takes them tells the people waiting."""
        with self._lock:
            taken, self._interrupted = self._interrupted, []
        return taken

    def start(self, *, requested_by: int | None, channel_id: int | None, same_inputs_as: int | None = None) -> Job:
        """Queues a new job; ``same_inputs_as`` trains on exactly what that earlier job was given."""
        job = self._store.create_job(requested_by=requested_by, channel_id=channel_id, same_inputs_as=same_inputs_as)
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the bot process has threads and an event loop that must not be copied.
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=start_training_process,
                    initargs=(os.getpid(), log_files(), logging.getLogger().level),
                )
            pool = self._pool
            future = self._launcher.submit(
                pool.submit, run_training_job, str(self._store.db.path), str(self._models_dir), job.id, self._threshold
            ).result()
            self._pending[job.id] = future
        future.add_done_callback(lambda f, job_id=job.id: self._finished(job_id, f))
        return job

    def busy(self) -> bool:
        """Whether a training process is working now (the chat engine then leaves it a core)."""
        with self._lock:
            return any(f.running() for f in self._pending.values())

    def queue_position(self, job_id: int) -> int:
        """How many jobs are ahead of this one (0 when it is running or done)."""
        with self._lock:
            waiting = sorted(j for j, f in self._pending.items() if not f.running() and not f.done())
            running = any(f.running() for f in self._pending.values())
        return waiting.index(job_id) + (1 if running else 0) if job_id in waiting else 0

    def _finished(self, job_id: int, future: Future[None]) -> None:
        with self._lock:
            self._pending.pop(job_id, None)
        if future.cancelled():  # shut down before it started: the next start marks it interrupted
            return
        error = future.exception()
        if isinstance(error, BrokenProcessPool):
            with self._lock:
                self._pool = None  # a fresh process is started for the next job
        if error is not None:  # the process died (killed, out of memory) before it could record anything
            log.error("training process for job %d died: %r", job_id, error)
            self._store.finish_job(job_id, error="the training process stopped unexpectedly")
        self._on_finished(job_id)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._launcher.shutdown(wait=True)
        if self._process_lock is not None:
            self._process_lock.close()  # lets go of the lock
