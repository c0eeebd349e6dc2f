"""The database's write rate: one message's inbox claim, the bot's most frequent transaction, from several processes.

    .venv/bin/python bench/database.py [--seconds 5] [--processes 1 2 4]

Each process claims new message ids in a loop for ``--seconds`` through the bot's own storage code
(``HandledMessages.claim_message``: a delete of old claims and an insert, in one transaction), on
SQLite (a file in a temporary folder, WAL) and on PostgreSQL 16 (pgserver, over a Unix socket,
``synchronous_commit`` on: each commit waits for its write-ahead log to reach the disk). Both take
one writer at a time (SQLite's ``BEGIN IMMEDIATE``; one advisory lock per transaction on PostgreSQL).
Prints one JSON object: per engine and number of processes, transactions a second in all, and the
median and 99th percentile of one transaction, in ms. The figures are in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.databases

from tests.databases import PostgresServer  # noqa: E402

from trainerbot.storage.database import open_database  # noqa: E402
from trainerbot.storage.store import Store  # noqa: E402


def claim(address: str, first_id: int, seconds: float, results: multiprocessing.Queue) -> None:
    store = Store(open_database(address))
    times = []
    message_id = first_id
    ends = time.perf_counter() + seconds
    while (started := time.perf_counter()) < ends:
        store.inbox.claim_message(message_id, 1, forget_before=0)
        times.append(time.perf_counter() - started)
        message_id += 1
    store.db.close()
    results.put(times)


def run(address: str, processes: int, seconds: float) -> dict[str, float]:
    results: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=claim, args=(address, (n + 1) * 10**12 + processes * 10**10, seconds, results))
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    times = sorted(t for _ in workers for t in results.get())
    for worker in workers:
        worker.join()
    return {
        "transactions_per_s": round(len(times) / seconds),
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))] * 1000, 2),
    }


def main(seconds: float, counts: list[int]) -> dict[str, dict[str, dict[str, float]]]:
    figures: dict[str, dict[str, dict[str, float]]] = {"sqlite": {}, "postgresql": {}}
    with tempfile.TemporaryDirectory() as folder:
        sqlite = str(Path(folder) / "bench.sqlite3")
        open_database(sqlite).close()  # the schema, before the processes start
        for count in counts:
            figures["sqlite"][f"{count} processes"] = run(sqlite, count, seconds)
    server = PostgresServer()
    try:
        url = server.new_database()
        open_database(url).close()
        for count in counts:
            figures["postgresql"][f"{count} processes"] = run(url, count, seconds)
    finally:
        server.stop()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print(json.dumps(main(args.seconds, args.processes), indent=2))
