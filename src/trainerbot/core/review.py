"""The review inbox: what the bot could not answer, replies rated 👎 and members' suggested corrections,
grouped by meaning into topics that a server's admins answer a whole topic at a time.

``ReviewIntake`` is how things come in: the conversation hands it the messages no taught answer was
confident about, ratings their 👎, corrections theirs. ``ReviewService`` holds the admins' commands:
`!review` lists the open topics, most asked first, with a chart; `!answer` teaches every question
of a topic one answer (or accepts a member's suggestion), `!dismiss` hides a topic (or rejects a
suggestion). In a server the inbox is its own base's; in direct messages (and the console outside a
server) the bot-wide base's, which only the bot's owners review.
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace

import numpy as np

from trainerbot.core.permissions import Access
from trainerbot.core.teaching import TeachingService, fits_id
from trainerbot.core.text import count, short, valid_text
from trainerbot.errors import InvalidInput, NotReady, PermissionDenied
from trainerbot.learning.examples import MAX_TEXT
from trainerbot.learning.model import TextEncoder
from trainerbot.storage.audit import Change
from trainerbot.storage.store import Store
from trainerbot.types import GLOBAL_BASE, Caller, Example, OutFile, Reply, ReplyRecord, ReviewItem, ReviewTopic

log = logging.getLogger(__name__)

# The cosine between an item's MiniLM embedding and a topic's centroid at which it joins the topic.
# On 24 pairs of questions (some in tests/test_review.py), paraphrases scored 0.61-0.89 ("when do
# you open?" / "what are your opening hours" 0.73), unrelated questions under 0.35, and the nearest
# misses 0.70-0.71 ("when do you open?" / "when do you close?"), which this still merges. An answer
# goes to every question of a topic, so a wrong merge costs more than a split (a paraphrase left
# out is a topic of its own, answered next): clustering 51 questions of 11 intents in 20 random
# orders, 0.7 put one question in 50 in a topic of another intent (0.65: one in 15) and made 30
# topics where 19 would be ideal (0.75: no purer, 36 topics).
SAME_TOPIC = 0.7
SHOWN = 10  # topics `!review` lists
SAMPLES = 3  # questions shown for each
LIKE = "like"
DM_ONLY_OWNERS = (
    "In direct messages the review inbox is the bot-wide knowledge's (what I answer in direct messages and in "
    "every server that keeps it on), which only the bot's owners can {action}. Use it in your server for that "
    "server's inbox."
)
HOW = (
    "`!answer <topic> <answer>` teaches every question of a topic that answer, `!answer <topic> like <an answer "
    "I give>` adds them to one already taught, `!dismiss <topic>` hides it. A suggestion: `!answer <topic>` "
    "accepts it, `!dismiss <topic>` rejects it."
)


class ReviewIntake:
    """What enters the review inboxes; the embedding decides the topic, so each item costs one MiniLM pass."""

    def __init__(self, store: Store, encoder: TextEncoder) -> None:
        self.store = store
        self.encoder = encoder

    def unknown(self, caller: Caller, text: str, vector: np.ndarray) -> None:
        """A message no taught answer was confident about, kept when its place's own base taught something:
        a server that taught nothing would collect every chat message. Never raises: answering goes on."""
        base = caller.base
        try:
            if text.strip() and self.store.knowledge.teaches(base):
                item = ReviewItem("unknown", text[:MAX_TEXT], caller.user_id, asked_by=caller.user_id)
                self.store.review.add(base, item, vector, SAME_TOPIC)
        except Exception:
            log.exception("could not keep an unanswered message for review in base %d", base)

    def disliked(self, reply: ReplyRecord, user_id: int) -> None:
        """A reply rated 👎: its question goes to the inbox of the base where it was given. Never raises."""
        try:
            self._add(
                reply.base,
                ReviewItem(
                    "disliked",
                    reply.input,
                    user_id,
                    asked_by=reply.user_id,
                    reply=reply.reply,
                    bot_message_id=reply.bot_message_id,
                ),
            )
        except Exception:
            log.exception("could not keep a 👎 on reply %d for review", reply.bot_message_id)

    def undisliked(self, reply: ReplyRecord, user_id: int) -> None:
        """A 👎 changed to 👍 or taken back leaves the inbox, unless its topic was already dealt with. Never raises."""
        try:
            self.store.review.withdraw_disliked(reply.base, reply.bot_message_id, user_id)
        except Exception:
            log.exception("could not take a withdrawn 👎 on reply %d out of review", reply.bot_message_id)

    def corrected(self, reply: ReplyRecord, user_id: int, correction: str) -> None:
        """An admin's correction, already stored as examples: kept answered, for the record. Never raises."""
        try:
            item = ReviewItem(
                "corrected",
                reply.input,
                user_id,
                asked_by=reply.user_id,
                reply=reply.reply,
                suggestion=correction,
                bot_message_id=reply.bot_message_id,
            )
            self._add(reply.base, item)
        except Exception:
            log.exception("could not keep the correction of reply %d for review", reply.bot_message_id)

    def suggestion(self, caller: Caller, reply: ReplyRecord, suggestion: str) -> int:
        """A member's correction, a topic of its own until an admin accepts or rejects it; returns the topic."""
        item = ReviewItem(
            "suggestion",
            reply.input,
            caller.user_id,
            user_name=valid_text(caller.name),
            asked_by=reply.user_id,
            reply=reply.reply,
            suggestion=suggestion,
            bot_message_id=reply.bot_message_id,
        )
        return self._add(reply.base, item)

    def _add(self, base: int, item: ReviewItem) -> int:
        vector = self.encoder.encode([item.text])[0]
        return self.store.review.add(base, replace(item, text=item.text[:MAX_TEXT]), vector, SAME_TOPIC)


