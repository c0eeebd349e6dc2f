"""Fairness between servers' training: a small training in server A while server B trains on all of Banking77.

    .venv/bin/python bench/fair_training.py [--runs 3] [--data tests/data/banking77]

Through the core services as `make run` builds them (training in worker processes): server B's
owner teaches B the 10,003 Banking77 questions and its training job starts; once that job is
running, an admin of server A teaches A ten examples (`!train` with five questions for each of
two answers), its refit asked to start at once. Since issue 12 A's members get the new answer at
once, before any training (the first figure printed, polled through the answer path every 50 ms);
the fairness figure is the time from A's `!train` until A's refit has trained its model, which
answers then. Target (issue 11): within 15 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from trainerbot.app import build_services
from trainerbot.config import load_settings
from trainerbot.core.conversation import Where
from trainerbot.types import Caller, Upload

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "banking77"
SERVER_A, SERVER_B = 1_000_000_000_000_000_001, 1_000_000_000_000_000_002
TEACH_A = """\
when do you open => We open at nine.
what time do you open => We open at nine.
are you open in the morning => We open at nine.
when can I come in => We open at nine.
opening hours please => We open at nine.
where is the shop => At the old harbour.
how do I find you => At the old harbour.
what is your address => At the old harbour.
where are you located => At the old harbour.
where can I visit you => At the old harbour."""


def run_once(data: Path, workers: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            _env_file=None,
            data_dir=Path(folder) / "data",
            chat_engine="none",
            stt_engine="none",
            tts_engine="none",
            training_workers=workers,
        )
        services = build_services(settings, chat=False)
        try:
            owner_b = Caller(1, "owner", is_owner=True, guild_id=SERVER_B, channel_id=SERVER_B + 1)
            admin_a = Caller(2, "admin", manages_server=True, guild_id=SERVER_A, channel_id=SERVER_A + 1)
            banking = (data / "train.csv").read_bytes()
            big = services.teaching.train(owner_b, "", [Upload("banking77.csv", banking, len(banking))])
            while services.store.jobs.job(SERVER_B, big.job_id).status != "running":
                time.sleep(0.05)
            started = time.perf_counter()
            refit = services.teaching.train(admin_a, TEACH_A, [], now=True)
            member_a = Caller(3, "member", guild_id=SERVER_A, channel_id=SERVER_A + 1)
            asked = 0
            while True:
                asked += 1
                caller = Caller(3, "member", guild_id=SERVER_A, channel_id=SERVER_A + 1, message_id=asked)
                prepared = services.conversation.prepare(caller, "when do you open?", Where(member_a.channel_id or 0))
                if prepared.answer is not None and prepared.answer.text == "We open at nine.":
                    break
                time.sleep(0.05)
            answered = time.perf_counter() - started
            while not services.store.jobs.job(SERVER_A, refit.job_id).finished:  # type: ignore[union-attr]
                time.sleep(0.05)
            served = time.perf_counter() - started
            big_job = services.store.jobs.job(SERVER_B, big.job_id)
            still = big_job is not None and big_job.status == "running"
            while services.store.jobs.job(SERVER_B, big.job_id).status in ("queued", "running"):  # type: ignore[union-attr]
                time.sleep(0.5)
            total = time.perf_counter() - started
            print(
                f"A's answer served after {answered:.2f} s, untrained; A's model trained after {served:.1f} s "
                f"(B's training {'still running' if still else 'done'}); "
                f"B's training ended {total:.0f} s after A's !train"
            )
            return served, total
        finally:
            services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="TRAINERBOT_TRAINING_WORKERS")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    served = [run_once(args.data, args.workers)[0] for _ in range(args.runs)]
    print(
        f"A's model trained within: median {statistics.median(served):.1f} s "
        f"({', '.join(f'{s:.1f}' for s in served)}), target <= 15 s, with {args.workers} training workers"
    )


if __name__ == "__main__":
    main()
