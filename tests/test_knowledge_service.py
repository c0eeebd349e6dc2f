"""The knowledge service: what a base knows, answer by answer, read and edited outright (the web dashboard),
and the audit trail every change to a base enters.

Real services (``core_services``): real SQLite, real MiniLM embeddings, and where the serving layer is
tested, a model trained in a real training process. The callers are the ones the web front end builds: an
owner, a server's admin (``guild_id`` that server), a member, and another server's admin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import core_services
from tests.databases import foreign_keys_hold
from trainerbot.app import Services
from trainerbot.core.conversation import Where
from trainerbot.core.knowledge import SHOWN_PER_ANSWER
from trainerbot.core.teaching import Refit
from trainerbot.errors import InvalidInput, NotReady, PermissionDenied, QuotaReached, UserError
from trainerbot.learning.examples import MAX_TEXT
from trainerbot.types import GLOBAL_BASE, Caller, Example, Place, Upload

pytestmark = pytest.mark.both_databases

A, B, EMPTY = 1_001, 1_002, 1_003
OWNER = Caller(1, "owner", is_owner=True, via="web")
ADMIN = Caller(2, "Ada", manages_server=True, guild_id=A, via="web")
MEMBER = Caller(3, "member", guild_id=A, via="web")
OTHER_ADMIN = Caller(4, "Bob", manages_server=True, guild_id=B, via="web")
ADMIN_ON_DISCORD = replace(ADMIN, via="discord", channel_id=11)
MEMBER_ON_DISCORD = replace(MEMBER, via="discord", channel_id=11)
HERE = Where(11)
QUIET = 600.0  # no refit starts during a test unless it asks
FAQ = {
    "We open at 9am.": ("when do you open", "what are your opening hours", "what time do you open"),
    "12 Main Street.": ("where are you", "what is your address", "where is the shop"),
    "Game night is on Fridays.": ("when is game night", "what day is game night", "is there a game night"),
    "We close at 5pm.": ("when do you close", "what time do you close", "closing time"),
}


def make_services(data_dir: Path, quiet: float = QUIET, **settings: Any) -> Services:
    return core_services(data_dir, auto_train_quiet_seconds=quiet, **settings)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = make_services(tmp_path / "data")
    yield built
    built.close()


def ask(services: Services, text: str) -> str | None:
    """The taught answer a member gets in server A, or None when the bot would not answer from its teaching."""
    prepared = services.conversation.prepare(MEMBER_ON_DISCORD, text, HERE)
    return prepared.answer.text if prepared.answer is not None and prepared.answer.source == "taught" else None


def reply_to(services: Services, text: str, message_id: int) -> None:
    """Asks in server A and stores the bot's reply under ``message_id``, as a front end does."""
    prepared = services.conversation.prepare(MEMBER_ON_DISCORD, text, HERE)
    assert prepared.answer is not None
    services.conversation.finish(prepared, prepared.answer.text, prepared.answer.source, [message_id])


def rows_of(services: Services, base: int) -> dict[str, list[tuple[Any, ...]]]:
    db = services.store.db
    return {
        table: [tuple(row) for row in db.query(f"SELECT * FROM {table} WHERE base = ? ORDER BY id", (base,))]
        for table in ("examples", "audit", "corrections")
    }


def upload(name: str, data: bytes) -> Upload:
    return Upload(name, data, len(data))


