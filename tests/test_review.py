"""The review inbox: what the bot could not answer, 👎 replies and members' suggested corrections, grouped
by meaning into topics that a server's admins answer a topic at a time (`!review`, `!answer`, `!dismiss`).

The repository tests use made-up unit vectors, so that which topic an item joins is known exactly;
the grouping constant is checked on real MiniLM embeddings; the service tests drive the core as the
console and Discord do; the end-to-end tests go through the loopback Discord.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import OWNER_ID, TRAINER, core_services
from tests.databases import foreign_keys_hold
from tests.loopback_discord import FakeDiscord
from trainerbot.adapters.console.console import Console
from trainerbot.app import Services
from trainerbot.core.conversation import Where
from trainerbot.core.review import SAME_TOPIC
from trainerbot.errors import InvalidInput, NotReady, PermissionDenied, QuotaReached
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.storage.database import open_database
from trainerbot.storage.store import Store
from trainerbot.types import GLOBAL_BASE, Caller, Example, Place, ReplyRecord, ReviewItem

pytestmark = pytest.mark.both_databases

A, B = 1_001, 1_002
ADMIN_A = Caller(2, "admin", manages_server=True, guild_id=A, channel_id=11)
ADMIN_B = Caller(3, "admin b", manages_server=True, guild_id=B, channel_id=21)
OWNER_DM = Caller(1, "owner", is_owner=True, channel_id=99)
MEMBERS_A = [Caller(10 + n, f"member{n}", guild_id=A, channel_id=11) for n in range(5)]
MEMBER_B = Caller(20, "member b", guild_id=B, channel_id=21)
IN_A, IN_B = Where(11), Where(21)


# --- the repository, on made-up vectors -----------------------------------------------------------


def unit(*weights: float) -> np.ndarray:
    """A unit vector whose first coordinates are ``weights`` (normalised)."""
    vector = np.zeros(384, dtype=np.float32)
    vector[: len(weights)] = weights
    return vector / np.linalg.norm(vector)


def asked(text: str, user: int, kind: str = "unknown") -> ReviewItem:
    return ReviewItem(kind, text, user, asked_by=user)


@pytest.fixture
def store(database_address: str) -> Store:
    return Store(open_database(database_address))


def test_an_item_joins_the_nearest_open_topic_near_enough_else_starts_one(store: Store) -> None:
    inbox = store.review
    first = inbox.add(A, asked("x1", 1), unit(1, 0), 0.7)
    assert inbox.add(A, asked("x2", 2), unit(1, 0.3), 0.7) == first  # cosine 0.96
    second = inbox.add(A, asked("y1", 3), unit(0, 1), 0.7)  # cosine 0 with the first
    assert second != first
    # Closer to the second topic's centroid than to the first's: it goes there.
    assert inbox.add(A, asked("y2", 4, "disliked"), unit(0.3, 1), 0.7) == second
    # Near both, and near neither enough: a topic of its own.
    assert inbox.add(A, asked("z", 5), unit(1, 1, 1, 1), 0.7) not in (first, second)
    # The centroid is the normalised running sum of its items' embeddings.
    row = store.db.query_one("SELECT vector_sum FROM review_topics WHERE id = ?", (first,))
    assert np.allclose(np.frombuffer(row["vector_sum"], dtype=np.float32), unit(1, 0) + unit(1, 0.3), atol=1e-6)
    assert [item.text for item in inbox.items(A, first)] == ["x1", "x2"]
    assert inbox.topic(A, second).disliked == 1  # type: ignore[union-attr]


def test_suggestions_and_corrections_are_topics_of_their_own(store: Store) -> None:
    inbox = store.review
    questions = inbox.add(A, asked("when do you open", 1), unit(1), 0.7)
    suggestion = ReviewItem("suggestion", "when do you open", 2, "ann", 1, "no idea", "At nine", 555)
    mine = inbox.add(A, suggestion, unit(1), 0.7)
    again = inbox.add(A, suggestion, unit(1), 0.7)  # the same suggestion twice: two decisions
    corrected = inbox.add(A, ReviewItem("corrected", "when do you open", 3, None, 1, "no idea", "At 9"), unit(1), 0.7)
    assert len({questions, mine, again, corrected}) == 4
    assert inbox.add(A, asked("when do you open?", 4), unit(1), 0.7) == questions  # only question topics group
    kinds = {t.id: (t.kind, t.status) for t in inbox.open_topics(A, 10)}
    assert kinds == {questions: ("questions", "open"), mine: ("suggestion", "open"), again: ("suggestion", "open")}
    done = inbox.topic(A, corrected)
    assert done is not None and (done.kind, done.status, done.answer) == ("correction", "answered", "At 9")


def test_topics_are_ranked_by_people_then_messages(store: Store) -> None:
    inbox = store.review
    chatty = inbox.add(A, asked("a", 1), unit(1), 0.7)
    for _ in range(4):
        inbox.add(A, asked("a", 1), unit(1), 0.7)  # one person, five messages
    popular = inbox.add(A, asked("b", 2), unit(0, 1), 0.7)
    for user in (3, 4):
        inbox.add(A, asked("b", user), unit(0, 1), 0.7)  # three people, three messages
    busy = inbox.add(A, asked("c", 5), unit(0, 0, 1), 0.7)
    inbox.add(A, asked("c", 6), unit(0, 0, 1), 0.7)
    inbox.add(A, asked("c", 6), unit(0, 0, 1), 0.7)  # two people, three messages
    pair = inbox.add(A, asked("d", 7), unit(0, 0, 0, 1), 0.7)
    inbox.add(A, asked("d", 8), unit(0, 0, 0, 1), 0.7)  # two people, two messages
    ranked = [(t.id, t.people, t.items) for t in inbox.open_topics(A, 10)]
    assert ranked == [(popular, 3, 3), (busy, 2, 3), (pair, 2, 2), (chatty, 1, 5)]
    assert [t.id for t in inbox.open_topics(A, 2)] == [popular, busy]
    assert inbox.open_counts(A) == (4, 0)


def test_each_base_keeps_its_newest_items_up_to_the_cap(store: Store) -> None:
    inbox = store.review
    inbox.max_items = 5
    old = inbox.add(A, asked("old", 1), unit(1), 0.7)
    kept = inbox.add(A, asked("kept", 2), unit(0, 1), 0.7)
    for n in range(3):
        inbox.add(A, asked(f"kept {n}", 3), unit(0, 1), 0.7)
    inbox.add(B, asked("b", 4), unit(1), 0.7)  # another base's items count for that base only
    assert inbox.topic(A, old) is not None
    inbox.add(A, asked("new", 5), unit(0, 0, 1), 0.7)  # the sixth: the oldest goes, and its emptied topic
    assert inbox.topic(A, old) is None
    assert store.db.query_one("SELECT count(*) AS n FROM review_items WHERE base = ?", (A,))["n"] == 5
    inbox.add(A, asked("newer", 6), unit(0, 0, 1), 0.7)  # the next goes from a topic that keeps others
    topic = inbox.topic(A, kept)
    assert topic is not None and topic.items == 3
    row = store.db.query_one("SELECT vector_sum FROM review_topics WHERE id = ?", (kept,))
    assert np.allclose(np.frombuffer(row["vector_sum"], dtype=np.float32), 3 * unit(0, 1), atol=1e-5)
    assert [t.items for t in inbox.open_topics(B, 10)] == [1]


def test_one_base_never_reaches_anothers_topics(store: Store) -> None:
    inbox = store.review
    theirs = inbox.add(A, asked("secret of A", 1), unit(1), 0.7)
    assert inbox.add(B, asked("secret of A", 2), unit(1), 0.7) != theirs  # never joins A's topic
    assert inbox.topic(B, theirs) is None and inbox.items(B, theirs) == [] and inbox.samples(B, theirs) == []
    assert [t.id for t in inbox.open_topics(B, 10)] != [theirs]
    assert inbox.answer_questions(B, theirs, [("secret of A", [1])], "B's answer", by=3) is None
    assert not inbox.dismiss(B, theirs, 3)
    assert inbox.topic(A, theirs).status == "open"  # type: ignore[union-attr]
    assert store.db.query_one("SELECT count(*) AS n FROM examples")["n"] == 0


def test_answering_a_topic_is_all_or_nothing_and_once(store: Store) -> None:
    inbox = store.review
    topic = inbox.add(A, asked("when do you open", 1), unit(1), 0.7)
    made = inbox.answer_questions(A, topic, [("when do you open", [1]), ("opening hours", [2, 3])], "At 9", by=9)
    assert made is not None and len(made) == 2
    rows = store.db.query("SELECT input, output, positive, source, author_id, base FROM examples ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("when do you open", "At 9", 1, f"review:{topic}", 9, A),
        ("opening hours", "At 9", 1, f"review:{topic}", 9, A),
    ]
    links = store.db.query("SELECT example_id, user_id FROM review_examples ORDER BY 1, 2")
    assert [tuple(r) for r in links] == [(made[0], 1), (made[1], 2), (made[1], 3)]
    assert inbox.answer_questions(A, topic, [("again", [1])], "At 10", by=9) is None  # answered already
    assert not inbox.dismiss(A, topic, 9)
    assert store.db.query_one("SELECT count(*) AS n FROM examples")["n"] == 2


# --- the grouping constant, on real embeddings ------------------------------------------------------

PARAPHRASES = [
    ("when do you open?", "what are your opening hours"),
    ("when do you open?", "what time do you open tomorrow"),
    ("how do I reset my password", "I forgot my password, how can I change it"),
    ("do you ship to Canada?", "can you deliver to canada"),
    ("do you have vegan options", "is there anything vegan on the menu"),
    ("who is the server owner", "who runs this server"),
]
DIFFERENT = [
    ("when do you open?", "where is the shop"),
    ("how do I reset my password", "how much does shipping cost"),
    ("do you ship to Canada?", "do you have vegan options"),
    ("is there parking nearby", "is there a pharmacy nearby"),
    ("what is the capital of peru", "what is the capital of france"),
    ("hello", "how are you"),
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder()


def test_the_grouping_constant_joins_paraphrases_and_keeps_other_questions_apart(encoder: MiniLMEncoder) -> None:
    def cosine(a: str, b: str) -> float:
        first, second = encoder.encode([a, b])
        return float(first @ second)

    assert all(cosine(a, b) >= SAME_TOPIC for a, b in PARAPHRASES), [cosine(a, b) for a, b in PARAPHRASES]
    assert all(cosine(a, b) < SAME_TOPIC for a, b in DIFFERENT), [cosine(a, b) for a, b in DIFFERENT]


def test_a_stream_of_questions_groups_by_meaning(database_address: str, encoder: MiniLMEncoder) -> None:
    store = Store(open_database(database_address))
    stream = {
        "hours": ["when do you open?", "what are your opening hours", "what time does the shop open", "opening times?"],
        "password": ["how do I reset my password", "I forgot my password, how can I change it", "password reset"],
        "shipping": ["do you ship to Canada?", "can you deliver to canada", "shipping to canada?"],
    }
    texts = [(text, intent) for intent, texts in stream.items() for text in texts]
    order = [texts[i] for i in (0, 4, 7, 1, 5, 8, 2, 9, 6, 3)]  # interleaved, as people ask
    vectors = encoder.encode([text for text, _ in order])
    topics: dict[int, set[str]] = {}
    for n, ((text, intent), vector) in enumerate(zip(order, vectors, strict=True)):
        topic = store.review.add(A, asked(text, n), vector, SAME_TOPIC)
        topics.setdefault(topic, set()).add(intent)
    assert all(len(intents) == 1 for intents in topics.values()), topics  # no topic mixes two meanings
    assert len(topics) == 3, topics


# --- the service -------------------------------------------------------------------------------------


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """No chat or speech engines (the fixed "not learned yet" reply); the loopback bot runs on these too."""
    built = core_services(
        tmp_path / "data", owner_ids=[OWNER_DM.user_id, OWNER_ID], admin_roles=["Trainer"], server_max_examples=20
    )
    yield built
    built.close()


@pytest.fixture
def taught(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bases the teaching hook was told about (it schedules the refit; here it only records)."""
    calls: list[int] = []
    monkeypatch.setattr(services.teaching, "taught", lambda base, caller=None: calls.append(base))
    return calls


