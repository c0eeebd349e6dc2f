"""Teaching counts at once: what an admin teaches answers from the next message, before any training.

The refit waits for a quiet spell here (ten minutes), so every answer in these tests that comes
from something taught after the last training comes from the serving layer (learning/live.py),
and the tests check that no job ran meanwhile. Real MiniLM embeddings, real SQLite, and for the
end-to-end part the real bot on the loopback Discord.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import core_services, guild_setup
from tests.loopback_discord import FakeDiscord, run_bot
from trainerbot.app import Services
from trainerbot.core.conversation import Where
from trainerbot.core.teaching import Refit
from trainerbot.types import Caller

pytestmark = pytest.mark.both_databases

A = 1_001
ADMIN = Caller(2, "admin", manages_server=True, guild_id=A, channel_id=11)
MEMBER = Caller(4, "member", guild_id=A, channel_id=11)
HERE = Where(11)
QUIET = 600.0  # no refit starts during a test unless it asks


def make_services(data_dir: Path, quiet: float = QUIET, examples: int = 100) -> Services:
    return core_services(data_dir, auto_train_quiet_seconds=quiet, auto_train_examples=examples)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = make_services(tmp_path / "data")
    yield built
    built.close()


def ask(services: Services, text: str, caller: Caller = MEMBER) -> str | None:
    """The taught answer to a message, or None when the bot would not answer from its teaching."""
    prepared = services.conversation.prepare(caller, text, HERE)
    return prepared.answer.text if prepared.answer is not None and prepared.answer.source == "taught" else None


def reply_to(services: Services, text: str, message_id: int) -> str | None:
    """Asks and stores the bot's reply under ``message_id``, as a front end does, for `!correct`."""
    prepared = services.conversation.prepare(MEMBER, text, HERE)
    answer = prepared.answer
    assert answer is not None
    services.conversation.finish(prepared, answer.text, answer.source, [message_id])
    return answer.text if answer.source == "taught" else None


def finished_jobs(services: Services) -> list[str]:
    return [job.status for job in services.store.jobs.recent(A) if job.finished]


