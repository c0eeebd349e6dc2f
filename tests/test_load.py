"""Load through the loopback Discord: simulated users (tests/load.py) against the real bot and models.

The full run, 50 users sending 20 messages each, takes a few minutes and is marked slow
(`make test-slow`; bench/load.py prints its figures for docs/reliability.md). A small run of the
same mix is part of every `make test`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.load import CLIP, Figures, loaded_bot, run_load


def check(figures: Figures, users: int, messages: int) -> dict:
    summary = figures.summary()
    print("\nload figures:", json.dumps(summary))
    assert not figures.errors, figures.errors[:10]
    assert figures.messages >= users * (messages + 1)  # each user's plan and their warm-up question
    assert len(figures.hi_ms) >= users  # every user greeted at least once on average
    return summary


async def test_a_small_crowd_gets_every_answer_without_errors(tmp_path: Path) -> None:
    async with loaded_bot(tmp_path / "data", users=6) as (server, services):
        figures = await run_load(server, services, users=6, messages=6, voice_clip=CLIP, fill_cache=False)
    check(figures, 6, 6)


@pytest.mark.slow
async def test_fifty_users_twenty_messages_each(tmp_path: Path) -> None:
    async with loaded_bot(tmp_path / "data", users=50) as (server, services):
        figures = await run_load(server, services, users=50, messages=20, voice_clip=CLIP)
    check(figures, 50, 20)
    # Memory after the run within 20 % of memory after the warm-up (which fills the chat engine's state cache).
    assert figures.rss_after_mb <= 1.2 * figures.rss_warm_mb, (figures.rss_warm_mb, figures.rss_after_mb)
