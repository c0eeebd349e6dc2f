"""Load benchmark: simulated users through the loopback Discord against the real bot and models.

    .venv/bin/python bench/load.py [--users 50] [--messages 20] [--seed 5]

Every user has a channel and acts like a person: a message, the answer, the next message (the
mix is in tests/load.py). Before the run every user asks the chat engine once (the warm-up);
memory is read after it and again after the run. Prints one JSON object: messages, seconds,
errors, `!hi` latency (median, 99th percentile, max, from the user's message to the bot's answer
arriving at the fake REST API), median answer time by kind, cooldown replies, resident memory
after the warm-up and after the run, and the longest line seen in each work queue. These are the
figures in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.loopback_discord and tests.load

from tests.load import CLIP, loaded_bot, run_load  # noqa: E402


async def main(users: int, messages: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as data:
        async with loaded_bot(Path(data), users=users) as (server, services):
            figures = await run_load(server, services, users=users, messages=messages, seed=seed, voice_clip=CLIP)
    if figures.errors:
        print("errors:", *figures.errors[:20], sep="\n  ", file=sys.stderr)
    return figures.summary()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.users, args.messages, args.seed)), indent=2))
