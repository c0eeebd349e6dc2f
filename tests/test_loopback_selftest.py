"""Self-test of the loopback Discord harness (tests/loopback_discord).

A minimal real ``commands.Bot`` defined here (not the product bot) runs against ``FakeDiscord``:
prefix and slash forms of hybrid commands, attachments both ways, message edits, reactions,
deferred responses, DMs, a rate limit and a gateway outage followed by RESUME.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.loopback_discord import FakeDiscord, run_bot

PAYLOAD = b'{"answer": 42}'


class SelfTestBot(commands.Bot):
    """Records what reached it, so tests can assert on the bot side too."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        super().__init__(command_prefix="!", intents=intents)
        self.seen_message_ids: list[int] = []
        self.raw_reactions: asyncio.Queue[discord.RawReactionActionEvent] = asyncio.Queue()
        self.resumed = asyncio.Event()

    async def on_message(self, message: discord.Message) -> None:
        self.seen_message_ids.append(message.id)
        await self.process_commands(message)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.raw_reactions.put(payload)

    async def on_resumed(self) -> None:
        self.resumed.set()


def make_bot() -> SelfTestBot:
    bot = SelfTestBot()

    @bot.hybrid_command(description="Answers pong")
    async def ping(ctx: commands.Context) -> None:
        await ctx.send("pong")

    @bot.hybrid_command(description="Reads a file and sends it back reversed")
    async def inspect(ctx: commands.Context, file: discord.Attachment) -> None:
        data = await file.read()
        reversed_file = discord.File(io.BytesIO(data[::-1]), filename="reversed.bin")
        await ctx.send(f"{file.filename}: {len(data)} bytes", file=reversed_file)

    @bot.hybrid_command(description="Sends a message, then edits it")
    async def countdown(ctx: commands.Context) -> None:
        message = await ctx.send("3... 2... 1...")
        await message.edit(content="liftoff")

    @bot.hybrid_command(description="Defers, then answers")
    async def slow(ctx: commands.Context) -> None:
        await ctx.defer()
        await ctx.send("finally")

    return bot


async def seen_by(bot: SelfTestBot, message: dict, timeout: float = 5.0) -> None:
    """Wait until the bot has had ``message`` (polled: the bot's side does not wake the server's waiters)."""
    async with asyncio.timeout(timeout):
        while int(message["id"]) not in bot.seen_message_ids:
            await asyncio.sleep(0.01)


@pytest.fixture
async def server() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
async def bot(server: FakeDiscord) -> AsyncIterator[SelfTestBot]:
    async with run_bot(make_bot(), server) as running:
        yield running


async def test_bot_sees_the_fake_guild(server: FakeDiscord, bot: SelfTestBot) -> None:
    guild = bot.get_guild(server.guild_id)
    assert guild is not None and guild.owner_id == server.owner.id
    assert guild.member_count == len(guild.members) == 4
    assert guild.get_member(server.admin.id).guild_permissions.administrator
    assert not guild.get_member(server.member.id).guild_permissions.administrator
    assert {channel.name for channel in guild.text_channels} == {"general", "bot-commands"}
    assert [channel.name for channel in guild.voice_channels] == ["Voice"]
    assert bot.user.id == server.bot_user.id and bot.application_id == server.application_id


async def test_prefix_ping(server: FakeDiscord, bot: SelfTestBot) -> None:
    sent = await server.send_message("!ping")
    [reply] = await server.wait_for_bot_messages(after=sent["id"])
    assert reply["content"] == "pong"
    assert reply["author"]["id"] == str(server.bot_user.id)


async def test_slash_ping_without_sync(server: FakeDiscord, bot: SelfTestBot) -> None:
    interaction = await server.invoke_slash("ping")
    [reply] = await interaction.wait_messages()
    assert interaction.response_type == 4
    assert reply["content"] == "pong"
    assert reply["interaction_metadata"]["user"]["id"] == str(server.member.id)
    # Like real Discord, the response also reaches the channel (and the bot) as MESSAGE_CREATE.
    assert server.bot_messages() == [reply]


