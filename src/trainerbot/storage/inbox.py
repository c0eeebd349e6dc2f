"""Which Discord messages the bot took on, so each is handled once and none is missed across restarts."""

from __future__ import annotations

from collections.abc import Sequence

from trainerbot.storage.database import Database


class HandledMessages:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim_message(self, message_id: int, channel_id: int, *, forget_before: int, direct: bool = False) -> bool:
        """Marks a message as taken on; False when it already was (an event delivered again).

        Claims with ids below ``forget_before`` are dropped in the same transaction (an index
        range, so nearly free when there are none).
        """
        # A claim reads nothing first: the insert that finds the row there already is the answer.
        with self.db.transaction(serialized=False) as db:
            db.execute("DELETE FROM handled_messages WHERE message_id < ?", (forget_before,))
            cursor = db.execute(
                "INSERT INTO handled_messages (message_id, channel_id, direct) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (message_id, channel_id, direct),
            )
            return cursor.rowcount == 1

    def handled_among(self, message_ids: Sequence[int]) -> set[int]:
        """Which of these messages were already taken on."""
        if not message_ids:
            return set()
        marks = ", ".join("?" * len(message_ids))
        sql = f"SELECT message_id FROM handled_messages WHERE message_id IN ({marks})"
        rows = self.db.query(sql, tuple(message_ids))
        return {row["message_id"] for row in rows}

    def finish_message(self, message_id: int) -> None:
        """The message's handling ended (answered, or refused with a reason)."""
        with self.db.transaction(serialized=False) as db:
            db.execute("UPDATE handled_messages SET finished = 1 WHERE message_id = ?", (message_id,))

    def unfinished_among(self, message_ids: Sequence[int]) -> set[int]:
        """Which of these messages were taken on but never finished (a restart cut them off)."""
        if not message_ids:
            return set()
        marks = ", ".join("?" * len(message_ids))
        sql = f"SELECT message_id FROM handled_messages WHERE finished = 0 AND message_id IN ({marks})"
        return {row["message_id"] for row in self.db.query(sql, tuple(message_ids))}

    def first_handled_message(self) -> int | None:
        """The oldest message still on record as taken on (None: nothing handled yet)."""
        row = self.db.query_one("SELECT min(message_id) AS id FROM handled_messages")
        return row["id"] if row else None

    def channels_handled_since(self, message_id: int) -> list[int]:
        """DM channels (and those of claims older than the ``direct`` mark) where a message newer than
        ``message_id`` was taken on."""
        rows = self.db.query(
            "SELECT DISTINCT channel_id FROM handled_messages WHERE message_id > ? AND coalesce(direct, 1) = 1",
            (message_id,),
        )
        return [row["channel_id"] for row in rows]
