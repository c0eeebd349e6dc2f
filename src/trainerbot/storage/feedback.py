"""What people say about the bot's replies: feedback notes, 👍/👎 ratings and corrections."""

from __future__ import annotations

from typing import Any

from trainerbot.storage.database import Database, utc_now
from trainerbot.storage.knowledge import ensure_base
from trainerbot.types import ReplyRecord


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
                " about_message_id, about_reply, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ).lastrowid

    def add_reaction(self, *, user_id: int, emoji: str, rating: int, reply: ReplyRecord) -> bool:
        """Stores a rating once per user, message and emoji; False when it was already there."""
        with self.db.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO reactions (bot_message_id, user_id, emoji, rating, input, reply, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (reply.bot_message_id, user_id, emoji, rating, reply.input, reply.reply, utc_now()),
            )
            return cursor.rowcount == 1

    def add_correction(self, *, reply: ReplyRecord, user_id: int | None, correction: str) -> int:
        """The correction and its two examples, in the base of the place the reply was given, all or nothing."""
        with self.db.transaction() as db:
            return insert_correction(db, reply=reply, user_id=user_id, correction=correction)


def insert_correction(db: Any, *, reply: ReplyRecord, user_id: int | None, correction: str) -> int:
    """``add_correction`` inside a transaction already open (accepting a suggestion closes its topic in the same)."""
    now = utc_now()
    base = reply.base
    ensure_base(db, base)
    insert = (
        "INSERT INTO examples (base, input, output, positive, source, author_id, created_at)"
        " VALUES (?, ?, ?, ?, 'correction', ?, ?)"
    )
    good = db.execute(insert, (base, reply.input, correction, 1, user_id, now)).lastrowid
    bad = db.execute(insert, (base, reply.input, reply.reply, 0, user_id, now)).lastrowid
    return db.execute(
        "INSERT INTO corrections (base, bot_message_id, user_id, input, bad_reply, correction,"
        " positive_example_id, negative_example_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (base, reply.bot_message_id, user_id, reply.input, reply.reply, correction, good, bad, now),
    ).lastrowid