FAQ = [Example("where are you", "Main street 1"), Example("who made you", "The owners did.")]


def teach(services: Services, base: int, examples: list[Example] = FAQ) -> None:
    services.store.knowledge.add_examples(base, examples, source="train:message", author_id=ADMIN_A.user_id)


def ask(services: Services, caller: Caller, where: Where, text: str, message_id: int) -> ReplyRecord:
    """A message answered as the front ends answer one, and the reply stored under ``message_id``."""
    prepared = services.conversation.prepare(caller, text, where)
    assert prepared.answer is not None
    services.conversation.finish(prepared, prepared.answer.text, prepared.answer.source, [message_id])
    reply = services.store.conversations.reply(Place(caller.guild_id, caller.channel_id), message_id)
    assert reply is not None
    return reply


HOURS = ["when do you open?", "what are your opening hours", "when do you open?", "what time do you open tomorrow"]


def test_unanswered_messages_are_kept_only_where_something_was_taught(services: Services) -> None:
    inbox = services.store.review
    ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    assert inbox.open_topics(A) == []  # A taught nothing: its chat is not collected
    started = services.teaching.train(ADMIN_A, "\n".join(f"{e.input} => {e.output}" for e in FAQ), [])
    deadline = time.monotonic() + 120
    while not services.teaching.job_status(A, started.job_id)[1]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for n, (member, text) in enumerate(zip(MEMBERS_A, HOURS, strict=False)):
        ask(services, member, IN_A, text, 101 + n)
    ask(services, MEMBERS_A[0], IN_A, "where are you?", 110)  # answered as taught: nothing to review
    ask(services, MEMBER_B, IN_B, "when do you open?", 111)  # B taught nothing
    ask(services, Caller(5, "someone", channel_id=99), Where(99), "when do you open?", 112)  # nor the bot-wide base
    [topic] = inbox.open_topics(A)
    assert (topic.people, topic.items) == (4, 4)
    assert inbox.samples(A, topic.id) == ["when do you open?", "what are your opening hours", HOURS[3]]
    assert inbox.open_topics(B) == [] and inbox.open_topics(GLOBAL_BASE) == []


