"""Builds tests/data/release-0.1.0/: a small data directory written by trainerbot 0.1.0, for migration tests.

It must be run against the 0.1.0 code (schema migrations 1-3), not the working tree: check
that release out in a worktree and put its src first on the path, e.g. from the repository root

    git worktree add /tmp/release-0.1 2303587   # release 0.1.0 (it was HEAD when the fixture was made)
    PYTHONPATH=/tmp/release-0.1/src .venv/bin/python tests/data/make_release_0_1_0.py
    git worktree remove --force /tmp/release-0.1

Each run gives new timestamps, message ids and snapshot name; the rows are otherwise the same.

The script refuses to run when the imported trainerbot is not version 0.1.0 with three migrations.
Everything goes through the old code's own services, as the Discord front end drives them: a
taught FAQ (one training job in its worker process), conversations in two guild channels and in
a DM (answers from the taught model and fallbacks), feedback with and without the reply it is
about, a 👍, a correction, a test run, a channel's persona, a selected dataset folder and a
second training, so that two model versions exist and the second serves; and the messages
claimed in ``handled_messages``, one of them left unfinished as a restart would leave it.

The bot runs with the default relative data directory (``data``) from a scratch working
directory, so paths are stored as 0.1.0 stores them for a default install: model files as
``data/models/model-0000N.npz`` (relative to the bot's working directory, not to the data
directory), dataset snapshots relative to the data directory (``datasets/<name>-<time>.zip``).
The database is then checkpointed into one file (journal mode DELETE) and copied with the
models and the dataset folder and snapshot into the target, replacing those (its README.md stays).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

TARGET = Path(__file__).resolve().parent / "release-0.1.0"

OWNER = 111_111_111_111_111_111  # owner and admin
MEMBER = 222_222_222_222_222_222
OTHER = 333_333_333_333_333_333
GUILD = 444_444_444_444_444_444
GENERAL = 555_555_555_555_555_501  # channel where the FAQ is taught and asked
HELP = 555_555_555_555_555_502  # second channel, with its own persona
DM = 666_666_666_666_666_601  # the member's DM channel with the bot

FAQ = """\
when do you open? => We open at nine every weekday.
what time do you open in the morning => We open at nine every weekday.
are you open on monday morning => We open at nine every weekday.
where are you? => At the old harbour, next to the lighthouse.
what is your address => At the old harbour, next to the lighthouse.
how do I find the shop => At the old harbour, next to the lighthouse.
do you deliver? => Yes, we deliver within ten kilometres for free.
can you bring my order to my house => Yes, we deliver within ten kilometres for free.
is delivery free => Yes, we deliver within ten kilometres for free.
can I pay by card? => We take cards, cash and phone payments.
do you take cash => We take cards, cash and phone payments.
can I pay with my phone => We take cards, cash and phone payments."""

DATASET_CSV = """\
question,answer
do you sell gift cards,Gift cards from 10 to 100 euros are at the counter.
can I buy a voucher,Gift cards from 10 to 100 euros are at the counter.
"""
DATASET_JSONL = (
    json.dumps({"input": "can I return something", "output": "Returns are free within 30 days with the receipt."})
    + "\n"
    + json.dumps({"input": "what is your refund policy", "output": "Returns are free within 30 days with the receipt."})
    + "\n"
)

TEST_CASES = json.dumps(
    [
        {"input": "when do you open", "output": "We open at nine every weekday."},
        {"input": "where is the shop", "output": "At the old harbour, next to the lighthouse."},
        {"input": "do you do deliveries", "output": "Yes, we deliver within ten kilometres for free."},
        {"input": "do you accept credit cards", "output": "We take cards, cash and phone payments."},
        {"input": "what is the capital of peru", "output": None},
        {
            "input": "do you sell gift cards",
            "output": "Gift cards from 10 to 100 euros are at the counter.",
        },  # not yet taught
    ]
)

DISCORD_EPOCH_MS = 1_420_070_400_000


class Snowflakes:
    """Discord-like message ids: the time in the high bits, a counter in the low ones, always increasing."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        ms = int(datetime.now(UTC).timestamp() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (self.count & 0xFFF)


