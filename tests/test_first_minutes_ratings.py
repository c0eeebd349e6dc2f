"""Ratings in a new server's first minutes (issue 13, item 7), through the loopback Discord.

One rating per person and reply: a changed reaction replaces the earlier rating, a reaction taken
back removes it, and the bot shows once, with a reaction of its own and no message, that a reply's
rating counted.
"""

from __future__ import annotations

import pytest

from tests.conftest import TRAINER
from tests.loopback_discord import FakeDiscord
from trainerbot.adapters.discord.cogs.feedback import RATING_COUNTED
from trainerbot.app import Services

pytestmark = pytest.mark.usefixtures("bot")


async def answer(server: FakeDiscord) -> dict:
    """One of the bot's replies, stored and ready to be rated."""
    sent = await server.send_message("what is this?")
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=10)
    return reply


def ratings(services: Services, reply: dict) -> list[tuple[int, str, int]]:
    rows = services.store.db.query(
        "SELECT user_id, emoji, rating FROM reactions WHERE bot_message_id = ? ORDER BY id", (int(reply["id"]),)
    )
    return [(row["user_id"], row["emoji"], row["rating"]) for row in rows]


def disliked(services: Services, reply: dict) -> int:
    """The reply's 👎 waiting in the review inbox."""
    row = services.store.db.query_one(
        "SELECT count(*) FROM review_items i JOIN review_topics t ON t.id = i.topic_id"
        " WHERE i.kind = 'disliked' AND i.bot_message_id = ? AND t.status = 'open'",
        (int(reply["id"]),),
    )
    return row[0]


def acknowledgements(server: FakeDiscord, reply: dict) -> list[str]:
    """The bot's requests to add its own reaction to the reply."""
    return [
        request.path
        for request in server.requests
        if request.method == "PUT"
        and request.path.startswith(f"/channels/{reply['channel_id']}/messages/{reply['id']}/reactions/")
    ]


async def settled(server: FakeDiscord) -> None:
    """Returns once the bot has answered a later message: what it did about the reactions before is done."""
    sent = await server.send_message("!hi")
    await server.wait_for_bot_messages(after=sent["id"], timeout=10)


@pytest.mark.parametrize("taken_back_first", [False, True], ids=["changed", "taken-back-then-changed"])
async def test_a_changed_rating_replaces_the_earlier_one(
    discord_server: FakeDiscord, services: Services, taken_back_first: bool
) -> None:
    reply, member = await answer(discord_server), discord_server.member
    await discord_server.add_reaction(reply["id"], "👍", user=member)
    await discord_server.wait_until(lambda: ratings(services, reply), what="the 👍 stored")
    if taken_back_first:
        await discord_server.remove_reaction(reply["id"], "👍", user=member)
        await discord_server.wait_until(lambda: not ratings(services, reply), what="the 👍 taken back")
    await discord_server.add_reaction(reply["id"], "👎", user=member)
    await discord_server.wait_until(lambda: disliked(services, reply), what="the 👎 in the review inbox")
    await settled(discord_server)
    assert ratings(services, reply) == [(member.id, "👎", -1)]

    await discord_server.add_reaction(reply["id"], "👍", user=member)  # and back: the 👎 leaves the inbox
    await discord_server.wait_until(lambda: not disliked(services, reply), what="the 👎 out of the inbox")
    await settled(discord_server)
    assert ratings(services, reply) == [(member.id, "👍", 1)]


async def test_a_rating_taken_back_is_removed(discord_server: FakeDiscord, services: Services) -> None:
    reply, member = await answer(discord_server), discord_server.member
    await discord_server.add_reaction(reply["id"], "👍", user=member)
    await discord_server.wait_until(lambda: ratings(services, reply), what="the 👍 stored")
    await discord_server.add_reaction(reply["id"], "👎", user=member)  # both show on Discord; the 👎 counts
    await discord_server.wait_until(lambda: disliked(services, reply), what="the 👎 stored")
    await discord_server.remove_reaction(reply["id"], "👍", user=member)  # the replaced one: nothing changes
    await settled(discord_server)
    assert ratings(services, reply) == [(member.id, "👎", -1)]

    await discord_server.remove_reaction(reply["id"], "👎", user=member)
    await discord_server.wait_until(lambda: not ratings(services, reply), what="the rating removed")
    assert disliked(services, reply) == 0


async def test_the_bot_acknowledges_a_reply_s_ratings_once_and_quietly(
    discord_server: FakeDiscord, services: Services
) -> None:
    reply, member = await answer(discord_server), discord_server.member
    await discord_server.add_reaction(reply["id"], "👍", user=member)
    await discord_server.wait_until(lambda: acknowledgements(discord_server, reply), what="the bot's reaction")
    assert discord_server.reactions[int(reply["id"])][RATING_COUNTED] == [discord_server.bot_user.id]
    await discord_server.add_reaction(reply["id"], "👎", user=TRAINER)
    await discord_server.add_reaction(reply["id"], "👎", user=member)  # a changed rating: no second reaction
    await discord_server.wait_until(lambda: len(ratings(services, reply)) == 2 and disliked(services, reply) == 2)
    await discord_server.remove_reaction(reply["id"], "👎", user=member)
    await discord_server.remove_reaction(reply["id"], "👎", user=TRAINER)
    await discord_server.wait_until(lambda: not ratings(services, reply), what="every rating taken back")
    await discord_server.add_reaction(reply["id"], "👍", user=member)  # the first again, and the 👌 still there
    await discord_server.wait_until(lambda: ratings(services, reply), what="the 👍 stored")
    await settled(discord_server)

    assert len(acknowledgements(discord_server, reply)) == 1
    assert ratings(services, reply) == [(member.id, "👍", 1)]
    # Its own reaction is no rating, and it posted nothing about the ratings (only the answers to `!hi`).
    later = discord_server.bot_messages(after=reply["id"])
    assert all("Hi " in message["content"] for message in later), [m["content"] for m in later]


async def test_a_rating_counts_when_the_bot_may_not_react(discord_server: FakeDiscord, services: Services) -> None:
    reply = await answer(discord_server)
    refused = discord_server.fail_route(r"PUT /channels/\d+/messages/\d+/reactions/", status=403)
    await discord_server.add_reaction(reply["id"], "👍", user=discord_server.member)
    await discord_server.wait_until(lambda: refused.hits, what="the bot's reaction refused")
    await settled(discord_server)
    assert ratings(services, reply) == [(discord_server.member.id, "👍", 1)]
    assert all("Hi " in message["content"] for message in discord_server.bot_messages(after=reply["id"]))