async def test_prefix_attachment_in_and_out(server: FakeDiscord, bot: SelfTestBot) -> None:
    sent = await server.send_message("!inspect", attachments=[("data.json", PAYLOAD)])
    [reply] = await server.wait_for_bot_messages(after=sent["id"])
    assert reply["content"] == f"data.json: {len(PAYLOAD)} bytes"
    assert server.files_of(reply) == {"reversed.bin": PAYLOAD[::-1]}


async def test_slash_attachment_in_and_out(server: FakeDiscord, bot: SelfTestBot) -> None:
    interaction = await server.invoke_slash("inspect", attachments={"file": ("data.json", PAYLOAD)})
    [reply] = await interaction.wait_messages()
    assert reply["content"] == f"data.json: {len(PAYLOAD)} bytes"
    assert server.files_of(reply) == {"reversed.bin": PAYLOAD[::-1]}


async def test_synced_definitions_type_the_options(server: FakeDiscord, bot: SelfTestBot) -> None:
    await bot.tree.sync()
    assert {command["name"] for command in server.global_commands} == {"ping", "inspect", "countdown", "slow"}
    interaction = await server.invoke_slash("inspect", {"file": ("x.txt", b"abc")})
    assert interaction.payload["data"]["id"] == next(c["id"] for c in server.global_commands if c["name"] == "inspect")
    [reply] = await interaction.wait_messages()
    assert reply["content"] == "x.txt: 3 bytes"
    with pytest.raises(ValueError, match="needs option"):
        await server.invoke_slash("inspect")


async def test_command_edits_its_own_message(server: FakeDiscord, bot: SelfTestBot) -> None:
    sent = await server.send_message("!countdown")
    [reply] = await server.wait_for_bot_messages(after=sent["id"])
    edited = await server.wait_for_message(reply["id"], lambda m: m["edited_timestamp"] is not None)
    assert edited["content"] == "liftoff"
    assert [body["content"] for body in server.message_bodies[int(reply["id"])]] == [
        "3... 2... 1...",
        "liftoff",
    ]

    interaction = await server.invoke_slash("countdown")
    original = await interaction.wait_original()
    await server.wait_for_message(original["id"], lambda m: m["content"] == "liftoff")


async def test_deferred_slash_response_is_filled_in(server: FakeDiscord, bot: SelfTestBot) -> None:
    interaction = await server.invoke_slash("slow")
    assert (await interaction.wait_response())["type"] == 5
    original = await interaction.wait_original()
    assert original["content"] == "finally"
    assert interaction.followups == []


async def test_reaction_reaches_on_raw_reaction_add(server: FakeDiscord, bot: SelfTestBot) -> None:
    sent = await server.send_message("react to me")
    await server.add_reaction(sent["id"], "👍", user=server.admin)
    event = await asyncio.wait_for(bot.raw_reactions.get(), timeout=5)
    assert (event.message_id, event.user_id, event.emoji.name) == (int(sent["id"]), server.admin.id, "👍")
    assert event.member is not None and event.member.guild_permissions.administrator


async def test_direct_message(server: FakeDiscord, bot: SelfTestBot) -> None:
    sent = await server.send_dm("!ping")
    dm_channel = server.dm_channel_id(server.member)
    [reply] = await server.wait_for_bot_messages(dm_channel, after=sent["id"])
    assert reply["content"] == "pong" and "guild_id" not in reply


async def test_rate_limited_send_is_retried(server: FakeDiscord, bot: SelfTestBot) -> None:
    failure = server.fail_route(r"POST /channels/\d+/messages", status=429, retry_after=0.05)
    sent = await server.send_message("!ping")
    [reply] = await server.wait_for_bot_messages(after=sent["id"])
    assert reply["content"] == "pong" and failure.hits == 1


