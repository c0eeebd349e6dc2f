"""What a base's people may look at, as data rather than chat text: training jobs, model versions, test runs,
the review inbox, feedback and ratings; and rolling back to any earlier model version.

The rules are the bot's own (core/permissions.py): a server's members see its jobs, versions and test runs;
its admins also see its inbox and feedback; the bot-wide base is its owners'. The chat commands
show the same things as text (core/teaching.py, core/review.py); this is for front ends that draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainerbot.core.permissions import Access
from trainerbot.core.text import short
from trainerbot.errors import NotReady
from trainerbot.storage.audit import Change
from trainerbot.storage.store import Store
from trainerbot.types import GLOBAL_BASE, Caller, Job, ModelVersion, ReviewTopic


@dataclass(frozen=True)
class TopicView:
    topic: ReviewTopic
    samples: list[str]  # a few of its distinct questions (a suggestion: the question it is about)
    suggestion: str | None = None  # a member's suggested answer, with the reply it would replace
    reply: str | None = None
    suggested_by: str | None = None


class Overview:
    def __init__(self, store: Store, access: Access) -> None:
        self.store = store
        self.access = access

    def jobs(self, caller: Caller, base: int, limit: int = 20) -> list[Job]:
        self.access.require_view(caller, base)
        return self.store.jobs.recent(base, limit)

    def versions(self, caller: Caller, base: int, limit: int = 50) -> tuple[list[ModelVersion], int | None]:
        """The base's model versions, newest first, and which one answers."""
        self.access.require_view(caller, base)
        return self.store.knowledge.model_versions(base, limit), self.store.knowledge.active_model_id(base)

    def test_runs(self, caller: Caller, base: int, limit: int = 20) -> list[dict[str, Any]]:
        self.access.require_view(caller, base)
        return self.store.evaluations.runs(base, limit)

    def failures(self, caller: Caller, base: int, run_id: int) -> list[dict[str, Any]]:
        self.access.require_view(caller, base)
        return self.store.evaluations.failures(base, run_id)

    def topics(self, caller: Caller, base: int, limit: int = 50) -> list[TopicView]:
        """The open topics of the review inbox, most people first (as `!review` lists them)."""
        self.access.require_admin_of(caller, base, "review the inbox")
        inbox = self.store.review
        views = []
        for topic in inbox.open_topics(base, limit):
            if topic.kind == "suggestion":
                item = inbox.items(base, topic.id)[0]
                views.append(TopicView(topic, [item.text], item.suggestion, item.reply, item.user_name))
            else:
                views.append(TopicView(topic, inbox.samples(base, topic.id, 5)))
        return views

    def feedback(self, caller: Caller, base: int, limit: int = 50) -> tuple[list[dict], list[dict]]:
        """Feedback notes and 👍/👎 ratings given in the server (the bot-wide base: in DMs), newest first."""
        self.access.require_admin_of(caller, base, "read the feedback")
        guild = None if base == GLOBAL_BASE else base
        return self.store.feedback.notes(guild, limit), self.store.feedback.ratings(guild, limit)

    def activate(self, caller: Caller, base: int, version_id: int) -> str:
        """Rolls back (or forward) to any of the base's model versions; the versions after it are retired."""
        self.access.require_admin_of(caller, base, "roll back the model")
        swapped = self.store.knowledge.activate(base, version_id)
        if swapped is None:
            raise NotReady(f"Model version {short(str(version_id), 20)} is not one this server can return to.")
        old, new = swapped
        self.store.audit.add_change(
            base, Change.by(caller, "rollback", f"model version {new.id} answers again in place of version {old.id}")
        )
        return f"Model version {new.id} answers again (version {old.id} is retired)."
