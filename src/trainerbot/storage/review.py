"""Each base's review inbox: what the bot could not answer or answered badly, grouped by meaning into topics.

Items are messages the taught model was not confident about (``unknown``), replies rated 👎
(``disliked``), replies an admin corrected (``corrected``: answered at once, kept for the record)
and members' suggested corrections (``suggestion``). Unknown and disliked items join the open
question topic of their base whose centroid is nearest, when it is near enough, else start one; a
suggestion carries its own answer, so it is a topic of its own, accepted or rejected in one step.
A topic keeps the running sum of its items' embeddings: its centroid is that sum, normalised.

Every call names its base, and nothing here reads or changes another base's rows. A base keeps at
most ``max_items`` items; the oldest go first, so the inbox cannot grow without bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from trainerbot.storage.audit import Change, note
from trainerbot.storage.database import Database, utc_now
from trainerbot.storage.feedback import insert_correction
from trainerbot.storage.knowledge import ensure_base
from trainerbot.types import ReplyRecord, ReviewItem, ReviewTopic

MAX_ITEMS = 10_000  # per base
TOPIC_KIND = {"unknown": "questions", "disliked": "questions", "suggestion": "suggestion", "corrected": "correction"}
_TOPIC = (
    "SELECT t.id, t.base, t.kind, t.status, t.answer, t.created_at, count(i.id) AS items,"
    " count(DISTINCT i.user_id) AS people, count(CASE WHEN i.kind = 'disliked' THEN 1 END) AS disliked"
    " FROM review_topics t JOIN review_items i ON i.topic_id = t.id"
)


def _vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32)


def _topic(row: Any) -> ReviewTopic:
    return ReviewTopic(**{key: row[key] for key in ReviewTopic.__dataclass_fields__})


def _item(row: Any) -> ReviewItem:
    return ReviewItem(**{key: row[key] for key in ReviewItem.__dataclass_fields__})


def remove_items(db: Any, rows: Iterable[Any]) -> int:
    """Deletes items (rows of id, topic_id, vector) inside an open transaction: their vectors leave their
    topics' sums, and topics left with no items go too. Returns how many items were deleted."""
    by_topic: dict[int, list[Any]] = {}
    for row in rows:
        by_topic.setdefault(row["topic_id"], []).append(row)
    deleted = 0
    for topic_id, items in by_topic.items():
        deleted += db.executemany("DELETE FROM review_items WHERE id = ?", [(row["id"],) for row in items]).rowcount
        if db.execute("SELECT 1 FROM review_items WHERE topic_id = ? LIMIT 1", (topic_id,)).fetchone() is None:
            db.execute("DELETE FROM review_topics WHERE id = ?", (topic_id,))
            continue
        (current,) = db.execute("SELECT vector_sum FROM review_topics WHERE id = ?", (topic_id,)).fetchone()
        total = _vector(current) - np.sum([_vector(row["vector"]) for row in items], axis=0, dtype=np.float32)
        db.execute(
            "UPDATE review_topics SET vector_sum = ? WHERE id = ?", (total.astype(np.float32).tobytes(), topic_id)
        )
    return deleted


def forget_person(db: Any, user_id: int) -> tuple[int, int]:
    """Inside `!forget me`'s transaction: the person's items, and the items quoting their question, are
    deleted; so are the examples `!answer` made from their questions. Returns (items, examples)."""
    made = [(row[0],) for row in db.execute("SELECT example_id FROM review_examples WHERE user_id = ?", (user_id,))]
    db.executemany("DELETE FROM example_vectors WHERE example_id = ?", made)
    db.executemany("DELETE FROM review_examples WHERE example_id = ?", made)
    examples = db.executemany("DELETE FROM examples WHERE id = ?", made).rowcount if made else 0
    rows = db.execute(
        "SELECT id, topic_id, vector FROM review_items WHERE user_id = ?1 OR asked_by = ?1", (user_id,)
    ).fetchall()
    return remove_items(db, rows), examples


