"""Training jobs: each runs in a separate process and reports progress through the database.

A separate process keeps the bot answering while two cores are busy training, and
a crash or kill there cannot take the bot down or leave a half-written model: the
model file is renamed into place before the job is marked as succeeded.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from trainerbot.core.errors import UserError
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.model import IntentModel, Prediction, TextEncoder, train
from trainerbot.storage.database import Database
from trainerbot.storage.store import Job, Store

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5  # seconds between progress writes


def run_training_job(database_path: str, models_dir: str, job_id: int, threshold: float) -> None:
    """The body of a training process: read the job's examples, train, save, record the outcome."""
    os.nice(5)  # training yields to the bot's own process on a busy machine
    store = Store(Database(Path(database_path)))
    try:
        store.mark_job_running(job_id)
        max_example_id, dataset_id = store.job_inputs(job_id)
        rows = store.training_rows(max_example_id, dataset_id)
        examples = [example for _, example in rows]
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
        store.finish_job(job_id, result=report.as_dict(), model_path=str(path))
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
        self._pending: dict[int, Future[None]] = {}
        self._lock = threading.Lock()

    def recover(self) -> list[int]:
        """Marks jobs left unfinished by a previous process as interrupted."""
        interrupted = self._store.interrupt_unfinished_jobs()
        if interrupted:
            log.warning("jobs %s were interrupted by a restart", interrupted)
        return interrupted

    def start(self, *, requested_by: int | None, channel_id: int | None) -> Job:
        job = self._store.create_job(requested_by=requested_by, channel_id=channel_id)
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the bot process has threads and an event loop that must not be copied.
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            future = self._pool.submit(
                run_training_job, str(self._store.db.path), str(self._models_dir), job.id, self._threshold
            )
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
