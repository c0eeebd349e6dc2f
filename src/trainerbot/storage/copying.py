"""`trainerbot copy-database`: a bot's SQLite database copied into an empty PostgreSQL one, all or nothing.

Both are first brought to the current migration, so their tables and columns are the same. The rows go
table by table, parents before the tables that reference them (read from SQLite's foreign keys), each
table in rowid order (a chat turn's ``reply_to`` names an earlier turn), in batches, in one PostgreSQL
transaction: a copy that fails leaves PostgreSQL without a row of it. The schema has no cycle of
references (``jobs.model_version_id`` is a plain number, not a reference); a migration that made one
would stop the copy with graphlib's ``CycleError`` until its back-references are filled in afterwards.
"""

from __future__ import annotations

import graphlib
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from trainerbot.errors import UserError
from trainerbot.storage.database import is_postgres, open_database, utc_now
from trainerbot.types import GLOBAL_BASE

if TYPE_CHECKING:
    from trainerbot.storage.postgres import Connection

log = logging.getLogger(__name__)

BATCH = 1000  # rows per executemany: psycopg pipelines them, so 100,000 rows take seconds

# Migration 4 gives every database the bot-wide base's row; PostgreSQL's is replaced by SQLite's, unless
# someone changed it, which makes the database one in use.
_BOT_WIDE_ROW_CHANGED = (
    "SELECT count(*) FROM bases WHERE id <> ? OR active_model IS NOT NULL OR selected_dataset IS NOT NULL"
    " OR use_global <> 1 OR admin_roles IS NOT NULL OR persona IS NOT NULL OR changed_by IS NOT NULL"
    " OR revision <> 0"
)


def copy_to_postgres(sqlite_path: Path, url: str) -> dict[str, int]:
    """Copies every row of the SQLite database into the empty PostgreSQL one at ``url``; the rows copied per table."""
    if not is_postgres(url):
        raise UserError("The copy goes into PostgreSQL: give its URL, postgresql://user:password@host:5432/database")
    if not sqlite_path.is_file():
        raise UserError(f"There is no SQLite database at {sqlite_path}: nothing to copy.")
    open_database(sqlite_path).close()  # brings its schema up to date
    target = open_database(url)
    source = sqlite3.connect(sqlite_path, isolation_level=None, timeout=10)
    try:
        source.execute("BEGIN")  # one snapshot, whatever a running bot writes meanwhile
        with target.transaction() as db:
            _check_versions(source, db)
            _check_empty(db, _tables(source))
            db.execute("DELETE FROM bases")  # the bot-wide row as migration 4 made it; SQLite's replaces it
            copied = copy_rows(source, db)
            copied["model_files"] = _copy_model_files(source, db, sqlite_path.parent)
            return copied
    finally:
        source.close()
        target.close()


def copy_rows(source: sqlite3.Connection, target: Connection) -> dict[str, int]:
    """Every row of ``source``'s tables (but ``schema_migrations``) inserted into ``target``'s, parents first.

    Then each identity column numbers on from the largest id copied, so the next row gets a new id.
    """
    copied: dict[str, int] = {}
    for table in _parents_first(source, _tables(source)):
        columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
        names = ", ".join(columns)
        insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
        rows = source.execute(f"SELECT {names} FROM {table} ORDER BY rowid")
        copied[table] = 0
        while batch := rows.fetchmany(BATCH):
            target.executemany(insert, batch)
            copied[table] += len(batch)
        log.info("copied %d rows of %s", copied[table], table)
    _number_on(target, copied)
    return copied


def _copy_model_files(source: sqlite3.Connection, target: Connection, data_dir: Path) -> int:
    """The trained models' files, into the database: bots and workers on other machines read them from there."""
    copied = 0
    for (relative,) in source.execute("SELECT DISTINCT path FROM model_versions ORDER BY path"):
        path = data_dir / relative
        if path.is_file():
            target.execute(
                "INSERT INTO model_files (path, data, created_at) VALUES (?, ?, ?) ON CONFLICT (path) DO NOTHING",
                (relative, path.read_bytes(), utc_now()),
            )
            copied += 1
        else:
            log.warning("model file %s is missing: its version cannot answer on PostgreSQL either", path)
    return copied


def _tables(source: sqlite3.Connection) -> list[str]:
    rows = source.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " AND name <> 'schema_migrations' ORDER BY name"
    )
    return [row[0] for row in rows]


def _parents_first(source: sqlite3.Connection, tables: list[str]) -> list[str]:
    order: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for table in tables:
        parents = {row[2] for row in source.execute(f"PRAGMA foreign_key_list({table})")}
        order.add(table, *(parents - {table}))  # a table's references to itself are kept by the rowid order
    return [table for table in order.static_order() if table in tables]


def _number_on(target: Connection, tables: dict[str, int]) -> None:
    identities = target.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall()
    for table, column in identities:
        if table in tables:
            target.execute(
                f"SELECT setval(pg_get_serial_sequence(?, ?), (SELECT coalesce(max({column}), 0) + 1 FROM {table}),"
                " false)",
                (table, column),
            )


def _check_versions(source: sqlite3.Connection, target: Connection) -> None:
    ours = [row[0] for row in source.execute("SELECT version FROM schema_migrations ORDER BY version")]
    theirs = [row[0] for row in target.execute("SELECT version FROM schema_migrations ORDER BY version")]
    if ours != theirs:
        raise UserError(
            f"The SQLite database has migrations up to {max(ours)} and PostgreSQL up to {max(theirs)}:"
            " copy with the newer trainerbot release."
        )


def _check_empty(target: Connection, tables: list[str]) -> None:
    held = {
        table: target.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables if table != "bases"
    }
    held["bases"] = target.execute(_BOT_WIDE_ROW_CHANGED, (GLOBAL_BASE,)).fetchone()[0]
    if any(held.values()):
        rows = ", ".join(f"{table} {count:,}" for table, count in held.items() if count)
        raise UserError(
            f"That PostgreSQL database already holds trainerbot's rows ({rows}). Copy into an empty database,"
            " so that nothing of either is lost: create a new one (createdb), or drop this one's tables first."
        )
