"""The teaching loop: train, test, datasets, corrections, model versions."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from trainerbot.core.errors import InvalidInput, NotReady, TooLarge
from trainerbot.core.files import MAX_PATH_LENGTH, DataDirectory, human_size, timestamp
from trainerbot.core.messages import Caller, OutFile, Reply, Upload
from trainerbot.core.permissions import require_admin
from trainerbot.core.text import progress_bar
from trainerbot.learning import datasets
from trainerbot.learning.evaluation import chart_png, evaluate, parse_cases, report_json
from trainerbot.learning.examples import ARROW, MAX_TEXT, Example, parse_inline, read_examples
from trainerbot.learning.jobs import ServingModel, TrainingJobs
from trainerbot.storage.store import Job, Store

log = logging.getLogger(__name__)

TRAIN_USAGE = (
    f"Teach with `!train question {ARROW} answer`, attach a .json, .jsonl, .csv or .txt file (or a .zip), "
    "or name a file or directory in the data directory (`!train datasets/faq.csv`). "
    "Add `positive=false` to teach answers the bot must not give."
)
_FLAG = re.compile(r"(?:^|\s)(?:positive\s*[=:]\s*(true|false|yes|no)|--?(negative|positive))(?=\s|$)", re.I)


def parse_positive_flag(text: str) -> tuple[str, bool | None]:
    """Takes `positive=false`, `--negative` and their opposites out of a command's text."""
    found: bool | None = None
    for match in _FLAG.finditer(text):
        word = (match.group(1) or match.group(2)).lower()
        found = word in ("true", "yes", "positive")
    return _FLAG.sub(" ", text).strip(), found


def check_upload(upload: Upload, limit: int) -> None:
    if max(upload.size, len(upload.data)) > limit:
        raise TooLarge(
            f"{upload.name} is {human_size(max(upload.size, len(upload.data)))}; the limit is {human_size(limit)}."
        )


def fits_id(value: int) -> bool:
    """Whether a number typed as an id can be one: SQLite stores ids in 63 bits, and refuses bigger numbers."""
    return 0 < value < 2**63


@dataclass(frozen=True)
class JobStarted:
    job_id: int
    text: str


def job_text(job: Job, queue_position: int = 0) -> str:
    """One message describing a job, edited in place as it progresses."""
    head = f"Training job #{job.id}"
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
    accuracy = result.get("holdout_accuracy")
    checked = (
        f"{accuracy:.1%} of {result.get('holdout_size')} held-out examples answered correctly"
        if accuracy is not None
        else "too few examples for a held-out check"
    )
    return (
        f"{head} done: {progress_bar(1.0)}\n"
        f"Learned {result.get('outputs')} output(s) from {result.get('examples')} examples "
        f"({result.get('positive')} positive, {result.get('negative')} negative); {checked}; "
        f"took {result.get('seconds')} s. Model version {job.model_version_id} now answers."
    )


