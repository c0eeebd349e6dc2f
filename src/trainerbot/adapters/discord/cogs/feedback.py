"""Feedback and 👍/👎 ratings of the bot's replies."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.render import caller_of, in_thread, send_reply
from trainerbot.types import Place

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

log = logging.getLogger(__name__)


class Feedback(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    @commands.hybrid_command()
    @app_commands.describe(text="What you think; send it as a reply to one of my messages to say which")
    async def feedback(self, ctx: commands.Context[TrainerBot], *, text: str) -> None:
        """Tell the bot's owners what you think."""
        reference = ctx.message.reference if ctx.interaction is None else None
        about = reference.message_id if reference else None
        await self.bot.writing.stored(about)
        await send_reply(ctx, await in_thread(self.bot.services.conversation.feedback, caller_of(ctx), text, about))

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.bot.user is None or payload.user_id == self.bot.user.id:
            return
        await self.bot.writing.stored(payload.message_id)
        place = Place(payload.guild_id, payload.channel_id)  # a rating finds only a reply given where it was made
        stored = await in_thread(
            self.bot.services.teaching.rate, payload.user_id, place, payload.message_id, str(payload.emoji)
        )
        if stored:
            log.info("rating %s on reply %s by %s", payload.emoji, payload.message_id, payload.user_id)
