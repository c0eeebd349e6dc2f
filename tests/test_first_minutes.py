"""What a new server's admins and members trip over in their first minutes (issue 13), kept fixed.

Through the loopback Discord in both forms where a command has both, and in the console.
"""

from __future__ import annotations

import io

import pytest

from tests.conftest import TRAINER
from tests.loopback_discord import FakeDiscord
from trainerbot.app import Services
from trainerbot.learning.evaluation import chart_figure, evaluate, parse_cases
from trainerbot.learning.model import Prediction

pytestmark = pytest.mark.usefixtures("bot")


async def say(server: FakeDiscord, content: str, *, author=None) -> dict:
    sent = await server.send_message(content, author=author)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=10)
    return reply


@pytest.mark.parametrize("typed", ["!HELP", "!Help", "! help", "!  help"])
async def test_commands_are_found_whatever_their_case_and_a_space_after_the_prefix(
    discord_server: FakeDiscord, typed: str
) -> None:
    reply = await say(discord_server, typed)
    assert "`!help <command>` explains one" in reply["content"], reply["content"]


async def test_a_capitalised_command_with_arguments_runs(discord_server: FakeDiscord) -> None:
    assert "Hi member" in (await say(discord_server, "!Hi"))["content"]
    explained = await say(discord_server, "!help TRAIN")
    assert "train" in explained["content"] and "I don't know" not in explained["content"]


async def test_a_bare_train_shows_how_to_teach_and_starts_nothing(
    discord_server: FakeDiscord, services: Services
) -> None:
    for reply in (
        await say(discord_server, "!train", author=TRAINER),
        await say(discord_server, "!train positive=false", author=TRAINER),
        (await (await discord_server.invoke_slash("train", {}, user=TRAINER)).wait_messages())[0],
    ):
        assert "What should I learn?" in reply["content"], reply["content"]
        assert "For example:" in reply["content"] and "=>" in reply["content"]
    assert services.store.jobs.recent(discord_server.guild_id) == []


def test_the_console_finds_commands_whatever_their_case(services: Services) -> None:
    from trainerbot.adapters.console.console import Console

    out = io.StringIO()
    Console(services, out).run(io.StringIO("!HELP\n! hi\n"))
    printed = out.getvalue()
    assert "Unknown command" not in printed and "Say hello." in printed and "Hi " in printed


def test_the_test_chart_counts_whole_cases() -> None:
    cases = parse_cases(b'[{"input": "a", "output": "x"}, {"input": "b", "output": "y"}]', "cases.json")
    report = evaluate(cases, [Prediction("x", 0.9, "x"), Prediction(None, 0.2, "x")])
    figure = chart_figure(report)
    figure.canvas.draw()  # the ticks are placed when drawn
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks), ticks


LIBRARY_WORDING = ("Converting to", "failed for parameter", "is a required argument that is missing", "Expected ")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("!job abc", "`abc` is not a number, and job id is one."),
        ("!retry x1", "`x1` is not a number, and job id is one."),
        ("!getfile", "`!getfile` needs path."),
        ("!select_dataset", "`!select_dataset` needs directory."),
        ("!select_dataset shop maybe", "`maybe` is not yes or no (for positive)."),
        ('!select_dataset "shop', None),
    ],
)
async def test_argument_errors_are_one_plain_sentence_with_the_usage(
    discord_server: FakeDiscord, typed: str, expected: str | None
) -> None:
    reply = (await say(discord_server, typed, author=TRAINER))["content"]
    assert not any(words in reply for words in LIBRARY_WORDING), reply
    assert "Usage: `!" in reply, reply
    if expected is not None:
        assert reply.startswith(expected), reply


async def test_correct_sent_as_a_reply_without_text_asks_for_the_answer(discord_server: FakeDiscord) -> None:
    answer = await say(discord_server, "what is this?")
    sent = await discord_server.send_message("!correct", author=TRAINER, reply_to=answer["id"])
    [reply, *_] = await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    assert "Say what the right answer is" in reply["content"], reply["content"]
    alone = await say(discord_server, "!correct", author=TRAINER)
    assert "Reply to my message with `!correct <the right answer>`" in alone["content"], alone["content"]
