"""Heavy work under contention, end to end: places in line, one person's allowance, cooldowns.

The chat engine here is ``ScriptedEngine`` (tests/doubles.py), a test double that writes a fixed
reply at a fixed pace, so that several people are certain to wait for it at the same time.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import CONFIGURED_OWNER
from tests.doubles import ScriptedEngine
from tests.loopback_discord import FakeUser
from tests.test_chat_e2e import answered, chat_bot, scripted

REPLY = "Here is a reply that takes a little while to write. It comes in pieces."
PEOPLE = [FakeUser(900_000_000_000_000_600 + n, f"person{n}") for n in range(3)]


async def test_people_who_must_wait_are_told_their_place_and_the_notice_becomes_the_answer(tmp_path: Path) -> None:
    engine = ScriptedEngine(REPLY, piece=8, delay=0.05)  # about half a second a reply
    async with chat_bot(tmp_path, make_engine=scripted(engine), edit_interval=0.2) as (server, services):
        server.add_members(*PEOPLE)
        asked = [await server.send_message(f"question {n}", author=person) for n, person in enumerate(PEOPLE)]
        answers = [await answered(services, server, sent) for sent in asked]

        first_bodies = []
        for n, messages in enumerate(answers):
            assert len(messages) == 1, f"question {n} got {len(messages)} answers"
            assert messages[0]["content"] == REPLY
            first_bodies.append(server.message_bodies[int(messages[0]["id"])][0]["content"])
        # The first started at once; the others were told their place, in the order they wrote, and that
        # message then became their answer.
        assert REPLY.startswith(first_bodies[0])
        for n, body in enumerate(first_bodies[1:], start=1):
            assert body.startswith(f"⏳ You're number {n} in line for a written reply"), body
        assert services.queues.replies.longest_line == 2
        assert (services.queues.replies.running, services.queues.replies.waiting) == (0, 0)


async def test_one_person_cannot_fill_the_line(tmp_path: Path) -> None:
    engine = ScriptedEngine(REPLY, piece=8, delay=0.05)
    async with chat_bot(tmp_path, make_engine=scripted(engine), queue_per_user=2) as (server, services):
        asked = [await server.send_message(f"question {n}") for n in range(3)]
        refused = await server.wait_for_bot_messages(
            after=asked[2]["id"], predicate=lambda m: "already have 2 requests waiting" in m["content"]
        )
        assert refused[0]["message_reference"]["message_id"] == asked[2]["id"]
        for sent in asked[:2]:
            assert [m["content"] for m in await answered(services, server, sent)] == [REPLY]
        assert len(engine.prompts) == 2  # the engine never wrote the third


async def test_heavy_commands_have_a_per_person_cooldown_that_owners_skip(tmp_path: Path) -> None:
    cases = json.dumps([{"input": "hello", "output": "hi"}])
    async with chat_bot(tmp_path, chat_engine="none") as (server, _):
        taught = await server.send_message("!train hello => hi", author=CONFIGURED_OWNER)
        await server.wait_for_bot_messages(after=taught["id"])  # a test with something to test does real work
        for _ in range(5):
            sent = await server.send_message(f"!test {cases}")
            await server.wait_for_bot_messages(after=sent["id"])
        sent = await server.send_message(f"!test {cases}")
        slow = await server.wait_for_bot_messages(after=sent["id"])
        assert slow[0]["content"].startswith("Slow down a little: you can use `!test` again in ")

        slash = await server.invoke_slash("test", {"cases": cases})
        response = await slash.wait_original()
        assert response["content"].startswith("Slow down a little") and response["flags"] & 64  # ephemeral

        for _ in range(6):  # the bot's owners are not held back
            sent = await server.send_message(f"!test {cases}", author=CONFIGURED_OWNER)
            reply = await server.wait_for_bot_messages(after=sent["id"])
            assert not reply[0]["content"].startswith("Slow down"), reply[0]["content"]


async def test_cooldowns_forget_people_whose_window_has_passed() -> None:
    from types import SimpleNamespace

    from trainerbot.adapters.discord import limits
    from trainerbot.adapters.discord.limits import Cooldowns, per_person

    @per_person(1, 60)
    async def callback() -> None: ...

    now = [0.0]
    cooldowns = Cooldowns(clock=lambda: now[0])
    bot = SimpleNamespace(settings=SimpleNamespace(owner_ids=[]), owner_id=None, owner_ids=None)
    command = SimpleNamespace(callback=callback, qualified_name="train")

    class Context(SimpleNamespace):  # a stand-in for discord.py's Context, which needs a live message
        __hash__ = object.__hash__

    def ctx(person: int) -> Context:
        return Context(command=command, bot=bot, author=SimpleNamespace(id=person))

    for person in range(limits.FORGET_AFTER + 1):
        await cooldowns(ctx(person))  # type: ignore[arg-type]
    now[0] = 61.0  # every window has passed: the next use forgets them, and still counts itself
    await cooldowns(ctx(-1))  # type: ignore[arg-type]
    assert len(cooldowns._uses) == 1
    try:
        await cooldowns(ctx(-1))  # type: ignore[arg-type]
    except Exception as exc:  # the use kept counting
        assert type(exc).__name__ == "CommandOnCooldown"
    else:
        raise AssertionError("the second use within the minute was allowed")


async def test_the_place_in_line_says_how_long_the_wait_may_be_once_replies_have_been_timed(tmp_path: Path) -> None:
    engine = ScriptedEngine(REPLY, piece=8, delay=0.05)  # about half a second a reply
    async with chat_bot(tmp_path, make_engine=scripted(engine), edit_interval=0.2) as (server, services):
        server.add_members(*PEOPLE)
        for n in range(3):  # three replies, one after the other: the queue has timed them
            await answered(services, server, await server.send_message(f"warm-up {n}"))
        asked = [await server.send_message(f"question {n}", author=person) for n, person in enumerate(PEOPLE)]
        answers = [await answered(services, server, sent) for sent in asked]
        notices = [server.message_bodies[int(messages[0]["id"])][0]["content"] for messages in answers[1:]]
        for n, notice in enumerate(notices, start=1):
            assert notice.startswith(f"⏳ You're number {n} in line for a written reply (a few seconds); "), notice


def test_the_wait_estimate_is_the_median_turn_for_each_round_ahead() -> None:
    from trainerbot.core.queue import WorkQueue
    from trainerbot.core.text import about

    queue = WorkQueue("a written reply", capacity=2)
    assert queue.expected_wait(1) is None  # nothing timed yet: no guess
    queue._recent.extend([30.0, 50.0, 40.0, 400.0])
    assert (queue.expected_wait(1), queue.expected_wait(2), queue.expected_wait(3)) == (45.0, 45.0, 90.0)
    assert [about(s) for s in (None, 4, 44.9, 45.0, 89, 90, 150)] == [
        "",
        " (a few seconds)",
        " (about 40 seconds)",
        " (about 40 seconds)",
        " (about 90 seconds)",
        " (about 2 minutes)",
        " (about 2 minutes)",
    ]