def wait_for_models(services: Services, succeeded: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while sum(job.status == "succeeded" for job in services.store.jobs.recent(A)) < succeeded:
        assert time.monotonic() < deadline, services.store.jobs.recent(A)
        time.sleep(0.05)


def select_dataset(services: Services, name: str, lines: str) -> None:
    folder = services.settings.data_dir / "servers" / str(A) / "datasets" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.txt").write_text(lines, encoding="utf-8")
    services.teaching.select_dataset(ADMIN_ON_DISCORD, f"datasets/{name}")


# --- the walls ----------------------------------------------------------------------------------------


def test_a_base_is_its_admins_and_the_bot_wide_base_its_owners(services: Services) -> None:
    knowledge = services.knowledge
    [example_id] = knowledge.add_example(ADMIN, A, "when do you open?", "At nine.").example_ids
    knowledge.add_example(OTHER_ADMIN, B, "where are you?", "In Paris.")
    before = rows_of(services, A)
    calls: list[Callable[[Caller], object]] = [
        lambda c: knowledge.answers(c, A),
        lambda c: knowledge.export(c, A, "csv"),
        lambda c: knowledge.audit(c, A),
        lambda c: knowledge.add_example(c, A, "hi", "Hello."),
        lambda c: knowledge.edit_example(c, A, example_id, "when?", "At ten.", True),
        lambda c: knowledge.delete_example(c, A, example_id),
        lambda c: knowledge.rename_answer(c, A, "At nine.", "At ten."),
        lambda c: knowledge.delete_answer(c, A, "At nine."),
        lambda c: knowledge.import_file(c, A, upload("faq.txt", b"hi => Hello.")),
    ]
    for call in calls:
        with pytest.raises(PermissionDenied, match="only the bot's owners and members with an admin role"):
            call(MEMBER)
        for elsewhere in (OTHER_ADMIN, replace(ADMIN, guild_id=None)):  # another server's admin; A's admin in a DM
            with pytest.raises(PermissionDenied, match="belongs to another server"):
                call(elsewhere)
    # In one's own base, another base's example ids and answers are "not found", as ones that never were.
    for refused in (
        lambda: knowledge.edit_example(OTHER_ADMIN, B, example_id, "when?", "At ten.", True),
        lambda: knowledge.delete_example(OTHER_ADMIN, B, example_id),
    ):
        with pytest.raises(NotReady, match=f"There is no example #{example_id} here."):
            refused()
    with pytest.raises(NotReady, match="No example here gives the answer"):
        knowledge.delete_answer(OTHER_ADMIN, B, "At nine.")
    assert rows_of(services, A) == before
    assert [i.text for i in knowledge.answers(OTHER_ADMIN, B).items] == ["In Paris."]
    # The bot-wide base is the owners'; owners see every server's.
    for caller in (ADMIN, OTHER_ADMIN, MEMBER):
        with pytest.raises(PermissionDenied, match="only the bot's owners can"):
            knowledge.answers(caller, GLOBAL_BASE)
    knowledge.add_example(OWNER, GLOBAL_BASE, "who made you?", "The owners.")
    assert [i.text for i in knowledge.answers(OWNER, GLOBAL_BASE).items] == ["The owners."]
    assert [i.text for i in knowledge.answers(OWNER, A).items] == ["At nine."]
    assert [i.text for i in knowledge.answers(ADMIN, A).items] == ["At nine."]


# --- reading ------------------------------------------------------------------------------------------


def test_answers_come_a_page_at_a_time_and_a_search_matches_questions_or_answers(services: Services) -> None:
    taught = [Example(f"question {n}", f"Answer {n:02d}") for n in range(45)]
    taught += [Example(f"other question {n}", f"Answer {n:02d}", positive=n % 2 == 0) for n in range(45)]
    taught += [
        Example("banana", "apple pie"),  # lower case: sorted as if it were not
        Example("is it 100% sure", "Quite_sure"),  # LIKE's wildcards, as text
        Example("Où est l'ÉCOLE ?", "Rue Haute"),
    ]
    services.store.knowledge.add_examples(A, taught, source="train:faq.csv", author_id=ADMIN.user_id)
    knowledge = services.knowledge

    first = knowledge.answers(ADMIN, A, per_page=20)
    assert (first.page, first.pages, first.total_answers, first.total_examples) == (1, 3, 48, 93)
    assert [item.text for item in first.items] == [f"Answer {n:02d}" for n in range(20)]
    last = knowledge.answers(ADMIN, A, page=99, per_page=20)  # past the end: the last page
    assert last.page == 3
    assert [item.text for item in last.items] == [f"Answer {n}" for n in range(40, 45)] + [
        "apple pie",
        "Quite_sure",
        "Rue Haute",
    ]
    zero, one = first.items[0], first.items[1]
    assert (zero.examples, zero.positive, zero.negative, zero.more) == (2, 2, 0, 0)
    assert (one.examples, one.positive, one.negative) == (2, 1, 1)
    assert [(e.question, e.positive, e.source, e.author_id, e.from_dataset) for e in one.shown] == [
        ("question 1", True, "train:faq.csv", ADMIN.user_id, False),
        ("other question 1", False, "train:faq.csv", ADMIN.user_id, False),
    ]

    def found(search: str) -> tuple[list[str], int]:
        page = knowledge.answers(ADMIN, A, search=search, per_page=100)
        return [item.text for item in page.items], page.total_examples

    assert found("ANSWER 1") == ([f"Answer {n}" for n in range(10, 20)], 20)
    assert found("%") == (["Quite_sure"], 1)
    assert found("_") == (["Quite_sure"], 1)
    assert found("éCOLE") == (["Rue Haute"], 1)  # any language's letters, in any case
    # A search matching some questions of an answer shows those only.
    page = knowledge.answers(ADMIN, A, search="other question 3", per_page=100)
    assert [item.text for item in page.items] == ["Answer 03"] + [f"Answer {n}" for n in range(30, 40)]
    assert [e.question for e in page.items[0].shown] == ["other question 3"] and page.items[0].examples == 1
    assert found("no such words") == ([], 0)
    assert knowledge.answers(ADMIN, A, search="no such words").pages == 1


def test_an_answer_shows_its_first_examples_and_counts_the_rest(services: Services) -> None:
    many = [Example(f"question number {n}", "Many.", n != 7) for n in range(SHOWN_PER_ANSWER + 10)]
    services.store.knowledge.add_examples(A, many, source="train:x", author_id=None)
    [item] = services.knowledge.answers(ADMIN, A).items
    assert (item.examples, item.positive, item.negative) == (SHOWN_PER_ANSWER + 10, SHOWN_PER_ANSWER + 9, 1)
    assert len(item.shown) == SHOWN_PER_ANSWER and item.more == 10
    assert [e.question for e in item.shown[:2]] == ["question number 0", "question number 1"]


def test_a_datasets_examples_are_shown_and_read_only(services: Services) -> None:
    knowledge = services.knowledge
    knowledge.add_example(ADMIN, A, "do you deliver", "We deliver on Mondays.")
    select_dataset(services, "shop", "can you deliver => We deliver on Mondays.\ngift cards? => At the counter.\n")
    page = knowledge.answers(ADMIN, A)
    delivery = next(item for item in page.items if item.text == "We deliver on Mondays.")
    assert delivery.examples == 2 and delivery.from_dataset == 1
    [from_dataset] = [e for e in delivery.shown if e.from_dataset]
    assert from_dataset.source == "dataset:shop"
    before = rows_of(services, A)
    for refused in (
        lambda: knowledge.edit_example(ADMIN, A, from_dataset.id, "can you deliver", "Never.", True),
        lambda: knowledge.delete_example(ADMIN, A, from_dataset.id),
        lambda: knowledge.rename_answer(ADMIN, A, "We deliver on Mondays.", "On Tuesdays."),
        lambda: knowledge.delete_answer(ADMIN, A, "At the counter."),
    ):
        with pytest.raises(InvalidInput, match=r"dataset `shop`.*read-only here.*select a new dataset"):
            refused()
    assert rows_of(services, A) == before
    # Once another dataset is selected, the first one's examples are no longer the base's: "not found".
    select_dataset(services, "newer", "are you open on sunday => No.\n")
    with pytest.raises(NotReady, match=f"There is no example #{from_dataset.id} here."):
        knowledge.delete_example(ADMIN, A, from_dataset.id)
    assert "At the counter." not in [item.text for item in knowledge.answers(ADMIN, A).items]


def test_a_page_of_a_base_of_ten_thousand_examples_is_quick(services: Services) -> None:
    """Grouped in SQL, then one query for the page's examples; real figures belong in a benchmark."""
    for base in (A, B):  # a neighbour as big: a page reads its own base's index range only
        services.store.knowledge.add_examples(
            base,
            [
                Example(f"question {n} about thing {n % 500} with a few more words", f"Answer {n % 500}: " + "x" * 80)
                for n in range(10_000)
            ],
            source="train:bench",
            author_id=ADMIN.user_id,
        )
    knowledge = services.knowledge
    knowledge.answers(ADMIN, A)  # the first read brings the pages into SQLite's cache
    timings = {}
    for label, kwargs in {
        "page 1": {"page": 1},
        "page 13": {"page": 13},
        "last page": {"page": 25},
        "search": {"search": "THING 42 "},
    }.items():
        started = time.perf_counter()
        page = knowledge.answers(ADMIN, A, **kwargs)
        timings[label] = time.perf_counter() - started
        assert page.items
    print("answers page of 10,000 examples:", ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items()))
    first = knowledge.answers(ADMIN, A)
    assert (first.total_answers, first.total_examples, first.pages, len(first.items)) == (500, 10_000, 25, 20)
    assert max(timings.values()) < 1.0


