"""Self-test of the loopback Discord harness (tests/loopback_discord).

A minimal real ``commands.Bot`` defined here (not the product bot) runs against ``FakeDiscord``:
prefix and slash forms of hybrid commands, attachments both ways, message edits, reactions,
deferred responses, DMs, a rate limit and a gateway outage followed by RESUME; then a fake hosting
three guilds, where one person is an admin in the first and a plain member in the second.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.loopback_discord import FakeDiscord, FakeUser, GuildSetup, run_bot

PAYLOAD = b'{"answer": 42}'


class SelfTestBot(commands.Bot):
    """Records what reached it, so tests can assert on the bot side too."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        super().__init__(command_prefix="!", intents=intents)
        self.seen_message_ids: list[int] = []
        self.seen_messages: dict[int, discord.Message] = {}
        self.raw_reactions: asyncio.Queue[discord.RawReactionActionEvent] = asyncio.Queue()
        self.resumed = asyncio.Event()

    async def on_message(self, message: discord.Message) -> None:
        self.seen_message_ids.append(message.id)
        self.seen_messages[message.id] = message
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

    @bot.hybrid_command(description="Says where it was asked and whether the caller is an admin there")
    async def whereami(ctx: commands.Context) -> None:
        if ctx.guild is None:
            await ctx.send("in a DM")
        else:
            await ctx.send(f"in {ctx.guild.name}, admin={ctx.author.guild_permissions.administrator}")

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
    assert {command["name"] for command in server.global_commands} == {
        "ping",
        "inspect",
        "countdown",
        "slow",
        "whereami",
    }
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


# --- several guilds ----------------------------------------------------------------------------

FIRST = GuildSetup()
SHARED = FIRST.admin  # an admin in the first guild, listed in the second as a plain member
STRANGER = FakeUser(900_000_000_000_000_777, "stranger")  # in no guild at all


def three_guilds() -> list[GuildSetup]:
    """The default guild, "Guild B" (with the first guild's admin and owner as plain members) and "Guild C"."""
    return [GuildSetup(), GuildSetup.nth(1, extra_users=[SHARED.with_roles(), FIRST.owner]), GuildSetup.nth(2)]


@pytest.fixture
async def guilds() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(three_guilds()) as fake:
        yield fake


@pytest.fixture
async def guilds_bot(guilds: FakeDiscord) -> AsyncIterator[SelfTestBot]:
    async with run_bot(make_bot(), guilds) as running:
        yield running


async def polled(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds on the bot's side (which does not wake the server's waiters)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def said(server: FakeDiscord, bot: SelfTestBot, content: str, **kwargs) -> discord.Message:
    """Sends a message as a user and returns it as the bot received it."""
    sent = await server.send_message(content, **kwargs)
    await seen_by(bot, sent)
    return bot.seen_messages[int(sent["id"])]


