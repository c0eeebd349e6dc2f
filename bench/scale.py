"""Beyond one process: the 50-user load against one bot process, and against two shard processes and two workers.

    .venv/bin/python bench/scale.py [--users 50] [--messages 20] [--seed 5] [--setups sqlite,postgres,shards]
                                    [--chat-nice 19] [--keep DIR]

The load is bench/load.py's (tests/load.py: the users, their plans, the figures), with the users
spread over four servers (user n in server n % 4; server g on gateway shard g of 4). What changes is
where the bot runs: here every bot is the real `trainerbot run` in a process of its own
(tests/loopback_discord/process_bot.py), and the fake Discord runs in this process, with the
simulated users. The setups, one after the other:

- ``sqlite``: one bot process on SQLite (today's default), training in its own processes; like the next,
  started without shard options, it runs the one shard the fake Discord recommends for four servers;
- ``postgres``: one bot process on PostgreSQL, training on the task queue, taken by two
  `trainerbot worker` processes (TRAINERBOT_TRAINING_WORKERS=0);
- ``shards``: two bot processes on PostgreSQL, shards 0-1 and 2-3 of 4 (two servers each), and the
  same two workers.

Fair between setups:

- One chat server for all: a llama-server started here, fresh for each setup (`small` preset,
  SmolLM2-135M, 4 slots, 2 threads, as the bot's own start of it), which every bot reaches as an
  OpenAI-compatible server (TRAINERBOT_CHAT_ENGINE=openai). Each bot process may ask for 4 / (bot
  processes) replies at once, so the server is asked for at most its 4 slots in every setup.
- Every process of a setup shares one data directory: the model files a worker writes are the ones
  the bots load (job ids are unique in the shared database, so are the files' names), and the
  servers' folders are the same for every process, as `trainerbot copy-database` tells operators.
  The log, trainerbot.log, is shared too: each line is one append.
- The workers run at nice 5, as the bot's own training processes do: on one machine training
  yields to the bots. On machines of their own they would not need to.
- Speech-to-text is Whisper in each bot process (two models loaded in the `shards` setup); no
  text-to-speech, as in bench/load.py.
- Before the bots start, each server is taught the load's answers and its model trained
  (``tests.load.teach``, from services built here on the same data directory and database: in the
  PostgreSQL setups the workers train it).

Answers are read as in bench/load.py: a command's answer is the bot's next message in the user's
channel; an answer the bot stores (a taught answer, a chat reply, a transcription) is complete once
its reply is in the bot's database, which this process opens for reading (the SQLite file, or the
PostgreSQL database). Errors are failed answers, timeouts, and the ERROR and CRITICAL lines the
setup's processes write to their log during the run.

Prints one JSON object: for each setup, the load's figures (bench/load.py's, with messages/s of the
timed run and ``hi_at_fake_ms``, the greetings by the fake Discord's clock), when the slowest
greetings were asked and the spread of those asked after the run's first 5 s, and where the time
went during the timed run: the CPU seconds of each part (this process: the fake Discord and the
users; the bots; the workers; llama-server; PostgreSQL), the share of the run in which some task
waited for a core (/proc/pressure/cpu), and for this process and each bot the seconds its event loop
spent on a core and waiting for one. Target (issue 16): `!hi` p99 at most 100 ms. docs/benchmarks.md
("Beyond one process") has the figures and what they can and cannot show on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.loopback_discord and tests.load

from tests.load import ADMIN_ROLE, CLIP, LOAD_OWNER_ID, load_guilds, run_users, spread, teach  # noqa: E402
from tests.loopback_discord import FakeDiscord  # noqa: E402
from tests.loopback_discord.process_bot import BotProcess  # noqa: E402

HI_TARGET_MS = 100.0
SHARDS = 4
CHAT_SLOTS = 4
CHAT_THREADS = 2
CONTEXT_TOKENS = 2048  # the bot's default window; the server holds one per slot
ERROR_LINE = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ")  # cli.LOG_FORMAT: date, time, level, logger


@dataclass(frozen=True)
class Setup:
    name: str
    title: str
    shard_ids: tuple[str, ...]  # one bot process each; "" runs every shard Discord recommends
    postgres: bool
    workers: int


SETUPS = {
    setup.name: setup
    for setup in (
        Setup("sqlite", "one process, SQLite", ("",), postgres=False, workers=0),
        Setup("postgres", "one process, PostgreSQL, two workers", ("",), postgres=True, workers=2),
        Setup("shards", "two shard processes + two workers, PostgreSQL", ("0-1", "2-3"), postgres=True, workers=2),
    )
}


# --- the processes' CPU and memory, from /proc ---------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def process_tree(pid: int) -> list[int]:
    """The process and its descendants now."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += parents.get(current, [])
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User and system time of these processes and of their children that ended (reaped)."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e6


