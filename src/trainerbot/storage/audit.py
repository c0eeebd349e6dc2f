"""Who changed what in each base, and through which front end (Discord, the console, the dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainerbot.storage.database import Database, utc_now
from trainerbot.types import Caller

MAX_DETAIL = 300  # the entry says what changed, not all of it: an import of 500 examples is one line


@dataclass(frozen=True)
class AuditEntry:
    id: int
    base: int
    user_id: int | None
    user_name: str | None
    via: str
    action: str
    detail: str
    created_at: str


@dataclass(frozen=True)
class Change:
    """Who makes a change and what it is, handed to the storage call that makes it: both are written together."""

    user_id: int | None
    user_name: str | None
    via: str
    action: str
    detail: str

    @classmethod
    def by(cls, caller: Caller, action: str, detail: str) -> Change:
        return cls(caller.user_id, storable(caller.name), caller.via, action, storable(detail))


def storable(text: str) -> str:
    """Text SQLite can store: a lone surrogate (JSON and some front ends carry them) becomes U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def note(db: Any, base: int, change: Change | None) -> None:
    """``record`` of a change, inside the transaction that makes it (None: a change kept out of the trail)."""
    if change is not None:
        record(
            db,
            base,
            user_id=change.user_id,
            user_name=change.user_name,
            via=change.via,
            action=change.action,
            detail=change.detail,
        )


def record(
    db: Any, base: int, *, user_id: int | None, user_name: str | None, via: str, action: str, detail: str
) -> None:
    """Writes one entry with ``db`` (a connection inside the change's own transaction, so both or neither)."""
    db.execute(
        "INSERT INTO audit (base, user_id, user_name, via, action, detail, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (base, user_id, user_name, via or "?", action, detail[:MAX_DETAIL], utc_now()),
    )


class Audit:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, base: int, *, user_id: int | None, user_name: str | None, via: str, action: str, detail: str) -> None:
        with self.db.transaction() as db:
            record(db, base, user_id=user_id, user_name=user_name, via=via, action=action, detail=detail)

    def add_change(self, base: int, change: Change) -> None:
        """An entry for a change made without a transaction of its own to write it in (a job started)."""
        with self.db.transaction() as db:
            note(db, base, change)

    def entries(self, base: int, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        """The newest ``limit`` entries of a base, older than entry ``before`` if given (one page at a time)."""
        rows = self.db.query(
            "SELECT * FROM audit WHERE base = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (base, before if before is not None else 2**62, limit),
        )
        return [AuditEntry(**dict(row)) for row in rows]
