"""What people say about the bot's replies: feedback notes, 👍/👎 ratings and corrections."""

from __future__ import annotations

from typing import Any

from trainerbot.storage.audit import Change, note
from trainerbot.storage.database import Database, utc_now
from trainerbot.storage.knowledge import ensure_base
from trainerbot.types import Rating, ReplyRecord


class Feedback:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_feedback(
        self,
        *,
        user_id: int | None,
        user_name: str,
        guild_id: int | None,
        channel_id: int | None,
        message_id: int | None,
        text: str,
        about: ReplyRecord | None,
    ) -> int:
        """A note kept where it was sent (``guild_id`` None: a DM); ``about`` was found in that same place."""
        with self.db.transaction() as db:
            return db.execute(
                "INSERT INTO feedback (user_id, user_name, guild_id, channel_id, message_id, text,"
                " about_message_id, about_reply, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    user_id,
                    user_name,
                    guild_id,
                    channel_id,
                    message_id,
                    text,
                    about.bot_message_id if about else None,
                    about.reply if about else None,
                    utc_now(),
                ),
            ).fetchone()[0]

    def notes(self, guild_id: int | None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest feedback notes sent in a server (None: in DMs), with the reply each is about."""
        rows = self.db.query(
            "SELECT id, user_id, user_name, text, about_reply, created_at FROM feedback WHERE guild_id IS ?"
            " ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [dict(r) for r in rows]

    def ratings(self, guild_id: int | None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ratings of the bot's replies in a server (None: in DMs), with the question and the reply."""
        rows = self.db.query(
            "SELECT r.id, r.user_id, r.emoji, r.rating, r.input, r.reply, r.created_at FROM reactions r"
            " JOIN replies p ON p.bot_message_id = r.bot_message_id WHERE p.guild_id IS ? ORDER BY r.id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [dict(r) for r in rows]

    def add_reaction(self, *, user_id: int, emoji: str, rating: int, reply: ReplyRecord) -> Rating | None:
        """Stores a person's rating of a reply in place of their earlier one there; None when it already was theirs."""
        with self.db.transaction() as db:
            rows = db.execute(
                "SELECT id, user_id, emoji FROM reactions WHERE bot_message_id = ? ORDER BY id", (reply.bot_message_id,)
            ).fetchall()
            theirs = [row for row in rows if row["user_id"] == user_id]
            others = [row for row in theirs if row["emoji"] != emoji]
            # Rows of both emoji by one person were written before ratings replaced each other: tidied here.
            db.executemany("DELETE FROM reactions WHERE id = ?", [(row["id"],) for row in others])
            if len(others) < len(theirs):
                return None
            db.execute(
                "INSERT INTO reactions (bot_message_id, user_id, emoji, rating, input, reply, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (reply.bot_message_id, user_id, emoji, rating, reply.input, reply.reply, utc_now()),
            )
            return Rating(emoji, replaced=others[-1]["emoji"] if others else None, first=not rows)

    def remove_reaction(self, *, user_id: int, bot_message_id: int, emoji: str) -> bool:
        """Removes a person's rating of a reply when ``emoji`` is it; False when theirs is another, or none."""
        with self.db.transaction() as db:
            return (
                db.execute(
                    "DELETE FROM reactions WHERE bot_message_id = ? AND user_id = ? AND emoji = ?",
                    (bot_message_id, user_id, emoji),
                ).rowcount
                > 0
            )

    def add_correction(
        self, *, reply: ReplyRecord, user_id: int | None, correction: str, change: Change | None = None
    ) -> int:
        """The correction and its two examples, in the base of the place the reply was given, all or nothing."""
        with self.db.transaction() as db:
            note(db, reply.base, change)
            return insert_correction(db, reply=reply, user_id=user_id, correction=correction)


def insert_correction(db: Any, *, reply: ReplyRecord, user_id: int | None, correction: str) -> int:
    """``add_correction`` inside a transaction already open (accepting a suggestion closes its topic in the same)."""
    now = utc_now()
    base = reply.base
    ensure_base(db, base)
    insert = (
        "INSERT INTO examples (base, input, output, positive, source, author_id, created_at)"
        " VALUES (?, ?, ?, ?, 'correction', ?, ?) RETURNING id"
    )
    good = db.execute(insert, (base, reply.input, correction, 1, user_id, now)).fetchone()[0]
    bad = db.execute(insert, (base, reply.input, reply.reply, 0, user_id, now)).fetchone()[0]
    return db.execute(
        "INSERT INTO corrections (base, bot_message_id, user_id, input, bad_reply, correction,"
        " positive_example_id, negative_example_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (base, reply.bot_message_id, user_id, reply.input, reply.reply, correction, good, bad, now),
    ).fetchone()[0]
