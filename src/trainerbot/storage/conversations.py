"""Conversations: what was said in each channel, thread and DM, the bot's replies, and personas.

A conversation is a channel (or thread, or DM channel), whose ids Discord never repeats across
servers; the console's conversations have ids of 0 and below, which Discord never gives.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainerbot.storage.database import Database, utc_now
from trainerbot.types import Place, ReplyRecord, Turn


class Conversations:
    def __init__(self, db: Database) -> None:
        self.db = db

    def next_local_message_id(self) -> int:
        """Message ids for the console: small numbers that never meet Discord's 64-bit snowflakes."""
        row = self.db.query_one(
            "SELECT coalesce(max(bot_message_id), 0) AS id FROM replies WHERE bot_message_id < ?", (1 << 32,)
        )
        return int(row["id"]) + 1 if row else 1

    def reply(self, place: Place, bot_message_id: int) -> ReplyRecord | None:
        """One of the bot's replies given in ``place``: in its server, or in that DM channel; else None.

        A reply given anywhere else is not found, exactly as an id that names nothing.
        """
        where = "guild_id = ?" if place.guild_id is not None else "guild_id IS NULL AND channel_id IS ?"
        row = self.db.query_one(
            "SELECT bot_message_id, user_message_id, user_id, input, reply, source, confidence, guild_id, channel_id"
            f" FROM replies WHERE bot_message_id = ? AND {where}",
            (bot_message_id, place.guild_id if place.guild_id is not None else place.channel_id),
        )
        return ReplyRecord(**dict(row)) if row else None

    def add_turn(
        self,
        *,
        conversation_id: int,
        guild_id: int | None,
        user_id: int | None,
        role: str,
        content: str,
        message_id: int | None = None,
        reply_to: int | None = None,
        source: str | None = None,
    ) -> int:
        """Stores a turn; a user's message already stored (taken up again after a restart) is not stored twice."""
        # Only the process that claimed the message stores its turns: no other writer to wait for.
        with self.db.transaction(serialized=False) as db:
            if role == "user" and message_id is not None:
                row = db.execute(
                    "SELECT id FROM chat_turns WHERE conversation_id = ? AND role = 'user' AND message_id = ?",
                    (conversation_id, message_id),
                ).fetchone()
                if row is not None:
                    return int(row["id"])
            return db.execute(
                "INSERT INTO chat_turns (conversation_id, guild_id, user_id, role, content, message_id, reply_to,"
                " source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (conversation_id, guild_id, user_id, role, content, message_id, reply_to, source, utc_now()),
            ).fetchone()[0]

    def set_turn_context(self, turn_id: int, context: str | None) -> None:
        with self.db.transaction(serialized=False) as db:
            db.execute("UPDATE chat_turns SET context = ? WHERE id = ?", (context, turn_id))

    def record_answer(
        self,
        *,
        conversation_id: int,
        guild_id: int | None,
        channel_id: int | None,
        asked: int,
        answer: ReplyRecord,
        message_ids: Sequence[int],
    ) -> int:
        """The bot's turn and the messages that carried it, stored together; returns the turn's id."""
        now = utc_now()
        with self.db.transaction(serialized=False) as db:  # written, not read: no other writer to wait for
            turn_id = db.execute(
                "INSERT INTO chat_turns (conversation_id, guild_id, user_id, role, content, message_id, reply_to,"
                " source, created_at) VALUES (?, ?, ?, 'assistant', ?, ?, ?, ?, ?) RETURNING id",
                (
                    conversation_id,
                    guild_id,
                    answer.user_id,
                    answer.reply,
                    message_ids[0] if message_ids else None,
                    asked,
                    answer.source,
                    now,
                ),
            ).fetchone()[0]
            db.executemany(
                "INSERT INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bot_message_id) DO UPDATE SET"
                " user_message_id = excluded.user_message_id, user_id = excluded.user_id, guild_id = excluded.guild_id,"
                " channel_id = excluded.channel_id, input = excluded.input, reply = excluded.reply,"
                " source = excluded.source, confidence = excluded.confidence, created_at = excluded.created_at",
                [
                    (
                        message_id,
                        answer.user_message_id,
                        answer.user_id,
                        guild_id,
                        channel_id,
                        answer.input,
                        answer.reply,
                        answer.source,
                        answer.confidence,
                        now,
                    )
                    for message_id in message_ids
                ],
            )
            return turn_id

    def turns(self, conversation_id: int, *, before: int | None = None, limit: int = 200) -> list[Turn]:
        """The newest ``limit`` turns of a conversation before turn ``before``, oldest first."""
        rows = self.db.query(
            "SELECT id, role, content, user_id, source, context FROM chat_turns WHERE conversation_id = ? AND id < ?"
            " ORDER BY id DESC LIMIT ?",
            (conversation_id, before if before is not None else 1 << 62, limit),
        )
        return [Turn(**dict(r)) for r in reversed(rows)]

    def forget_conversation(self, conversation_id: int, user_id: int | None = None) -> int:
        """Deletes a conversation's turns, or only one user's (with the bot's answers to them).

        Returns how many of the users' messages were forgotten.
        """
        with self.db.transaction() as db:
            mine = "" if user_id is None else " AND user_id = ?"
            params = (conversation_id,) if user_id is None else (conversation_id, user_id)
            count = db.execute(
                f"SELECT count(*) FROM chat_turns WHERE conversation_id = ? AND role = 'user'{mine}", params
            ).fetchone()[0]
            db.execute(f"DELETE FROM chat_turns WHERE conversation_id = ?{mine}", params)
            return int(count)

    def persona(self, conversation_id: int) -> str | None:
        row = self.db.query_one("SELECT text FROM personas WHERE conversation_id = ?", (conversation_id,))
        return row["text"] if row else None

    def set_persona(self, conversation_id: int, text: str | None, *, user_id: int | None) -> None:
        """Sets a conversation's persona; None returns it to the default."""
        with self.db.transaction() as db:
            if text is None:
                db.execute("DELETE FROM personas WHERE conversation_id = ?", (conversation_id,))
            else:
                db.execute(
                    "INSERT INTO personas VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET"
                    " text = excluded.text, set_by = excluded.set_by, set_at = excluded.set_at",
                    (conversation_id, text, user_id, utc_now()),
                )

    def has_answer(self, user_message_id: int) -> bool:
        """Whether an answer to this message was stored (it was given in full)."""
        row = self.db.query_one("SELECT 1 FROM replies WHERE user_message_id = ? LIMIT 1", (user_message_id,))
        return row is not None