# --- changing: checks and messages --------------------------------------------------------------------


def test_bad_input_gets_trains_messages_and_stores_nothing(services: Services) -> None:
    knowledge = services.knowledge
    [first] = knowledge.add_example(ADMIN, A, "when do you open?", "At nine.").example_ids
    knowledge.add_example(ADMIN, A, "where are you?", "In Paris.")
    before = rows_of(services, A)
    refusals: list[tuple[Callable[[], object], type[UserError], str]] = [
        (lambda: knowledge.add_example(ADMIN, A, "   ", "x"), InvalidInput, "The question is empty."),
        (
            lambda: knowledge.add_example(ADMIN, A, "q", "x" * (MAX_TEXT + 1)),
            InvalidInput,
            f"The answer is {MAX_TEXT + 1} characters long; the limit is {MAX_TEXT}.",
        ),
        (lambda: knowledge.add_example(ADMIN, A, "a\x00b", "x"), InvalidInput, "contains a NUL character"),
        (lambda: knowledge.add_example(ADMIN, A, "a\ud800", "x"), InvalidInput, "lone surrogate"),
        (lambda: knowledge.add_example(ADMIN, A, " when do you open? ", "At nine."), InvalidInput, "I knew it already"),
        (
            lambda: knowledge.edit_example(ADMIN, A, first, "when do you open?", "At nine.", True),
            InvalidInput,
            "says that already",
        ),
        (
            lambda: knowledge.edit_example(ADMIN, A, first, "where are you?", "In Paris.", True),
            InvalidInput,
            "Another example teaches that already",
        ),
        (lambda: knowledge.edit_example(ADMIN, A, first, "", "x", True), InvalidInput, "The question is empty."),
        (lambda: knowledge.edit_example(ADMIN, A, 999_999, "q", "a", True), NotReady, "no example #999999 here"),
        (lambda: knowledge.delete_example(ADMIN, A, 2**70), NotReady, "There is no example #"),
        (lambda: knowledge.delete_example(ADMIN, A, -1), NotReady, "There is no example #-1 here"),
        (lambda: knowledge.rename_answer(ADMIN, A, "Nope.", "Yes."), NotReady, "No example here gives"),
        (lambda: knowledge.rename_answer(ADMIN, A, "At nine.", " "), InvalidInput, "The new answer is empty."),
        (lambda: knowledge.rename_answer(ADMIN, A, "At nine.", "At nine."), InvalidInput, "nothing changed"),
        (lambda: knowledge.delete_answer(ADMIN, A, ""), NotReady, "No example here gives"),
        (
            lambda: knowledge.import_file(ADMIN, A, upload("faq.txt", b"hello\n")),
            InvalidInput,
            "faq.txt, line 1: expected `question => answer`",
        ),
        (
            lambda: knowledge.import_file(ADMIN, A, upload("faq.txt", b"ok => fine\nbroken line\n")),
            InvalidInput,
            "faq.txt, line 2",
        ),
        (lambda: knowledge.import_file(ADMIN, A, upload("x.png", b"\x89PNG\r\n\x1a\n\0\0")), InvalidInput, "PNG"),
        (lambda: knowledge.export(ADMIN, A, "xml"), InvalidInput, "I export as csv or jsonl"),
        (lambda: knowledge.export(ADMIN, EMPTY, "csv"), PermissionDenied, "another server"),
    ]
    for refused, error, message in refusals:
        with pytest.raises(error, match=message.replace("?", r"\?").replace("(", r"\(").replace(")", r"\)")):
            refused()
    assert rows_of(services, A) == before
    # The very messages of `!train`.
    with pytest.raises(InvalidInput, match="I knew it already: nothing new was stored"):
        services.teaching.train(ADMIN_ON_DISCORD, "when do you open? => At nine.", [])
    with pytest.raises(NotReady, match="Nothing is taught here yet"):
        knowledge.export(OWNER, EMPTY, "csv")