async def test_a_bot_sees_every_guild_with_its_own_channels_and_members(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    a, b, c = guilds.guilds
    assert guilds.setup is a and guilds.guild_id == a.guild_id  # the first guild is the default
    assert sorted(guild.id for guild in guilds_bot.guilds) == sorted([a.guild_id, b.guild_id, c.guild_id])
    guild_b = guilds_bot.get_guild(b.guild_id)
    assert guild_b.name == "Guild B" and guild_b.owner_id == b.owner.id != a.owner.id
    assert guild_b.member_count == len(guild_b.members) == 6
    assert guild_b.get_channel(b.channel_id).name == "general" and b.channel_id != a.channel_id
    assert guild_b.get_thread(b.channel_named("questions")) is not None
    assert guild_b.get_member(STRANGER.id) is None and guild_b.get_member(c.member.id) is None
    assert len({a.guild_id, b.guild_id, c.guild_id, *a.own_ids(), *b.own_ids(), *c.own_ids()}) == 3 * 7


async def test_a_message_in_guild_b_carries_guild_b_and_the_roles_there(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    b = guilds.guilds[1]
    message = await said(guilds, guilds_bot, "hello B", channel_id=b.channel_id, author=b.admin)
    assert message.guild.id == b.guild_id and message.channel.id == b.channel_id
    assert [role.id for role in message.author.roles if not role.is_default()] == [b.roles["Admin"][0]]
    reply_to = await guilds.send_message("!whereami", channel_id=b.channel_named("bot-commands"))  # B's member
    [reply] = await guilds.wait_for_bot_messages(b.channel_named("bot-commands"), after=reply_to["id"])
    assert reply["content"] == "in Guild B, admin=False" and reply["guild_id"] == str(b.guild_id)
    assert reply["member"]["roles"] == [str(b.roles["Bot"][0])]


async def test_one_person_is_an_admin_in_one_guild_and_a_plain_member_in_another(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    _, b, c = guilds.guilds
    in_a = await said(guilds, guilds_bot, "in A", author=SHARED)
    in_b = await said(guilds, guilds_bot, "in B", channel_id=b.channel_id, author=SHARED)
    assert in_a.author.guild_permissions.administrator
    assert not in_b.author.guild_permissions.administrator and in_b.author.roles == [in_b.guild.default_role]
    assert in_a.author.name == in_b.author.name == "admin"  # one identity
    # An owner has every permission in their own guild only.
    assert (await said(guilds, guilds_bot, "mine", author=FIRST.owner)).author.guild_permissions.administrator
    assert not (
        await said(guilds, guilds_bot, "not mine", channel_id=b.channel_id, author=FIRST.owner)
    ).author.guild_permissions.administrator
    with pytest.raises(ValueError, match="not a member of guild 'Guild C'"):
        await guilds.send_message("let me in", channel_id=c.channel_id, author=SHARED)


async def test_a_slash_command_in_guild_b_carries_guild_b_and_the_member_there(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    b = guilds.guilds[1]
    as_admin = await guilds.invoke_slash("whereami", user=b.admin, channel_id=b.channel_id)
    assert as_admin.payload["guild_id"] == as_admin.payload["guild"]["id"] == str(b.guild_id)
    assert as_admin.payload["member"]["roles"] == [str(b.roles["Admin"][0])]
    assert [m["content"] for m in await as_admin.wait_messages()] == ["in Guild B, admin=True"]
    as_shared = await guilds.invoke_slash("whereami", user=SHARED, channel_id=b.channel_id)
    assert as_shared.payload["member"]["roles"] == [] and "user" not in as_shared.payload
    assert [m["content"] for m in await as_shared.wait_messages()] == ["in Guild B, admin=False"]
    in_a = await guilds.invoke_slash("whereami", user=SHARED)
    assert [m["content"] for m in await in_a.wait_messages()] == ["in Loopback Guild, admin=True"]


async def test_a_reaction_in_guild_b_carries_guild_b(guilds: FakeDiscord, guilds_bot: SelfTestBot) -> None:
    b = guilds.guilds[1]
    sent = await guilds.send_message("react to me", channel_id=b.channel_id, author=b.owner)
    await guilds.add_reaction(sent["id"], "👍", user=SHARED)
    event = await asyncio.wait_for(guilds_bot.raw_reactions.get(), timeout=5)
    assert (event.guild_id, event.channel_id, event.user_id) == (b.guild_id, b.channel_id, SHARED.id)
    assert event.member is not None and not event.member.guild_permissions.administrator


async def test_direct_messages_have_no_guild_even_from_someone_in_no_guild(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    b = guilds.guilds[1]
    for person in (b.member, STRANGER):
        message = await said(guilds, guilds_bot, "!whereami", channel_id=guilds.dm_channel_id(person), author=person)
        assert message.guild is None and isinstance(message.channel, discord.DMChannel)
        [reply] = await guilds.wait_for_bot_messages(guilds.dm_channel_id(person), after=message.id)
        assert reply["content"] == "in a DM" and "guild_id" not in reply
    interaction = await guilds.invoke_slash("whereami", user=STRANGER, dm=True)
    assert "guild_id" not in interaction.payload and interaction.payload["user"]["id"] == str(STRANGER.id)
    assert [m["content"] for m in await interaction.wait_messages()] == ["in a DM"]


async def test_a_guild_command_sync_to_guild_b_is_for_guild_b_only(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    _, b, c = guilds.guilds
    guild_b = discord.Object(b.guild_id)
    guilds_bot.tree.copy_global_to(guild=guild_b)
    await guilds_bot.tree.sync(guild=guild_b)
    assert set(guilds.guild_commands) == {b.guild_id} and guilds.global_commands == []
    assert {command["guild_id"] for command in guilds.guild_commands[b.guild_id]} == {str(b.guild_id)}
    in_b = await guilds.invoke_slash("ping", channel_id=b.channel_id)
    assert in_b.payload["data"]["guild_id"] == str(b.guild_id)
    in_c = await guilds.invoke_slash("ping", channel_id=c.channel_id)
    assert "guild_id" not in in_c.payload["data"]  # B's command is not C's
    assert [m["content"] for m in await in_c.wait_messages()] == ["pong"]


async def test_guild_routes_and_member_requests_answer_for_the_guild_named(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    a, b, _ = guilds.guilds
    fetched = await guilds_bot.fetch_guild(b.guild_id)
    assert (fetched.id, fetched.name, fetched.owner_id) == (b.guild_id, "Guild B", b.owner.id)
    assert {role.name: role.id for role in await fetched.fetch_roles()}["Admin"] == b.roles["Admin"][0]
    assert {channel.id for channel in await fetched.fetch_channels()} == {
        *b.text_channels.values(),
        *b.voice_channels.values(),
    }
    assert (await fetched.fetch_member(SHARED.id)).roles == [fetched.default_role]
    assert {member.id async for member in fetched.fetch_members(limit=None)} == {user.id for user in b.users}
    with pytest.raises(discord.NotFound):
        await fetched.fetch_member(a.member.id)  # a member of the first guild only
    with pytest.raises(discord.NotFound):
        await guilds_bot.fetch_guild(900_000_099_000_000_001)
    assert [guild.name async for guild in guilds_bot.fetch_guilds()] == ["Loopback Guild", "Guild B", "Guild C"]
    [found] = await guilds_bot.get_guild(b.guild_id).query_members("member")  # op 8 for guild B
    assert found.id == b.member.id and found.guild.id == b.guild_id


async def test_voice_states_are_per_guild_and_survive_a_new_identify(
    guilds: FakeDiscord, guilds_bot: SelfTestBot
) -> None:
    b = guilds.guilds[1]
    voice = b.channel_named("Voice")
    await guilds.set_voice_state(SHARED, voice)
    await polled(lambda: guilds_bot.get_guild(b.guild_id).get_member(SHARED.id).voice is not None)
    assert guilds_bot.get_guild(guilds.guild_id).get_member(SHARED.id).voice is None
    before = guilds_bot.get_guild(b.guild_id)

    def made_anew() -> bool:  # by READY, filled in by GUILD_CREATE ("is": guilds compare equal by id)
        guild = guilds_bot.get_guild(b.guild_id)
        return guild is not None and guild is not before and not guild.unavailable

    await guilds.invalidate_session(resumable=False)  # the bot IDENTIFYs again: GUILD_CREATE lists who is in voice
    await polled(made_anew)
    assert guilds_bot.get_guild(b.guild_id).get_member(SHARED.id).voice.channel.id == voice
    await guilds.set_voice_state(SHARED, None)  # leaves the channel they are in: B's
    assert guilds.voice_states[b.guild_id] == {}


def test_guilds_that_discord_could_not_have_are_refused() -> None:
    with pytest.raises(ValueError, match="id 900000000000000001 is guild"):
        FakeDiscord([GuildSetup(), GuildSetup()])
    renamed = FakeUser(SHARED.id, "someone else")
    with pytest.raises(ValueError, match="identity is global"):
        FakeDiscord([GuildSetup(), GuildSetup.nth(1, extra_users=[renamed])])
    with pytest.raises(ValueError, match="does not have"):
        FakeDiscord([GuildSetup(), GuildSetup.nth(1, extra_users=[SHARED.with_roles("Moderator")])])
