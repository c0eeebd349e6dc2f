"""The teaching loop: train, test, datasets, corrections, model versions."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from trainerbot.core.answers import TaughtAnswers
from trainerbot.core.files import MAX_PATH_LENGTH, DataDirectory, Folders, timestamp
from trainerbot.core.permissions import Access
from trainerbot.core.text import count, progress_bar, short
from trainerbot.errors import InvalidInput, NotReady, PermissionDenied, QuotaReached, TooLarge
from trainerbot.learning import datasets
from trainerbot.learning.evaluation import chart_png, evaluate, parse_cases, report_json
from trainerbot.learning.examples import ARROW, MAX_TEXT, parse_inline, read_examples
from trainerbot.learning.jobs import TrainingJobs
from trainerbot.storage.audit import Change
from trainerbot.storage.store import Store
from trainerbot.types import (
    GLOBAL_BASE,
    Caller,
    Example,
    Job,
    OutFile,
    Place,
    Rating,
    Reply,
    Upload,
    human_size,
    place_of,
)

if TYPE_CHECKING:
    from trainerbot.core.review import ReviewIntake
    from trainerbot.types import ReplyRecord

log = logging.getLogger(__name__)

TRAIN_USAGE = (
    f"Teach with `!train question {ARROW} answer`, attach a .json, .jsonl, .csv or .txt file (or a .zip), "
    "or name a file or directory in this server's folder (`!train datasets/faq.csv`). "
    "Add `positive=false` to teach answers the bot must not give."
)
# How a person points at one of the bot's replies on Discord (the console says it its own way).
POINT_AT_A_REPLY = "Reply to my message, or give its link (right-click or long-press it, then Copy Message Link)."
TRAIN_EXAMPLE = "For example: `!train when do you open? => We open at 9am.` (`!retrain` trains again on what I have.)"
_FLAG = re.compile(r"(?:^|\s)(?:positive\s*[=:]\s*(true|false|yes|no)|--?(negative|positive))(?=\s|$)", re.I)
RATINGS = {"👍": 1, "👎": -1}  # the reactions that rate a reply, and their values
_GLOBAL_FLAG = re.compile(r"(?:^|\s)--global(?=\s|$)", re.I)


def parse_positive_flag(text: str) -> tuple[str, bool | None]:
    """Takes `positive=false`, `--negative` and their opposites out of a command's text."""
    found: bool | None = None
    for match in _FLAG.finditer(text):
        word = (match.group(1) or match.group(2)).lower()
        found = word in ("true", "yes", "positive")
    return _FLAG.sub(" ", text).strip(), found


def take_global_flag(text: str) -> tuple[str, bool]:
    """Takes `--global` (an owner teaching the bot-wide base) out of a command's text."""
    found = _GLOBAL_FLAG.search(text) is not None
    return _GLOBAL_FLAG.sub(" ", text).strip(), found


@dataclass(frozen=True)
class Quotas:
    """What one server may keep and start (settings ``TRAINERBOT_SERVER_*``); the bot's owners are not held to them."""

    examples: int
    stored_bytes: int  # examples' text and the files in the server's folder
    jobs_per_hour: int


def _size(examples: Sequence[Example]) -> int:
    """The bytes of text examples keep, as a server's quota counts them."""
    return sum(len(ex.input.encode()) + len(ex.output.encode()) for ex in examples)


def check_upload(upload: Upload, limit: int) -> None:
    if max(upload.size, len(upload.data)) > limit:
        raise TooLarge(
            f"{upload.name} is {human_size(max(upload.size, len(upload.data)))}; the limit is {human_size(limit)}."
        )


def fits_id(value: int) -> bool:
    """Whether a number typed as an id can be one: SQLite stores ids in 63 bits, and refuses bigger numbers."""
    return 0 < value < 2**63


@dataclass(frozen=True)
class Refit:
    """When the model is trained again after teaching (settings ``TRAINERBOT_AUTO_TRAIN_*``).

    What is taught answers at once (``learning/live.py``); the refit waits for ``quiet`` seconds
    without new teaching in that base, so a burst of teaching makes one job, unless ``examples``
    or more examples wait to be taken in: then it starts as soon as a worker is free.
    """

    quiet: float = 30.0
    examples: int = 100