def test_quotas_hold_as_for_train_and_a_change_that_does_not_grow_passes(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", server_max_examples=3, server_max_bytes=3_000)
    try:
        knowledge = services.knowledge
        ids = [knowledge.add_example(ADMIN, A, f"question {n}", f"Answer {n}.").example_ids[0] for n in range(3)]
        before = rows_of(services, A)
        with pytest.raises(QuotaReached, match="would hold 4 examples; it may hold 3"):
            knowledge.add_example(ADMIN, A, "one more", "Answer 0.")
        with pytest.raises(QuotaReached, match="would hold 5 examples"):
            knowledge.import_file(ADMIN, A, upload("more.txt", b"a => b\nc => d\n"))
        assert rows_of(services, A) == before
        # At its limit, a server still edits and renames: that does not grow.
        [edited] = knowledge.edit_example(ADMIN, A, ids[0], "question zero", "Answer 0.", True).example_ids
        knowledge.rename_answer(ADMIN, A, "Answer 1.", "Answer one.")
        long = "y" * 1_990
        knowledge.edit_example(ADMIN, A, edited, "question zero", long, True)
        with pytest.raises(QuotaReached, match="would keep"):
            knowledge.rename_answer(ADMIN, A, "Answer 2.", long + "z")
        # The bot's owners are not held to a server's quotas.
        knowledge.add_example(OWNER, A, "one more", "Answer 0.")
        assert services.knowledge.answers(ADMIN, A).total_examples == 4
    finally:
        services.close()


# --- the audit trail ----------------------------------------------------------------------------------


def test_every_change_enters_the_audit_trail_with_who_and_how(services: Services) -> None:
    knowledge, teaching = services.knowledge, services.teaching
    teaching.train(ADMIN_ON_DISCORD, "when do you open => At nine.\nwhere are you => In Paris.", [])
    [added] = knowledge.add_example(ADMIN, A, "what time do you open", "At nine.").example_ids
    [edited] = knowledge.edit_example(ADMIN, A, added, "what time do you open?", "At nine.", True).example_ids
    knowledge.rename_answer(ADMIN, A, "In Paris.", "In Lyon.")
    knowledge.delete_example(ADMIN, A, edited)
    knowledge.import_file(ADMIN, A, upload("faq.csv", b"question,answer\nhow much is it,Ten euros.\n"))
    knowledge.delete_answer(ADMIN, A, "Ten euros.")
    select_dataset(services, "shop", "do you deliver => On Mondays.\n")
    # The review inbox: what a member asked that nothing taught answers.
    for question in ("do you sell gift cards", "can I bring my dog"):
        assert ask(services, question) is None
    gifts, dogs = sorted(services.store.review.open_topics(A, 10), key=lambda topic: topic.id)
    services.review.answer(ADMIN_ON_DISCORD, gifts.id, "Yes, at the counter.")
    services.review.dismiss(ADMIN_ON_DISCORD, dogs.id)
    services.servers.config(ADMIN_ON_DISCORD, "bot-wide off")
    services.conversation.persona(ADMIN_ON_DISCORD, HERE, "You are a pirate.")
    reply_to(services, "when do you open", 501)
    teaching.correct(ADMIN_ON_DISCORD, 501, "At ten now.")
    # What is not a change to the base: chat (above), a rating, a note, a member's suggestion.
    teaching.rate(MEMBER.user_id, Place(A, 11), 501, "👍")
    services.conversation.feedback(MEMBER_ON_DISCORD, "nice bot", 501)
    teaching.correct(MEMBER_ON_DISCORD, 501, "We never open.")
    knowledge.add_example(OWNER, GLOBAL_BASE, "who made you", "The owners.")  # the bot-wide base's trail

    entries = knowledge.audit(ADMIN, A)
    assert [(e.action, e.user_id, e.user_name, e.via, e.base) for e in reversed(entries)] == [
        ("train", 2, "Ada", "discord", A),
        ("add example", 2, "Ada", "web", A),
        ("edit example", 2, "Ada", "web", A),
        ("rename answer", 2, "Ada", "web", A),
        ("delete example", 2, "Ada", "web", A),
        ("train", 2, "Ada", "web", A),  # the import is `!train` with a file
        ("delete answer", 2, "Ada", "web", A),
        ("select dataset", 2, "Ada", "discord", A),
        ("answer topic", 2, "Ada", "discord", A),
        ("dismiss topic", 2, "Ada", "discord", A),
        ("settings", 2, "Ada", "discord", A),
        ("persona", 2, "Ada", "discord", A),
        ("correct", 2, "Ada", "discord", A),
    ]
    details = [e.detail for e in reversed(entries)]
    assert details[0] == "Stored 2 positive examples from a message"
    assert details[1] == "A positive example for `At nine.`"
    assert details[2] == f"Example #{added}: now a positive one for `At nine.`"
    assert details[3] == "`In Paris.` → `In Lyon.` (1 example)"
    assert details[5] == "Stored 1 positive example from faq.csv"
    assert details[6] == "`Ten euros.` (1 example)"
    assert details[7] == "Dataset shop: 1 positive example, 1 answer, from 1 file"
    assert details[8] == f"Topic #{gifts.id}: 1 question answered `Yes, at the counter.`"
    assert details[9] == f"Topic #{dogs.id} (1 message)"
    assert details[10] == "bot-wide knowledge: off"
    assert details[11] == "Channel 11: You are a pirate."
    assert details[12] == "Reply 501 corrected: it answers `At ten now.` now"
    # One page at a time, newest first; the bot-wide base's trail is its owners'.
    older = knowledge.audit(ADMIN, A, before=entries[2].id, limit=2)
    assert [e.id for e in older] == [entries[3].id, entries[4].id]
    [owners] = knowledge.audit(OWNER, GLOBAL_BASE)
    assert (owners.action, owners.user_name, owners.base) == ("add example", "owner", GLOBAL_BASE)
    with pytest.raises(PermissionDenied):
        knowledge.audit(ADMIN, GLOBAL_BASE)


def test_a_refused_change_leaves_no_entry(services: Services) -> None:
    services.knowledge.add_example(ADMIN, A, "when do you open?", "At nine.")
    with pytest.raises(InvalidInput):
        services.knowledge.add_example(ADMIN, A, "when do you open?", "At nine.")
    with pytest.raises(PermissionDenied):
        services.servers.config(MEMBER_ON_DISCORD, "bot-wide off")
    assert [e.action for e in services.knowledge.audit(ADMIN, A)] == ["add example"]


# --- what points at an example moves with it ------------------------------------------------------------


def test_an_edit_keeps_a_corrections_link_and_whose_question_an_example_is(services: Services) -> None:
    knowledge, store = services.knowledge, services.store
    services.teaching.train(ADMIN_ON_DISCORD, "when do you open => At nine.", [])
    reply_to(services, "when do you open", 501)
    services.teaching.correct(ADMIN_ON_DISCORD, 501, "At ten.")
    [correction] = store.db.query("SELECT * FROM corrections WHERE base = ?", (A,))
    [moved] = knowledge.edit_example(
        ADMIN, A, correction["positive_example_id"], "when do you open", "At ten sharp.", True
    ).example_ids
    [after] = store.db.query("SELECT * FROM corrections WHERE base = ?", (A,))
    assert (after["positive_example_id"], after["negative_example_id"]) == (moved, correction["negative_example_id"])
    knowledge.delete_example(ADMIN, A, correction["negative_example_id"])  # the correction goes with its example
    assert store.db.query("SELECT * FROM corrections WHERE base = ?", (A,)) == []
    assert foreign_keys_hold(store.db)
    assert ask(services, "when do you open") == "At ten sharp."

    # An answer taught from an asker's question keeps their name on it through a rename: `!forget me` finds it.
    asker = replace(MEMBER_ON_DISCORD, user_id=30, name="asker")
    services.conversation.prepare(asker, "do you sell gift cards", HERE)
    [topic] = store.review.open_topics(A, 10)
    services.review.answer(ADMIN_ON_DISCORD, topic.id, "Yes, at the counter.")
    [renamed] = knowledge.rename_answer(ADMIN, A, "Yes, at the counter.", "Yes, ask at the counter.").example_ids
    assert [tuple(r) for r in store.db.query("SELECT example_id, user_id FROM review_examples")] == [(renamed, 30)]
    assert store.people.forget(30).review_examples == 1
    assert store.db.query("SELECT id FROM examples WHERE id = ?", (renamed,)) == []


# --- export and import ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_is_read_back_by_train_as_the_same_examples(services: Services, fmt: str) -> None:
    taught = [
        Example("when do you open?", "At nine."),
        Example("when do you open?", "At midnight.", False),
        Example('a "quoted", comma; question', "line one\nline two\r\nline three"),
        Example("q => with an arrow", "answer, with; separators\tand a tab"),
        Example("a line\u2028separator and NEL\x85 inside", "École, 東京, 🍕"),
        Example("it ends like a flag --negative", "positive=false"),
    ]
    services.store.knowledge.add_examples(A, taught, source="train:x", author_id=ADMIN.user_id)
    select_dataset(services, "shop", "do you deliver => On Mondays.\n")
    exported = services.knowledge.export(ADMIN, A, fmt)
    assert exported.name.startswith(f"knowledge-{A}-") and exported.name.endswith(f".{fmt}")
    admin_elsewhere = replace(ADMIN, guild_id=EMPTY)
    text = services.knowledge.import_file(admin_elsewhere, EMPTY, upload(exported.name, exported.data))
    assert text.startswith(f"Stored 7 positive examples from {exported.name}. They answer from now on.")
    assert services.store.knowledge.examples_in_use(EMPTY) == [*taught, Example("do you deliver", "On Mondays.")]
    with pytest.raises(InvalidInput, match="I knew all 7 already"):
        services.knowledge.import_file(admin_elsewhere, EMPTY, upload(exported.name, exported.data))


def test_owners_import_into_the_bot_wide_base_without_global(services: Services) -> None:
    text = services.knowledge.import_file(OWNER, GLOBAL_BASE, upload("faq.txt", b"who made you => The owners.\n"))
    assert text.startswith("Stored 1 positive example from faq.txt.")
    assert services.store.knowledge.examples_in_use(GLOBAL_BASE) == [Example("who made you", "The owners.")]
    assert services.store.knowledge.examples_in_use(A) == []


# --- what the bot answers after a change, before the refit ---------------------------------------------------


def test_a_deleted_or_renamed_answer_is_no_longer_given_before_the_refit(tmp_path: Path) -> None:
    """The trained model still holds a deleted answer; the serving layer withdraws it, and chat retrieval drops it."""
    services = make_services(tmp_path / "data", quiet=0)
    try:
        faq = "\n".join(f"{question} => {answer}" for answer, questions in FAQ.items() for question in questions)
        services.teaching.train(ADMIN_ON_DISCORD, faq, [])
        wait_for_models(services, 1)
        services.teaching.refit = Refit(quiet=QUIET)  # from here on, nothing is trained until the test asks
        encoder, indexes = services.models.encoder, services.conversation.indexes

        def retrieved(text: str) -> set[str]:
            return {found.output for found in indexes.nearest([A], encoder.encode([text])[0], k=4)}

        assert ask(services, "when do you open") == "We open at 9am."
        assert ask(services, "at what time do you open?") == "We open at 9am."  # a rephrasing: the model's
        assert ask(services, "where is the shop") == "12 Main Street."
        assert "12 Main Street." in retrieved("where can I find your shop")  # the index is built and cached

        services.knowledge.delete_answer(ADMIN, A, "We open at 9am.")
        services.knowledge.rename_answer(ADMIN, A, "12 Main Street.", "5 High Street.")
        [closing] = services.knowledge.answers(ADMIN, A, search="closing time").items[0].shown
        services.knowledge.edit_example(ADMIN, A, closing.id, "closing time", "We close at 6pm.", True)
        [close] = services.knowledge.answers(ADMIN, A, search="what time do you close").items[0].shown
        services.knowledge.delete_example(ADMIN, A, close.id)  # its answer stays, for its other question

        version, live = services.models.live(A)
        assert live is not None and live.model is not None
        assert {"We open at 9am.", "12 Main Street."} <= set(live.model.outputs)  # the model still has them...
        assert live.withdrawn == {"We open at 9am.", "12 Main Street."}  # ...and the serving layer withdraws them
        # ...as it does the questions it learned to answer with an example deleted or edited since.
        assert {("what time do you close", "We close at 5pm."), ("closing time", "We close at 5pm.")} <= live.retracted
        for question in FAQ["We open at 9am."] + ("at what time do you open?", "opening hours"):
            assert ask(services, question) != "We open at 9am.", question
        assert ask(services, "where is the shop") == "5 High Street."  # renamed examples answer at once
        for question in FAQ["12 Main Street."] + ("where can I find your shop",):
            assert ask(services, question) in ("5 High Street.", None), question
        assert ask(services, "closing time") == "We close at 6pm."
        assert ask(services, "what time do you close") != "We close at 5pm."
        assert ask(services, "when do you close") == "We close at 5pm."
        assert ask(services, "when is game night") == "Game night is on Fridays."  # the rest is untouched
        predictions, _ = services.answers.answer_many((A,), ["when do you open", "what is your address"])
        assert [p.output for p in predictions] in (
            [None, "5 High Street."],
            [None, None],
        )
        assert "We open at 9am." not in {p.best_guess for p in predictions}
        found = retrieved("where can I find your shop")
        assert "12 Main Street." not in found and "5 High Street." in found
        assert "We open at 9am." not in retrieved("when do you open in the morning")
        assert [job.status for job in services.store.jobs.recent(A)].count("succeeded") == 1  # no refit meanwhile

        # The refit learns without them; rolling back to the model that knew them withdraws them again.
        services.jobs.start_waiting()
        wait_for_models(services, 2)
        live = services.models.live(A)[1]
        assert live is not None and live.model is not None and services.models.live(A)[0] != version
        assert not {"We open at 9am.", "12 Main Street."} & set(live.model.outputs) and live.withdrawn == set()
        assert live.retracted == set()
        services.teaching.rollback(ADMIN_ON_DISCORD)
        assert services.models.live(A)[0] == version
        assert ask(services, "when do you open") != "We open at 9am."
        assert ask(services, "where is the shop") == "5 High Street."
        assert [e.action for e in services.knowledge.audit(ADMIN, A)][:1] == ["rollback"]
        services.teaching.retrain(ADMIN_ON_DISCORD)
        assert [e.action for e in services.knowledge.audit(ADMIN, A)][:1] == ["retrain"]
    finally:
        services.close()


def test_deleting_everything_taught_answers_nothing_and_starts_no_job(services: Services) -> None:
    services.knowledge.add_example(ADMIN, A, "when do you open", "At nine.")
    assert ask(services, "when do you open") == "At nine."
    jobs = services.store.jobs.recent(A)
    services.knowledge.delete_answer(ADMIN, A, "At nine.")
    assert ask(services, "when do you open") is None
    assert services.store.jobs.recent(A) == jobs  # nothing left to train on: no job that would fail
    assert services.knowledge.answers(ADMIN, A).total_answers == 0


def test_the_schema_holds_after_every_change(services: Services) -> None:
    """Foreign keys hold after edits of every kind (checked by SQLite itself; PostgreSQL enforces them)."""
    knowledge = services.knowledge
    ids = [knowledge.add_example(ADMIN, A, f"question {n}", "Answer.").example_ids[0] for n in range(3)]
    knowledge.edit_example(ADMIN, A, ids[0], "question 0", "Other answer.", False)
    knowledge.delete_example(ADMIN, A, ids[1])
    knowledge.rename_answer(ADMIN, A, "Answer.", "Other answer.")
    assert foreign_keys_hold(services.store.db)
    page = knowledge.answers(ADMIN, A)
    assert [(i.text, i.positive, i.negative) for i in page.items] == [("Other answer.", 1, 1)]
