"""Voice channels: !join and !leave, and replies spoken to the people in the bot's channel."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from trainerbot.adapters.discord.limits import per_person
from trainerbot.adapters.discord.render import send_reply, server_only
from trainerbot.adapters.discord.voice import Speaker
from trainerbot.errors import NotReady, PermissionDenied
from trainerbot.types import Reply

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 15.0


class Voice(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot
        self.speakers: dict[int, Speaker] = {}  # guild id -> its speaker
        self.check_idle.change_interval(seconds=min(10.0, bot.settings.voice_idle_seconds / 4))
        self.check_idle.start()

    async def cog_unload(self) -> None:
        self.check_idle.cancel()
        for guild_id in list(self.speakers):
            await self._leave(guild_id)

    @commands.hybrid_command()
    @server_only()
    @per_person(3, 60)
    async def join(self, ctx: commands.Context[TrainerBot]) -> None:
        """Join your voice channel and speak my replies to the people in it."""
        voice = self.bot.services.voice
        if voice is None:
            raise NotReady("I don't speak here: text-to-speech is turned off in my settings.")
        state = getattr(ctx.author, "voice", None)
        if state is None or state.channel is None:
            raise NotReady("Join a voice channel first, then ask me again.")
        channel = state.channel
        me = ctx.guild.me  # type: ignore[union-attr]
        allowed = channel.permissions_for(me)
        if not (allowed.connect and allowed.speak):
            raise PermissionDenied(f"I'm not allowed to connect and speak in {channel.mention}.")
        speaker = self.speakers.get(ctx.guild.id)  # type: ignore[union-attr]
        if speaker is not None and speaker.channel.id == channel.id:
            await send_reply(ctx, Reply(f"I'm already in {channel.mention}."))
            return
        if speaker is not None:
            await self._leave(ctx.guild.id)  # type: ignore[union-attr]
        try:
            client = await channel.connect(cls=self.bot.voice_client_class, timeout=CONNECT_TIMEOUT, self_deaf=True)
        except (TimeoutError, discord.ClientException) as exc:
            log.warning("could not connect to voice channel %s: %r", channel.id, exc)
            raise NotReady(f"I couldn't connect to {channel.mention}; Discord didn't let me in. Try again?") from None
        self.speakers[ctx.guild.id] = Speaker(client, voice)  # type: ignore[union-attr]
        await send_reply(ctx, Reply(f"Joined {channel.mention}. I'll speak my replies to the people here."))

    @commands.hybrid_command()
    @server_only()
    async def leave(self, ctx: commands.Context[TrainerBot]) -> None:
        """Leave the voice channel."""
        speaker = self.speakers.get(ctx.guild.id)  # type: ignore[union-attr]
        if speaker is None:
            raise NotReady("I'm not in a voice channel here.")
        channel = speaker.channel
        await self._leave(ctx.guild.id)  # type: ignore[union-attr]
        await send_reply(ctx, Reply(f"Left {channel.mention}."))

    def speaker_for(self, message: discord.Message) -> Speaker | None:
        """The speaker of the bot's voice channel, when the message's author is in it too."""
        if message.guild is None:
            return None
        speaker = self.speakers.get(message.guild.id)
        state = getattr(message.author, "voice", None)
        if speaker is None or state is None or state.channel is None or state.channel.id != speaker.channel.id:
            return None
        return speaker

    async def _leave(self, guild_id: int) -> None:
        speaker = self.speakers.pop(guild_id, None)
        if speaker is not None:
            await speaker.close()

    @commands.Cog.listener()
    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        speaker = self.speakers.get(member.guild.id)
        if speaker is None or before.channel is None or before.channel.id != speaker.channel.id:
            return
        if not [m for m in before.channel.members if not m.bot]:  # the last person left: so does the bot
            log.info("leaving voice channel %s: nobody is left", before.channel.id)
            await self._leave(member.guild.id)

    @tasks.loop(seconds=10)
    async def check_idle(self) -> None:
        limit = self.bot.settings.voice_idle_seconds
        for guild_id, speaker in list(self.speakers.items()):
            if speaker.idle and time.monotonic() - speaker.last_active > limit:
                log.info("leaving voice channel %s: idle for %.0f s", speaker.channel.id, limit)
                await self._leave(guild_id)

    @check_idle.before_loop
    async def _wait_until_ready(self) -> None:
        await self.bot.wait_until_ready()
        await asyncio.sleep(0)
