"""Gateway shards: `trainerbot run --shard-count N --shard-ids A-B` runs those shards in one process.

Against the loopback Discord, whose gateway sends each guild's events to its shard's sessions only
(``(guild_id >> 22) % count``) and DMs to shard 0: a process answers every server of its shards
once and never hears the others; a shard that alone IDENTIFYs again catches up its own servers;
two processes splitting the shards answer everything once between them; bad options are refused
with one plain sentence.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OWNER_ID
from tests.loopback_discord import FakeDiscord, run_bot, shard_of, spread_over_shards
from tests.loopback_discord.process_bot import BotProcess
from trainerbot import cli
from trainerbot.adapters.discord.bot import TrainerBot
from trainerbot.app import Services, build_services
from trainerbot.config import Settings, SettingsError, load_settings


@asynccontextmanager
async def sharded_bot(settings: Settings, server: FakeDiscord, **shards: Any) -> AsyncIterator[TrainerBot]:
    """The bot, in this process, on the shards named (``shard_count``, ``shard_ids``)."""
    services: Services = build_services(settings.model_copy(update=shards))
    try:
        async with run_bot(TrainerBot(services, progress_interval=0.05), server) as bot:
            yield bot
    finally:
        services.close()


async def say_hi(server: FakeDiscord, channel_ids: Sequence[int]) -> list[dict[str, Any]]:
    return [await server.send_message("!hi", channel_id=channel_id) for channel_id in channel_ids]


async def answered_once(server: FakeDiscord, questions: list[dict[str, Any]]) -> None:
    """Each question got exactly one answer, in its channel, with the nonce of a command's reply."""
    for question in questions:
        channel = int(question["channel_id"])
        [answer] = await server.wait_for_bot_messages(channel, after=question["id"])
        assert answer["content"].startswith("Hi ") and answer["nonce"] == f"{question['id']}c0"
    await asyncio.sleep(0.3)  # a second answer would come at once
    for question in questions:
        assert len(server.bot_messages(int(question["channel_id"]), after=question["id"])) == 1


async def test_one_process_on_two_shards_answers_every_server_once(settings: Settings) -> None:
    guilds = spread_over_shards(4, 2)  # shards 0, 1, 0, 1
    async with FakeDiscord(guilds) as server, sharded_bot(settings, server, shard_count=2, shard_ids=[0, 1]) as bot:
        assert sorted(bot.shards) == [0, 1] and bot.shard_count == 2
        assert {guild.id for guild in bot.guilds} == {guild.guild_id for guild in guilds}
        questions = await say_hi(server, [guild.channel_id for guild in guilds])
        questions.append(await server.send_dm("!hi"))
        await answered_once(server, questions)
        assert [len(server.gateway.sessions_of_shard(shard)) for shard in (0, 1)] == [1, 1]
        assert server.gateway.misrouted() == []


async def test_a_process_on_shard_1_never_hears_shard_0(settings: Settings) -> None:
    guilds = spread_over_shards(4, 2)
    mine = [guild for guild in guilds if shard_of(guild.guild_id, 2) == 1]
    others = [guild for guild in guilds if shard_of(guild.guild_id, 2) == 0]
    async with FakeDiscord(guilds) as server, sharded_bot(settings, server, shard_count=2, shard_ids=[1]) as bot:
        assert {guild.id for guild in bot.guilds} == {guild.guild_id for guild in mine}
        ignored = await say_hi(server, [guild.channel_id for guild in others])
        ignored.append(await server.send_dm("!hi"))  # DMs are shard 0's
        questions = await say_hi(server, [guild.channel_id for guild in mine])  # sent after: answered after
        await answered_once(server, questions)
        for question in ignored:
            assert server.bot_messages(int(question["channel_id"]), after=question["id"]) == []
        never_claimed = {int(question["id"]) for question in ignored}
        assert bot.services.store.inbox.handled_among(list(never_claimed)) == set()
        assert server.gateway.sessions_of_shard(0) == []
        assert server.gateway.misrouted() == []


async def test_a_shard_that_alone_identifies_again_catches_up_its_own_servers(settings: Settings) -> None:
    """discord.py sends no on_ready when one shard of several IDENTIFYs again: its own on_shard_ready catches up."""
    guilds = spread_over_shards(2, 2)
    first, second = guilds  # shard 0, shard 1
    async with FakeDiscord(guilds) as server, sharded_bot(settings, server, shard_count=2, shard_ids=[0, 1]):
        await answered_once(server, await say_hi(server, [first.channel_id, second.channel_id]))
        async with server.hold_reconnects():
            await server.invalidate_session(shard=1)  # forgotten: what is said now reaches no session
            await server.wait_until(lambda: not server.gateway.sessions_of_shard(1), what="shard 1's session to go")
            missed = await say_hi(server, [second.channel_id])
            meanwhile = await say_hi(server, [first.channel_id])
            await answered_once(server, meanwhile)  # shard 0 goes on answering
        await answered_once(server, missed)  # found by shard 1's catch-up alone
        assert server.gateway.identify_count == 3 and server.gateway.resumes == []


