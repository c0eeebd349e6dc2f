"""Everything stored about one person, across every table and base: a copy of it, and forgetting it."""

from __future__ import annotations

from typing import Any

from trainerbot.storage.database import Database
from trainerbot.storage.knowledge import APPROVED
from trainerbot.storage.review import forget_person
from trainerbot.types import Forgotten


class People:
    def __init__(self, db: Database) -> None:
        self.db = db

    def data(self, user_id: int) -> dict[str, list[dict[str, Any]]]:
        """Every row about one person, by table, read in one transaction so the copy is consistent."""
        with self.db.transaction() as db:
            return {
                table: [dict(row) for row in db.execute(sql, (user_id,))] for table, sql in _ROWS_ABOUT_A_USER.items()
            }

    def forget(self, user_id: int) -> Forgotten:
        """Deletes what one person gave the bot, all or nothing; see ``Forgotten`` for what is kept.

        Examples count as approved (kept) when an admin put them in: through `!train` or a
        selected dataset. Examples made by the person's own corrections are deleted.
        """
        with self.db.transaction() as db:

            def count(sql: str) -> int:
                return int(db.execute(sql, (user_id,)).fetchone()[0])

            def change(sql: str) -> int:
                return db.execute(sql, (user_id,)).rowcount

            # First what others gave about the bot's replies to this person, while those replies are known
            answered = "SELECT bot_message_id FROM replies WHERE user_id = ?1"
            others = f"FROM corrections WHERE user_id IS NOT ?1 AND bot_message_id IN ({answered})"
            made = f"SELECT positive_example_id {others} UNION SELECT negative_example_id {others}"
            made_ids = [(row[0],) for row in db.execute(made, (user_id,))]
            corrected_by_others = change(f"DELETE {others}")
            db.executemany("DELETE FROM example_vectors WHERE example_id = ?", made_ids)
            examples_of_others = sum(
                db.execute(f"DELETE FROM examples WHERE id = ? AND NOT {APPROVED}", row).rowcount for row in made_ids
            )
            quoted_by_others = change(
                "UPDATE reactions SET input = NULL, reply = NULL WHERE user_id IS NOT ?1"
                f" AND bot_message_id IN ({answered}) AND (input IS NOT NULL OR reply IS NOT NULL)"
            ) + change(
                "UPDATE feedback SET about_reply = NULL"
                f" WHERE user_id IS NOT ?1 AND about_message_id IN ({answered}) AND about_reply IS NOT NULL"
            )
            # The review inboxes: what they gave or asked, and examples admins taught from their questions
            review_items, review_examples = forget_person(db, user_id)
            where = db.execute("SELECT DISTINCT conversation_id FROM chat_turns WHERE user_id = ?", (user_id,))
            conversations = tuple(row[0] for row in where)
            messages = count("SELECT count(*) FROM chat_turns WHERE user_id = ? AND role = 'user'")
            answers = count("SELECT count(*) FROM chat_turns WHERE user_id = ? AND role = 'assistant'")
            change("DELETE FROM chat_turns WHERE user_id = ?")
            reply_records = change("DELETE FROM replies WHERE user_id = ?")
            feedback = change("DELETE FROM feedback WHERE user_id = ?")
            reactions = change("DELETE FROM reactions WHERE user_id = ?")
            corrections = change("DELETE FROM corrections WHERE user_id = ?")  # first: they point at the examples
            theirs = f"FROM examples WHERE author_id = ? AND NOT {APPROVED}"
            change(f"DELETE FROM example_vectors WHERE example_id IN (SELECT id {theirs})")
            examples = change(f"DELETE {theirs}")
            kept_trained = count("SELECT count(*) FROM examples WHERE author_id = ? AND dataset_id IS NULL")
            kept_dataset = count("SELECT count(*) FROM examples WHERE author_id = ? AND dataset_id IS NOT NULL")
            change("UPDATE examples SET author_id = NULL WHERE author_id = ?")
            change("DELETE FROM test_failures WHERE run_id IN (SELECT id FROM test_runs WHERE user_id = ?)")
            test_runs = change("DELETE FROM test_runs WHERE user_id = ?")
            unlinked = (
                change("UPDATE jobs SET requested_by = NULL WHERE requested_by = ?")
                + change("UPDATE datasets SET created_by = NULL WHERE created_by = ?")
                + change("UPDATE personas SET set_by = NULL WHERE set_by = ?")
                + change("UPDATE bases SET changed_by = NULL WHERE changed_by = ?")
                + change("UPDATE review_topics SET closed_by = NULL WHERE closed_by = ?")
            )
            # What they changed stays in the bases' trails (it happened), without who they were.
            audit_entries = change("UPDATE audit SET user_id = NULL, user_name = NULL WHERE user_id = ?")
            sessions = change("DELETE FROM web_sessions WHERE user_id = ?")
        return Forgotten(
            messages=messages,
            answers=answers,
            reply_records=reply_records,
            feedback=feedback,
            reactions=reactions,
            corrections=corrections,
            examples=examples,
            test_runs=test_runs,
            kept_trained=kept_trained,
            kept_dataset=kept_dataset,
            unlinked=unlinked,
            conversations=conversations,
            corrected_by_others=corrected_by_others,
            examples_of_others=examples_of_others,
            quoted_by_others=quoted_by_others,
            review_items=review_items,
            review_examples=review_examples,
            audit_entries=audit_entries,
            sessions=sessions,
        )


