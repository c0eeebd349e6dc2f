"""Training jobs: each runs in a separate process and reports progress through the database.

A separate process keeps the bot answering while two cores are busy training, and
a crash or kill there cannot take the bot down or leave a half-written model: the
model file is renamed into place before the job is marked as succeeded.

Jobs of many servers share a few worker processes fairly: a server has at most one job
running, and among the servers with jobs waiting, the one whose last job started longest
ago goes next. One server's queue of big jobs then never holds up another's small one.

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
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainerbot.errors import UserError
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.live import Fresh, LiveModel
from trainerbot.learning.matching import has_words, normalise
from trainerbot.learning.model import IntentModel, Prediction, TextEncoder, train
from trainerbot.storage.database import ProcessLock, open_database
from trainerbot.storage.knowledge import Knowledge
from trainerbot.storage.store import Store

if TYPE_CHECKING:
    from trainerbot.learning.queue import QueuedRunner
from trainerbot.types import Example, Job

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5  # seconds between progress writes
PARENT_CHECK_INTERVAL = 0.2  # seconds between checks that the bot still lives, where the kernel cannot tell
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
MODELS = "models"  # the folder of model files, in the data directory
# The newest examples taught since a base's model that answer at once; a base taught more than
# this since its last training is trained at once (``AutoTraining``), and answers the rest then.
FRESH_LIMIT = 500


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


def model_file(job_id: int) -> str:
    """Where a job's model is saved, relative to the data directory (job ids are unique across bases)."""
    return f"{MODELS}/model-{job_id:05d}.npz"


def run_training_job(
    database: str,
    data_dir: str,
    base: int,
    job_id: int,
    threshold: float | None,
    open_inputs: bool = False,
    *,
    nice: bool = True,
) -> None:
    """The body of a training process: read the job's examples, train, save, record the outcome.

    ``open_inputs``: the job trains on everything taught until it starts (a coalesced job), not on
    what there was when it was queued.
    """
    if nice:
        os.nice(5)  # training yields to the bot's own process on a busy machine
    store = Store(open_database(database))
    jobs = store.jobs
    try:
        if not jobs.mark_running(base, job_id, take_current_inputs=open_inputs):
            log.warning("training job %d is no longer queued; not starting it", job_id)
            return
        max_example_id, dataset_id = jobs.inputs(base, job_id)
        rows = store.knowledge.training_rows(base, max_example_id, dataset_id)
        examples = [example for _, example in rows]
        log.info("training job %d of base %d on %d examples (process %d)", job_id, base, len(examples), os.getpid())
        last = 0.0

        def progress(fraction: float, stage: str) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL or fraction >= 1.0:
                last = now
                jobs.update_progress(base, job_id, fraction, stage)

        model, report = train(examples, MiniLMEncoder(), threshold=threshold, progress=progress)
        relative = model_file(job_id)
        model.save(Path(data_dir) / relative)
        if store.db.dialect == "postgresql":  # the bots answering with it may be on other machines
            store.knowledge.save_model_file(relative, (Path(data_dir) / relative).read_bytes())
        # The embeddings are computed anyway: kept, chat prompts retrieve examples without encoding them again.
        # In the model's order: the positive examples with words (the others answer their exact text only).
        positive_ids = [example_id for example_id, example in rows if example.positive and has_words(example.input)]
        vectors = model.vectors.astype(np.float32)
        store.knowledge.save_example_vectors(zip(positive_ids, (v.tobytes() for v in vectors), strict=True))
        if not jobs.finish(base, job_id, result=report.as_dict(), model_path=relative):
            log.warning("training job %d was marked interrupted meanwhile; its model will not be used", job_id)
    except UserError as exc:
        jobs.finish(base, job_id, error=str(exc))
    except Exception:
        reference = uuid.uuid4().hex[:8]
        log.exception("training job %d failed (reference %s)", job_id, reference)
        jobs.finish(base, job_id, error=f"an unexpected error stopped training (reference {reference})")
    finally:
        store.db.close()


