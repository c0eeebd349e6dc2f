"""The dashboard as a newcomer starts it: beside the console (`make run` without a token) and alone (`trainerbot web`).

Each test runs the real command in a child process on a temporary data directory, reads the
operator's one-time link from its terminal output, and signs in with it over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from tests.conftest import OWNER_ID

LINK = re.compile(r"Dashboard: (http://127\.0\.0\.1:\d+) \(operator's one-time sign-in: (\S+)\)")


@contextmanager
def trainerbot(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRAINERBOT_", "DISCORD_"))}
    env |= {
        "TRAINERBOT_DATA_DIR": str(tmp_path / "data"),
        "TRAINERBOT_WEB": "true",
        "TRAINERBOT_WEB_PORT": "0",
        "TRAINERBOT_OWNER_IDS": str(OWNER_ID),
        "TRAINERBOT_CHAT_ENGINE": "none",
        "TRAINERBOT_STT_ENGINE": "none",
        "TRAINERBOT_TTS_ENGINE": "none",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trainerbot", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def link_of(process: subprocess.Popen[str]) -> tuple[str, str]:
    assert process.stderr is not None
    for line in process.stderr:  # the line comes once the dashboard listens
        found = LINK.search(line)
        if found:
            return found.group(1), found.group(2)
    raise AssertionError(f"no sign-in link printed; the process ended with {process.wait()}")


async def signed_in_page(base: str, link: str) -> str:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base, cookie_jar=jar) as http, http.get(link.removeprefix(base)) as response:
        assert response.status == 200
        return await response.text()


async def test_the_console_serves_the_dashboard_to_its_operator(tmp_path: Path) -> None:
    with trainerbot(tmp_path, "console") as process:
        base, link = await asyncio.to_thread(link_of, process)
        page = await signed_in_page(base, link)
        assert "Your servers" in page and "Bot-wide knowledge" in page
        assert process.stdin is not None
        process.stdin.close()  # the console ends at the end of its input, and the dashboard with it
        assert await asyncio.to_thread(process.wait, 60) == 0
    log = (tmp_path / "data" / "trainerbot.log").read_text()
    assert link.rsplit("/", 1)[1] not in log  # the link signs in an owner: printed, never logged


async def test_trainerbot_web_serves_the_dashboard_alone(tmp_path: Path) -> None:
    with trainerbot(tmp_path, "web") as process:
        base, link = await asyncio.to_thread(link_of, process)
        page = await signed_in_page(base, link)
        assert "Your servers" in page
        async with aiohttp.ClientSession(base) as http, http.get(link.removeprefix(base)) as again:
            assert again.status == 403  # once only