class ReviewInbox:
    def __init__(self, db: Database, max_items: int = MAX_ITEMS) -> None:
        self.db = db
        self.max_items = max_items

    # --- what comes in ------------------------------------------------------------------------------

    def add(self, base: int, item: ReviewItem, vector: np.ndarray, min_similarity: float) -> int:
        """Stores an item with its unit-length embedding and returns its topic's id.

        An unknown or disliked item joins the open question topic whose centroid has the highest cosine
        with it, if that is at least ``min_similarity``; otherwise, and for every other kind, it starts a
        topic (an admin's correction starts one already answered). Choosing and joining happen in one
        transaction, so two items arriving together cannot both start the same topic's twin by racing.
        """
        vector = np.asarray(vector, dtype=np.float32)
        kind = TOPIC_KIND[item.kind]
        now = utc_now()
        with self.db.transaction() as db:
            ensure_base(db, base)
            topic_id = self._nearest(db, base, vector, min_similarity) if kind == "questions" else None
            if topic_id is None:
                answered = kind == "correction"
                topic_id = db.execute(
                    "INSERT INTO review_topics (base, kind, status, vector_sum, answer, closed_by, closed_at,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (
                        base,
                        kind,
                        "answered" if answered else "open",
                        vector.tobytes(),
                        item.suggestion if answered else None,
                        item.user_id if answered else None,
                        now if answered else None,
                        now,
                    ),
                ).fetchone()[0]
            else:
                (current,) = db.execute("SELECT vector_sum FROM review_topics WHERE id = ?", (topic_id,)).fetchone()
                db.execute(
                    "UPDATE review_topics SET vector_sum = ? WHERE id = ?",
                    ((_vector(current) + vector).tobytes(), topic_id),
                )
            db.execute(
                "INSERT INTO review_items (base, topic_id, kind, user_id, user_name, asked_by, text, reply, suggestion,"
                " bot_message_id, vector, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    base,
                    topic_id,
                    item.kind,
                    item.user_id,
                    item.user_name,
                    item.asked_by,
                    item.text,
                    item.reply,
                    item.suggestion,
                    item.bot_message_id,
                    vector.tobytes(),
                    now,
                ),
            )
            self._prune(db, base)
        return topic_id

    def withdraw_disliked(self, base: int, bot_message_id: int, user_id: int) -> int:
        """Takes a person's 👎 of a reply, changed or taken back, out of this base's open topics; in a topic
        already answered or dismissed it stays, the record of what was done. Returns how many items went."""
        with self.db.transaction() as db:
            rows = db.execute(
                "SELECT i.id, i.topic_id, i.vector FROM review_items i JOIN review_topics t ON t.id = i.topic_id"
                " WHERE i.base = ? AND i.kind = 'disliked' AND i.bot_message_id = ? AND i.user_id = ?"
                " AND t.status = 'open'",
                (base, bot_message_id, user_id),
            ).fetchall()
            return remove_items(db, rows)

    @staticmethod
    def _nearest(db: Any, base: int, vector: np.ndarray, min_similarity: float) -> int | None:
        rows = db.execute(
            "SELECT id, vector_sum FROM review_topics WHERE base = ? AND status = 'open' AND kind = 'questions'",
            (base,),
        ).fetchall()
        if not rows:
            return None
        sums = np.stack([_vector(row["vector_sum"]) for row in rows])
        similarity = sums @ vector / np.linalg.norm(sums, axis=1).clip(1e-12)
        best = int(np.argmax(similarity))
        return int(rows[best]["id"]) if similarity[best] >= min_similarity else None

    def _prune(self, db: Any, base: int) -> None:
        (count,) = db.execute("SELECT count(*) FROM review_items WHERE base = ?", (base,)).fetchone()
        if count > self.max_items:
            oldest = db.execute(
                "SELECT id, topic_id, vector FROM review_items WHERE base = ? ORDER BY id LIMIT ?",
                (base, count - self.max_items),
            ).fetchall()
            remove_items(db, oldest)

    # --- what admins see ----------------------------------------------------------------------------

    def open_topics(self, base: int, limit: int = 10) -> list[ReviewTopic]:
        """The open topics, most people first, then most items, then the oldest."""
        rows = self.db.query(
            f"{_TOPIC} WHERE t.base = ? AND t.status = 'open' GROUP BY t.id"
            " ORDER BY people DESC, items DESC, t.id LIMIT ?",
            (base, limit),
        )
        return [_topic(row) for row in rows]

    def open_counts(self, base: int) -> tuple[int, int]:
        """How many topics are open, and how many of them are suggestions."""
        row = self.db.query_one(
            "SELECT count(*) AS n, count(CASE WHEN kind = 'suggestion' THEN 1 END) AS suggestions FROM review_topics"
            " WHERE base = ? AND status = 'open'",
            (base,),
        )
        assert row is not None
        return int(row["n"]), int(row["suggestions"])

    def topic(self, base: int, topic_id: int) -> ReviewTopic | None:
        row = self.db.query_one(f"{_TOPIC} WHERE t.base = ? AND t.id = ? GROUP BY t.id", (base, topic_id))
        return _topic(row) if row else None

    def items(self, base: int, topic_id: int) -> list[ReviewItem]:
        rows = self.db.query("SELECT * FROM review_items WHERE base = ? AND topic_id = ? ORDER BY id", (base, topic_id))
        return [_item(row) for row in rows]

    def samples(self, base: int, topic_id: int, limit: int = 3) -> list[str]:
        """A topic's most asked questions (the same words in any case count as one), first asked first among equals."""
        # Each group's words as first asked; the ids first, as PostgreSQL names no row of a group by itself.
        firsts = self.db.query(
            "SELECT min(id) AS first FROM review_items WHERE base = ? AND topic_id = ? GROUP BY lower(text)"
            " ORDER BY count(*) DESC, min(id) LIMIT ?",
            (base, topic_id, limit),
        )
        ids = [row["first"] for row in firsts]
        if not ids:
            return []
        texts = dict(self.db.query(f"SELECT id, text FROM review_items WHERE id IN ({', '.join('?' * len(ids))})", ids))
        return [texts[item_id] for item_id in ids]

    # --- what admins decide -------------------------------------------------------------------------

    def answer_questions(
        self,
        base: int,
        topic_id: int,
        questions: Sequence[tuple[str, Iterable[int]]],
        output: str,
        *,
        by: int | None,
        change: Change | None = None,
    ) -> list[int] | None:
        """A positive example ``question => output`` for each question (with who asked it), and the topic answered,
        all or nothing. None, and nothing stored, when the topic is no longer open (another admin was quicker)."""
        now = utc_now()
        with self.db.transaction() as db:
            if not _close(db, base, topic_id, "answered", by, output):
                return None
            ids = []
            for question, askers in questions:
                example_id = db.execute(
                    "INSERT INTO examples (base, input, output, positive, source, author_id, created_at)"
                    " VALUES (?, ?, ?, 1, ?, ?, ?) RETURNING id",
                    (base, question, output, f"review:{topic_id}", by, now),
                ).fetchone()[0]
                db.executemany(
                    "INSERT INTO review_examples (example_id, user_id, topic_id) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [(example_id, asker, topic_id) for asker in set(askers)],
                )
                ids.append(example_id)
            note(db, base, change)
            return ids

    def accept_suggestion(
        self,
        base: int,
        topic_id: int,
        *,
        reply: ReplyRecord,
        correction: str,
        user_id: int | None,
        by: int | None,
        change: Change | None = None,
    ) -> int | None:
        """The suggestion's topic answered and the correction stored (``user_id`` made it: the member who suggested
        it, or the admin who gave their own), all or nothing; None when the topic is no longer open."""
        with self.db.transaction() as db:
            if not _close(db, base, topic_id, "answered", by, correction):
                return None
            note(db, base, change)
            return insert_correction(db, reply=reply, user_id=user_id, correction=correction)

    def dismiss(self, base: int, topic_id: int, by: int | None, change: Change | None = None) -> bool:
        """Hides an open topic (rejects a suggestion); False when it was not open."""
        with self.db.transaction() as db:
            if not _close(db, base, topic_id, "dismissed", by, None):
                return False
            note(db, base, change)
            return True


def _close(db: Any, base: int, topic_id: int, status: str, by: int | None, answer: str | None) -> bool:
    return (
        db.execute(
            "UPDATE review_topics SET status = ?, answer = ?, closed_by = ?, closed_at = ?"
            " WHERE id = ? AND base = ? AND status = 'open'",
            (status, answer, by, utc_now(), topic_id, base),
        ).rowcount
        == 1
    )