class ReviewService:
    """The admins' commands on their inbox: `!review`, `!answer`, `!dismiss`."""

    def __init__(self, store: Store, access: Access, teaching: TeachingService) -> None:
        self.store = store
        self.access = access
        self.teaching = teaching

    def _inbox_of(self, caller: Caller, action: str) -> int:
        """The base whose inbox the caller works on: their server's (its admins), in a DM the bot-wide one (owners)."""
        if caller.guild_id is None:
            if not caller.is_owner:
                raise PermissionDenied(DM_ONLY_OWNERS.format(action=action))
            return GLOBAL_BASE
        self.access.require_admin(caller, action)
        return caller.base

    def _open_topic(self, base: int, topic: str | int) -> ReviewTopic:
        """The open topic of this base with that number; another base's is "no topic here", like a missing one."""
        typed = str(topic).strip().removeprefix("#")
        if not typed.isdigit():
            what = f"`{short(str(topic), 30)}` is not a topic number." if typed else "Which topic?"
            raise InvalidInput(f"{what} Give the number `!review` shows, e.g. `!answer 12 We open at 9.`")
        number = int(typed)
        found = self.store.review.topic(base, number) if fits_id(number) else None
        if found is None:
            raise NotReady(f"There is no topic #{short(typed, 30)} here. `!review` lists the open ones.")
        if found.status != "open":
            raise NotReady(f"Topic #{number} was already {found.status}. `!review` lists the open ones.")
        return found

    # --- !review ------------------------------------------------------------------------------------

    def review(self, caller: Caller) -> Reply:
        """The open topics, most people first, with their sample questions, and a chart of them."""
        base = self._inbox_of(caller, "review")
        inbox = self.store.review
        topics = inbox.open_topics(base, SHOWN)
        whose = "the bot-wide knowledge's" if base == GLOBAL_BASE else "this server's"
        if not topics:
            return Reply(
                f"Nothing to review in {whose} inbox. Messages I couldn't answer from what was taught here, "
                "replies rated 👎 and members' corrections collect here."
            )
        total, suggestions = inbox.open_counts(base)
        lines = [f"Review inbox ({whose}), most asked first:"]
        labels = []
        for topic in topics:
            if topic.kind == "suggestion":
                item = inbox.items(base, topic.id)[0]
                lines.append(
                    f"**#{topic.id}** suggestion from `{short(item.user_name or 'someone', 40)}`: to "
                    f"`{short(item.text, 60)}` I answered `{short(item.reply or '', 60)}`; "
                    f"they suggest `{short(item.suggestion or '', 100)}`."
                )
                labels.append(f"#{topic.id} suggestion: {item.text}")
                continue
            samples = inbox.samples(base, topic.id, SAMPLES)
            rated = f", {topic.disliked} rated 👎" if topic.disliked else ""
            shown = " · ".join(f"`{short(sample, 60)}`" for sample in samples)
            lines.append(
                f"**#{topic.id}** {count(topic.people, 'person', 'people')}, "
                f"{count(topic.items, 'message')}{rated}: {shown}"
            )
            labels.append(f"#{topic.id} {samples[0]}")
        if total > len(topics):
            more = total - len(topics)
            listed = sum(topic.kind == "suggestion" for topic in topics)
            lines.append(
                f"…and {more} more open topic{'s' * (more != 1)}"
                + (f" ({suggestions - listed} of them suggestions)." if suggestions > listed else ".")
            )
        lines.append(HOW)
        chart = topics_chart(labels, [t.people for t in topics], [t.items for t in topics])
        return Reply("\n".join(lines), [OutFile("review-topics.png", chart)])

    # --- !answer and !dismiss -----------------------------------------------------------------------

    def answer(self, caller: Caller, topic: str | int, text: str) -> Reply:
        """Teaches every question of a topic one answer, at once; on a suggestion, accepts it (or the admin's text)."""
        base = self._inbox_of(caller, "answer the review inbox's topics")
        found = self._open_topic(base, topic)
        text = valid_text(text.strip())
        if found.kind == "suggestion":
            return self._settle(caller, base, found, text)
        if not text:
            raise InvalidInput(
                f"Say the answer: `!answer {found.id} <answer>`, or `!answer {found.id} like <an answer I give>` "
                "to add its questions to one already taught."
            )
        output = self._output(base, text)
        questions = _distinct_questions(self.store.review.items(base, found.id))
        self.teaching.check_room(caller, base, [Example(question, output) for question, _ in questions])
        # Counts, not the questions: they are the askers' words, and the trail outlives their `!forget me`.
        said = f"Topic #{found.id}: {count(len(questions), 'question')} answered `{short(output, 200)}`"
        made = self.store.review.answer_questions(
            base, found.id, questions, output, by=caller.user_id, change=Change.by(caller, "answer topic", said)
        )
        if made is None:
            raise NotReady(f"Topic #{found.id} was answered or dismissed meanwhile. `!review` lists the open ones.")
        self.teaching.taught(base, caller)
        listed = ", ".join(f"`{short(question, 60)}`" for question, _ in questions[:5])
        more = f" and {len(questions) - 5} more" if len(questions) > 5 else ""
        return Reply(
            f"Topic #{found.id} answered: from now on, to {count(len(questions), 'question')} ({listed}{more}) "
            f"and close rephrasings of them, I answer `{short(output, 200)}`."
        )

    def _settle(self, caller: Caller, base: int, topic: ReviewTopic, text: str) -> Reply:
        """A member's suggestion, accepted as it is (no text) or answered with the admin's own words."""
        [item, *_] = self.store.review.items(base, topic.id)
        own = bool(text)
        correction = self._output(base, text) if own else item.suggestion or ""
        bad = item.reply or ""
        self.teaching.check_room(caller, base, [Example(item.text, correction), Example(item.text, bad, False)])
        reply = ReplyRecord(
            item.bot_message_id or 0,
            None,
            item.asked_by,
            item.text,
            bad,
            "review",
            None,
            guild_id=None if base == GLOBAL_BASE else base,
        )
        made = self.store.review.accept_suggestion(
            base,
            topic.id,
            reply=reply,
            correction=correction,
            user_id=caller.user_id if own else item.user_id,
            by=caller.user_id,
            change=Change.by(
                caller,
                "answer topic",
                f"Topic #{topic.id}: a member's suggestion {'answered otherwise' if own else 'accepted'}, "
                f"`{short(correction, 200)}`",
            ),
        )
        if made is None:
            raise NotReady(f"Topic #{topic.id} was answered or dismissed meanwhile. `!review` lists the open ones.")
        self.teaching.taught(base, caller)
        name = short(item.user_name or "someone", 40)
        done = f"answered instead of `{name}`'s suggestion" if own else f"accepted `{name}`'s correction"
        return Reply(
            f"Topic #{topic.id} {done}. From now on, to `{short(item.text)}` I answer `{short(correction, 200)}` "
            f"(instead of `{short(bad)}`)."
        )

    def _output(self, base: int, text: str) -> str:
        """The answer to teach: the text itself, or with `like ...` an answer the base gives already."""
        head, _, rest = text.partition(" ")
        if head.casefold() == LIKE:
            return self._taught_answer(base, rest.strip())
        if len(text) > MAX_TEXT:
            raise InvalidInput(f"An answer must fit in one message ({MAX_TEXT} characters); this one has {len(text)}.")
        if "\x00" in text:
            raise InvalidInput("That answer has characters that are not valid text (NUL).")
        return text

    def _taught_answer(self, base: int, wanted: str) -> str:
        """An answer already taught here: the same words in any case, else the only one starting with them, else
        the only one containing them."""
        if not wanted:
            raise InvalidInput("Say which answer: `!answer <topic> like <an answer I give>`.")
        key = _key(wanted)
        outputs = self.store.knowledge.taught_outputs(base)
        for matches in (
            [o for o in outputs if _key(o) == key],
            [o for o in outputs if _key(o).startswith(key)],
            [o for o in outputs if key in _key(o)],
        ):
            if len(matches) == 1:
                return matches[0]
            if matches:
                shown = ", ".join(f"`{short(match, 60)}`" for match in matches[:5])
                more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
                raise InvalidInput(
                    f"{len(matches)} answers taught here match `{short(wanted, 60)}`: {shown}{more}. "
                    "Give more of the one you mean."
                )
        raise NotReady(
            f"No answer taught here matches `{short(wanted, 60)}`. `!answer <topic> <answer>` teaches a new one."
        )

    def dismiss(self, caller: Caller, topic: str | int) -> Reply:
        """Hides an open topic from `!review`; a suggestion is rejected, and nothing is taught."""
        base = self._inbox_of(caller, "dismiss the review inbox's topics")
        found = self._open_topic(base, topic)
        what = "a member's suggestion rejected" if found.kind == "suggestion" else count(found.items, "message")
        dismissed = Change.by(caller, "dismiss topic", f"Topic #{found.id} ({what})")
        if not self.store.review.dismiss(base, found.id, caller.user_id, dismissed):
            raise NotReady(f"Topic #{found.id} was answered or dismissed meanwhile. `!review` lists the open ones.")
        if found.kind == "suggestion":
            [item, *_] = self.store.review.items(base, found.id)
            return Reply(
                f"Topic #{found.id}: the suggestion of `{short(item.user_name or 'someone', 40)}` is rejected; "
                f"my answer to `{short(item.text)}` stays as it was."
            )
        return Reply(
            f"Topic #{found.id} dismissed ({count(found.items, 'message')}): it no longer shows in `!review`, "
            "and questions like it that come later start a new topic."
        )


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _distinct_questions(items: list[ReviewItem]) -> list[tuple[str, set[int]]]:
    """Each question of a topic once (the same words in any case and spacing), with who asked it."""
    questions: dict[str, tuple[str, set[int]]] = {}
    for item in items:
        text = " ".join(item.text.split())
        _, askers = questions.setdefault(_key(text), (text, set()))
        if item.asked_by is not None:
            askers.add(item.asked_by)
    return list(questions.values())


def topics_chart(labels: list[str], people: list[int], messages: list[int]) -> bytes:
    """The listed topics as horizontal bars: the people who asked, over the messages, the top topic first."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # People's words as labels: `$` would start matplotlib's math mode, and a broken formula fails the drawing.
    names = [(label if len(label) <= 45 else label[:42] + "...").replace("$", r"\$") for label in labels][::-1]
    figure = Figure(figsize=(8, 1.5 + 0.4 * len(labels)), dpi=100)
    axes = figure.add_subplot()
    axes.barh(names, messages[::-1], color="#b9bbbe", label="messages")
    axes.barh(names, people[::-1], color="#5865f2", label="people")
    axes.set_xlabel("how many")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 of a person
    axes.set_title("Open topics of the review inbox")
    axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
