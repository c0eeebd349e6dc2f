"""Many servers on one bot: memory, and the first answer of a server whose model is not loaded.

    .venv/bin/python bench/servers.py [--servers 1000] [--examples 50] [--data tests/data/banking77]

Each server is taught its own 50-example FAQ (ten Banking77 intents drawn for it, five questions
each, answers naming the server) and has its own model version, as a training job leaves it. The
models are made first, in two child processes, with the embeddings of the shared question pool
computed once: this benchmark measures serving, not training (bench/banking77.py times that).

Then, in this process, the bot's services are built on that data directory as `make run` builds
them, and answers go through the core's answer path (``Conversation.prepare``: the question is
stored, encoded, and answered by the server's base, then the bot-wide one):

1. one server answers 20 questions: the resident memory of the bot with one server;
2. every server answers one question, in turn: its model is not loaded (the cache holds
   ``TRAINERBOT_LOADED_MODELS``, 256 by default), so this is the first answer's latency;
3. the last 100 servers answer again, their models loaded: the loaded answer's latency;
4. the resident memory after all of it, against the target of at most 300 MB of growth.

Targets (issue 11): growth <= 300 MB; median first answer <= 50 ms; loaded <= 15 ms.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from trainerbot.storage.database import Database

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "banking77"
FIRST_SERVER = 1_000_000_000_000_000_000  # Discord-like ids: the n-th server is this plus n


def rss_mb() -> float:
    """This process's resident memory, from the kernel's own count."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def faqs(data: Path, servers: int, examples: int, seed: int = 11) -> dict[int, tuple[list[tuple[str, str]], str]]:
    """Each server's FAQ (``examples // 5`` intents drawn for it, five questions each), and one
    question its members ask: an unseen sixth question of its first intent."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    with (data / "train.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            by_intent[row["category"]].append(row["text"])
    rng = random.Random(seed)
    pool = {intent: rng.sample(texts, 6) for intent, texts in by_intent.items()}
    result = {}
    for n in range(servers):
        intents = rng.sample(sorted(pool), examples // 5)
        faq = [
            (question, f"Server {n}: about {intent.replace('_', ' ')}, see our guide.")
            for intent in intents
            for question in pool[intent][:5]
        ]
        result[FIRST_SERVER + n] = (faq, pool[intents[0]][5])
    return result


def build(data_dir: str, data: str, servers: int, examples: int, part: int = 0, parts: int = 1) -> None:
    """In a child process: its share of the servers' examples, jobs and model versions, as training leaves them."""
    from trainerbot.learning.encoder import MiniLMEncoder
    from trainerbot.learning.jobs import model_file
    from trainerbot.learning.model import train
    from trainerbot.storage.database import Database
    from trainerbot.storage.store import Store
    from trainerbot.types import Example

    encoder = MiniLMEncoder()
    taught = {
        base: faq for n, (base, (faq, _)) in enumerate(faqs(Path(data), servers, examples).items()) if n % parts == part
    }
    sentences = sorted({question for faq in taught.values() for question, _ in faq})
    vectors = dict(zip(sentences, encoder.encode(sentences), strict=True))

    class Pooled:
        dimension = encoder.dimension

        def encode(self, texts: list[str], workers: int = 1, progress: object = None) -> np.ndarray:
            return np.stack([vectors[text] for text in texts])

    store = Store(Database(Path(data_dir) / "trainerbot.sqlite3"))
    for base, faq in taught.items():
        store.knowledge.add_examples(base, [Example(q, a) for q, a in faq], source="train:faq.csv", author_id=1)
        job = store.jobs.create(base, requested_by=1, channel_id=None)
        store.jobs.mark_running(base, job.id)
        model, report = train([Example(q, a) for q, a in faq], Pooled(), threshold=0.6, workers=1)
        model.save(Path(data_dir) / model_file(job.id))
        store.jobs.finish(base, job.id, result=report.as_dict(), model_path=model_file(job.id))
    store.db.close()


def answer_time(services: object, base: int, text: str, message_id: int) -> tuple[float, str | None]:
    from trainerbot.core.conversation import Where
    from trainerbot.types import Caller

    caller = Caller(7, "member", guild_id=base, channel_id=base + 1, message_id=message_id)
    started = time.perf_counter()
    prepared = services.conversation.prepare(caller, text, Where(base + 1))  # type: ignore[attr-defined]
    return (time.perf_counter() - started) * 1000, prepared.answer.text if prepared.answer else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "data"
        data_dir.mkdir()
        Database(data_dir / "trainerbot.sqlite3").close()  # the schema, before two processes write to it
        started = time.perf_counter()
        children = [
            multiprocessing.get_context("spawn").Process(
                target=build, args=(str(data_dir), str(args.data), args.servers, args.examples, part, 2)
            )
            for part in range(2)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join()
            assert child.exitcode == 0, "building the servers failed"
        print(f"taught {args.servers} servers {args.examples} examples each in {time.perf_counter() - started:.0f} s")

        from trainerbot.app import build_services
        from trainerbot.config import load_settings

        settings = load_settings(
            _env_file=None, data_dir=data_dir, chat_engine="none", stt_engine="none", tts_engine="none"
        )
        services = build_services(settings)
        questions = {base: question for base, (_, question) in faqs(args.data, args.servers, args.examples).items()}
        bases = list(questions)
        ids = iter(range(1, 10**9))
        try:
            for _ in range(20):  # the bot with one server, warm
                answer_time(services, bases[0], questions[bases[0]], next(ids))
            one_server = rss_mb()
            first, answered = [], 0
            for base in bases:
                ms, answer = answer_time(services, base, questions[base], next(ids))
                first.append(ms)
                answered += answer is not None and answer.startswith(f"Server {base - FIRST_SERVER}:")
            loaded = [answer_time(services, base, questions[base], next(ids))[0] for base in bases[-100:] * 3]
            after = rss_mb()
        finally:
            services.close()

    print(f"servers: {args.servers}, {args.examples} examples each; models kept loaded: {settings.loaded_models}")
    print(f"answered by the server's own taught answer: {answered} of {args.servers}")
    print(f"resident memory: {one_server:.0f} MB with one server, {after:.0f} MB after every server answered")
    print(f"growth: {after - one_server:.0f} MB (target <= 300 MB)")
    quantiles = statistics.quantiles(first, n=10)
    print(
        f"first answer, model not loaded: median {statistics.median(first):.1f} ms, "
        f"p90 {quantiles[-1]:.1f} ms (target median <= 50 ms)"
    )
    print(f"answer, model loaded: median {statistics.median(loaded):.1f} ms (target <= 15 ms)")


if __name__ == "__main__":
    main()