class ServingModels:
    """What answers in each knowledge base: its active model version, loaded when first needed,
    with the examples taught since its training on top (``LiveModel``).

    Before each prediction it asks the database which version is active in that base, how many
    examples came after it and the base's revision (two indexed reads), so a finished job, a rollback,
    an example taught a moment ago, one edited or deleted, or another process sharing the database is
    picked up at once. At most ``capacity`` bases stay loaded; the least recently used goes.

    Answers the model learned that the base no longer teaches (deleted, renamed), and the questions it
    learned to answer exactly with an example since deleted or edited, are withdrawn from its predictions
    until the next training leaves them out.
    """

    def __init__(self, knowledge: Knowledge, encoder: TextEncoder, data_dir: Path, capacity: int = 256) -> None:
        self._knowledge = knowledge
        self.encoder = encoder
        self._data_dir = data_dir
        self.capacity = capacity
        self._lock = threading.Lock()
        # base -> (version id, fresh state and revision, live model)
        self._loaded: OrderedDict[int, tuple[int | None, tuple[int, int, int], LiveModel]] = OrderedDict()

    def live(self, base: int) -> tuple[int | None, LiveModel | None]:
        """The base's active version and what answers there; (None, None) when nothing was taught."""
        version = self._knowledge.active_model(base)
        version_id = version.id if version is not None else None
        after = version.trained_through if version is not None else 0
        state = self._knowledge.serving_state(base, after)
        with self._lock:
            held = self._loaded.get(base)
            if held is not None and held[:2] == (version_id, state):
                self._loaded.move_to_end(base)
                return version_id, held[2]
        # Built outside the lock: one base's first answer does not hold up the others.
        model = held[2].model if held is not None and held[0] == version_id else None
        if model is None and version is not None:
            model = self._load(base, version.id, version.path)
        fresh = self._fresh(base, after) if state[0] else Fresh.of([], np.zeros((0, self.encoder.dimension)))
        if model is None and not fresh:
            with self._lock:
                self._loaded.pop(base, None)
            return None, None
        # What the model learned that the base no longer teaches. Its answers are read again whenever something
        # changed (a few milliseconds for 10,000 examples); its question-and-answer pairs, a pass over every
        # question, only when the model or the base's revision did (an edit, a deletion, a dataset selected).
        withdrawn: frozenset[str] = frozenset()
        retracted: frozenset[tuple[str, str]] = frozenset()
        if model is not None and held is not None and held[0] == version_id and held[1][2] == state[2]:
            withdrawn = frozenset(model.outputs) - set(self._knowledge.taught_outputs(base))
            retracted = held[2].retracted
        elif model is not None:
            withdrawn, retracted = self._unlearned(base, model)
        live = LiveModel(model, fresh, self.encoder, withdrawn, retracted)
        with self._lock:
            self._loaded[base] = (version_id, state, live)
            self._loaded.move_to_end(base)
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        return version_id, live

    def _unlearned(self, base: int, model: IntentModel) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        """The answers the model learned that the base no longer gives, and the (question, answer) pairs it
        answers exactly that the base no longer teaches (an example deleted or edited since its training)."""
        pairs = self._knowledge.taught_pairs(base)
        taught = {(normalise(question), answer) for question, answer in pairs}
        learned = ((question, model.outputs[label]) for question, label in model.exact.items())
        withdrawn = frozenset(model.outputs) - {answer for _, answer in pairs}
        return withdrawn, frozenset(pair for pair in learned if pair not in taught)

    def _load(self, base: int, version_id: int, relative: str) -> IntentModel | None:
        """The version's model from the data directory, fetched from the database first where it was trained on
        another machine; None (answers from what was taught since, and the log says why) when it cannot be read."""
        path = self._data_dir / relative
        try:
            if not path.exists() and (data := self._knowledge.model_file(relative)) is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
                partial.write_bytes(data)
                partial.replace(path)  # whole or absent, for every process sharing the directory
            model = IntentModel.load(path, self.encoder)
        except (OSError, ValueError):
            log.exception("model version %d of base %d cannot be read from %s", version_id, base, path)
            return None
        log.debug("loaded model version %d of base %d", version_id, base)
        return model

    def _fresh(self, base: int, after: int) -> Fresh:
        """The newest examples since the model, encoded (their embeddings are kept for the next time)."""
        rows = self._knowledge.fresh_examples(base, after, FRESH_LIMIT)
        missing = [example for example, _ in rows if example.vector is None]
        encoded: dict[int, bytes] = {}
        if missing:
            vectors = self.encoder.encode([example.input for example in missing]).astype(np.float32)
            encoded = {example.id: vector.tobytes() for example, vector in zip(missing, vectors, strict=True)}
            self._knowledge.save_example_vectors(encoded.items())
        blobs = [example.vector or encoded[example.id] for example, _ in rows]
        vectors = np.stack([np.frombuffer(blob, dtype=np.float32) for blob in blobs]) if blobs else np.zeros((0, 0))
        examples = [Example(example.input, example.output, positive) for example, positive in rows]
        return Fresh.of(examples, vectors)

    def model(self, base: int) -> tuple[int | None, IntentModel | None]:
        """The base's active version and its trained model (without what was taught since)."""
        version_id, live = self.live(base)
        return version_id, live.model if live is not None else None

    def loaded(self) -> int:
        with self._lock:
            return len(self._loaded)

    def predict(
        self, base: int, text: str, threshold: float | None, vector: np.ndarray | None = None
    ) -> Prediction | None:
        """None when nothing was taught in the base; ``threshold`` None: the model's own."""
        live = self.live(base)[1]
        return live.predict(text, threshold, vector) if live is not None else None

    def predict_many(self, base: int, texts: list[str], threshold: float | None) -> list[Prediction] | None:
        live = self.live(base)[1]
        return live.predict_many(texts, None, threshold) if live is not None else None


