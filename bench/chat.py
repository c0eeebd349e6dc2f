"""Chat benchmark of the local engine (llama.cpp): speed, first token, memory.

    .venv/bin/python bench/chat.py [--model quality|small|FILE] [--parallel N] [--turns 20] [--runs 5]
                                   [--data tests/data/banking77]

Prints the figures quoted in docs/benchmarks.md, in four parts:

1. Writing speed with nothing else running: tokens a second after the first, median of runs.
2. The same while a training job (Banking77, 10,003 examples) runs beside it in its
   worker process, with the engine's own choice of threads (one while the bot trains), and
   once with two threads forced, to show why it makes that choice; then beside Whisper
   transcribing a clip again and again.
3. Time to first token through the loopback Discord: from the user's message reaching the
   bot's gateway to the bot's first message with text arriving at the fake REST API, for a
   conversation in one channel, and for two channels taking turns.
4. Memory: a 50-turn conversation in one channel; every prompt must stay within the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.loopback_discord, the fake Discord API

from tests.load import rss_mb  # noqa: E402
from tests.loopback_discord import FakeDiscord, GuildSetup, run_bot  # noqa: E402

from trainerbot.app import Services, build_services  # noqa: E402
from trainerbot.chat.engine import CUT_SHORT, ChatMessage  # noqa: E402
from trainerbot.config import load_settings  # noqa: E402
from trainerbot.core.conversation import Where  # noqa: E402
from trainerbot.types import Caller, Upload  # noqa: E402

DEFAULT_DATA = ROOT / "tests" / "data" / "banking77"
STORY = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Explain in detail, step by step, how to bake bread at home, with tips for each step."),
]
QUESTIONS = [
    "Hi! How are you today?",
    "What is a good name for a cat?",
    "Can you suggest a quick breakfast?",
    "Why is the sky blue?",
    "Tell me a fun fact about octopuses.",
    "What should I read this weekend?",
    "How do I stay focused while studying?",
    "What is your favourite season?",
    "Give me a tip for learning to draw.",
    "How many legs does a spider have?",
]
FAQ = [
    "when are you open => We are open 9am to 5pm, Monday to Friday.",
    "where is the office => Main Street 1, second floor.",
    "how do I reset my password => Use the reset link on the login page.",
    "what is the wifi password => The wifi password is pancake42.",
]
OWNER = Caller(1, "bench", is_owner=True)  # the console's operator: teaches the bot-wide base


MODEL: str | None = None  # --model; None: the default preset
PARALLEL: dict[str, int] = {}  # --parallel; none: the default (llama-server with 4 slots)


def make_services(data_dir: Path, **settings: object) -> Services:
    options = {"chat_engine": "local", "chat_max_reply_tokens": 200, "chat_model": MODEL, **PARALLEL, **settings}
    return build_services(load_settings(_env_file=None, data_dir=data_dir, **options))


def speed(services: Services, max_tokens: int = 200) -> tuple[float, int]:
    """Tokens a second after the first token, and how many tokens were written."""
    assert services.engine is not None
    first = None
    count = 0
    for piece in services.engine.stream(STORY, max_tokens=max_tokens, cancel=threading.Event()):
        if piece == CUT_SHORT:  # the mark of a reply stopped by the length limit, not a token
            continue
        count += 1
        if first is None:
            first = time.perf_counter()
    assert first is not None and count > min(20, max_tokens - 1), f"the model wrote only {count} tokens"
    return (count - 1) / (time.perf_counter() - first), count


def part_speed(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        services = make_services(Path(tmp))
        try:
            speed(services, 20)  # load and warm up
            rates = [speed(services) for _ in range(runs)]
            tps = [r for r, _ in rates]
            print(
                f"1. writing, nothing else running: median {statistics.median(tps):.1f} tokens/s "
                f"({', '.join(f'{r:.0f}' for r in tps)}; {rates[0][1]} tokens a run)"
            )
        finally:
            services.close()


def part_beside_training(runs: int, data: Path) -> None:
    with (data / "train.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    upload = "\n".join(json.dumps({"input": row["text"], "output": row["category"]}) for row in rows).encode()
    with tempfile.TemporaryDirectory() as tmp:
        services = make_services(Path(tmp))
        try:
            speed(services, 20)
            started = services.teaching.train(OWNER, "", [Upload("banking77.jsonl", upload, len(upload))])
            while not services.jobs.busy():
                time.sleep(0.1)
            time.sleep(3)  # into the encoding, the heaviest stage
            own = [speed(services)[0] for _ in range(runs)]
            job = services.store.jobs.job(started.base, started.job_id)
            assert job is not None and job.status == "running", "training ended during the measurement"
            engine = services.engine
            forced = ""
            if hasattr(engine, "_threads"):  # in process: one thread while training; two forced, for comparison
                engine._threads = 2  # type: ignore[union-attr]
                forced = ", ".join(f"{speed(services, 60)[0]:.1f}" for _ in range(2))
                engine._threads = None  # type: ignore[union-attr]
                forced = f" with the engine's choice (1 thread); two threads forced: {forced} tokens/s"
            still = services.store.jobs.job(started.base, started.job_id)
            print(
                f"2. writing beside a training job ({job.stage}): median {statistics.median(own):.1f} tokens/s "
                f"({', '.join(f'{r:.0f}' for r in own)}){forced}"
                f"{'' if still and still.status == 'running' else ' (training ended during it)'}"
            )
        finally:
            services.close()


def part_beside_transcription(runs: int, audio: Path) -> None:
    clip = (audio / "jfk.wav").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        services = make_services(Path(tmp))
        stop = threading.Event()
        done = [0]

        def transcribe_again_and_again() -> None:
            while not stop.is_set():
                services.listening.transcribe(Upload("jfk.wav", clip, len(clip)))
                done[0] += 1

        try:
            speed(services, 20)
            worker = threading.Thread(target=transcribe_again_and_again)
            worker.start()
            time.sleep(2)
            rates = [speed(services)[0] for _ in range(runs)]
            stop.set()
            worker.join()
            print(
                f"2b. writing beside transcriptions (Whisper, 2 threads, {done[0]} of jfk.wav meanwhile): median "
                f"{statistics.median(rates):.1f} tokens/s ({', '.join(f'{r:.0f}' for r in rates)})"
            )
        finally:
            stop.set()
            services.close()


async def first_tokens(services: Services, turns: int, channels: int) -> tuple[list[float], list[int]]:
    """Seconds to the first text of each message, and the messages whose history window moved."""
    from trainerbot.adapters.discord.bot import TrainerBot

    setup = GuildSetup()
    waits: list[float] = []
    moved: list[int] = []
    windows = services.conversation._windows
    async with FakeDiscord(setup) as server, run_bot(TrainerBot(services), server):
        ids = list(setup.text_channels.values())[:channels]
        for turn in range(turns):
            channel = ids[turn % channels]
            before = len(server.requests)
            window = windows.get(channel)
            sent_at = time.monotonic()
            sent = await server.send_message(QUESTIONS[turn % len(QUESTIONS)], channel_id=channel)
            await server.wait_for_bot_messages(channel, after=sent["id"], timeout=60)
            post = next(
                r for r in server.requests[before:] if r.method == "POST" and r.path == f"/channels/{channel}/messages"
            )
            waits.append(post.at - sent_at)
            if window is not None and windows.get(channel) != window:
                moved.append(turn)
            # the whole reply, before the next
            while services.store.conversations.turns(channel)[-1].role != "assistant":
                await asyncio.sleep(0.02)
    return waits, moved


def part_first_token(turns: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        services = make_services(Path(tmp), chat_max_reply_tokens=120)
        try:
            for line in FAQ:  # a few taught answers, so the examples index is in play
                services.teaching.train(OWNER, line, [])
            time.sleep(8)  # training of four examples, and the model load
            for channels in (1, 2):
                waits, moved = asyncio.run(first_tokens(services, turns, channels))
                p90 = sorted(waits)[int(len(waits) * 0.9)]
                print(
                    f"3. first token through the loopback Discord, {channels} channel(s), {turns} messages: "
                    f"median {statistics.median(waits) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
                    f"first {waits[0] * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms "
                    f"(message {waits.index(max(waits))}); "
                    f"history window moved at messages {moved or 'none'}"
                )
                print("   each, ms:", " ".join(f"{w * 1000:.0f}" for w in waits))
        finally:
            services.close()


def part_memory(turns: int = 50) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        services = make_services(Path(tmp), chat_max_reply_tokens=120)
        conversation = services.conversation
        assert services.engine is not None
        budget = services.engine.context_tokens - conversation.options.max_reply_tokens
        tokens, seconds, starts, empty = [], [], set(), 0
        try:
            for turn in range(turns):
                began = time.perf_counter()
                caller = Caller(2, "user", message_id=turn)
                prepared = conversation.prepare(caller, QUESTIONS[turn % len(QUESTIONS)], Where(7))
                assert prepared.prompt is not None
                reply = "".join(conversation.write(prepared, threading.Event())).strip()
                conversation.finish(prepared, reply, "chat", [10_000 + turn])
                seconds.append(time.perf_counter() - began)
                tokens.append(prepared.prompt.tokens)
                starts.add(prepared.prompt.first_turn)
                empty += not reply
                if turn == 0:
                    warm = round(rss_mb(services))
            print(
                f"4. {turns}-turn conversation: every prompt within the budget of {budget} tokens: "
                f"{max(tokens) <= budget} (largest {max(tokens)}, last {tokens[-1]}); the history window moved "
                f"{len(starts) - 1} times; empty replies {empty}; seconds a turn median "
                f"{statistics.median(seconds):.2f}, max {max(seconds):.2f}; resident memory {warm} MB after "
                f"the first turn, {round(rss_mb(services))} MB after the last (with llama-server's, if it runs)"
            )
        finally:
            services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--parts", default="1234")
    parser.add_argument("--model", help="a chat model preset or GGUF file (default: the default preset)")
    parser.add_argument("--parallel", type=int, help="TRAINERBOT_CHAT_PARALLEL (1: in process)")
    args = parser.parse_args()
    global MODEL
    MODEL = args.model
    if args.parallel is not None:
        PARALLEL["chat_parallel"] = args.parallel
    if "1" in args.parts:
        part_speed(args.runs)
    if "2" in args.parts:
        part_beside_training(args.runs, args.data)
        part_beside_transcription(args.runs, args.data.parent / "audio")
    if "3" in args.parts:
        part_first_token(args.turns)
    if "4" in args.parts:
        part_memory()


if __name__ == "__main__":
    main()