class TeachingService:
    def __init__(
        self,
        store: Store,
        data: DataDirectory,
        jobs: TrainingJobs,
        serving: ServingModel,
        threshold: float,
        upload_limit: int,
    ) -> None:
        self.store = store
        self.data = data
        self.jobs = jobs
        self.serving = serving
        self.threshold = threshold
        self.upload_limit = upload_limit

    # --- training ---------------------------------------------------------------------

    def _examples_from(self, text: str, uploads: list[Upload], positive: bool) -> tuple[list[Example], str]:
        """Parses everything given before anything is stored, so a bad file stores nothing.

        Files and uploads go through one reader: it unpacks zip archives (decided by their bytes,
        not their names) with its defences against bombs and hostile members.
        """
        examples: list[Example] = []
        sources: list[str] = []
        if ARROW in text:
            examples += parse_inline(text, positive)
            sources.append("message")
        elif text:
            if "\n" in text or len(text) > MAX_PATH_LENGTH:  # words, not a path: say what is wrong with them
                raise InvalidInput(self._neither(text))
            path = self.data.resolve(text)
            if path.is_dir():
                files = self.data.example_files(path)
                if not files:
                    raise InvalidInput(f"`{_short(text)}` has no example files (.json, .jsonl, .csv, .txt or .zip).")
                examples += datasets.read_directory(path, files, positive, self.upload_limit)[0]
            elif path.is_file():
                file = self.data.existing_file(text, self.upload_limit)
                examples += read_examples(file.read_bytes(), self.data.relative(file), positive, self.upload_limit)
            else:
                raise InvalidInput(self._neither(text))
            sources.append(self.data.relative(path))
        for upload in uploads:
            check_upload(upload, self.upload_limit)
            examples += read_examples(upload.data, upload.name, positive, self.upload_limit)
            sources.append(upload.name)
        return examples, _short(", ".join(sources), 300)

    @staticmethod
    def _neither(text: str) -> str:
        return (
            f"`{_short(text)}` is neither `question {ARROW} answer` nor a file or directory "
            f"in the data directory.\n{TRAIN_USAGE}"
        )

    def train(self, caller: Caller, text: str, uploads: list[Upload], positive: bool = True) -> JobStarted:
        require_admin(caller, "train the model")
        text, flag = parse_positive_flag(text)
        positive = positive if flag is None else flag
        examples, source = self._examples_from(text, uploads, positive)
        added = ""
        if examples:
            self.store.add_examples(examples, source=f"train:{source}", author_id=caller.user_id)
            kind = "positive" if positive else "negative"
            added = f"Stored {len(examples)} {kind} example(s) from {source}. "
        elif self.store.example_counts()["total"] == 0:
            raise InvalidInput(f"There is nothing to train on yet. {TRAIN_USAGE}")
        return self._start(caller, added)

    def retrain(self, caller: Caller) -> JobStarted:
        require_admin(caller, "train the model")
        if self.store.example_counts()["positive"] == 0:
            raise NotReady(f"Nothing has been taught yet. {TRAIN_USAGE}")
        return self._start(caller, "")

    def retry(self, caller: Caller, job_id: int) -> JobStarted:
        """A new job on exactly the examples an interrupted or failed job was given."""
        require_admin(caller, "train the model")
        job = self.store.job(job_id) if fits_id(job_id) else None
        if job is None:
            raise NotReady(f"There is no job #{_short(str(job_id), 30)}.")
        if not job.finished:
            raise NotReady(f"Training job #{job_id} is still {job.status}: `!job {job_id}` shows how far it is.")
        if job.status == "succeeded":
            raise NotReady(f"Training job #{job_id} succeeded; there is nothing to retry. `!retrain` trains again.")
        later = self.store.later_job(job_id)
        if later is not None:
            # Its model would replace one trained on at least as much: an accidental rollback.
            done = "succeeded" if later.status == "succeeded" else "is on its way"
            raise NotReady(
                f"Training job #{later.id}, started after #{job_id}, {done}; a retry of #{job_id} would replace "
                f"its model with an older one. `!retrain` trains on everything collected."
            )
        started = self.jobs.start(requested_by=caller.user_id, channel_id=caller.channel_id, same_inputs_as=job_id)
        counts = self.store.job_input_counts(started.id)
        return JobStarted(
            started.id,
            f"Training job #{started.id} started in place of #{job_id}, on the same {counts['total']} examples "
            f"({counts['outputs']} outputs). I will update this message as it goes.",
        )

    def restart_notices(self) -> list[tuple[int, str]]:
        """Once after start-up: (channel id, message) telling each channel which of its jobs a restart ended."""
        notices: dict[int, list[str]] = {}
        for job_id in self.jobs.take_interrupted():
            job = self.store.job(job_id)
            if job is not None and job.channel_id is not None:
                notices.setdefault(job.channel_id, []).append(job_text(job))
        return [(channel_id, "\n".join(texts)) for channel_id, texts in notices.items()]

    def _start(self, caller: Caller, prefix: str) -> JobStarted:
        job = self.jobs.start(requested_by=caller.user_id, channel_id=caller.channel_id)
        counts = self.store.example_counts()
        return JobStarted(
            job.id,
            f"{prefix}Training job #{job.id} started on {counts['total']} examples "
            f"({counts['outputs']} outputs). I will update this message as it goes.",
        )

    def job_status(self, job_id: int) -> tuple[str, bool]:
        """The job's message and whether it has ended, from one read of its row."""
        job = self.store.job(job_id) if fits_id(job_id) else None
        if job is None:
            raise NotReady(f"There is no job #{_short(str(job_id), 30)}.")
        return job_text(job, self.jobs.queue_position(job_id)), job.finished

    def job_text(self, job_id: int) -> str:
        return self.job_status(job_id)[0]

    def list_jobs(self) -> Reply:
        jobs = self.store.recent_jobs()
        if not jobs:
            return Reply("No training jobs yet. " + TRAIN_USAGE)
        lines = [f"`#{j.id}` {j.status:<11} {progress_bar(j.progress, 10)} {j.created_at[:19]}Z" for j in jobs]
        return Reply("Recent training jobs:\n" + "\n".join(lines))

    # --- model versions -------------------------------------------------------------

    def model_info(self) -> Reply:
        version = self.store.active_model()
        if version is None:
            return Reply("No model has been trained yet. " + TRAIN_USAGE)
        accuracy = f"{version.holdout_accuracy:.1%}" if version.holdout_accuracy is not None else "n/a"
        older = [v for v in self.store.model_versions() if v.id != version.id]
        history = ", ".join(f"v{v.id}{' (rolled back)' if v.status == 'rolled_back' else ''}" for v in older[:5])
        return Reply(
            f"Model version {version.id} answers (job #{version.job_id}, trained {version.created_at[:19]}Z): "
            f"{version.examples} examples, {version.outputs} outputs, held-out accuracy {accuracy}, "
            f"confidence threshold {self.threshold:.2f}." + (f"\nEarlier versions: {history}." if history else "")
        )

    def rollback(self, caller: Caller) -> Reply:
        require_admin(caller, "roll back the model")
        swapped = self.store.roll_back()
        if swapped is None:
            raise NotReady("There is no earlier model version to return to.")
        old, new = swapped
        self.serving.reload()
        return Reply(f"Rolled back: model version {new.id} answers again (version {old.id} is retired).")

    # --- testing ----------------------------------------------------------------------

    def test(self, caller: Caller, text: str, uploads: list[Upload]) -> Reply:
        if text.strip():
            cases = parse_cases(text.strip().strip("`").removeprefix("json").strip(), "your message")
        elif uploads:
            check_upload(uploads[0], self.upload_limit)
            cases = parse_cases(uploads[0].data, uploads[0].name)
        else:
            raise InvalidInput(
                'Give test cases as JSON, e.g. `!test [{"input": "hi", "output": "hello"}]`, or attach a .json file.'
            )
        predictions = self.serving.predict_many([c.input for c in cases], self.threshold)
        if predictions is None:
            raise NotReady("No model has been trained yet. " + TRAIN_USAGE)
        report = evaluate(cases, predictions)
        self.store.add_test_run(
            user_id=caller.user_id,
            model_version_id=self.serving.version_id,
            total=report.total,
            passed=report.passed,
            accuracy=report.accuracy,
            failures=report.failures,
        )
        lines = [f"Passed {report.passed} of {report.total} ({report.accuracy:.1%}); failed {report.failed}."]
        if report.unknown_recall is not None:
            lines.append(f'Said "unknown" when it should: {report.unknown_recall:.0%} of {report.unknown_total}.')
        for failure in report.failures[:10]:
            lines.append(
                f"✗ `{_short(failure['input'])}`: expected {_short(failure['expected'] or 'unknown')}, "
                f"got {_short(failure['got'] or 'unknown')} ({failure['confidence']:.2f})"
            )
        if len(report.failures) > 10:
            lines.append(f"…and {len(report.failures) - 10} more in the attached report. `!errors` lists them.")
        return Reply(
            "\n".join(lines),
            [OutFile("test-chart.png", chart_png(report)), OutFile("test-report.json", report_json(report))],
        )

    def errors(self) -> Reply:
        failures = self.store.recent_failures()
        if not failures:
            return Reply("No failures from the last test run.")
        total = self.store.failure_count()
        lines = [f"Failures of the last test run ({total}):"]
        lines += [
            f"• `{_short(f['input'])}`: expected {_short(f['expected'] or 'unknown')}, "
            f"got {_short(f['got'] or 'unknown')} ({f['confidence']:.2f})"
            for f in failures
        ]
        return Reply("\n".join(lines))

    # --- datasets and corrections -----------------------------------------------------

    def select_dataset(self, caller: Caller, directory: str, positive: bool = True) -> Reply:
        require_admin(caller, "choose the training dataset")
        path = self.data.existing_directory(directory)
        name = self.data.label(path)
        archive = self.data.root / "datasets" / f"{name}-{timestamp()}.zip"
        snap = datasets.snapshot(path, self.data.example_files(path), archive, name, positive, self.upload_limit)
        self.store.add_dataset(
            name=name,
            directory=self.data.relative(path),
            positive=positive,
            examples=snap.examples,
            files=len(snap.files),
            archive=self.data.relative(snap.archive),
            manifest=snap.manifest,
            created_by=caller.user_id,
        )
        outputs = len({ex.output for ex in snap.examples})
        return Reply(
            f"Dataset `{name}` selected for the next training: {len(snap.examples)} "
            f"{'positive' if positive else 'negative'} examples, {outputs} outputs, from {len(snap.files)} "
            f"file(s). Snapshot: `{self.data.relative(snap.archive)}` "
            f"({human_size(snap.archive.stat().st_size)}). Run `!retrain` to train on it."
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
        reply = self.store.reply(bot_message_id) if fits_id(bot_message_id) else None
        if reply is None:
            raise NotReady(
                "I can't find a reply of mine with that message id. Reply to my message, "
                "or copy its id (Developer Mode → Copy Message ID)."
            )
        self.store.add_correction(reply=reply, user_id=caller.user_id, correction=correction)
        return Reply(
            f"Thanks! Noted: to `{_short(reply.input)}` the answer is `{_short(correction)}`, "
            f"not `{_short(reply.reply)}`. It takes effect at the next training (`!retrain`)."
        )

    def rate(self, user_id: int, bot_message_id: int, emoji: str) -> bool:
        """Stores a 👍 or 👎 on one of the bot's replies; other emoji and other messages are ignored."""
        rating = {"👍": 1, "👎": -1}.get(emoji)
        reply = self.store.reply(bot_message_id) if rating else None
        if reply is None or rating is None:
            return False
        return self.store.add_reaction(
            bot_message_id=bot_message_id, user_id=user_id, emoji=emoji, rating=rating, reply=reply
        )


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split()).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"