def snowflake_at(moment: datetime) -> int:
    return (int(moment.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22


def check_release() -> None:
    """Exits unless the trainerbot imported is a 0.1.0 source tree with its three schema migrations."""
    import tomllib

    import trainerbot
    from trainerbot.storage.database import MIGRATIONS

    source = Path(trainerbot.__file__).resolve()
    print("trainerbot imported from", source)
    pyproject = source.parents[2] / "pyproject.toml"  # src/trainerbot/__init__.py -> the checkout's root
    version = tomllib.loads(pyproject.read_text())["project"]["version"] if pyproject.is_file() else None
    print("version", version, "with", len(MIGRATIONS), "schema migrations")
    if version != "0.1.0" or len(MIGRATIONS) != 3:
        sys.exit("this is not the 0.1.0 code: run it against a checkout of that release, see the docstring")


def wait_for(services, job_id: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = services.store.job(job_id)
        if job is not None and job.finished:
            if job.status != "succeeded":
                sys.exit(f"training job {job_id} ended {job.status}: {job.error}")
            services.serving.reload()
            print(services.teaching.job_text(job_id))
            return
        time.sleep(0.5)
    sys.exit(f"training job {job_id} did not finish in {timeout} s")


def build(workdir: Path) -> None:
    # The 0.1.0 module layout, kept as it is: where the working tree has moved a module, isort would
    # take it for a third-party one.
    # isort: off
    from trainerbot.app import build_services
    from trainerbot.config import load_settings
    from trainerbot.core.conversation import Where
    from trainerbot.core.messages import Caller

    # isort: on

    os.chdir(workdir)  # the data directory is the default relative one, as a plain install has it
    settings = load_settings(
        _env_file=None,
        data_dir=Path("data"),
        chat_engine="none",
        stt_engine="none",
        tts_engine="none",
        owner_ids=[OWNER],
    )
    services = build_services(settings)
    next_id = Snowflakes()
    claims: list[tuple[int, int]] = []  # (message id, channel id) of every message the bot took on

    def caller(user: int, name: str, channel: int, *, dm: bool = False, admin: bool = False) -> Caller:
        message_id = next_id()
        claims.append((message_id, channel))
        return Caller(
            user, name, is_admin=admin, guild_id=None if dm else GUILD, channel_id=channel, message_id=message_id
        )

    def ask(who: Caller, text: str, where: Where) -> int:
        """One message and the bot's answer to it; returns the answer's message id."""
        prepared = services.conversation.prepare(who, text, where)
        assert prepared.answer is not None  # no chat engine: taught answers and fallbacks only
        answer_id = next_id()
        services.conversation.finish(prepared, prepared.answer.text, prepared.answer.source, [answer_id])
        print(f"  {text!r} -> {prepared.answer.source} {prepared.answer.confidence} {prepared.answer.text[:50]!r}")
        return answer_id

    try:
        general, help_channel, dm = Where(GENERAL), Where(HELP), Where(DM)

        # 1. The owner teaches the FAQ with !train in #general; the job runs in its worker process.
        started = services.teaching.train(caller(OWNER, "owner", GENERAL, admin=True), FAQ, [])
        print(started.text)
        wait_for(services, started.job_id)

        # 2. Conversations in two channels and a DM: taught answers and fallbacks.
        opening = ask(caller(MEMBER, "member", GENERAL), "hi, when do you open tomorrow?", general)
        ask(caller(OTHER, "other", GENERAL), "where is your shop", general)
        ask(caller(MEMBER, "member", GENERAL), "do you sell bicycles", general)
        ask(caller(OTHER, "other", HELP), "is delivery free for my order?", help_channel)
        wrong = ask(caller(OTHER, "other", HELP), "can I come on sunday", help_channel)
        ask(caller(MEMBER, "member", DM, dm=True), "can I pay with my phone?", dm)
        ask(caller(MEMBER, "member", DM, dm=True), "tell me a joke", dm)

        # 3. Feedback (about a reply and not), a 👍, a correction, a test run.
        services.conversation.feedback(
            caller(MEMBER, "member", GENERAL), "That opening time was exactly what I needed.", opening
        )
        services.conversation.feedback(
            caller(MEMBER, "member", DM, dm=True), "Could the bot also tell me about parking?", None
        )
        assert services.teaching.rate(MEMBER, opening, "👍")
        services.teaching.correct(
            caller(OWNER, "owner", HELP, admin=True), wrong, "We are closed on Sundays; see you on Monday at nine."
        )
        services.teaching.test(caller(OWNER, "owner", GENERAL, admin=True), TEST_CASES, [])
        print("  test run:", services.store.recent_failures())

        # 4. A persona for #help.
        services.conversation.persona(
            caller(OWNER, "owner", HELP, admin=True),
            help_channel,
            "You are the harbour shop's patient helper. Keep answers short and kind.",
        )

        # 5. A dataset folder, selected, then a second training: version 2 serves.
        folder = Path("data") / "datasets" / "shop"
        folder.mkdir(parents=True)
        (folder / "gift_cards.csv").write_text(DATASET_CSV, encoding="utf-8")
        (folder / "returns.jsonl").write_text(DATASET_JSONL, encoding="utf-8")
        print(services.teaching.select_dataset(caller(OWNER, "owner", GENERAL, admin=True), "datasets/shop").text)
        started = services.teaching.retrain(caller(OWNER, "owner", GENERAL, admin=True))
        print(started.text)
        wait_for(services, started.job_id)
        print(services.teaching.model_info().text)

        # 6. After the retraining: answers from version 2.
        ask(caller(MEMBER, "member", GENERAL), "can I buy a gift card?", general)
        ask(caller(OTHER, "other", HELP), "are you open on sunday", help_channel)

        # 7. The claims: every message above was taken on and finished, but the last, which a
        # restart cut off (claimed, never finished).
        forget_before = snowflake_at(datetime.now(UTC) - timedelta(days=2))
        for message_id, channel_id in claims:
            assert services.store.claim_message(message_id, channel_id, forget_before=forget_before)
        for message_id, _ in claims:
            services.store.finish_message(message_id)
        cut_off = next_id()
        assert services.store.claim_message(cut_off, GENERAL, forget_before=forget_before)
    finally:
        services.close()


def one_file(database: Path) -> None:
    """Folds the WAL into the database file and leaves it in rollback-journal mode: one file."""
    conn = sqlite3.connect(database)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        if Path(f"{database}{suffix}").exists():
            sys.exit(f"{database}{suffix} is still there")


def main() -> None:
    check_release()
    with tempfile.TemporaryDirectory(prefix="trainerbot-0.1.0-") as scratch:
        workdir = Path(scratch)
        build(workdir)
        data = workdir / "data"
        one_file(data / "trainerbot.sqlite3")
        TARGET.mkdir(parents=True, exist_ok=True)  # its README.md stays
        for old in ("models", "datasets"):
            shutil.rmtree(TARGET / old, ignore_errors=True)
        shutil.copy2(data / "trainerbot.sqlite3", TARGET / "trainerbot.sqlite3")
        shutil.copytree(data / "models", TARGET / "models")
        shutil.copytree(data / "datasets", TARGET / "datasets")
        os.chdir(TARGET.parent)
    for path in sorted(TARGET.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(TARGET)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