# Every table with a column naming a person, and the query for one person's rows. The bot's
# chat turns carry the id of the person they answer, so "their history" is one condition.
_ROWS_ABOUT_A_USER = {
    "chat_turns": "SELECT * FROM chat_turns WHERE user_id = ? ORDER BY id",
    "replies": "SELECT * FROM replies WHERE user_id = ? ORDER BY created_at, bot_message_id",
    "feedback": "SELECT * FROM feedback WHERE user_id = ? ORDER BY id",
    "reactions": "SELECT * FROM reactions WHERE user_id = ? ORDER BY id",
    "corrections": "SELECT * FROM corrections WHERE user_id = ? ORDER BY id",
    "examples": "SELECT * FROM examples WHERE author_id = ? ORDER BY id",
    "test_runs": "SELECT * FROM test_runs WHERE user_id = ? ORDER BY id",
    "test_failures": "SELECT * FROM test_failures WHERE run_id IN (SELECT id FROM test_runs WHERE user_id = ?)"
    " ORDER BY id",
    "jobs": "SELECT * FROM jobs WHERE requested_by = ? ORDER BY id",
    "datasets": "SELECT * FROM datasets WHERE created_by = ? ORDER BY id",
    "personas": "SELECT * FROM personas WHERE set_by = ? ORDER BY conversation_id",
    "bases": "SELECT id, use_global, admin_roles, persona, changed_at FROM bases WHERE changed_by = ? ORDER BY id",
    "review_items": "SELECT id, base, topic_id, kind, user_id, user_name, asked_by, text, reply, suggestion,"
    " bot_message_id, created_at FROM review_items WHERE user_id = ?1 OR asked_by = ?1 ORDER BY id",
    "review_examples": "SELECT r.example_id, r.topic_id, e.base, e.input, e.output, e.created_at FROM review_examples r"
    " JOIN examples e ON e.id = r.example_id WHERE r.user_id = ? ORDER BY r.example_id",
    "review_topics": "SELECT id, base, kind, status, answer, closed_at FROM review_topics WHERE closed_by = ?"
    " ORDER BY id",
    "audit": "SELECT * FROM audit WHERE user_id = ? ORDER BY id",
    # Not web_sessions: a sign-in's row is its secrets (the token's hash, the CSRF token) and what Discord said of
    # the person's servers at sign-in, nothing they gave the bot; a copy sent around must not carry them.
    # `!forget me` deletes them all the same (it signs the person out).
}