def scheduling(pid: int) -> tuple[float, float, int, float]:
    """The main thread's (the event loop's) seconds on a core, its seconds runnable but waiting for one, how
    many times it was given a core (/proc/PID/task/PID/schedstat); and the seconds all its threads waited."""
    try:
        run, wait, slices = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0, 0, 0.0
    waited = 0
    for thread in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            waited += int(thread.read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return int(run) / 1e9, int(wait) / 1e9, int(slices), waited / 1e9


def cpu_pressure_s() -> float:
    """Seconds in which some task of the machine waited for a core (/proc/pressure/cpu, "some"), so far."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (FileNotFoundError, IndexError):
        return 0.0
    return int(some.rsplit("total=", 1)[1]) / 1e6


def postgres_processes(url: str) -> list[int]:
    """The PostgreSQL server whose socket folder the URL names (``host=``), and its backends."""
    folder = re.search(r"host=([^&]+)", url)
    if folder is None:
        return []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if folder.group(1) in text and "postgres" in text and " -D " in text:
            return process_tree(int(cmdline.parent.name))
    return []


# --- the parts a setup starts ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(**settings: str) -> dict[str, str]:
    """This process's environment without trainerbot's settings, and these."""
    keep = {key: value for key, value in os.environ.items() if not key.startswith("TRAINERBOT_")}
    return keep | settings


@contextmanager
def chat_server(home: Path, nice: int = 0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """llama-server with the `small` model, as the bot itself starts it (chat/llama_server.py), without a key.

    ``nice``: above 0, the kernel gives the cores to the bots' processes first (at 19, the server's share against
    a busy process at 0 is about 1.5 %), which is the nearest one machine comes to a chat server of its own.
    """
    from trainerbot.chat.llama_server import CACHE_RAM_MIB, server_binary
    from trainerbot.chat.models import model_file

    binary = server_binary()
    if binary is None:
        sys.exit("bench/scale.py needs llama-server: make llama-server")
    port = _free_port()
    command = [
        *(["nice", "-n", str(nice)] if nice else []),
        str(binary),
        "--model", str(model_file("small")),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(CHAT_SLOTS),
        "--ctx-size", str(CONTEXT_TOKENS * CHAT_SLOTS),
        "--threads", str(CHAT_THREADS),
        "--threads-batch", str(CHAT_THREADS),
        "--threads-http", "2",
        "--cache-ram", str(CACHE_RAM_MIB),
        "--load-mode", "none",
        "--cache-reuse", "64",
        "--no-webui",
        "--jinja",
    ]  # fmt: skip
    with (home / "llama-server.log").open("ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                sys.exit(f"llama-server stopped at start with {process.returncode}; see {home / 'llama-server.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit("llama-server was not ready after 120 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1", process
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def workers(count: int, home: Path, data_dir: Path, database_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`trainerbot worker` processes, as an operator starts them, at nice 5 as the bot's own training processes."""
    env = _environment(TRAINERBOT_DATABASE_URL=database_url, TRAINERBOT_DATA_DIR=str(data_dir))
    started = []
    try:
        for n in range(count):
            where = home / f"worker-{n}"
            where.mkdir(parents=True)
            with (where / "output").open("wb") as output:
                started.append(
                    subprocess.Popen(
                        ["nice", "-n", "5", sys.executable, "-m", "trainerbot", "worker"],
                        cwd=where,  # no .env of the repository
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=output,
                    )
                )
        yield started
    finally:
        for process in started:
            process.terminate()  # a worker finishes the job in hand first
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def teach_servers(data_dir: Path, database_url: str | None, guild_ids: list[int]) -> None:
    """Every server's taught answers, trained before the bots start: here (SQLite) or by the workers."""
    from trainerbot.app import build_services
    from trainerbot.config import load_settings

    settings = load_settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,
        owner_ids=[LOAD_OWNER_ID],
        chat_engine="none",
        stt_engine="none",
        tts_engine="none",
        training_workers=0 if database_url else 2,
        auto_train_quiet_seconds=0,  # no quiet spell to wait for before the first training
    )
    services = build_services(settings, chat=False)
    try:
        await asyncio.gather(*(teach(services, guild_id) for guild_id in guild_ids))
    finally:
        services.close()