def test_keeping_a_message_for_review_never_stops_the_answer(
    services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    teach(services, A)

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(services.store.review, "add", broken)
    reply = ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    assert reply.source == "fallback" and "could not keep an unanswered message" in caplog.text
    assert services.teaching.rate(MEMBERS_A[1].user_id, Place(A, 11), 100, "👎")  # the rating is stored all the same


def test_review_lists_the_top_topics_with_samples_counts_and_a_chart(services: Services) -> None:
    review = services.review
    assert review.review(ADMIN_A).text.startswith("Nothing to review in this server's inbox.")
    teach(services, A)
    for n, (member, text) in enumerate(zip(MEMBERS_A, HOURS, strict=False)):
        ask(services, member, IN_A, text, 100 + n)
    reply = ask(services, MEMBERS_A[4], IN_A, "do you ship to canada? <@123> @everyone `x`", 110)
    assert services.teaching.rate(MEMBERS_A[0].user_id, Place(A, 11), 110, "👎")
    assert not services.teaching.rate(MEMBERS_A[0].user_id, Place(A, 11), 110, "👎")  # once per person
    assert services.teaching.rate(MEMBERS_A[1].user_id, Place(A, 11), 101, "👍")  # a 👍 is not for review
    services.teaching.correct(MEMBERS_A[2], 110, "We ship everywhere.")
    hours, shipping, suggestion = (t.id for t in services.store.review.open_topics(A))
    shown = review.review(ADMIN_A)
    lines = shown.text.splitlines()
    assert lines[0] == "Review inbox (this server's), most asked first:"
    assert lines[1] == (
        f"**#{hours}** 4 people, 4 messages: `when do you open?` · `what are your opening hours` · "
        "`what time do you open tomorrow`"
    )
    assert (
        lines[2] == f"**#{shipping}** 2 people, 2 messages, 1 rated 👎: `do you ship to canada? <@123> @everyone 'x'`"
    )
    assert lines[3].startswith(f"**#{suggestion}** suggestion from `member2`: to `do you ship to canada?")
    assert lines[3].endswith("they suggest `We ship everywhere.`.")
    assert "`!answer <topic> <answer>`" in lines[-1]
    [chart] = shown.files
    assert chart.name == "review-topics.png" and chart.data.startswith(b"\x89PNG")
    assert reply.input in services.store.review.samples(A, shipping)


def test_answer_teaches_every_question_of_the_topic_at_once(services: Services, taught: list[int]) -> None:
    teach(services, A)
    for n, (member, text) in enumerate(zip(MEMBERS_A, [*HOURS, "When  do you OPEN?"], strict=True)):
        ask(services, member, IN_A, text, 100 + n)
    [topic] = services.store.review.open_topics(A)
    text = services.review.answer(ADMIN_A, f"#{topic.id}", "We open at nine.").text
    assert text == (
        f"Topic #{topic.id} answered: from now on, to 3 questions (`when do you open?`, "
        "`what are your opening hours`, `what time do you open tomorrow`) and close rephrasings of them, "
        "I answer `We open at nine.`."
    )
    rows = services.store.db.query("SELECT input, author_id, source FROM examples WHERE output = 'We open at nine.'")
    assert sorted(r["input"] for r in rows) == sorted(["when do you open?", "what are your opening hours", HOURS[3]])
    assert {(r["author_id"], r["source"]) for r in rows} == {(ADMIN_A.user_id, f"review:{topic.id}")}
    assert taught == [A]
    assert services.store.review.open_topics(A) == []
    with pytest.raises(NotReady, match=f"Topic #{topic.id} was already answered"):
        services.review.answer(ADMIN_A, str(topic.id), "Again.")
    with pytest.raises(NotReady, match=f"Topic #{topic.id} was already answered"):
        services.review.dismiss(ADMIN_A, str(topic.id))


def test_answer_like_adds_the_questions_to_an_answer_already_taught(services: Services) -> None:
    teach(services, A, [*FAQ, Example("shipping", "We ship to Canada."), Example("ship?", "We ship to Mexico.")])
    ask(services, MEMBERS_A[0], IN_A, "what is your address", 100)
    ask(services, MEMBERS_A[1], IN_A, "can you deliver to canada", 101)
    address, shipping = (t.id for t in services.store.review.open_topics(A))
    for wanted, error, message in (
        ("like", InvalidInput, "Say which answer"),
        ("like we ship", InvalidInput, "2 answers taught here match `we ship`: `We ship to Canada.`"),
        ("like Parcels by drone", NotReady, "No answer taught here matches `Parcels by drone`"),
    ):
        with pytest.raises(error, match=message):
            services.review.answer(ADMIN_A, str(shipping), wanted)
    assert "I answer `Main street 1`" in services.review.answer(ADMIN_A, str(address), "like main STREET 1").text
    assert "I answer `We ship to Canada.`" in services.review.answer(ADMIN_A, str(shipping), "LIKE ship to can").text
    rows = services.store.db.query("SELECT input, output FROM examples WHERE source LIKE 'review:%' ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("what is your address", "Main street 1"),
        ("can you deliver to canada", "We ship to Canada."),
    ]


def test_dismiss_hides_a_topic_and_later_questions_start_a_new_one(services: Services) -> None:
    teach(services, A)
    ask(services, MEMBERS_A[0], IN_A, "tell me a joke", 100)
    [topic] = services.store.review.open_topics(A)
    assert services.review.dismiss(ADMIN_A, str(topic.id)).text == (
        f"Topic #{topic.id} dismissed (1 message): it no longer shows in `!review`, "
        "and questions like it that come later start a new topic."
    )
    assert services.review.review(ADMIN_A).text.startswith("Nothing to review")
    ask(services, MEMBERS_A[1], IN_A, "tell me a joke", 101)
    [again] = services.store.review.open_topics(A)
    assert again.id != topic.id
    assert services.store.db.query_one("SELECT count(*) AS n FROM examples WHERE source LIKE 'review:%'")["n"] == 0


def test_a_members_correction_is_a_suggestion_until_an_admin_accepts_it(services: Services, taught: list[int]) -> None:
    teach(services, A)
    reply = ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    thanks = services.teaching.correct(MEMBERS_A[1], 100, "We open at 9.")
    assert thanks.text == (
        "Thanks! I passed your correction (`We open at 9.`) to this server's admins (`!review`); "
        "my answers change once one of them accepts it."
    )
    assert services.store.db.query("SELECT * FROM examples WHERE source = 'correction'") == []
    assert services.store.db.query("SELECT * FROM corrections") == [] and taught == []
    suggestion = next(t for t in services.store.review.open_topics(A) if t.kind == "suggestion")
    [item] = services.store.review.items(A, suggestion.id)
    assert (item.user_id, item.user_name, item.asked_by, item.reply, item.suggestion, item.bot_message_id) == (
        MEMBERS_A[1].user_id,
        "member1",
        MEMBERS_A[0].user_id,
        reply.reply,
        "We open at 9.",
        100,
    )
    accepted = services.review.answer(ADMIN_A, str(suggestion.id), "")
    assert accepted.text.startswith(f"Topic #{suggestion.id} accepted `member1`'s correction. From now on, to ")
    [correction] = services.store.db.query("SELECT * FROM corrections")
    assert (correction["user_id"], correction["correction"], correction["bad_reply"], correction["base"]) == (
        MEMBERS_A[1].user_id,
        "We open at 9.",
        reply.reply,
        A,
    )
    examples = services.store.db.query("SELECT output, positive FROM examples WHERE source = 'correction'")
    assert {(r["output"], r["positive"]) for r in examples} == {("We open at 9.", 1), (reply.reply, 0)}
    assert taught == [A]
    assert services.store.review.topic(A, suggestion.id).status == "answered"  # type: ignore[union-attr]


def test_an_admin_answers_a_suggestion_with_their_own_words_or_rejects_it(services: Services) -> None:
    teach(services, A)
    ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    services.teaching.correct(MEMBERS_A[1], 100, "Never!")
    services.teaching.correct(MEMBERS_A[2], 100, "Whenever.")
    first, second = (t.id for t in services.store.review.open_topics(A) if t.kind == "suggestion")
    own = services.review.answer(ADMIN_A, str(first), "We open at 9.").text
    assert own.startswith(f"Topic #{first} answered instead of `member1`'s suggestion. From now on")
    rejected = services.review.dismiss(ADMIN_A, str(second)).text
    assert rejected == (
        f"Topic #{second}: the suggestion of `member2` is rejected; my answer to `when do you open?` stays as it was."
    )
    corrections = services.store.db.query("SELECT user_id, correction FROM corrections")
    assert [tuple(r) for r in corrections] == [(ADMIN_A.user_id, "We open at 9.")]


def test_an_admins_correction_answers_at_once_and_is_kept_answered(services: Services, taught: list[int]) -> None:
    teach(services, A)
    reply = ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    text = services.teaching.correct(ADMIN_A, 100, "We open at 9.").text
    assert text.startswith("Thanks! From now on, to `when do you open?` I answer `We open at 9.` (instead of `")
    assert reply.reply[:40].replace("`", "'") in text
    assert taught == [A]
    assert len(services.store.db.query("SELECT * FROM corrections")) == 1
    [row] = services.store.db.query("SELECT kind, user_id, suggestion FROM review_items WHERE kind = 'corrected'")
    assert tuple(row) == ("corrected", ADMIN_A.user_id, "We open at 9.")
    assert all(t.kind == "questions" for t in services.store.review.open_topics(A))  # nothing left to decide


def test_who_may_review_and_the_walls_between_servers(services: Services) -> None:
    teach(services, A)
    ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    [topic] = services.store.review.open_topics(A)
    missing = topic.id + 1000
    for call in (
        lambda caller: services.review.review(caller),
        lambda caller: services.review.answer(caller, str(topic.id), "x"),
        lambda caller: services.review.dismiss(caller, str(topic.id)),
    ):
        with pytest.raises(PermissionDenied, match="only the bot's owners and members with an admin role"):
            call(MEMBERS_A[1])
        with pytest.raises(PermissionDenied, match="In direct messages the review inbox is the bot-wide knowledge's"):
            call(Caller(ADMIN_A.user_id, "admin", manages_server=True, channel_id=98))  # A's admin, in a DM
    # Another server's topic is "no topic here", word for word as one that does not exist.
    for call in (
        lambda number: services.review.answer(ADMIN_B, str(number), "B's answer"),
        lambda number: services.review.dismiss(ADMIN_B, str(number)),
        lambda number: services.review.answer(OWNER_DM, str(number), "bot-wide answer"),
    ):
        with pytest.raises(NotReady) as theirs:
            call(topic.id)
        with pytest.raises(NotReady) as absent:
            call(missing)
        assert str(theirs.value) == str(absent.value).replace(str(missing), str(topic.id))
        assert str(theirs.value) == f"There is no topic #{topic.id} here. `!review` lists the open ones."
    assert "when do you open" not in services.review.review(ADMIN_B).text
    assert services.review.review(OWNER_DM).text.startswith("Nothing to review in the bot-wide knowledge's inbox.")
    assert services.store.review.topic(A, topic.id).status == "open"  # type: ignore[union-attr]
    assert services.store.db.query("SELECT * FROM examples WHERE source LIKE 'review:%'") == []


def test_the_bot_wide_inbox_is_the_owners_in_direct_messages(services: Services, taught: list[int]) -> None:
    teach(services, GLOBAL_BASE)
    dm = Caller(5, "someone", channel_id=99)
    ask(services, dm, Where(99), "when do you open?", 100)
    [topic] = services.store.review.open_topics(GLOBAL_BASE)
    assert "`when do you open?`" in services.review.review(OWNER_DM).text
    assert "I answer `At nine.`" in services.review.answer(OWNER_DM, str(topic.id), "At nine.").text
    assert taught == [GLOBAL_BASE]
    with pytest.raises(PermissionDenied, match="In direct messages only the bot's owners can correct me"):
        services.teaching.correct(dm, 100, "a suggestion from a DM")


def test_bad_input_gets_one_clear_sentence(services: Services) -> None:
    teach(services, A)
    ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    [topic] = services.store.review.open_topics(A)
    n = str(topic.id)
    for topic_text, answer, error, message in (
        ("twelve", "x", InvalidInput, "`twelve` is not a topic number. Give the number `!review` shows"),
        ("", "x", InvalidInput, "Which topic\\? Give the number"),
        ("9" * 40, "x", NotReady, "There is no topic #9999"),
        ("-3", "x", InvalidInput, "`-3` is not a topic number"),
        (n, "", InvalidInput, f"Say the answer: `!answer {n} <answer>`"),
        (n, "   ", InvalidInput, "Say the answer"),
        (n, "x" * 2001, InvalidInput, "must fit in one message \\(2000 characters\\); this one has 2001"),
        (n, "a\x00b", InvalidInput, "not valid text"),
    ):
        with pytest.raises(error, match=message):
            services.review.answer(ADMIN_A, topic_text, answer)
    assert "I answer `a\ufffdb`" in services.review.answer(ADMIN_A, n, "a\ud800b").text  # a lone surrogate is mended


def test_answers_are_held_to_the_servers_quota(services: Services) -> None:
    teach(services, A, [Example(f"question {n}", "an answer") for n in range(18)])
    for n, member in enumerate(MEMBERS_A[:3]):
        ask(services, member, IN_A, f"how do I reach support {'please' * n}", 100 + n)
    [topic] = services.store.review.open_topics(A)
    with pytest.raises(QuotaReached, match="would hold 21 examples; it may hold 20"):
        services.review.answer(ADMIN_A, str(topic.id), "Write to support@example.com.")
    assert services.store.review.topic(A, topic.id).status == "open"  # type: ignore[union-attr]
    owner_in_a = Caller(OWNER_DM.user_id, "owner", is_owner=True, guild_id=A, channel_id=11)
    assert "answered" in services.review.answer(owner_in_a, str(topic.id), "Write to support@example.com.").text


def test_forget_me_takes_the_persons_entries_and_what_was_taught_from_their_questions(services: Services) -> None:
    teach(services, A)
    person, other = MEMBERS_A[0], MEMBERS_A[1]
    ask(services, person, IN_A, "when do you open?", 100)
    ask(services, other, IN_A, "what are your opening hours", 101)
    ask(services, person, IN_A, "tell me a joke", 102)
    services.teaching.rate(other.user_id, Place(A, 11), 102, "👎")  # others' rows that quote the person's question
    services.teaching.correct(other, 100, "At nine")
    hours = services.store.review.open_topics(A)[0]
    services.review.answer(ADMIN_A, str(hours.id), "We open at nine.")
    copy = services.privacy.export(person.user_id)["tables"]
    assert [(i["kind"], i["text"]) for i in copy["review_items"]] == [
        ("unknown", "when do you open?"),
        ("unknown", "tell me a joke"),
        ("disliked", "tell me a joke"),
        ("suggestion", "when do you open?"),
    ]
    assert [(e["input"], e["output"]) for e in copy["review_examples"]] == [("when do you open?", "We open at nine.")]
    assert copy["review_examples"][0]["topic_id"] == str(hours.id)

    text = services.privacy.forget_me(person).text
    assert "4 review inbox entries, 1 example admins taught from your questions" in text
    assert all(rows == [] for rows in services.store.people.data(person.user_id).values())
    left = services.store.db.query("SELECT text, user_id FROM review_items ORDER BY id")
    assert [tuple(r) for r in left] == [("what are your opening hours", other.user_id)]
    examples = services.store.db.query("SELECT input FROM examples WHERE source LIKE 'review:%'")
    assert [r["input"] for r in examples] == ["what are your opening hours"]
    topics = services.store.db.query("SELECT id FROM review_topics")
    assert [r["id"] for r in topics] == [hours.id]  # the joke's topic had nothing else: it went
    assert foreign_keys_hold(services.store.db)
    assert "1 review inbox entry" in services.privacy.forget_me(other).text


# --- the console --------------------------------------------------------------------------------------


def test_console_reviews_answers_and_dismisses(services: Services) -> None:
    teach(services, A)
    ask(services, MEMBERS_A[0], IN_A, "when do you open?", 100)
    ask(services, MEMBERS_A[1], IN_A, "tell me a joke", 101)
    hours, joke = (t.id for t in services.store.review.open_topics(A))
    out = io.StringIO()
    member = Console(services, out=out, server=A, role="member")
    member.handle("!review")
    assert "only the bot's owners and members with an admin role can review" in out.getvalue()
    admin = Console(services, out=out, server=A, role="admin")
    admin.handle("!help")
    assert "!review: List the review inbox's open topics" in out.getvalue()
    admin.handle("!review")
    assert f"**#{hours}** 1 person, 1 message: `when do you open?`" in out.getvalue()
    assert (services.settings.data_dir / "outbox" / "review-topics.png").is_file()
    admin.handle(f"!answer {hours} We open at nine.")
    admin.handle(f"!dismiss #{joke}")
    admin.handle(f"!dismiss {joke}")
    text = out.getvalue()
    assert f"Topic #{hours} answered" in text and f"Topic #{joke} dismissed" in text
    assert f"Topic #{joke} was already dismissed" in text
    console = Console(services, out=out)  # the owner outside a server: the bot-wide base's inbox
    console.handle("!review")
    assert "Nothing to review in the bot-wide knowledge's inbox." in out.getvalue()


# --- end to end, through the loopback Discord ---------------------------------------------------------


async def say(server: FakeDiscord, content: str, *, author=None, reply_to=None) -> dict:
    sent = await server.send_message(content, author=author, reply_to=reply_to)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=30)
    return reply


