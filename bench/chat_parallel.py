"""Many conversations at once: one reply alone against several written together, per engine.

    .venv/bin/python bench/chat_parallel.py [--model quality] [--streams 4] [--runs 3] [--tokens 200]

For the in-process engine (one reply at a time) and for llama-server with continuous batching
(TRAINERBOT_CHAT_PARALLEL slots), it prints the tokens a second of one reply alone, then of
``--streams`` replies asked at the same moment, admitted as the bot's queue admits them: each
stream's own rate (from its first token to its last), the first-token waits (the queue's wait
included), and all streams' tokens over the wall time. Target (issue 14):
together at least twice the tokens a second of one alone, each stream at least 4 tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trainerbot.chat import build_engine
from trainerbot.chat.engine import ChatMessage, CutShort
from trainerbot.config import load_settings

TOPICS = ["bake bread", "grow tomatoes", "learn to juggle", "train for a 5k run", "paint a room", "tune a guitar"]


def ask(topic: str) -> list[ChatMessage]:
    return [
        ChatMessage("system", "You are a helpful assistant."),
        ChatMessage("user", f"Explain in detail, step by step, how to {topic}, with tips for each step."),
    ]


def one(engine, messages: list[ChatMessage], tokens: int, began: float) -> tuple[float, float, int, float]:
    """(first-token wait, stream's own tokens/s, tokens, end time) of one reply."""
    first = None
    count = 0
    for piece in engine.stream(messages, max_tokens=tokens, cancel=threading.Event()):
        if isinstance(piece, CutShort):
            continue
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None and count > min(20, tokens - 1), f"only {count} tokens"
    return first - began, (count - 1) / (end - first), count, end


def measure(engine, streams: int, runs: int, tokens: int) -> None:
    one(engine, ask("boil an egg"), 16, time.perf_counter())  # load and warm up
    alone = []
    for run in range(runs):
        _, rate, _, _ = one(engine, ask(TOPICS[run % len(TOPICS)]), tokens, time.perf_counter())
        alone.append(rate)
    together, each, waits = [], [], []
    for run in range(runs):
        began = time.perf_counter()
        asked = [ask(TOPICS[(run + n) % len(TOPICS)]) for n in range(streams)]
        # As the bot does: its queue lets the engine write `parallel` replies at a time, the rest wait their turn.
        # (Threads left waiting on the in-process engine's lock slowed the one writing to 25 tokens/s.)
        with ThreadPoolExecutor(min(streams, engine.parallel)) as pool:
            done = list(pool.map(one, [engine] * streams, asked, [tokens] * streams, [began] * streams))
        together.append(sum(c for _, _, c, _ in done) / (max(e for *_, e in done) - began))
        each += [rate for _, rate, _, _ in done]
        waits += [wait for wait, *_ in done]
    solo = statistics.median(alone)
    print(
        f"  one reply alone: median {solo:.1f} tokens/s ({', '.join(f'{r:.1f}' for r in alone)})\n"
        f"  {streams} at once: {statistics.median(together):.1f} tokens/s in all "
        f"({statistics.median(together) / solo:.2f}x one alone; runs {', '.join(f'{r:.1f}' for r in together)}); "
        f"each stream median {statistics.median(each):.1f}, slowest {min(each):.1f} tokens/s; "
        f"first token median {statistics.median(waits):.2f} s, max {max(waits):.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a preset or GGUF file (default: the default preset)")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--engines", default="in-process,llama-server")
    args = parser.parse_args()
    for kind in args.engines.split(","):
        parallel = 1 if kind == "in-process" else args.streams
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(
                _env_file=None, data_dir=Path(tmp), chat_engine="local", chat_model=args.model, chat_parallel=parallel
            )
            engine = build_engine(settings)
            assert engine is not None
            print(f"{kind} ({type(engine).__name__}, {settings.chat_model}, {parallel} slot(s)):", flush=True)
            try:
                measure(engine, args.streams, args.runs, args.tokens)
            finally:
                engine.close()


if __name__ == "__main__":
    main()
