"""The dashboard's signed-in people: one row a session, found by the SHA-256 of the cookie's random token."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from trainerbot.storage.database import Database, utc_now


@dataclass(frozen=True)
class GuildSeen:
    """What Discord said at sign-in of one server the person is in (used where the bot cannot ask itself)."""

    id: int
    name: str
    owner: bool
    administrator: bool


@dataclass(frozen=True)
class WebSession:
    id: str
    user_id: int
    name: str
    operator: bool  # signed in with the operator's one-time link: an owner, whoever they are on Discord
    guilds: tuple[GuildSeen, ...]
    csrf: str  # every change the session makes carries this
    expires_at: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebSessions:
    def __init__(self, db: Database) -> None:
        self.db = db

    def attempt_sign_in(self, address: str, *, attempts: int, window: float) -> bool:
        """Counts a sign-in attempt from ``address``; False (and not counted) past ``attempts`` in ``window`` s.

        In the database, so that every dashboard on it counts together; attempts older than the window go.
        """
        now = datetime.now(UTC).timestamp()
        digest = _digest(address)
        with self.db.transaction() as db:
            db.execute("DELETE FROM sign_in_attempts WHERE at < ?", (now - window,))
            held = db.execute("SELECT count(*) FROM sign_in_attempts WHERE address = ?", (digest,)).fetchone()[0]
            if held >= attempts:
                return False
            db.execute("INSERT INTO sign_in_attempts (address, at) VALUES (?, ?)", (digest, now))
            return True

    def create(self, user_id: int, name: str, *, operator: bool, guilds: list[GuildSeen], hours: float) -> str:
        """A new session; returns the token for the cookie (only its digest is stored)."""
        token = secrets.token_urlsafe(32)
        expires = (datetime.now(UTC) + timedelta(hours=hours)).isoformat(timespec="milliseconds")
        seen = json.dumps([[g.id, g.name, g.owner, g.administrator] for g in guilds])
        with self.db.transaction() as db:
            db.execute("DELETE FROM web_sessions WHERE expires_at < ?", (utc_now(),))
            db.execute(
                "INSERT INTO web_sessions (id, user_id, name, operator, guilds, csrf, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_digest(token), user_id, name, int(operator), seen, secrets.token_urlsafe(24), utc_now(), expires),
            )
        return token

    def get(self, token: str) -> WebSession | None:
        """The session of a cookie's token; None once it has expired or was signed out."""
        row = self.db.query_one(
            "SELECT * FROM web_sessions WHERE id = ? AND expires_at > ?", (_digest(token), utc_now())
        )
        if row is None:
            return None
        guilds = tuple(GuildSeen(int(i), str(n), bool(o), bool(a)) for i, n, o, a in json.loads(row["guilds"]))
        return WebSession(
            row["id"], row["user_id"], row["name"], bool(row["operator"]), guilds, row["csrf"], row["expires_at"]
        )

    def end(self, token: str) -> None:
        with self.db.transaction() as db:
            db.execute("DELETE FROM web_sessions WHERE id = ?", (_digest(token),))
