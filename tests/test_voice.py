"""Voice channels through the loopback Discord, as far as its gateway goes, then a voice client double.

The fake Discord has no voice servers, so ``LoopbackVoiceClient`` (tests/doubles.py) stands in
for discord.py's ``VoiceClient`` after the gateway: it reads the bot's frames every 20 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.conftest import OWNER_ID, guild_setup
from tests.doubles import LoopbackVoiceClient
from tests.loopback_discord import FakeDiscord, GuildSetup, run_bot
from trainerbot.adapters.discord.voice import SpeechSource
from trainerbot.app import build_services
from trainerbot.config import load_settings
from trainerbot.speech.audio import FRAME_BYTES

VOICE_STATE_UPDATE = 4


async def ask(server: FakeDiscord, content: str, **kwargs) -> dict:
    sent = await server.send_message(content, **kwargs)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=30)
    return reply


def voice_updates(server: FakeDiscord) -> list[dict]:
    return [frame["d"] for frame in server.gateway.received if frame.get("op") == VOICE_STATE_UPDATE]


async def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def voice_bot(
    tmp_path: Path, *, setup: GuildSetup | None = None, make_engine: Callable[..., Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[FakeDiscord, Any]]:
    """The bot on the loopback Discord with the voice client double; chat answers fixed unless an engine is given."""
    from trainerbot.adapters.discord.bot import TrainerBot

    config = load_settings(
        _env_file=None, data_dir=tmp_path / "data", owner_ids=[OWNER_ID], **{"chat_engine": "none", **settings}
    )
    services = build_services(config, **({"make_engine": make_engine} if make_engine else {}))
    try:
        bot = TrainerBot(services, voice_client_class=LoopbackVoiceClient)
        async with FakeDiscord(setup or guild_setup()) as server, run_bot(bot, server):
            yield server, bot
    finally:
        services.close()


async def test_join_speak_in_order_and_leave(tmp_path: Path) -> None:
    async with voice_bot(tmp_path) as (server, bot):
        voice_channel = server.channel_named("Voice")
        assert (await ask(server, "!join"))["content"] == "Join a voice channel first, then ask me again."
        assert (await ask(server, "!leave"))["content"] == "I'm not in a voice channel here."

        await server.set_voice_state(server.member, voice_channel)
        joined = await ask(server, "!join")
        assert joined["content"].startswith(f"Joined <#{voice_channel}>.")
        assert str(voice_updates(server)[-1]["channel_id"]) == str(voice_channel)  # op 4 through the gateway
        assert voice_updates(server)[-1]["self_deaf"] is True
        client = bot.get_cog("Voice").speakers[server.guild_id].client
        assert isinstance(client, LoopbackVoiceClient)

        taught = await ask(server, "!train when do you open => We open at nine every morning.", author=server.owner)
        await server.wait_for_message(taught["id"], lambda m: "now answers" in m["content"], timeout=60)
        await ask(server, "when do you open?")  # from the member in the voice channel: spoken too
        await ask(server, "Tell me something new about the moon please.")  # the "not learned" reply
        await ask(server, "when do you open?", author=server.owner)  # not in the channel: not spoken
        await until(lambda: len(client.plays) == 2 and not client.is_playing())
        await asyncio.sleep(0.3)
        assert len(client.plays) == 2 and client.overlaps == 0  # one after the other, none over another

        short, long = (frames for _, frames in client.plays)
        assert all(len(frame) == FRAME_BYTES for frame in short + long)  # 20 ms of 48 kHz stereo
        # Seconds of speech, without the silence played while a sentence was still being made: how
        # soon speech starts and whether it keeps up are timings, measured in bench/speech.py.
        short_s, long_s = ((len(frames) - source.underruns) / 50 for source, frames in client.plays)
        assert 1.0 < short_s < 4.0 < long_s  # the taught answer is shorter
        for source, frames in client.plays:
            assert isinstance(source, SpeechSource)
            assert any(frame.strip(b"\0") for frame in frames)

        await server.set_voice_state(server.member, None)  # the last person leaves: so does the bot
        await until(lambda: voice_updates(server)[-1]["channel_id"] is None)
        assert server.guild_id not in bot.get_cog("Voice").speakers


async def test_a_streamed_reply_is_spoken_a_sentence_at_a_time_without_its_code(tmp_path: Path) -> None:
    from tests.doubles import ScriptedEngine

    text = "Here is the first sentence. And a second one!\n```python\nprint('not spoken')\n```\nThe end."
    engine = ScriptedEngine(text, piece=6, delay=0.05)  # about a second and a half of writing
    async with voice_bot(tmp_path, make_engine=lambda settings, busy: engine) as (server, bot):
        await server.set_voice_state(server.member, server.channel_named("Voice"))
        assert (await ask(server, "!join"))["content"].startswith("Joined")
        speaker = bot.get_cog("Voice").speakers[server.guild_id]
        said: list[str] = []
        speak = speaker.voice.speak
        speaker.voice.speak = lambda words: (said.append(words), speak(words))[1]  # records what is said
        await ask(server, "Say a few things.")
        client = speaker.client
        await until(lambda: len(client.plays) == 4 and not client.is_playing())
        assert said == ["Here is the first sentence.", "And a second one!", "(code in the message)", "The end."]
        assert client.overlaps == 0 and all(len(f) == FRAME_BYTES for _, frames in client.plays for f in frames)


async def test_the_bot_leaves_a_voice_channel_left_idle(tmp_path: Path) -> None:
    async with voice_bot(tmp_path, voice_idle_seconds=1.0) as (server, _):
        await server.set_voice_state(server.member, server.channel_named("Voice"))
        assert (await ask(server, "!join"))["content"].startswith("Joined")
        joined_at = time.monotonic()
        await until(lambda: voice_updates(server)[-1]["channel_id"] is None, timeout=10)
        assert 1.0 <= time.monotonic() - joined_at < 5.0  # idle for the setting's second, then gone
        assert (await ask(server, "!leave"))["content"] == "I'm not in a voice channel here."


async def test_join_says_so_when_the_bot_may_not_speak_there(tmp_path: Path) -> None:
    from tests.loopback_discord import payloads

    setup = guild_setup()
    role_id, permissions = setup.roles["Bot"]
    setup.roles["Bot"] = (role_id, permissions & ~payloads.SPEAK)  # may connect, may not speak
    setup.everyone_permissions &= ~payloads.SPEAK
    async with voice_bot(tmp_path, setup=setup) as (server, _):
        voice_channel = server.channel_named("Voice")
        await server.set_voice_state(server.member, voice_channel)
        refused = await ask(server, "!join")
        assert refused["content"] == f"I'm not allowed to connect and speak in <#{voice_channel}>."
        assert voice_updates(server) == []  # it did not try