@dataclass
class _Waiting:
    base: int
    job_id: int
    open: bool = False  # takes in everything taught until it starts; more teaching joins it, not a new job
    not_before: float = 0.0  # monotonic time before which it does not start (the quiet spell it waits for)
    urgent: bool = False  # asked for now (`!retrain`, many new examples): later teaching does not delay it


class TrainingJobs:
    """Runs jobs in up to ``workers`` processes, fairly between bases; the others wait their turn.

    With a ``queue`` (PostgreSQL: learning/queue.py), a job whose time has come goes to the task queue
    instead, and `trainerbot worker` processes, here or on other machines, run it.
    """

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        threshold: float | None,
        on_finished: Callable[[Job], None],
        workers: int = 2,
        queue: QueuedRunner | None = None,
    ) -> None:
        self._store = store
        self._data_dir = data_dir
        self._threshold = threshold
        self._on_finished = on_finished
        self._queue = queue
        # With a queue, every job whose time has come is queued at once: the workers set the pace.
        self.workers = workers if queue is None else 1_000_000
        self._pool: ProcessPoolExecutor | None = None
        # The pool starts its processes in the thread that submits; Linux ties the parent-death
        # signal to that thread, so it must be one that lives as long as the pool, not a passing one.
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-launcher")
        self._waiting: list[_Waiting] = []
        self._running: dict[int, tuple[int, Future[None]]] = {}  # job id -> (base, future)
        self._last_start: dict[int, int] = {}  # base -> when its last job started, as a count of starts
        self._starts = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # a job was scheduled, or the pool shuts down
        self._scheduling = threading.Lock()
        self._clock: threading.Thread | None = None
        self._closed = False
        self._interrupted: list[Job] = []
        self._process_lock: ProcessLock | None = None

    def recover(self) -> list[Job]:
        """Marks jobs left unfinished by processes that have ended as interrupted.

        Every process that runs jobs on a database says so until it shuts down (``join_training_processes``:
        a lock the system lets go of when the process dies, however it dies). Only a process that finds
        no other may mark unfinished jobs: otherwise they may be the running jobs of a live bot
        (`trainerbot test` run beside it, on the same data directory).
        """
        if self._queue is not None:  # queued jobs wait for a worker; only those no one will run are ended
            interrupted = self._queue.recover()
        else:
            if self._process_lock is None:
                self._process_lock = self._store.db.join_training_processes()
            if not self._process_lock.alone:
                log.info("another trainerbot process uses this database: its unfinished jobs are left to it")
                return []
            interrupted = self._store.jobs.interrupt_unfinished()
        if interrupted:
            log.warning("jobs %s were interrupted by a restart", [job.id for job in interrupted])
        with self._lock:
            self._interrupted += interrupted
        return interrupted

    def take_interrupted(self) -> list[Job]:
        """The jobs ``recover`` found interrupted, once: whoever takes them tells the people waiting."""
        with self._lock:
            taken, self._interrupted = self._interrupted, []
        return taken

    def start(
        self, base: int, *, requested_by: int | None, channel_id: int | None, same_inputs_as: int | None = None
    ) -> Job:
        """Queues a new job of ``base``; ``same_inputs_as`` trains on exactly what that earlier job was given."""
        job = self._store.jobs.create(
            base, requested_by=requested_by, channel_id=channel_id, same_inputs_as=same_inputs_as
        )
        if self._queue is not None:
            self._queue.hold(job.id)
        with self._lock:
            self._waiting.append(_Waiting(base, job.id))
        self._dispatch()
        return job

    def schedule(
        self, base: int, *, requested_by: int | None, channel_id: int | None, delay: float
    ) -> tuple[Job, bool]:
        """The base's coalesced job: it trains on everything taught until it starts, ``delay`` seconds from now.

        Teaching again before it starts joins it and pushes its start back (``delay`` 0: start as soon as
        a worker is free, and stay so). Returns the job and whether it was made by this call.
        """
        with self._scheduling:  # two teachings at once make one job, not two
            with self._lock:
                waiting = next((w for w in self._waiting if w.base == base and w.open), None)
                if waiting is not None:
                    waiting.urgent = waiting.urgent or delay <= 0
                    waiting.not_before = time.monotonic() + (0.0 if waiting.urgent else delay)
                    self._wake.notify()
            if waiting is not None:
                job = self._store.jobs.job(base, waiting.job_id)
                assert job is not None
                self._dispatch()
                return job, False
            job = self._store.jobs.create(base, requested_by=requested_by, channel_id=channel_id)
            if self._queue is not None:
                self._queue.hold(job.id)
            with self._lock:
                self._waiting.append(
                    _Waiting(base, job.id, open=True, not_before=time.monotonic() + max(delay, 0.0), urgent=delay <= 0)
                )
                self._start_clock()
                self._wake.notify()
        self._dispatch()
        return job, True

    def start_waiting(self) -> None:
        """Every job waiting for its quiet spell starts as soon as a worker is free (the console, at its end)."""
        with self._lock:
            for waiting in self._waiting:
                waiting.not_before, waiting.urgent = 0.0, True
            self._wake.notify()
        self._dispatch()

    def open_job(self, base: int) -> int | None:
        """The base's job waiting to take in what is taught next, if there is one."""
        with self._lock:
            return next((w.job_id for w in self._waiting if w.base == base and w.open), None)

    def starts_in(self, base: int, job_id: int) -> float:
        """Seconds until a waiting job's quiet spell ends (0: it may start as soon as a worker is free)."""
        with self._lock:
            waiting = next((w for w in self._waiting if w.job_id == job_id and w.base == base), None)
        return max(0.0, waiting.not_before - time.monotonic()) if waiting is not None else 0.0

    def _start_clock(self) -> None:
        """A thread that starts delayed jobs when their quiet spell ends (called with the lock held)."""
        if self._clock is None:
            self._clock = threading.Thread(target=self._tick, name="training-clock", daemon=True)
            self._clock.start()

    def _tick(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                later = [w.not_before - now for w in self._waiting if w.not_before > now]
                self._wake.wait(min(later) if later else None)
                if self._closed:
                    return
            self._dispatch()

    def _next(self) -> _Waiting | None:
        """The job to start now, if a worker is free: from the base that waited longest since its last start."""
        if len(self._running) >= self.workers:
            return None
        busy = {base for base, _ in self._running.values()}
        now = time.monotonic()
        ready = [w for w in self._waiting if w.base not in busy and w.not_before <= now]
        return min(ready, key=lambda w: (self._last_start.get(w.base, -1), w.job_id)) if ready else None

    def _dispatch(self) -> None:
        started: list[tuple[_Waiting, Future[None]]] = []
        with self._lock:
            while not self._closed and (chosen := self._next()) is not None:
                self._waiting.remove(chosen)
                self._starts += 1
                self._last_start[chosen.base] = self._starts
                if self._queue is not None:
                    future = self._queue.launch(chosen.base, chosen.job_id, chosen.open)
                    self._running[chosen.job_id] = (chosen.base, future)
                    started.append((chosen, future))
                    continue
                if self._pool is None:
                    # spawn, not fork: the bot process has threads and an event loop that must not be copied.
                    self._pool = ProcessPoolExecutor(
                        max_workers=self.workers,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=start_training_process,
                        initargs=(os.getpid(), log_files(), logging.getLogger().level),
                    )
                future = self._launcher.submit(
                    self._pool.submit,
                    run_training_job,
                    self._store.db.address,
                    str(self._data_dir),
                    chosen.base,
                    chosen.job_id,
                    self._threshold,
                    chosen.open,
                ).result()
                self._running[chosen.job_id] = (chosen.base, future)
                started.append((chosen, future))
        for chosen, future in started:  # outside the lock: a callback may run at once, and it takes the lock
            future.add_done_callback(lambda f, w=chosen: self._finished(w, f))

    def busy(self) -> bool:
        """Whether a training process is working now (the chat engine then leaves it a core)."""
        with self._lock:
            return any(f.running() for _, f in self._running.values())

    def queue_position(self, base: int, job_id: int) -> int:
        """How many jobs will start before this one (0 when it is running or done)."""
        with self._lock:
            waiting = list(self._waiting)
            last = dict(self._last_start)
            full = len(self._running) >= self.workers
            queued = job_id in self._running
        if self._queue is not None:  # the queue's entries go first, then what waits here in turn
            job = self._store.jobs.job(base, job_id)
            if job is None or job.status != "queued":
                return 0
            ahead, full = self._queue.position(job_id if queued else None)
            if queued:
                return ahead + (1 if full else 0)
            waiting = [w for w in waiting if w.not_before <= time.monotonic() or w.job_id == job_id]
            order = sorted(waiting, key=lambda w: (last.get(w.base, -1), w.job_id))
            ids = [w.job_id for w in order]
            return ahead + ids.index(job_id) + (1 if full else 0) if job_id in ids else 0
        order: list[_Waiting] = []
        while waiting:  # the order ``_next`` would pick them in, were every worker free
            chosen = min(waiting, key=lambda w: (last.get(w.base, -1), w.job_id))
            waiting.remove(chosen)
            last[chosen.base] = max(last.values(), default=0) + 1
            order.append(chosen)
        ids = [w.job_id for w in order]
        return ids.index(job_id) + (1 if full else 0) if job_id in ids else 0

    def _finished(self, waited: _Waiting, future: Future[None]) -> None:
        with self._lock:
            self._running.pop(waited.job_id, None)
        try:
            if not future.cancelled():  # cancelled: shut down before it started; the next start marks it interrupted
                error = future.exception()
                if isinstance(error, BrokenProcessPool):
                    with self._lock:
                        self._pool = None  # a fresh process is started for the next job
                if error is not None:  # the process died (killed, out of memory) before it could record anything
                    log.error("training process for job %d died: %r", waited.job_id, error)
                    self._store.jobs.finish(
                        waited.base, waited.job_id, error="the training process stopped unexpectedly"
                    )
                job = self._store.jobs.job(waited.base, waited.job_id)
                if job is not None:
                    self._on_finished(job)
        except Exception:
            log.exception("after training job %d", waited.job_id)
        finally:  # whatever happened here, the jobs waiting behind this one start
            self._dispatch()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._waiting.clear()
            self._wake.notify_all()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._launcher.shutdown(wait=True)
        if self._queue is not None:
            self._queue.close()
        if self._process_lock is not None:
            self._process_lock.release()
