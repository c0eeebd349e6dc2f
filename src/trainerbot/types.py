"""Plain data that every layer may import: who asks and where, what they send, what is stored, what comes back.

Nothing here imports another trainerbot module except ``errors``; storage, learning, chat, speech,
the core and the front ends all speak in these types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The bot-wide knowledge base, taught by the bot's owners; a server's base has the server's id.
# Discord's ids are never 0, so the two never meet.
GLOBAL_BASE = 0


def base_of(guild_id: int | None) -> int:
    """The knowledge base a place belongs to: its server's, or in a DM (or the console) the bot-wide one."""
    return GLOBAL_BASE if guild_id is None else guild_id


@dataclass(frozen=True)
class Caller:
    """Who sent a command and where, as the front end established it.

    The front end says what it knows of the person (a bot owner, the server's owner or an
    Administrator, the names of their roles); whether that makes them an admin of the server
    is decided by the core, with the admin roles that server configured.
    """

    user_id: int
    name: str
    is_owner: bool = False  # one of the bot's owners: everything, everywhere
    manages_server: bool = False  # owns the server, or holds its Administrator permission
    roles: frozenset[str] = frozenset()  # names of their roles in the server
    guild_id: int | None = None  # None: a direct message, or the console without a server
    channel_id: int | None = None
    message_id: int | None = None
    via: str = ""  # the front end: "discord", "console" or "web" (the audit list says it)

    @property
    def base(self) -> int:
        """The knowledge base the caller's commands act on: where they are."""
        return base_of(self.guild_id)


@dataclass(frozen=True)
class Place:
    """Where something was said: a server (any of its channels), else one direct-message channel.

    Lookups by message id are confined to a place, so an id from elsewhere is "not found".
    """

    guild_id: int | None
    channel_id: int | None

    @property
    def base(self) -> int:
        return base_of(self.guild_id)


def place_of(caller: Caller) -> Place:
    return Place(caller.guild_id, caller.channel_id)


@dataclass(frozen=True)
class Upload:
    """A file the user attached; ``size`` is what the sender declared, checked before reading."""

    name: str
    data: bytes
    size: int


@dataclass(frozen=True)
class OutFile:
    name: str
    data: bytes


@dataclass
class Reply:
    text: str
    files: list[OutFile] = field(default_factory=list)


@dataclass(frozen=True)
class Example:
    input: str
    output: str
    positive: bool = True


# --- what is stored ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    id: int
    base: int
    status: str
    progress: float
    stage: str
    requested_by: int | None
    channel_id: int | None
    model_version_id: int | None
    result: dict[str, Any] | None
    error: str | None
    created_at: str
    finished_at: str | None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "interrupted")


@dataclass(frozen=True)
class ModelVersion:
    id: int
    base: int
    job_id: int
    path: str  # relative to the data directory
    examples: int
    outputs: int
    holdout_accuracy: float | None
    status: str
    created_at: str
    trained_through: int = 0  # the newest example its job trained on; later ones are "fresh" (learning/live.py)
    result: str | None = None  # its job's report, as JSON (the threshold it chose, among others)

    @property
    def report(self) -> dict:
        return json.loads(self.result) if self.result else {}


@dataclass(frozen=True)
class ReplyRecord:
    bot_message_id: int
    user_message_id: int | None
    user_id: int | None
    input: str
    reply: str
    source: str
    confidence: float | None
    guild_id: int | None = None
    channel_id: int | None = None

    @property
    def base(self) -> int:
        return base_of(self.guild_id)


@dataclass(frozen=True)
class Rating:
    """A person's 👍 or 👎 just stored on one of the bot's replies (one rating per person and reply).

    ``replaced``: the emoji of their earlier rating of that reply, which this one replaced, if any.
    ``first``: nobody had a rating on that reply before this one.
    """

    emoji: str
    replaced: str | None = None
    first: bool = False


@dataclass(frozen=True)
class Turn:
    """One message of a conversation: what a user said, or what the bot answered."""

    id: int
    role: str  # "user" or "assistant"
    content: str
    user_id: int | None
    source: str | None  # for the bot's turns: "taught", "chat" or "fallback"
    context: str | None = None  # for users' turns: the taught examples the chat engine was shown with it