def wait_for_model(services: Services, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while "succeeded" not in finished_jobs(services):
        assert time.monotonic() < deadline, services.store.jobs.recent(A)
        time.sleep(0.05)


def test_an_admins_example_answers_its_question_and_rephrasings_before_any_training(services: Services) -> None:
    started = services.teaching.train(ADMIN, "when do you open => We open at 9am.", [])
    assert "They answer from now on" in started.text
    assert ask(services, "when do you open?") == "We open at 9am."
    assert ask(services, "What time do you open") == "We open at 9am."
    assert ask(services, "tell me a joke") is None
    assert finished_jobs(services) == []  # nothing was trained: the job waits for its quiet spell
    assert "waits for teaching here to pause" in services.teaching.job_status(A, started.job_id)[0]
    assert "1 example taught since then already answer" in services.teaching.model_info(ADMIN).text


def test_a_correction_counts_at_once_and_its_negative_stops_the_old_reply(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", quiet=0)
    try:
        services.teaching.train(
            ADMIN,
            "when do you open => We open at 9am.\nwhat are your opening hours => We open at 9am.\n"
            "where are you => 12 Main Street.\nwhat is your address => 12 Main Street.",
            [],
        )
        wait_for_model(services)
        services.teaching.refit = Refit(quiet=QUIET)  # from here on, nothing is trained again
        jobs_before = len(services.store.jobs.recent(A))
        assert reply_to(services, "when do you open", 501) == "We open at 9am."
        thanks = services.teaching.correct(ADMIN, 501, "We open at 10am now.")
        assert "From now on" in thanks.text
        assert ask(services, "when do you open") == "We open at 10am now."
        assert ask(services, "When do you open?") == "We open at 10am now."
        assert ask(services, "what time do you open") == "We open at 10am now."
        assert ask(services, "where are you") == "12 Main Street."  # the other answers are untouched
        recent = services.store.jobs.recent(A)
        assert len(recent) == jobs_before + 1 and not recent[0].finished  # one refit, waiting
    finally:
        services.close()


def test_a_members_correction_changes_nothing(services: Services) -> None:
    services.teaching.train(ADMIN, "when do you open => We open at 9am.", [])
    assert reply_to(services, "when do you open", 601) == "We open at 9am."
    services.teaching.correct(MEMBER, 601, "We never open, go away!")
    assert ask(services, "when do you open") == "We open at 9am."
    assert ask(services, "what time do you open?") == "We open at 9am."


def test_an_example_without_words_answers_only_its_own_text(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", quiet=0)
    try:
        services.teaching.train(ADMIN, "🍕 => pizza emoji question\nhow much is a pizza => Ten euros.", [])
        for trained in (False, True):  # the fresh examples first, then the model
            assert ask(services, "🍕") == "pizza emoji question", trained
            assert ask(services, "how much is a pizza?") == "Ten euros.", trained
            for other in ("👍", "😀😀", "?", "🍕🍕"):
                assert ask(services, other) is None, (other, trained)
            if not trained:
                wait_for_model(services)
    finally:
        services.close()


def test_a_message_sharing_no_content_word_is_not_given_the_answer(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", quiet=0)
    try:
        services.teaching.train(ADMIN, "where are you => 12 Main Street.\nwhen do you open => At 9am.", [])
        assert ask(services, "Hello! Who are you?") is None  # before training: the fresh examples
        wait_for_model(services)
        assert ask(services, "Hello! Who are you?") is None  # after: the model
        assert ask(services, "where are you?") == "12 Main Street."
        assert ask(services, "when do you open") == "At 9am."
    finally:
        services.close()


def test_teaching_in_a_row_makes_one_job_that_takes_in_everything(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", quiet=1.0)
    try:
        first = services.teaching.train(ADMIN, "when do you open => At 9am.", [])
        second = services.teaching.train(ADMIN, "where are you => 12 Main Street.", [])
        assert second.job_id == first.job_id and "takes these in too" in second.text
        reply_to(services, "when do you open", 701)
        services.teaching.correct(ADMIN, 701, "At 10am.")  # a correction joins the same waiting job
        wait_for_model(services)
        [job] = services.store.jobs.recent(A)
        assert job.id == first.job_id and job.result is not None
        assert job.result["examples"] == 4  # two taught, and the correction's two
        assert job.result["threshold"] is not None
        assert ask(services, "when do you open") == "At 10am."  # the model has it now, not only the fresh layer
        assert services.store.knowledge.fresh_state(A, services.store.knowledge.active_model(A).trained_through)[0] == 0
    finally:
        services.close()


def test_a_selected_dataset_answers_at_once_and_is_refitted(services: Services) -> None:
    folder = services.settings.data_dir / "servers" / str(A) / "faq"
    folder.mkdir(parents=True)
    (folder / "faq.txt").write_text("do you sell gift cards => Yes, at the counter.\n", encoding="utf-8")
    reply = services.teaching.select_dataset(ADMIN, "faq")
    assert "count from now on" in reply.text
    assert ask(services, "do you sell gift cards?") == "Yes, at the counter."
    [job] = services.store.jobs.recent(A)
    assert job.status == "queued"  # the refit, waiting for teaching to pause


def test_retrain_starts_a_waiting_job_now(services: Services) -> None:
    first = services.teaching.train(ADMIN, "when do you open => At 9am.\nwhere are you => Main Street.", [])
    started = services.teaching.retrain(ADMIN)
    assert started.job_id == first.job_id
    wait_for_model(services)


def test_many_new_examples_start_the_refit_at_once(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", examples=5)
    try:
        lines = "\n".join(f"question number {n} => answer {n % 3}" for n in range(6))
        started = services.teaching.train(ADMIN, lines, [])
        assert f"Training job #{started.job_id} started" in started.text
        wait_for_model(services)
    finally:
        services.close()


def test_model_and_test_reports_say_which_threshold_answers(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data", quiet=0)
    try:
        faq = "\n".join(
            f"{q} => {a}"
            for a, qs in {
                "At 9am.": ("when do you open", "what are your opening hours", "what time do you open"),
                "12 Main Street.": ("where are you", "what is your address", "where is the shop"),
                "Fridays.": ("when is game night", "what day is game night", "is there a game night"),
            }.items()
            for q in qs
        )
        services.teaching.train(ADMIN, faq, [])
        wait_for_model(services)
        [job] = services.store.jobs.recent(A)
        assert job.result is not None and 0.45 <= job.result["threshold"] <= 0.9
        done = services.teaching.job_status(A, job.id)[0]
        assert f"confidence threshold {job.result['threshold']:.2f} (chosen from its own examples)" in done
        assert job.result["unknown_size"] == 9  # every question, once its answer was left out of a fit
        assert f"{job.result['unknown_share']:.0%} of 9 questions of answers left out said" in done
        info = services.teaching.model_info(ADMIN).text
        assert "9 examples, 3 answers" in info and f"confidence threshold {job.result['threshold']:.2f}" in info
        report = services.teaching.test(ADMIN, '[{"input": "when do you open?", "output": "At 9am."}]', [])
        assert f"Confidence threshold {job.result['threshold']:.2f}" in report.text
    finally:
        services.close()


def test_a_refit_waiting_when_the_bot_stops_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    services = make_services(data)
    first = services.teaching.train(ADMIN, "when do you open => At 9am.", [])
    services.close()  # stopped during the quiet spell: the refit never started
    services = make_services(data, quiet=0)
    try:
        assert services.store.jobs.job(A, first.job_id).status == "interrupted"  # type: ignore[union-attr]
        assert ask(services, "when do you open?") == "At 9am."  # still answers, untrained
        services.teaching.train(ADMIN, "where are you => 12 Main Street.", [])
        wait_for_model(services)
        assert services.store.knowledge.active_model(A).examples == 2  # type: ignore[union-attr]
    finally:
        services.close()


def test_the_console_goes_on_while_a_refit_waits_and_runs_it_when_the_input_ends(services: Services) -> None:
    import io

    from trainerbot.adapters.console.console import Console

    out = io.StringIO()
    console = Console(services, out, server=A, role="admin")
    started = time.monotonic()
    console.run(io.StringIO("!train when do you open => At 9am.\nwhen do you open?\n"))
    printed = out.getvalue()
    assert "waits for teaching here to pause" in printed and "] At 9am." in printed  # answered before the refit
    assert "Model version 1 now answers" in printed  # the input ended: the waiting refit ran, and was followed
    assert time.monotonic() - started < QUIET


# --- through the loopback Discord ------------------------------------------------------------------


@pytest.fixture
async def discord_bot(services: Services) -> AsyncIterator[FakeDiscord]:
    from trainerbot.adapters.discord.bot import TrainerBot

    async with FakeDiscord(guild_setup()) as server, run_bot(TrainerBot(services, progress_interval=0.05), server):
        yield server


async def first_reply(server: FakeDiscord, content: str, *, author=None, reply_to=None) -> str:
    sent = await server.send_message(content, author=author, reply_to=reply_to)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=20)
    return reply


async def test_correct_then_ask_again_through_discord_with_no_training_between(
    discord_bot: FakeDiscord, services: Services
) -> None:
    server = discord_bot
    taught = await first_reply(server, "!train when do you open => We open at 9am.", author=server.owner)
    assert "They answer from now on" in taught["content"]
    answer = await first_reply(server, "when do you open?")
    assert answer["content"] == "We open at 9am."
    thanks = await first_reply(server, "!correct We open at 10am now.", author=server.owner, reply_to=answer["id"])
    assert "From now on" in thanks["content"]
    assert (await first_reply(server, "when do you open?"))["content"] == "We open at 10am now."
    assert (await first_reply(server, "What time do you open"))["content"] == "We open at 10am now."
    assert [job.status for job in services.store.jobs.recent(server.guild_id)] == ["queued"]  # none ran


def test_a_model_file_that_cannot_be_read_leaves_what_was_taught_since_answering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lost or damaged model file (a disk not shared as it should be) is logged; the reply is not dropped."""
    data = tmp_path / "data"
    services = make_services(data, quiet=0)
    try:
        services.teaching.train(ADMIN, "when do you open => We open at 9am.", [])
        wait_for_model(services)
        path = services.store.knowledge.active_model(A).path  # type: ignore[union-attr]
    finally:
        services.close()
    (data / path).write_bytes(b"not a model")
    again = make_services(data)
    try:
        with again.store.db.transaction() as db:  # on PostgreSQL, the copy kept for other machines goes too
            db.execute("DELETE FROM model_files")
        again.teaching.train(ADMIN, "where are you => At the old harbour.", [])
        assert ask(again, "where are you?") == "At the old harbour."  # taught after the model: still answers
        assert ask(again, "when do you open?") is None  # only the model knew it: no taught answer, no error
        assert f"cannot be read from {data / path}" in caplog.text
    finally:
        again.close()
