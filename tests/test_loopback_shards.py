"""Self-test of the loopback Discord's sharding, with real ``discord.AutoShardedClient``s.

Six guilds on four shards (``spread_over_shards``: guild n on shard n % 4). Two clients split the
shards as two bot processes would (0-1 and 2-3): each hears about its own guilds only, messages,
reactions, slash commands and voice states included, and DMs reach shard 0 alone. A client
without a shard count runs what ``GET /gateway/bot`` recommends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord
import pytest

from tests.loopback_discord import FakeDiscord, GuildSetup, run_bot, shard_of, spread_over_shards

SHARDS = 4


class ShardedRecorder(discord.AutoShardedClient):
    """Records what reached it: the ids of messages, reactions' messages, interactions, voice changes' guilds."""

    def __init__(self, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        intents.members = True
        super().__init__(intents=intents, **options)
        self.messages: set[int] = set()
        self.reactions: set[int] = set()
        self.interactions: set[int] = set()
        self.voice: set[int] = set()

    async def on_message(self, message: discord.Message) -> None:
        self.messages.add(message.id)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.add(payload.message_id)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.interactions.add(interaction.id)

    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        self.voice.add(member.guild.id)


async def polled(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds on the clients' side (which does not wake the server's waiters)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def on_shards(server: FakeDiscord, *shards: int) -> set[int]:
    return {guild.guild_id for guild in server.guilds if shard_of(guild.guild_id, SHARDS) in shards}


@pytest.fixture
async def server() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(spread_over_shards(6, SHARDS), shards=SHARDS) as fake:
        yield fake


def test_guilds_land_on_the_shards_asked_for() -> None:
    guilds = spread_over_shards(6, SHARDS)
    assert [shard_of(guild.guild_id, SHARDS) for guild in guilds] == [0, 1, 2, 3, 0, 1]
    assert shard_of(GuildSetup.on_shard(3, 1, 2).guild_id, 2) == 1
    with pytest.raises(ValueError, match="not one of 4 shards"):
        GuildSetup.on_shard(1, 4, SHARDS)


async def test_a_client_without_a_count_runs_the_shards_gateway_bot_recommends(server: FakeDiscord) -> None:
    async with run_bot(ShardedRecorder(), server) as client:
        assert client.shard_count == SHARDS and sorted(client.shards) == [0, 1, 2, 3]
        assert any(r.method == "GET" and r.path == "/gateway/bot" for r in server.requests)
        identified = [frame["d"]["shard"] for frame in server.gateway.received if frame.get("op") == 2]
        assert sorted(identified) == [[0, 4], [1, 4], [2, 4], [3, 4]]
        assert {guild.id for guild in client.guilds} == {guild.guild_id for guild in server.guilds}
        assert all(guild.shard_id == shard_of(guild.id, SHARDS) for guild in client.guilds)
        sent = [await server.send_message("hi", channel_id=guild.channel_id) for guild in server.guilds]
        await polled(lambda: client.messages == {int(message["id"]) for message in sent})
    assert server.gateway.misrouted() == []


async def test_two_clients_splitting_the_shards_each_hear_only_their_guilds(server: FakeDiscord) -> None:
    low = ShardedRecorder(shard_count=SHARDS, shard_ids=[0, 1])
    high = ShardedRecorder(shard_count=SHARDS, shard_ids=[2, 3])
    async with run_bot(low, server), run_bot(high, server):
        assert not any(r.path == "/gateway/bot" for r in server.requests)  # a count given: nothing to ask
        assert {guild.id for guild in low.guilds} == on_shards(server, 0, 1) and len(low.guilds) == 4
        assert {guild.id for guild in high.guilds} == on_shards(server, 2, 3) and len(high.guilds) == 2

        sent = {guild.guild_id: await server.send_message("hi", channel_id=guild.channel_id) for guild in server.guilds}
        dm = await server.send_dm("hello in private")
        for guild in server.guilds:
            await server.add_reaction(sent[guild.guild_id]["id"], "👍", user=guild.member)
            await server.set_voice_state(guild.member, guild.channel_named("Voice"))
        slash = {
            guild.guild_id: await server.invoke_slash("ping", channel_id=guild.channel_id) for guild in server.guilds
        }
        dm_slash = await server.invoke_slash("ping", dm=True)

        def expected(client: ShardedRecorder, guild_ids: set[int], dms: bool) -> dict[str, set[int]]:
            return {
                "messages": {int(sent[g]["id"]) for g in guild_ids} | ({int(dm["id"])} if dms else set()),
                "reactions": {int(sent[g]["id"]) for g in guild_ids},
                "interactions": {slash[g].id for g in guild_ids} | ({dm_slash.id} if dms else set()),
                "voice": guild_ids,
            }

        def heard(client: ShardedRecorder) -> dict[str, set[int]]:
            return {name: getattr(client, name) for name in ("messages", "reactions", "interactions", "voice")}

        await polled(lambda: heard(low) == expected(low, on_shards(server, 0, 1), dms=True))
        await polled(lambda: heard(high) == expected(high, on_shards(server, 2, 3), dms=False))
    assert server.gateway.misrouted() == []


async def test_a_member_request_is_answered_on_the_guild_shard(server: FakeDiscord) -> None:
    async with run_bot(ShardedRecorder(shard_count=SHARDS, shard_ids=[2, 3]), server) as client:
        guild = server.guilds[3]  # shard 3
        [found] = await client.get_guild(guild.guild_id).query_members("member")  # op 8 on shard 3's socket
        assert found.id == guild.member.id
        [session] = server.gateway.sessions_of_shard(3)
        assert any(event == "GUILD_MEMBERS_CHUNK" for event, _ in session.sent())
    assert server.gateway.misrouted() == []


async def test_an_unsharded_client_still_hears_every_guild_and_dm(server: FakeDiscord) -> None:
    intents = discord.Intents.default()
    intents.message_content = True
    seen: set[int] = set()

    class Unsharded(discord.Client):
        async def on_message(self, message: discord.Message) -> None:
            seen.add(message.id)

    async with run_bot(Unsharded(intents=intents), server) as client:
        assert len(client.guilds) == 6
        sent = [await server.send_message("hi", channel_id=guild.channel_id) for guild in server.guilds]
        sent.append(await server.send_dm("and a DM"))
        await polled(lambda: seen == {int(message["id"]) for message in sent})


async def test_a_client_identifying_its_shards_again_leaves_the_other_shards_sessions(server: FakeDiscord) -> None:
    """A restarted process IDENTIFYs afresh: its old sessions go, another process's stay resumable."""
    async with run_bot(ShardedRecorder(shard_count=SHARDS, shard_ids=[2, 3]), server):
        others = {session.session_id for shard in (2, 3) for session in server.gateway.sessions_of_shard(shard)}
        async with run_bot(ShardedRecorder(shard_count=SHARDS, shard_ids=[0, 1]), server):
            pass  # closed: its sessions linger, disconnected, as a killed process's do
        async with run_bot(ShardedRecorder(shard_count=SHARDS, shard_ids=[0, 1]), server):
            assert [len(server.gateway.sessions_of_shard(shard)) for shard in range(SHARDS)] == [1, 1, 1, 1]
            assert all(session.connected for session in server.gateway.sessions.values())
            still = {session.session_id for shard in (2, 3) for session in server.gateway.sessions_of_shard(shard)}
            assert still == others


async def test_a_shard_that_is_not_one_of_its_count_is_refused(server: FakeDiscord) -> None:
    """discord.py does not check shard ids against the count; Discord closes the socket with 4010."""
    with pytest.raises(RuntimeError, match="4010"):
        async with run_bot(ShardedRecorder(shard_count=2, shard_ids=[3]), server):
            pass


async def test_misrouted_finds_an_event_sent_past_the_routing(server: FakeDiscord) -> None:
    async with run_bot(ShardedRecorder(shard_count=SHARDS, shard_ids=[2]), server):
        [session] = server.gateway.sessions_of_shard(2)
        stray = {"id": "1", "channel_id": str(server.guilds[0].channel_id), "guild_id": str(server.guilds[0].guild_id)}
        await session.dispatch("MESSAGE_DELETE", stray)  # guild 0 is shard 0's
        assert server.gateway.misrouted() == [((2, SHARDS), "MESSAGE_DELETE", server.guilds[0].guild_id)]