async def test_close_4000_then_resume_delivers_missed_message_once(server: FakeDiscord, bot: SelfTestBot) -> None:
    before = await server.send_message("!ping")
    await server.wait_for_bot_messages(after=before["id"])

    async with server.gateway_outage(close_code=4000):
        during = await server.send_message("!ping")
        await asyncio.sleep(0.1)
        assert server.bot_messages(after=during["id"]) == []  # nothing can arrive while down

    await asyncio.wait_for(bot.resumed.wait(), timeout=5)
    await server.wait_for_bot_messages(after=during["id"])
    await asyncio.sleep(0.2)  # give a duplicate delivery time to show up

    assert [m["content"] for m in server.bot_messages(after=during["id"])] == ["pong"]
    assert bot.seen_message_ids.count(int(during["id"])) == 1
    assert bot.seen_message_ids.count(int(before["id"])) == 1
    assert server.gateway.identify_count == 1
    assert [resume["replayed"] for resume in server.gateway.resumes] == [1]


async def test_a_nonce_with_enforce_nonce_creates_one_message(server: FakeDiscord, bot: SelfTestBot) -> None:
    channel = bot.get_channel(server.channel_id)
    first = await channel.send("once", nonce="n-1")
    again = await channel.send("once", nonce="n-1")
    other = await channel.send("twice", nonce="n-2")
    assert again.id == first.id != other.id
    assert [m["content"] for m in server.bot_messages()] == ["once", "twice"]
    assert server.nonce_repeats == [first.id]


async def test_a_send_whose_answer_was_lost_is_made_once(server: FakeDiscord, bot: SelfTestBot) -> None:
    # discord.py 2.7 gives every send a random nonce with enforce_nonce and retries a 500 or 502
    # itself: with the fake honouring the nonce, Discord's copy is returned instead of a second one.
    channel = bot.get_channel(server.channel_id)
    failure = server.fail_route(r"POST /channels/\d+/messages", status=502, processed=True)
    sent = await channel.send("made before the 502")
    assert failure.hits == 1 and len([r for r in server.requests if r.method == "POST"]) == 2
    assert [m["content"] for m in server.bot_messages()] == ["made before the 502"]
    assert server.nonce_repeats == [sent.id]


async def test_a_resume_can_deliver_events_again(server: FakeDiscord, bot: SelfTestBot) -> None:
    sent = await server.send_message("once, or more")
    await seen_by(bot, sent)
    server.repeat_events_on_resume(1)
    await server.close_gateway(4000)
    await asyncio.wait_for(bot.resumed.wait(), timeout=5)
    assert bot.seen_message_ids.count(int(sent["id"])) == 2  # at least once, as Discord promises
    assert server.gateway.resumes[-1]["replayed"] == 1


async def test_events_before_a_new_identify_are_lost(server: FakeDiscord, bot: SelfTestBot) -> None:
    async with server.hold_reconnects():
        await server.invalidate_session(resumable=False)
        lost = await server.send_message("said while the bot has no session")
    await server.wait_until(lambda: server.gateway.identify_count == 2 and server.gateway.connected)
    after = await server.send_message("said after it identified again")
    await seen_by(bot, after)
    assert int(lost["id"]) not in bot.seen_message_ids
    assert server.gateway.resumes == []


async def test_a_connection_cut_after_a_send_reaches_the_bot_as_an_error(server: FakeDiscord, bot: SelfTestBot) -> None:
    # discord.py retries a reset connection only for BSD and Windows error numbers: here it raises,
    # so repeating the send is the bot's job, and only the same nonce keeps it from doubling.
    channel = bot.get_channel(server.channel_id)
    server.fail_route(r"POST /channels/\d+/messages", processed=True, disconnect=True)
    with pytest.raises(aiohttp.ClientError):
        await channel.send("made, but the answer never came", nonce="n-4")
    again = await channel.send("made, but the answer never came", nonce="n-4")
    assert [m["content"] for m in server.bot_messages()] == ["made, but the answer never came"]
    assert server.nonce_repeats == [again.id]