async def slash(server: FakeDiscord, name: str, options: dict, *, user=None) -> dict:
    handle = await server.invoke_slash(name, options, user=user)
    [message, *_] = await handle.wait_messages()
    return message


async def taught_a_faq(server: FakeDiscord) -> None:
    started = await say(
        server, "!train where are you => Main street 1\nwho made you => The owners did.", author=TRAINER
    )
    assert "Training job #" in started["content"], started["content"]
    await server.wait_for_message(started["id"], lambda m: "now answers" in m["content"], timeout=60)


@pytest.mark.usefixtures("bot")
async def test_a_question_reviewed_and_answered_is_answered_from_the_next_message(
    discord_server: FakeDiscord, services: Services
) -> None:
    server, member = discord_server, discord_server.member
    await taught_a_faq(server)
    first = await say(server, "When does the shop open on Saturdays?", author=member)
    assert "haven't learned that yet" in first["content"]
    await say(server, "what are the opening hours on saturday", author=TRAINER)

    refused = await say(server, "!review", author=member)
    assert "only the bot's owners and members with an admin role can review" in refused["content"]
    shown = await say(server, "!review", author=TRAINER)
    assert "2 people, 2 messages: `When does the shop open on Saturdays?`" in shown["content"], shown["content"]
    assert list(server.files_of(shown)) == ["review-topics.png"]
    [topic] = services.store.review.open_topics(server.guild_id)
    assert f"**#{topic.id}**" in shown["content"]

    answered = await slash(
        server, "answer", {"topic": str(topic.id), "answer": "Saturdays we open at ten."}, user=TRAINER
    )
    assert answered["content"].startswith(f"Topic #{topic.id} answered"), answered["content"]
    again = await say(server, "When does the shop open on Saturdays?", author=member)
    assert again["content"] == "Saturdays we open at ten."  # no training job in between