@dataclass(frozen=True)
class JobStarted:
    job_id: int
    base: int
    text: str


def job_text(job: Job, queue_position: int = 0, starts_in: float = 0.0) -> str:
    """One message describing a job, edited in place as it progresses."""
    head = f"Training job #{job.id}"
    if job.status == "queued" and starts_in > 0:  # no countdown: the message is edited only when it changes
        return f"{head}: waits for teaching here to pause, then refits the model; what is taught meanwhile joins it."
    if job.status == "queued":
        wait = f", {queue_position} ahead of it" if queue_position else ""
        return f"{head}: queued{wait}."
    if job.status == "running":
        return f"{head}: {progress_bar(job.progress)} {job.stage}"
    if job.status == "failed":
        return f"{head} failed: {job.error}"
    if job.status == "interrupted":
        return f"{head} was interrupted by a restart. `!retry {job.id}` trains on the same examples again."
    result = job.result or {}
    return (
        f"{head} done: {progress_bar(1.0)}\n"
        f"Learned {count(result.get('outputs', 0), 'answer')} from {count(result.get('examples', 0), 'example')} "
        f"({result.get('positive')} positive, {result.get('negative')} negative); {_checked(result)}; "
        f"took {result.get('seconds')} s. Model version {job.model_version_id} now answers."
    )


def _checked(result: dict) -> str:
    """What a job's held-out check found, at the threshold it answers with (older jobs did not record one)."""
    accuracy, threshold = result.get("holdout_accuracy"), result.get("threshold")
    at = ""
    if threshold is not None:
        why = {
            "chosen": "chosen from its own examples",
            "default": "too few examples to choose one: the default",
            "setting": "set by the bot's owner",
        }.get(result.get("threshold_source", ""), "")
        at = f" at confidence threshold {threshold:.2f}" + (f" ({why})" if why else "")
    if accuracy is None:
        return "too few examples for a held-out check" + (f"; it answers{at}" if at else "")
    return f"{accuracy:.1%} of {result.get('holdout_size')} held-out questions answered right{at}" + _untaught(result)


def _untaught(result: dict) -> str:
    """How the fits that left answers out met those answers' questions: the model's "I don't know" on the untaught."""
    share = result.get("unknown_share")
    if share is None:
        return ""
    return f'; {share:.0%} of {result.get("unknown_size")} questions of answers left out said "unknown"'


