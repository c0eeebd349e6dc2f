"""The tests' databases: a real PostgreSQL server, and checks that read either engine's catalogue.

The server comes from PyPI (pgserver bundles PostgreSQL 16's binaries): one per test run (it starts in
about half a second), in a temporary folder, reached over a Unix socket only; each test that asks gets a
database of its own, dropped afterwards (conftest.py's ``database_url``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg


class PostgresServer:
    def __init__(self) -> None:
        # pgserver asks platformdirs for a runtime folder, which a CI machine may not have: harmless here.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

        # Not under pytest's own temporary folder: as root, pgserver runs PostgreSQL as a user of its own,
        # which may not enter pytest's folder (mode 700); its server folder is made for that user.
        self._folder = Path(tempfile.mkdtemp(prefix="trainerbot-postgres-"))
        self._server = pgserver.get_server(self._folder, cleanup_mode="delete")
        self.url = self._server.get_uri()  # postgresql://postgres:@/postgres?host=<folder>
        self._names = itertools.count(1)

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.replace("/postgres?", f"/{name}?")

    def drop(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # children may still be connected

    def stop(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self._folder, ignore_errors=True)


def table_names(db: Any) -> list[str]:
    """The tables of the bot's schema, on either engine."""
    if db.dialect == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'"
    return [row["name"] for row in db.query(sql)]


def foreign_keys_hold(db: Any) -> bool:
    """No row names a row that is gone. SQLite checks when asked; PostgreSQL refuses such a write outright."""
    if db.dialect == "sqlite":
        return db.query_one("PRAGMA foreign_key_check") is None
    return True
