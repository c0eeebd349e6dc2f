"""The real trainerbot in a child process, connected to a ``FakeDiscord`` that runs in the test.

Crash tests kill the bot with SIGKILL and start it again on the same data directory; the fake
Discord lives in the test process, so it outlives the kill and the new bot connects to it as a
restarted bot connects to Discord (a fresh IDENTIFY). Secrets tests grep what a whole run wrote.

The child runs the production entry point, ``trainerbot run`` (``cli.main``): settings from the
environment, logging to ``<data dir>/trainerbot.log``, ``run_discord``. The only changes are the
ones ``harness.run_bot`` makes in-process, done here at the child's start:

* discord.py's REST base URL and gateway URL point at the fake (``--port``);
* ``TrainerBot`` is replaced by a subclass that waits 0.05 s, not 2 s, for more guilds after
  READY, edits job progress every ``--progress-interval`` seconds, never sleeps before a
  re-IDENTIFY, and prints ``READY_LINE`` to stdout at each ``on_ready``.

Run as ``python -m tests.loopback_discord.process_bot --port PORT [run options]`` with the
repository root on ``PYTHONPATH``; ``BotProcess`` does that from a test. Options the child does not
know go to ``trainerbot run`` (``--shard-count 4 --shard-ids 0-1``). ``--log-requests`` writes each
REST call the bot makes, with its body, to its log file: which of several processes posted a reply.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import GUILD_READY_TIMEOUT, _identify_now
from .server import FakeDiscord

READY_LINE = "loopback-bot: ready"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Settings the test process may carry in its environment; the child gets only what the test gives it.
_INHERITED_SETTINGS = re.compile(r"^(TRAINERBOT_|DISCORD_TOKEN$|OPENAI_API_KEY$)")


# --- the child -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The child process: trainerbot's own `run` command against the loopback Discord on ``--port``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the FakeDiscord's port on 127.0.0.1")
    parser.add_argument("--progress-interval", type=float, default=0.2, help="seconds between job progress edits")
    parser.add_argument(
        "--log-requests", action="store_true", help="log every REST call, with what it sent, to the bot's log file"
    )
    args, run_options = parser.parse_known_args(argv)
    # A test whose bot does not stop in time asks, with SIGUSR1, where every thread is (to stderr).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C as at a terminal, however the tests were started: a shell starts a command run with `&`
    # with SIGINT ignored, Python then leaves it ignored, and `stop()` would wait in vain.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    import discord
    import yarl

    from trainerbot import cli
    from trainerbot.adapters.discord import bot as bot_module

    # As harness.discord_endpoints does; never restored: this process exists for this alone.
    discord.http.Route.BASE = f"http://127.0.0.1:{args.port}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{args.port}/")

    class LoopbackTrainerBot(bot_module.TrainerBot):
        def __init__(self, services: Any, **options: Any) -> None:
            options.setdefault("progress_interval", args.progress_interval)
            options.setdefault("guild_ready_timeout", GUILD_READY_TIMEOUT)
            super().__init__(services, **options)
            self.before_identify_hook = _identify_now  # type: ignore[method-assign]

        async def on_ready(self) -> None:
            await super().on_ready()
            print(READY_LINE, flush=True)

    bot_module.TrainerBot = LoopbackTrainerBot  # type: ignore[misc]  # run_discord builds the bot by this name
    if args.log_requests:
        # discord.py logs each request's method, URL and body at DEBUG ("POST .../messages with {...}"); the
        # entry point sets "discord" to INFO but leaves this child's own level alone, and the log file takes all.
        logging.getLogger("discord.http").setLevel(logging.DEBUG)
    return cli.main(["run", *run_options])


# --- the test side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildProcess:
    """A process whose parent is the bot, as /proc shows it."""

    pid: int
    cmdline: str

    @property
    def is_training_worker(self) -> bool:
        """The ProcessPoolExecutor's spawned worker (not multiprocessing's resource tracker), or with PostgreSQL
        a `trainerbot worker` the bot started beside itself."""
        if " worker --parent " in self.cmdline:
            return True
        return "spawn_main" in self.cmdline and "resource_tracker" not in self.cmdline


def process_state(pid: int) -> str | None:
    """The state letter in /proc/PID/stat (R, S, D, Z, ...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    """Running or able to run: a zombie (dead, waiting for whoever adopted it to reap it) is not."""
    return process_state(pid) not in (None, "Z", "X")


class BotProcess:
    """Starts, kills and restarts the bot process; each start is a new process on the same data directory.

    ``env`` holds the settings (``TRAINERBOT_*``); ``DISCORD_TOKEN`` is the server's token and
    ``TRAINERBOT_DATA_DIR`` is ``data_dir`` unless ``env`` says otherwise. ``run_options`` are
    options of ``trainerbot run`` (``["--shard-count", "4", "--shard-ids", "0-1"]``). The child's working
    directory is ``workdir`` (so no ``.env`` of the repository is read); its stdout and stderr
    go to files there, one pair per start, listed in ``outputs``.
    """

    def __init__(
        self,
        server: FakeDiscord,
        data_dir: Path,
        workdir: Path,
        env: Mapping[str, str],
        run_options: Sequence[str] = (),
    ) -> None:
        self.server = server
        self.data_dir = data_dir
        self.workdir = workdir
        self.env = dict(env)
        self.run_options = list(run_options)
        self.outputs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def log_file(self) -> Path:
        return self.data_dir / "trainerbot.log"

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not _INHERITED_SETTINGS.match(key)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["DISCORD_TOKEN"] = self.server.token
        env["TRAINERBOT_DATA_DIR"] = str(self.data_dir)
        env["TRAINERBOT_CHAT_MODEL"] = os.environ.get("TRAINERBOT_CHAT_MODEL", "small")  # as conftest.py chooses
        env["TRAINERBOT_CHAT_PARALLEL"] = os.environ.get("TRAINERBOT_CHAT_PARALLEL", "1")
        env["TRAINERBOT_WEB"] = os.environ.get("TRAINERBOT_WEB", "false")  # a test that wants it says so in ``env``
        if database_url := os.environ.get("TRAINERBOT_DATABASE_URL"):  # a PostgreSQL test's own (conftest.py)
            env["TRAINERBOT_DATABASE_URL"] = database_url
        env.update(self.env)
        return env

    async def start(self, timeout: float = 60.0) -> float:
        """Starts a new bot process and waits for its on_ready; returns the seconds that took."""
        assert self.process is None or self.process.poll() is not None, "the previous bot is still running"
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        stdout = self.workdir / f"bot-{self.starts}.stdout"
        stderr = self.workdir / f"bot-{self.starts}.stderr"
        self.outputs += [stdout, stderr]
        began = time.perf_counter()
        with stdout.open("wb") as out, stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.loopback_discord.process_bot",
                    "--port",
                    str(self.server.port),
                    *self.run_options,
                ],
                cwd=self.workdir,
                env=self._environment(),
                stdout=out,
                stderr=err,
            )
        while READY_LINE not in stdout.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the bot process exited with {self.process.returncode} before it was ready:\n"
                    + stderr.read_text(errors="replace")[-3000:]
                )
            if time.perf_counter() - began > timeout:
                self.kill()
                raise TimeoutError(f"the bot process was not ready after {timeout} s")
            await asyncio.sleep(0.02)
        return time.perf_counter() - began

    def children(self) -> list[ChildProcess]:
        """The bot's child processes now (Linux: read from /proc)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                if ppid == self.pid:
                    cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(ChildProcess(int(stat.parent.name), cmdline.strip()))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue  # it ended while being read
        return found

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no flush; as a crash or an out-of-memory kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    async def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C (SIGINT): the bot closes as it does for its operator; returns its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # every thread's stack, to its stderr, before the kill
            await asyncio.sleep(1)
            self.kill()
            raise TimeoutError(
                f"the bot did not stop within {timeout} s of Ctrl-C; where its threads were:\n"
                + self.outputs[-1].read_text(errors="replace")[-6000:]
            ) from None

    def output(self) -> str:
        """Everything every start wrote to stdout and stderr."""
        return "".join(path.read_text(errors="replace") for path in self.outputs if path.exists())

    async def __aenter__(self) -> BotProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.kill()


if __name__ == "__main__":
    sys.exit(main())