class TeachingService:
    """Train, test, datasets, corrections and model versions, each on the knowledge base of its place."""

    def __init__(
        self,
        store: Store,
        folders: Folders,
        access: Access,
        jobs: TrainingJobs,
        answers: TaughtAnswers,
        upload_limit: int,
        quotas: Quotas,
        *,
        review: ReviewIntake | None = None,
        refit: Refit | None = None,
    ) -> None:
        """``review``: where members' corrections and 👎 go for the admins (None: a tool that keeps no inbox)."""
        self.store = store
        self.review = review
        self.folders = folders
        self.access = access
        self.jobs = jobs
        self.answers = answers
        self.upload_limit = upload_limit
        self.quotas = quotas
        self.refit = refit or Refit()

    # --- where and who ------------------------------------------------------------------------

    def _teaching_base(self, caller: Caller, everywhere: bool) -> int:
        """The base an admin's teaching goes to: their server's; with `--global`, the bot-wide one (owners)."""
        if everywhere:
            self.access.require_owner(caller, "teach the bot-wide knowledge (`--global`)")
            return GLOBAL_BASE
        self.access.require_admin(caller, "train the model")
        return caller.base

    def check_room(
        self,
        caller: Caller,
        base: int,
        examples: Sequence[Example],
        files: int = 0,
        replacing: Sequence[Example] = (),
    ) -> None:
        """Refuses what would take a server past its quotas, before anything is stored (``files``: bytes to keep;
        ``replacing``: examples that leave as these come, an edit). What does not grow is never refused."""
        if caller.is_owner or base == GLOBAL_BASE:
            return
        held, held_bytes = self.store.knowledge.stored(base)
        growing = len(examples) - len(replacing)
        if growing > 0 and held + growing > self.quotas.examples:
            raise QuotaReached(
                f"This server's knowledge would hold {held + growing:,} examples; it may hold "
                f"{self.quotas.examples:,} (it has {held:,}). Remove a dataset or ask the bot's owners."
            )
        adding = _size(examples) - _size(replacing) + files
        total = held_bytes + adding + self.folders.size(base)
        if adding > 0 and total > self.quotas.stored_bytes:
            raise QuotaReached(
                f"This server would keep {human_size(total)} of examples and files; it may keep "
                f"{human_size(self.quotas.stored_bytes)}. Ask the bot's owners for more room."
            )

    def new_examples(self, base: int, given: Sequence[Example]) -> list[Example]:
        """Those of ``given`` the base was not taught yet, each once, in the order given; none: a UserError."""
        known = self.store.knowledge.already_taught(base, given)
        examples = [e for e in dict.fromkeys(given) if e not in known]
        if not examples:
            everything = "it" if len(given) == 1 else f"all {len(given)}"
            raise InvalidInput(f"I knew {everything} already: nothing new was stored. `!retrain` trains again.")
        return examples

    def _may_start_job(self, caller: Caller | None, base: int) -> bool:
        """Whether the base may start another job this hour (a job waiting to start costs nothing more)."""
        if (caller is not None and caller.is_owner) or base == GLOBAL_BASE or self.jobs.open_job(base) is not None:
            return True
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds")
        return self.store.jobs.started_since(base, since) < self.quotas.jobs_per_hour

    def _check_job_quota(self, caller: Caller, base: int) -> None:
        if not self._may_start_job(caller, base):
            raise QuotaReached(
                f"This server has started {self.quotas.jobs_per_hour} training jobs in the last hour, the most "
                "it may; nothing was stored or started. Try again later."
            )

    # --- training ---------------------------------------------------------------------

    def _examples_from(
        self, data: DataDirectory, text: str, uploads: list[Upload], positive: bool
    ) -> tuple[list[Example], str]:
        """Parses everything given before anything is stored, so a bad file stores nothing.

        Files and uploads go through one reader: it unpacks zip archives (decided by their bytes,
        not their names) with its defences against bombs and hostile members.
        """
        examples: list[Example] = []
        sources: list[str] = []
        if ARROW in text:
            examples += parse_inline(text, positive)
            sources.append("your message")
        elif text:
            if "\n" in text or len(text) > MAX_PATH_LENGTH:  # words, not a path: say what is wrong with them
                raise InvalidInput(self._neither(text))
            path = data.resolve(text)
            if path.is_dir():
                files = data.example_files(path)
                if not files:
                    raise InvalidInput(f"`{short(text)}` has no example files (.json, .jsonl, .csv, .txt or .zip).")
                examples += datasets.read_directory(path, files, positive, self.upload_limit)[0]
            elif path.is_file():
                file = data.existing_file(text, self.upload_limit)
                examples += read_examples(file.read_bytes(), data.relative(file), positive, self.upload_limit)
            else:
                raise InvalidInput(self._neither(text))
            sources.append(data.relative(path))
        for upload in uploads:
            check_upload(upload, self.upload_limit)
            examples += read_examples(upload.data, upload.name, positive, self.upload_limit)
            sources.append(upload.name)
        return examples, short(", ".join(sources), 300)

    @staticmethod
    def _neither(text: str) -> str:
        return (
            f"`{short(text)}` is neither `question {ARROW} answer` nor a file or directory "
            f"in this server's folder.\n{TRAIN_USAGE}"
        )

    def train(
        self,
        caller: Caller,
        text: str,
        uploads: list[Upload],
        positive: bool = True,
        everywhere: bool = False,
        *,
        now: bool = False,
        base: int | None = None,
    ) -> JobStarted:
        """Stores the examples given in the caller's base (all or nothing); they answer at once, and the
        base's refit takes them in once teaching there pauses (``now``: as soon as a worker is free).

        ``everywhere`` (or `--global` in the text): the bot-wide base, for the bot's owners. ``base``: a base
        named outright (the dashboard's), for its admins, or for the bot-wide one its owners, without `--global`.
        """
        text, flag = parse_positive_flag(text)
        text, global_flag = take_global_flag(text)
        if base is None:
            base = self._teaching_base(caller, everywhere or global_flag)
        else:
            self.access.require_admin_of(caller, base, "train the model")
        if not text and not uploads:
            raise InvalidInput(f"What should I learn? {TRAIN_USAGE}\n{TRAIN_EXAMPLE}")
        positive = positive if flag is None else flag
        given, source = self._examples_from(self.folders.of(base), text, uploads, positive)
        examples = self.new_examples(base, given)
        kept = uploads if base != GLOBAL_BASE else []  # a server's files stay in its folder, for `!getfile` & co
        self.check_room(caller, base, examples, sum(len(upload.data) for upload in kept))
        self._check_job_quota(caller, base)
        kind = "positive" if positive else "negative"
        repeated = f" ({count(len(given) - len(examples), 'repeat')} left out)" if len(given) > len(examples) else ""
        stored = f"Stored {count(len(examples), kind + ' example')} from {source}"
        self.store.knowledge.add_examples(
            base,
            examples,
            source=f"train:{source}",
            author_id=caller.user_id,
            # The trail is read by others: "your message" is the teacher's.
            change=Change.by(caller, "train", stored.replace("your message", "a message") + repeated),
        )
        where = " to the bot-wide knowledge" if base == GLOBAL_BASE and caller.guild_id is not None else ""
        effect = "They answer" if positive else "Those answers stop"
        added = f"{stored}{where}{repeated}. "
        added += f"{effect} from now on. "
        added += self._keep(base, kept)
        return self._start(caller, base, added, 0.0 if now else self._delay(base))

    def taught(self, base: int, caller: Caller | None = None) -> None:
        """New examples were stored in ``base``: they answer from the next message on (the serving layer
        reads them at once); the model is refitted in the background, coalesced with later teaching.

        The serving layer is brought up to date here, in the teacher's thread, so that the next
        message does not wait for the new examples' embeddings.
        """
        self.taught_now(base)
        if self.jobs.open_job(base) is None and not self._may_start_job(caller, base):
            log.info("base %d reached its hourly training quota; its new examples answer, the refit waits", base)
            return
        self.jobs.schedule(
            base,
            requested_by=caller.user_id if caller else None,
            channel_id=caller.channel_id if caller else None,
            delay=self._delay(base),
        )

    def _delay(self, base: int) -> float:
        """How long a refit waits for more teaching: none once enough examples wait to be taken in."""
        version = self.store.knowledge.active_model(base)
        waiting = self.store.knowledge.fresh_state(base, version.trained_through if version else 0)[0]
        return 0.0 if waiting >= self.refit.examples else self.refit.quiet

    def _keep(self, base: int, uploads: list[Upload]) -> str:
        """Copies of the files a server sent, in its folder; what the reply says of them."""
        paths = []
        for upload in uploads:
            try:
                paths.append(self.folders.keep(base, upload))
            except OSError:  # the examples are stored: a copy that cannot be written is only logged
                log.exception("could not keep a copy of %s for base %d", upload.name, base)
        if not paths:
            return ""
        return "Kept as " + ", ".join(f"`{short(path, 120)}`" for path in paths) + ". "

    def retrain(self, caller: Caller) -> JobStarted:
        """Trains on everything collected as soon as a worker is free (a waiting refit starts now)."""
        base = self._teaching_base(caller, False)
        if self.store.knowledge.example_counts(base)["positive"] == 0:
            raise NotReady(f"Nothing has been taught here yet. {TRAIN_USAGE}")
        self._check_job_quota(caller, base)
        started = self._start(caller, base, "", 0.0)
        self.store.audit.add_change(
            base, Change.by(caller, "retrain", f"Training job #{started.job_id} on everything taught")
        )
        return started

    def retry(self, caller: Caller, job_id: int) -> JobStarted:
        """A new job on exactly the examples an interrupted or failed job of this base was given."""
        base = self._teaching_base(caller, False)
        job = self.store.jobs.job(base, job_id) if fits_id(job_id) else None
        if job is None:
            raise NotReady(f"There is no job #{short(str(job_id), 30)} here.")
        if not job.finished:
            raise NotReady(f"Training job #{job_id} is still {job.status}: `!job {job_id}` shows how far it is.")
        if job.status == "succeeded":
            raise NotReady(f"Training job #{job_id} succeeded; there is nothing to retry. `!retrain` trains again.")
        later = self.store.jobs.later_job(base, job_id)
        if later is not None:
            # Its model would replace one trained on at least as much: an accidental rollback.
            done = "succeeded" if later.status == "succeeded" else "is on its way"
            raise NotReady(
                f"Training job #{later.id}, started after #{job_id}, {done}; a retry of #{job_id} would replace "
                f"its model with an older one. `!retrain` trains on everything collected."
            )
        self._check_job_quota(caller, base)
        started = self.jobs.start(
            base, requested_by=caller.user_id, channel_id=caller.channel_id, same_inputs_as=job_id
        )
        counts = self.store.jobs.input_counts(base, started.id)
        self.store.audit.add_change(
            base, Change.by(caller, "retry", f"Training job #{started.id} on the examples of job #{job_id}")
        )
        return JobStarted(
            started.id,
            base,
            f"Training job #{started.id} started in place of #{job_id}, on the same {counts['total']} examples "
            f"({counts['outputs']} outputs). I will update this message as it goes.",
        )

    def restart_notices(self) -> list[tuple[int, str]]:
        """Once after start-up: (channel id, message) telling each channel which of its jobs a restart ended."""
        notices: dict[int, list[str]] = {}
        for job in self.jobs.take_interrupted():
            if job.channel_id is not None:
                notices.setdefault(job.channel_id, []).append(job_text(job))
        return [(channel_id, "\n".join(texts)) for channel_id, texts in notices.items()]

    def _start(self, caller: Caller, base: int, prefix: str, delay: float) -> JobStarted:
        """The base's refit, joined if one is waiting, else queued to start after ``delay`` seconds."""
        self.taught_now(base)
        job, made = self.jobs.schedule(base, requested_by=caller.user_id, channel_id=caller.channel_id, delay=delay)
        counts = self.store.knowledge.example_counts(base)
        what = f"{count(counts['total'], 'example')} ({count(counts['outputs'], 'answer')})"
        if made and delay <= 0:
            head = f"Training job #{job.id} started on {what}."
        elif made:
            head = f"Training job #{job.id} will refit the model on {what} and whatever is taught in the next moments."
        else:
            head = f"Training job #{job.id}, waiting already, takes these in too ({what} in all)."
        return JobStarted(job.id, base, f"{prefix}{head} I will update this message as it goes.")

    def taught_now(self, base: int) -> None:
        """Brings the base's serving layer up to date (its new examples encoded) before replying."""
        try:
            self.answers.models.live(base)
        except Exception:  # the examples are stored; the next answer tries again
            log.exception("could not bring base %d's answers up to date", base)

    def job_status(self, base: int, job_id: int) -> tuple[str, bool]:
        """A job's message and whether it has ended, from one read of its row (for following a job started here)."""
        job = self.store.jobs.job(base, job_id) if fits_id(job_id) else None
        if job is None:
            raise NotReady(f"There is no job #{short(str(job_id), 30)} here.")
        return job_text(job, self.jobs.queue_position(base, job_id), self.jobs.starts_in(base, job_id)), job.finished

    def job_text(self, caller: Caller, job_id: int) -> str:
        self.access.require_view(caller, caller.base)
        return self.job_status(caller.base, job_id)[0]

    def list_jobs(self, caller: Caller) -> Reply:
        self.access.require_view(caller, caller.base)
        jobs = self.store.jobs.recent(caller.base)
        if not jobs:
            return Reply("No training jobs here yet. " + TRAIN_USAGE)
        lines = [f"`#{j.id}` {j.status:<11} {progress_bar(j.progress, 10)} {j.created_at[:19]}Z" for j in jobs]
        return Reply("Recent training jobs:\n" + "\n".join(lines))

    # --- model versions -------------------------------------------------------------------

    def model_info(self, caller: Caller) -> Reply:
        base = caller.base
        self.access.require_view(caller, base)
        version = self.store.knowledge.active_model(base)
        also = ""
        if base != GLOBAL_BASE and GLOBAL_BASE in self.answers.bases(base):
            also = "\nWhat it doesn't know, the bot-wide knowledge answers (`!config bot-wide off` turns that off)."
        threshold, source = self.answers.threshold_of(base)
        fresh = self.store.knowledge.fresh_state(base, version.trained_through if version else 0)[0]
        since = ""
        if fresh:
            since = (
                f"\n{count(fresh, 'example')} taught since {'its training' if version else 'then'} already answer; "
                "the next training takes them in."
            )
        if version is None:
            if fresh:
                return Reply(
                    f"No model has been trained here yet; confidence threshold {threshold:.2f} ({source})."
                    + since
                    + also
                )
            if base == GLOBAL_BASE:  # a DM, or the console: what the owners teach for every server
                return Reply(
                    "No model has been trained for the bot-wide knowledge yet. Owners teach it in a server with "
                    f"`!train --global question {ARROW} answer` (or in the console)."
                )
            return Reply("No model has been trained for this server yet. " + TRAIN_USAGE + also)
        report = version.report
        accuracy = (
            f"{version.holdout_accuracy:.1%} of {report.get('holdout_size')} held-out questions answered right"
            + _untaught(report)
            if version.holdout_accuracy is not None
            else "too few examples for a held-out check"
        )
        older = [v for v in self.store.knowledge.model_versions(base) if v.id != version.id]
        history = ", ".join(f"v{v.id}{' (rolled back)' if v.status == 'rolled_back' else ''}" for v in older[:5])
        return Reply(
            f"Model version {version.id} answers (job #{version.job_id}, trained {version.created_at[:19]}Z): "
            f"{count(version.examples, 'example')}, {count(version.outputs, 'answer')}; {accuracy}; "
            f"confidence threshold {threshold:.2f} ({source})."
            + since
            + (f"\nEarlier versions: {history}." if history else "")
            + also
        )

    def rollback(self, caller: Caller) -> Reply:
        self.access.require_admin(caller, "roll back the model")
        swapped = self.store.knowledge.roll_back(
            caller.base,
            lambda old, new: Change.by(
                caller, "rollback", f"Model version {new.id} answers again; version {old.id} is retired"
            ),
        )
        if swapped is None:
            raise NotReady("There is no earlier model version to return to.")
        old, new = swapped
        return Reply(f"Rolled back: model version {new.id} answers again (version {old.id} is retired).")

    # --- testing ----------------------------------------------------------------------

    def test(self, caller: Caller, text: str, uploads: list[Upload], typed_in: str = "your message") -> Reply:
        """Asks the cases of the bot as it answers where the caller is; the run is kept with that base.

        The cases typed (``typed_in`` names where, for errors) and those of every file are run together.
        """
        self.access.require_view(caller, caller.base)
        if not text.strip() and not uploads:
            raise InvalidInput(
                'Give test cases as JSON, e.g. `!test [{"input": "hi", "output": "hello"}]`, or attach a .json file.'
            )
        cases = []
        if text.strip():
            cases += parse_cases(text.strip().strip("`").removeprefix("json").strip(), typed_in)
        for upload in uploads:
            check_upload(upload, self.upload_limit)
            cases += parse_cases(upload.data, upload.name)
        answered = self.answers.answer_many(self.answers.bases(caller.guild_id), [c.input for c in cases])
        if answered is None:
            raise NotReady("No model has been trained yet. " + TRAIN_USAGE)
        predictions, version_id = answered
        report = evaluate(cases, predictions)
        self.store.evaluations.add_test_run(
            caller.base,
            user_id=caller.user_id,
            model_version_id=version_id,
            total=report.total,
            passed=report.passed,
            accuracy=report.accuracy,
            failures=report.failures,
        )
        threshold, source = self.answers.threshold_of(self.answers.bases(caller.guild_id)[0])
        lines = [
            f"Passed {report.passed} of {report.total} ({report.accuracy:.1%}); failed {report.failed}. "
            f'Confidence threshold {threshold:.2f} ({source}): below it the answer is "unknown".'
        ]
        if report.unknown_recall is not None:
            lines.append(f'Said "unknown" when it should: {report.unknown_recall:.0%} of {report.unknown_total}.')
        for failure in report.failures[:10]:
            lines.append(
                f"✗ `{short(failure['input'])}`: expected {short(failure['expected'] or 'unknown')}, "
                f"got {short(failure['got'] or 'unknown')} ({failure['confidence']:.2f})"
            )
        if len(report.failures) > 10:
            lines.append(f"…and {len(report.failures) - 10} more in the attached report. `!errors` lists them.")
        return Reply(
            "\n".join(lines),
            [OutFile("test-chart.png", chart_png(report)), OutFile("test-report.json", report_json(report))],
        )

    def errors(self, caller: Caller) -> Reply:
        self.access.require_view(caller, caller.base)
        failures = self.store.evaluations.recent_failures(caller.base)
        if not failures:
            return Reply("No failures from the last test run here.")
        total = self.store.evaluations.failure_count(caller.base)
        lines = [f"Failures of the last test run ({total}):"]
        lines += [
            f"• `{short(f['input'])}`: expected {short(f['expected'] or 'unknown')}, "
            f"got {short(f['got'] or 'unknown')} ({f['confidence']:.2f})"
            for f in failures
        ]
        return Reply("\n".join(lines))

    # --- datasets and corrections -----------------------------------------------------

    def select_dataset(self, caller: Caller, directory: str, positive: bool = True) -> Reply:
        self.access.require_admin(caller, "choose the training dataset")
        base = caller.base
        data = self.folders.of(base)
        path = data.existing_directory(directory)
        name = data.label(path)
        archive = data.root / "datasets" / f"{name}-{timestamp()}.zip"
        snap = datasets.snapshot(path, data.example_files(path), archive, name, positive, self.upload_limit)
        try:
            self.check_room(caller, base, snap.examples)
        except QuotaReached:
            snap.archive.unlink(missing_ok=True)  # nothing half-stored: the snapshot goes with the refusal
            raise
        outputs = len({ex.output for ex in snap.examples})
        kind = "positive" if positive else "negative"
        self.store.knowledge.add_dataset(
            base,
            name=name,
            directory=data.relative(path),
            positive=positive,
            examples=snap.examples,
            files=len(snap.files),
            archive=data.relative(snap.archive),
            manifest=snap.manifest,
            created_by=caller.user_id,
            change=Change.by(
                caller,
                "select dataset",
                f"Dataset {name}: {count(len(snap.examples), kind + ' example')}, {count(outputs, 'answer')}, "
                f"from {count(len(snap.files), 'file')}",
            ),
        )
        self.taught(base, caller)
        return Reply(
            f"Dataset `{name}` selected: {count(len(snap.examples), kind + ' example')}, "
            f"{count(outputs, 'answer')}, from {count(len(snap.files), 'file')}. "
            f"Snapshot: `{data.relative(snap.archive)}` "
            f"({human_size(snap.archive.stat().st_size)}). Its examples count from now on, and the model is "
            "refitted with them in the background (`!retrain` starts that now)."
        )

    def correct(self, caller: Caller, bot_message_id: int, correction: str) -> Reply:
        correction = correction.strip()
        if not correction:
            raise InvalidInput("Say what the right answer is: `!correct <message id> <correction>`.")
        if len(correction) > MAX_TEXT:
            raise InvalidInput(
                f"A correction must fit in one message ({MAX_TEXT} characters); this one has {len(correction)}."
            )
        if "\x00" in correction or any("\ud800" <= c <= "\udfff" for c in correction):
            raise InvalidInput("That correction has characters that are not valid text (NUL or lone surrogates).")
        if caller.guild_id is None and not caller.is_owner:
            # In a DM a correction would teach the bot-wide base, which answers in every server.
            raise PermissionDenied(
                "In direct messages only the bot's owners can correct me, as what I learn here I answer "
                "everywhere. Tell them with `!feedback` (as a reply to my message), or correct me in your server."
            )
        reply = self.store.conversations.reply(place_of(caller), bot_message_id) if fits_id(bot_message_id) else None
        if reply is None:
            raise NotReady(f"I can't find a reply of mine with that link or id in this channel. {POINT_AT_A_REPLY}")
        if not self.access.is_admin(caller):
            return self._suggest(caller, reply, correction)
        self.check_room(
            caller, reply.base, [Example(reply.input, correction), Example(reply.input, reply.reply, False)]
        )
        # The question and the reply are left out of the trail: they are (or may quote) the asker's words, and the
        # trail outlives their `!forget me`.
        said = f"Reply {reply.bot_message_id} corrected: it answers `{short(correction, 200)}` now"
        self.store.feedback.add_correction(
            reply=reply, user_id=caller.user_id, correction=correction, change=Change.by(caller, "correct", said)
        )
        if self.review is not None:
            self.review.corrected(reply, caller.user_id, correction)
        self.taught(reply.base, caller)
        return Reply(
            f"Thanks! From now on, to `{short(reply.input)}` I answer `{short(correction)}` "
            f"(instead of `{short(reply.reply)}`)."
        )

    def _suggest(self, caller: Caller, reply: ReplyRecord, correction: str) -> Reply:
        """A member's correction changes no answer: it waits in the review inbox for an admin to accept it."""
        if self.review is None:
            raise NotReady("Only the bot's owners and this server's admins can correct me here.")
        self.review.suggestion(caller, reply, correction)
        return Reply(
            f"Thanks! I passed your correction (`{short(correction)}`) to this server's admins (`!review`); "
            "my answers change once one of them accepts it."
        )

    def _rated_reply(self, place: Place, bot_message_id: int, emoji: str) -> ReplyRecord | None:
        """The reply given in ``place`` that a 👍 or 👎 is about; None for other emoji and messages."""
        if emoji not in RATINGS or not fits_id(bot_message_id):
            return None
        return self.store.conversations.reply(place, bot_message_id)

    def rate(self, user_id: int, place: Place, bot_message_id: int, emoji: str) -> Rating | None:
        """Stores a 👍 or 👎 on one of the bot's replies given in ``place``, replacing the person's earlier rating
        of it; None when it already was their rating, and for other emoji and messages."""
        reply = self._rated_reply(place, bot_message_id, emoji)
        if reply is None:
            return None
        rating = RATINGS[emoji]
        stored = self.store.feedback.add_reaction(user_id=user_id, emoji=emoji, rating=rating, reply=reply)
        if stored is not None and self.review is not None:
            if rating < 0:  # its question goes to the admins' review inbox
                self.review.disliked(reply, user_id)
            elif stored.replaced is not None:  # a 👎 changed to 👍: it leaves the inbox
                self.review.undisliked(reply, user_id)
        return stored

    def unrate(self, user_id: int, place: Place, bot_message_id: int, emoji: str) -> bool:
        """Removes the person's rating of a reply when they take back the reaction that is it; taking back one
        already replaced by their other rating changes nothing."""
        reply = self._rated_reply(place, bot_message_id, emoji)
        if reply is None:
            return False
        removed = self.store.feedback.remove_reaction(user_id=user_id, bot_message_id=reply.bot_message_id, emoji=emoji)
        if removed and RATINGS[emoji] < 0 and self.review is not None:
            self.review.undisliked(reply, user_id)
        return removed