def greetings(server: FakeDiscord, started: datetime.datetime) -> dict[str, Any]:
    """When the `!hi` of the run were slow: the slowest, with when they were asked (seconds into the run, and
    the time of day in UTC, to set beside the logs), and the spread of those asked after the first 5 s.

    By the fake Discord's clock: from the message's creation to the answer's (``Figures.hi_at_fake_ms``).
    """
    timed = []
    for message in list(server.messages.values()):
        if message["content"] == "!hi" and not message["author"].get("bot"):
            replies = server.bot_messages(int(message["channel_id"]), after=message["id"])
            asked = datetime.datetime.fromisoformat(message["timestamp"])
            if replies and asked >= started:
                answered = datetime.datetime.fromisoformat(replies[0]["timestamp"])
                timed.append(((answered - asked).total_seconds() * 1000, asked))
    slowest = [
        {"s_into_run": round((asked - started).total_seconds(), 1), "at": f"{asked:%H:%M:%S.%f}"[:12], "ms": round(ms)}
        for ms, asked in sorted(timed, key=lambda pair: pair[0], reverse=True)[:5]
    ]
    later = [ms for ms, asked in timed if (asked - started).total_seconds() >= 5]
    return {"slowest": slowest, "asked_after_the_first_5_s": spread(later)}


def log_errors(log_file: Path, offset: int) -> list[str]:
    """The ERROR and CRITICAL lines written after ``offset``."""
    if not log_file.exists():
        return []
    with log_file.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    return [line[:300] for line in lines if ERROR_LINE.match(line)]


# --- one setup -----------------------------------------------------------------------------------


