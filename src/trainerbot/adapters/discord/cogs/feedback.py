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

# The bot's own reaction on a reply once it holds a rating: it says "counted" without a message in the
# channel. 👌 reads as "got it" and is neither 👍 nor 👎, so it cannot pass for the bot rating itself.
RATING_COUNTED = "👌"


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
        if self.bot.user is None or payload.user_id == self.bot.user.id:  # the bot's own 👌 is no rating
            return
        await self.bot.writing.stored(payload.message_id)
        place = Place(payload.guild_id, payload.channel_id)  # a rating finds only a reply given where it was made
        rated = await in_thread(
            self.bot.services.teaching.rate, payload.user_id, place, payload.message_id, str(payload.emoji)
        )
        if rated is None:
            return
        log.info("rating %s on reply %s by %s", payload.emoji, payload.message_id, payload.user_id)
        if rated.first:
            await self._acknowledge(payload)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if self.bot.user is None or payload.user_id == self.bot.user.id:
            return
        await self.bot.writing.stored(payload.message_id)
        place = Place(payload.guild_id, payload.channel_id)
        removed = await in_thread(
            self.bot.services.teaching.unrate, payload.user_id, place, payload.message_id, str(payload.emoji)
        )
        if removed:
            log.info("rating %s on reply %s taken back by %s", payload.emoji, payload.message_id, payload.user_id)

    async def _acknowledge(self, payload: discord.RawReactionActionEvent) -> None:
        """The bot's own 👌 on a reply that got its first rating: once per reply, and never a message."""
        cached = discord.utils.get(self.bot.cached_messages, id=payload.message_id)
        if cached is not None and any(mine.me and mine.emoji == RATING_COUNTED for mine in cached.reactions):
            return  # rated before, every rating since taken back: the 👌 is still there
        channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        try:
            await channel.get_partial_message(payload.message_id).add_reaction(RATING_COUNTED)
        except discord.HTTPException as error:  # e.g. no Add Reactions permission: the rating counts all the same
            log.warning("could not acknowledge the rating of reply %s: %s", payload.message_id, error)