@dataclass(frozen=True)
class IndexedExample:
    id: int
    input: str
    output: str
    vector: bytes | None  # float32 MiniLM embedding, None until computed


@dataclass(frozen=True)
class StoredExample:
    """One example a base uses, as the people who edit what it knows see it (the dashboard)."""

    id: int
    question: str
    answer: str
    positive: bool  # False: an answer the bot must not give to that question
    source: str  # "train:<what it came from>", "review:<topic>", "correction" or "dataset:<name>"
    author_id: int | None  # who taught it (None once they asked to be forgotten)
    created_at: str
    from_dataset: bool  # of the base's selected dataset: read-only, a newly selected dataset replaces it

    @property
    def example(self) -> Example:
        return Example(self.question, self.answer, self.positive)


@dataclass(frozen=True)
class ReviewItem:
    """One entry of a base's review inbox: a question, and what it is about (see storage/review.py)."""

    kind: str  # "unknown", "disliked", "corrected" or "suggestion"
    text: str  # the question that was asked
    user_id: int | None  # whom it came from: who asked, rated the reply 👎, corrected it or suggested an answer
    user_name: str | None = None  # their name then (a suggestion's, shown to the admins)
    asked_by: int | None = None  # who asked the question (for a rating or a correction, not who gave it)
    reply: str | None = None  # the bot's reply it is about
    suggestion: str | None = None  # the answer suggested (or, corrected, given)
    bot_message_id: int | None = None  # the reply's message
    id: int = 0
    topic_id: int = 0
    created_at: str = ""


@dataclass(frozen=True)
class ReviewTopic:
    """Items of a review inbox that mean the same, or one member's suggestion; its id is what `!answer` takes."""

    id: int
    base: int
    kind: str  # "questions" (grouped by meaning), "suggestion" (one member's) or "correction" (an admin's, answered)
    status: str  # "open", "answered" or "dismissed"
    people: int  # distinct people its items came from
    items: int
    disliked: int  # of its items, replies rated 👎
    answer: str | None
    created_at: str


@dataclass(frozen=True)
class BaseSettings:
    """What a server's admins set for their server (the bot-wide base has the same row)."""

    use_global: bool = True  # the bot-wide base answers here after the server's own
    admin_roles: tuple[str, ...] | None = None  # None: the bot's default (TRAINERBOT_ADMIN_ROLES)
    persona: str | None = None  # the default persona of the server's channels; None: the bot's


@dataclass(frozen=True)
class Usage:
    """What a base holds, for its quotas."""

    examples: int
    stored_bytes: int  # examples' text and the server folder's files
    jobs_last_hour: int


@dataclass(frozen=True)
class Forgotten:
    """What ``People.forget`` deleted, kept and unlinked, counted by kind."""

    messages: int  # chat turns the person wrote
    answers: int  # the bot's chat turns answering them
    reply_records: int  # which bot message answered which of their messages
    feedback: int
    reactions: int
    corrections: int
    examples: int  # examples their corrections made (deleted, with their embeddings)
    test_runs: int
    kept_trained: int  # examples they taught with !train: kept, without their name
    kept_dataset: int  # examples of a dataset they selected: kept, without their name
    unlinked: int  # jobs, datasets and personas they started, selected or set: kept, without their name
    conversations: tuple[int, ...]  # where their turns were
    # Others' rows that carry the person's words, from being about the bot's replies to them:
    corrected_by_others: int = 0  # corrections of those replies: deleted, their examples hold the person's question
    examples_of_others: int = 0  # the examples those corrections made
    quoted_by_others: int = 0  # ratings and feedback notes of those replies: kept, without the copied text
    review_items: int = 0  # entries of review inboxes they gave or that quote their question
    review_examples: int = 0  # examples admins taught from their questions with `!answer`
    audit_entries: int = 0  # changes they made, in the bases' audit trails: kept (the change happened), without them
    sessions: int = 0  # their sign-ins to the dashboard: deleted, which signs them out

    @property
    def deleted(self) -> int:
        return (
            self.messages
            + self.answers
            + self.reply_records
            + self.feedback
            + self.reactions
            + self.corrections
            + self.examples
            + self.test_runs
            + self.corrected_by_others
            + self.examples_of_others
            + self.review_items
            + self.review_examples
            + self.sessions
        )


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