async def run_setup(
    setup: Setup,
    *,
    users: int,
    messages: int,
    seed: int,
    guilds: int,
    home: Path,
    postgres: Callable[[], Any] | None,
    chat_nice: int = 0,
) -> dict[str, Any]:
    from trainerbot.storage.database import open_database
    from trainerbot.storage.store import Store

    home.mkdir(parents=True)
    data_dir = home / "data"
    database_url = postgres().new_database() if postgres is not None else None
    bots_at_once = len(setup.shard_ids)
    guild_setups = load_guilds(users, guilds, SHARDS)
    with ExitStack() as stack:
        chat_url, chat_process = stack.enter_context(chat_server(home, chat_nice))
        started_workers = (
            stack.enter_context(workers(setup.workers, home, data_dir, database_url)) if database_url else []
        )
        began = time.perf_counter()
        await teach_servers(data_dir, database_url, [guild.guild_id for guild in guild_setups])
        taught_s = time.perf_counter() - began
        env = {
            "TRAINERBOT_DATABASE_URL": database_url or "",  # blank: SQLite, whatever this shell has set
            "TRAINERBOT_OWNER_IDS": str(LOAD_OWNER_ID),
            "TRAINERBOT_ADMIN_ROLES": ADMIN_ROLE,
            "TRAINERBOT_CHAT_ENGINE": "openai",
            "TRAINERBOT_OPENAI_BASE_URL": chat_url,
            "TRAINERBOT_OPENAI_API_KEY": "none",
            "TRAINERBOT_OPENAI_MODEL": "small",
            "TRAINERBOT_OPENAI_PARALLEL": str(max(1, CHAT_SLOTS // bots_at_once)),
            "TRAINERBOT_CHAT_MAX_REPLY_TOKENS": "24",  # as bench/load.py
            "TRAINERBOT_TTS_ENGINE": "none",
        }
        if database_url:
            env["TRAINERBOT_TRAINING_WORKERS"] = "0"  # the two workers above take the jobs
        async with FakeDiscord(guild_setups) as server:
            bots = [
                BotProcess(
                    server,
                    data_dir,
                    home / f"bot-{n}",
                    env,
                    ["--shard-count", str(SHARDS), "--shard-ids", shard_ids] if shard_ids else [],
                )
                for n, shard_ids in enumerate(setup.shard_ids)
            ]
            try:
                ready_s = []
                for bot in bots:  # one after the other: two encoders loading at once on two cores take longer
                    ready_s.append(round(await bot.start(timeout=180), 1))
                store = Store(open_database(database_url or str(data_dir / "trainerbot.sqlite3")))
                log_file = data_dir / "trainerbot.log"
                offset = log_file.stat().st_size if log_file.exists() else 0
                pg_pids = postgres_processes(database_url) if database_url else []

                def parts() -> dict[str, list[int]]:
                    return {
                        "this process (fake Discord, users)": [os.getpid()],
                        "bots": [pid for bot in bots for pid in process_tree(bot.pid)],
                        "workers": [pid for worker in started_workers for pid in process_tree(worker.pid)],
                        "llama-server": [chat_process.pid],
                        "postgresql": pg_pids,
                    }

                loops = {"this process": os.getpid(), **{f"bot {n}": bot.pid for n, bot in enumerate(bots)}}
                cpu_before: dict[str, float] = {}
                sched_before: dict[str, tuple[float, float, int, float]] = {}
                pressure_before = 0.0
                started = datetime.datetime.now(datetime.UTC)

                def read_memory() -> float:
                    # Read after the warm-up, then after the run: the clocks start with the first reading.
                    nonlocal pressure_before, started
                    now = parts()
                    if not cpu_before:
                        started = datetime.datetime.now(datetime.UTC)
                        cpu_before.update({name: cpu_seconds(pids) for name, pids in now.items()})
                        sched_before.update({name: scheduling(pid) for name, pid in loops.items()})
                        pressure_before = cpu_pressure_s()
                    return rss_mb(now["bots"] + now["workers"])

                load_before = os.getloadavg()
                try:
                    figures = await run_users(
                        server,
                        store,
                        users=users,
                        messages=messages,
                        seed=seed,
                        voice_clip=CLIP,
                        memory_mb=read_memory,
                    )
                finally:
                    store.db.close()
                hi_times = greetings(server, started)
                cpu_used = {name: cpu_seconds(pids) - cpu_before.get(name, 0.0) for name, pids in parts().items()}
                pressure = cpu_pressure_s() - pressure_before
                sched = {}
                for name, pid in loops.items():
                    (run0, wait0, slices0, all0), (run1, wait1, slices1, all1) = sched_before[name], scheduling(pid)
                    sched[name] = {
                        "loop_on_a_core_s": round(run1 - run0, 1),
                        "loop_waiting_for_a_core_s": round(wait1 - wait0, 1),
                        "loop_mean_wait_ms": round((wait1 - wait0) / max(1, slices1 - slices0) * 1000, 2),
                        "all_threads_waiting_for_a_core_s": round(all1 - all0, 1),
                    }
                figures.errors += log_errors(log_file, offset)
                for bot in bots:
                    if await bot.stop() != 0:
                        figures.errors.append(f"bot process {bot.pid} did not stop cleanly")
            finally:
                for bot in bots:
                    bot.kill()
    if postgres is not None and database_url is not None:
        postgres().drop(database_url)
    summary = figures.summary()
    summary.pop("longest_line")  # the work queues are in the bots' processes
    summary.pop("users")
    summary["rss_note"] = "bot and worker processes with their children (not llama-server, not PostgreSQL)"
    hi = summary["hi_ms"]
    return {
        "setup": setup.title,
        "bot_processes": bots_at_once,
        "workers": setup.workers if database_url else "the bot's own training processes",
        "teaching_s": round(taught_s, 1),
        "ready_s": ready_s,
        **summary,
        "hi_p99_target_met": hi["p99"] is not None and hi["p99"] <= HI_TARGET_MS,
        "cpu_s_during_run": {name: round(seconds, 1) for name, seconds in cpu_used.items()},
        "cores_busy_during_run": round(sum(cpu_used.values()) / figures.seconds, 2) if figures.seconds else None,
        "some_task_waiting_for_a_core": round(pressure / figures.seconds, 2) if figures.seconds else None,
        "scheduling_during_run": sched,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "hi_at_fake_when": hi_times,
        "error_samples": figures.errors[:10],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    names = [name.strip() for name in args.setups.split(",") if name.strip()]
    unknown = [name for name in names if name not in SETUPS]
    if unknown:
        sys.exit(f"unknown setups {unknown}: choose among {', '.join(SETUPS)}")
    server = None

    def postgres() -> Any:
        nonlocal server
        if server is None:
            from tests.databases import PostgresServer

            server = PostgresServer()
        return server

    results = []
    home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="trainerbot-scale-"))
    try:
        for name in names:
            setup = SETUPS[name]
            print(f"bench/scale.py: {setup.title}...", file=sys.stderr, flush=True)
            results.append(
                await run_setup(
                    setup,
                    users=args.users,
                    messages=args.messages,
                    seed=args.seed,
                    guilds=args.guilds,
                    home=home / name,
                    postgres=postgres if setup.postgres else None,
                    chat_nice=args.chat_nice,
                )
            )
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
        "users": args.users,
        "messages_each": args.messages,
        "seed": args.seed,
        "servers": args.guilds,
        "shards": SHARDS,
        "chat": f"one llama-server, `small` preset (SmolLM2-135M), {CHAT_SLOTS} slots, {CHAT_THREADS} threads"
        + (f", nice {args.chat_nice}" if args.chat_nice else ""),
        "cores": os.cpu_count(),
        "hi_p99_target_ms": HI_TARGET_MS,
        "setups": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--guilds", type=int, default=SHARDS, help="servers the users are spread over (default 4)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of: {', '.join(SETUPS)}")
    parser.add_argument(
        "--chat-nice",
        type=int,
        default=0,
        metavar="N",
        help="run llama-server at this niceness (19: it takes only what the bots leave of the cores)",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep every setup's data, logs and outputs in this new folder")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stopped run still stops what it started
    print(json.dumps(asyncio.run(main(args)), indent=2, ensure_ascii=False))