async def test_two_bot_processes_split_the_shards_and_answer_everything_once(tmp_path: Path) -> None:
    """Two `trainerbot run` processes, shards 0-1 and 2,3 of 4, each on its own SQLite for now."""
    env = {
        "TRAINERBOT_OWNER_IDS": str(OWNER_ID),
        "TRAINERBOT_CHAT_ENGINE": "none",
        "TRAINERBOT_STT_ENGINE": "none",
        "TRAINERBOT_TTS_ENGINE": "none",
    }
    guilds = spread_over_shards(6, 4)  # shards 0, 1, 2, 3, 0, 1

    def process(name: str, shard_ids: str) -> BotProcess:
        home = tmp_path / name
        return BotProcess(server, home / "data", home, env, ["--shard-count", "4", "--shard-ids", shard_ids])

    async with FakeDiscord(guilds) as server, process("a", "0-1") as a, process("b", "2,3") as b:
        await asyncio.gather(a.start(), b.start())
        identified = sorted(frame["d"]["shard"] for frame in server.gateway.received if frame.get("op") == 2)
        assert identified == [[0, 4], [1, 4], [2, 4], [3, 4]]
        questions = await say_hi(server, [guild.channel_id for guild in guilds])
        questions.append(await server.send_dm("!hi"))
        await answered_once(server, questions)
        assert server.gateway.misrouted() == []
        assert await a.stop() == 0 and await b.stop() == 0


def test_shard_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_settings(_env_file=None).shard_count, load_settings(_env_file=None).shard_ids) == (None, None)
    monkeypatch.setenv("TRAINERBOT_SHARD_COUNT", "8")
    monkeypatch.setenv("TRAINERBOT_SHARD_IDS", "6, 0-2,1")
    settings = load_settings(_env_file=None)
    assert settings.shard_count == 8 and settings.shard_ids == [0, 1, 2, 6]
    monkeypatch.setenv("TRAINERBOT_SHARD_IDS", "8")
    with pytest.raises(SettingsError, match=r"^setting TRAINERBOT_SHARD_IDS is invalid: shard 8 is not one of"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (
            ["--shard-count", "2", "--shard-ids", "3"],
            "setting TRAINERBOT_SHARD_IDS is invalid: shard 3 is not one of the 2 shards (0 to 1)",
        ),
        (
            ["--shard-ids", "0-1"],
            "setting TRAINERBOT_SHARD_IDS is invalid: shard ids need the number of shards too "
            "(TRAINERBOT_SHARD_COUNT, or --shard-count): the same id is another set of servers with another count",
        ),
        (
            ["--shard-count", "4", "--shard-ids", "3-1"],
            "setting TRAINERBOT_SHARD_IDS is invalid: 3-1: a range goes from the lower id to the higher, as in 1-3",
        ),
        (
            ["--shard-count", "4", "--shard-ids", "one"],
            "setting TRAINERBOT_SHARD_IDS is invalid: 'one' is not a shard id: "
            "give a number (3), a range (0-3) or a list (0,2,4-5)",
        ),
        (
            ["--shard-count", "0"],
            "setting TRAINERBOT_SHARD_COUNT is invalid: Input should be greater than or equal to 1",
        ),
    ],
)
def test_the_command_line_refuses_bad_shard_options(
    options: list[str], error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    monkeypatch.setenv("DISCORD_TOKEN", "never-used")
    assert cli.main(["run", *options]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"trainerbot: {error}"]


async def test_the_dashboard_of_a_process_on_some_shards_shows_every_server(settings: Settings) -> None:
    """Its gateway sees only its shards' servers; the others' are asked of Discord's REST API, so a person
    sees every server they share with the bot, with the rights Discord gives them there."""
    import aiohttp

    from trainerbot.adapters.web.directory import GatewayDirectory
    from trainerbot.adapters.web.server import WebServer

    here, elsewhere = spread_over_shards(2, 2)  # shard 0 runs in this process, shard 1 in another
    async with (
        FakeDiscord([here, elsewhere], shards=2) as server,
        sharded_bot(settings.model_copy(update={"web_port": 0}), server, shard_count=2, shard_ids=[0]) as bot,
    ):
        assert bot.get_guild(elsewhere.guild_id) is None  # not this process's to hear
        directory = GatewayDirectory(bot)
        assert {s.id for s in await directory.servers()} == {here.guild_id, elsewhere.guild_id}
        web = WebServer(bot.services, directory)
        assert await web.start()
        try:
            store = bot.services.store
            for person, status in ((elsewhere.admin, 200), (elsewhere.member, 403), (here.member, 404)):
                token = store.web_sessions.create(person.id, person.username, operator=False, guilds=[], hours=1)
                jar = aiohttp.CookieJar(unsafe=True)
                jar.update_cookies({"trainerbot_session": web.dashboard.signer.sign(token)})
                async with (
                    aiohttp.ClientSession(web.dashboard.public_url, cookie_jar=jar) as http,
                    http.get(f"/servers/{elsewhere.guild_id}/knowledge") as response,
                ):
                    assert response.status == status, person.username
        finally:
            await web.stop()
