"""What the bot keeps about a person: a copy of all of it (`!mydata`), and forgetting it (`!forget me`).

The copy is one JSON document, grouped by table (see ``Store.user_data``), with a format name
and version so a reader can tell what it holds. Ids are written as strings: Discord's ids are
64-bit and a JSON number loses their last digits in JavaScript, the way Discord's API avoids it.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from typing import Any

from trainerbot.core.conversation import Conversation
from trainerbot.core.files import timestamp
from trainerbot.core.text import count
from trainerbot.errors import TooLarge
from trainerbot.storage.database import utc_now
from trainerbot.storage.store import Store
from trainerbot.types import Caller, Forgotten, OutFile, Reply, human_size

log = logging.getLogger(__name__)

FORMAT = "trainerbot-mydata"
VERSION = 1
ABOUT = {
    "chat_turns": "your messages to me and my replies to them, in every channel, thread and DM",
    "replies": "which of my messages answered which of your messages",
    "feedback": "what you sent with !feedback",
    "reactions": "your 👍 and 👎 on my replies",
    "corrections": "your !correct corrections",
    "examples": "examples you taught (!train, a dataset you selected) or your corrections made",
    "test_runs": "your !test runs",
    "test_failures": "the failed cases of your !test runs",
    "jobs": "training jobs you started",
    "datasets": "datasets you selected",
    "personas": "personas you set",
    "bases": "settings you last changed for a server with !config",
    "review_items": "in servers' review inboxes: your messages I could not answer, your 👎 ratings and suggested "
    "corrections, and others' about my replies to you",
    "review_examples": "examples an admin taught (!answer) from your questions in a review inbox",
    "review_topics": "review inbox topics you answered or dismissed",
    "audit": "changes you made to a server's knowledge, model, review inbox or settings, as its audit trail lists them",
}
NOT_INCLUDED = (
    "The embeddings of your examples and review inbox entries (numbers computed from their text) and the "
    "trained model files are not included; the model keeps what it learned until the next training."
)
_PERSON_COLUMNS = {"requested_by", "created_by", "set_by", "asked_by"}


def _is_id(column: str) -> bool:
    return column == "id" or column.endswith("_id") or column in _PERSON_COLUMNS


def _portable(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-safe values: ids (and columns naming a person) as strings."""
    return {key: str(value) if value is not None and _is_id(key) else value for key, value in row.items()}


class PrivacyService:
    def __init__(self, store: Store, conversation: Conversation, upload_limit: int, prefix: str) -> None:
        self.store = store
        self.conversation = conversation
        self.upload_limit = upload_limit
        self.prefix = prefix

    def export(self, user_id: int) -> dict[str, Any]:
        """Everything stored about a person, as the JSON document `!mydata` sends."""
        tables = self.store.people.data(user_id)
        return {
            "format": FORMAT,
            "version": VERSION,
            "user_id": str(user_id),
            "exported_at": utc_now(),
            "about": ABOUT,
            "not_included": NOT_INCLUDED,
            "tables": {table: [_portable(row) for row in rows] for table, rows in tables.items()},
        }

    def my_data(self, caller: Caller) -> Reply:
        """The caller's data as a JSON file, zipped when it is over the upload limit."""
        document = self.export(caller.user_id)
        data = json.dumps(document, ensure_ascii=False, indent=1).encode()
        name = f"mydata-{caller.user_id}-{timestamp()}"
        rows = sum(len(rows) for rows in document["tables"].values())
        text = (
            f"Everything I have stored about you: {rows} record{'s' * (rows != 1)}, by table, "
            "as JSON (`about` in the file says what each table holds)."
        )
        if len(data) <= self.upload_limit:
            return Reply(text, [OutFile(f"{name}.json", data)])
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            archive.writestr(f"{name}.json", data)
        zipped = buffer.getvalue()
        if len(zipped) > self.upload_limit:
            log.warning("the data of user %s is %d bytes zipped, over the upload limit", caller.user_id, len(zipped))
            raise TooLarge(
                f"Your data is {human_size(len(zipped))} even zipped, more than the {human_size(self.upload_limit)} "
                "I can send. Ask the bot's owners for a copy."
            )
        return Reply(text + f" Zipped: the JSON is {human_size(len(data))}.", [OutFile(f"{name}.zip", zipped)])

    def forget_me(self, caller: Caller) -> Reply:
        """Deletes what the caller gave the bot (all or nothing) and says what went and what stayed."""
        forgotten = self.store.people.forget(caller.user_id)
        self.conversation.reset_windows(forgotten.conversations)
        log.info("forgot user %s: %d records deleted", caller.user_id, forgotten.deleted)
        return Reply(forget_text(forgotten, self.prefix))


def forget_text(f: Forgotten, prefix: str = "!") -> str:
    """The answer to `!forget me`: what was deleted, what was kept and why, and what the model still knows."""
    deleted = [
        part
        for n, part in (
            (f.messages, count(f.messages, "message") + " you sent me"),
            (f.answers, count(f.answers, "reply", "replies") + " of mine to them"),
            (f.reply_records, count(f.reply_records, "record") + " of which message of mine answered you"),
            (f.feedback, count(f.feedback, "feedback note")),
            (f.reactions, count(f.reactions, "rating")),
            (f.corrections, count(f.corrections, "correction")),
            (f.examples, count(f.examples, "example") + " your corrections made"),
            (f.test_runs, count(f.test_runs, "test run")),
            (f.review_items, count(f.review_items, "review inbox entry", "review inbox entries")),
            (f.review_examples, count(f.review_examples, "example") + " admins taught from your questions"),
        )
        if n
    ]
    kept = [
        part
        for n, part in (
            (f.kept_trained, count(f.kept_trained, "example") + f" taught with `{prefix}train`"),
            (f.kept_dataset, count(f.kept_dataset, "example") + " from a dataset you selected"),
        )
        if n
    ]
    if f.sessions:
        deleted.append(count(f.sessions, "dashboard sign-in") + " (you are signed out)")
    if not (deleted or kept or f.unlinked or f.corrected_by_others or f.quoted_by_others or f.audit_entries):
        return "I had nothing stored about you."
    lines = [
        "Forgotten, in every channel and DM: " + ", ".join(deleted) + "."
        if deleted
        else "There was nothing of yours to delete."
    ]
    if f.corrected_by_others:
        lines.append(
            f"Also deleted, as they repeat your words: {count(f.corrected_by_others, 'correction')} others made "
            f"to my replies to you, with the {count(f.examples_of_others, 'example')} they made."
        )
    if f.quoted_by_others:
        lines.append(
            "Your words are gone from "
            f"{count(f.quoted_by_others, 'rating or feedback note', 'ratings and feedback notes')} others gave "
            "my replies to you; what they said themselves stays."
        )
    if kept:
        lines.append(
            "Kept: " + " and ".join(kept) + ", because an admin approved them into my training data; "
            "they no longer carry your name."
        )
    if f.unlinked:
        lines.append(
            f"{count(f.unlinked, 'training job, dataset or persona', 'training jobs, datasets and personas')} "
            "you started, selected or set stay, without your name."
        )
    if f.audit_entries:
        lines.append(
            "Kept in servers' audit trails, as the changes happened, without your name: "
            f"{count(f.audit_entries, 'change')} you made to their knowledge or settings."
        )
    lines.append(
        "The model that answers now was trained before this: it keeps what it learned from you "
        f"until the next training (`{prefix}retrain`)."
    )
    return "\n".join(lines)