@pytest.mark.usefixtures("bot")
async def test_a_members_correction_changes_nothing_until_an_admin_accepts_it(
    discord_server: FakeDiscord, services: Services
) -> None:
    server, member = discord_server, discord_server.member
    await taught_a_faq(server)
    first = await say(server, "Do you sell gift cards?", author=member)
    thanks = await say(server, "!correct Yes, at the counter.", author=member, reply_to=first["id"])
    assert thanks["content"].startswith("Thanks! I passed your correction (`Yes, at the counter.`)")
    unchanged = await say(server, "Do you sell gift cards?", author=member)
    assert unchanged["content"] == first["content"]  # a suggestion changes no answer

    shown = await slash(server, "review", {}, user=server.owner)
    suggestion = next(t for t in services.store.review.open_topics(server.guild_id) if t.kind == "suggestion")
    assert f"**#{suggestion.id}** suggestion from `member`" in shown["content"]
    assert "they suggest `Yes, at the counter.`" in shown["content"]
    accepted = await say(server, f"!answer {suggestion.id}", author=server.owner)
    assert f"Topic #{suggestion.id} accepted `member`'s correction" in accepted["content"], accepted["content"]
    rejected = await say(server, f"!dismiss {suggestion.id}", author=server.owner)
    assert f"Topic #{suggestion.id} was already answered" in rejected["content"]
    after = await say(server, "Do you sell gift cards?", author=member)
    assert after["content"] == "Yes, at the counter."  # no training job in between
    rows = services.store.db.query("SELECT user_id, correction FROM corrections")
    assert [tuple(r) for r in rows] == [(member.id, "Yes, at the counter.")]
    copy = json.loads(json.dumps(services.privacy.export(member.id)))
    assert any(i["kind"] == "suggestion" for i in copy["tables"]["review_items"])
