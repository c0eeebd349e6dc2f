"""A person's own data: `!mydata` sends them all of it; `!forget me` (an option of `!forget`) deletes it.

The copy goes where only its owner sees it: an ephemeral reply to `/mydata`, a direct message
for `!mydata` (with a short note in the channel), or the DM itself when asked there.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from trainerbot.adapters.discord.delivery import answer_nonce, send_once
from trainerbot.adapters.discord.render import ALLOWED_MENTIONS, caller_of, in_their_form, in_thread, send_reply
from trainerbot.types import Reply

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

log = logging.getLogger(__name__)


def _files(reply: Reply) -> list[discord.File]:
    return [discord.File(io.BytesIO(file.data), filename=file.name) for file in reply.files]


class Privacy(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    @commands.hybrid_command()
    async def mydata(self, ctx: commands.Context[TrainerBot]) -> None:
        """Get everything I have stored about you as a JSON file, sent to you alone."""
        if ctx.interaction is not None:
            await ctx.defer(ephemeral=True)  # a large copy may take longer than Discord's 3 s to answer
        reply = await in_thread(self.bot.services.privacy.my_data, caller_of(ctx))
        if ctx.interaction is not None:
            text = in_their_form(ctx, reply.text)
            await ctx.send(text, files=_files(reply), ephemeral=True, allowed_mentions=ALLOWED_MENTIONS)
            return
        if ctx.guild is None:  # asked in a DM: the answer is as private as the question
            await send_reply(ctx, reply)
            return
        try:
            nonce = answer_nonce(ctx.message.id, "d", 0)
            dm = await ctx.author.create_dm()
            await send_once(dm, reply.text, nonce=nonce, files=lambda: _files(reply), allowed_mentions=ALLOWED_MENTIONS)
        except discord.Forbidden:  # the person does not take DMs from this server's members (or from bots)
            log.info("could not DM the data of user %s: their DMs are closed", ctx.author.id)
            closed = (
                f"{ctx.author.mention} I couldn't send you a direct message: your DMs are closed to me. "
                "Allow direct messages from this server's members and ask again, or use `/mydata`, "
                "which only you can see."
            )
            await send_reply(ctx, Reply(closed))
            return
        await send_reply(ctx, Reply("I sent you a direct message with everything I have stored about you."))


async def forget_me(ctx: commands.Context[TrainerBot]) -> None:
    """`!forget me`: deletes everything the person gave the bot, in every channel, and says what stayed."""
    reply = await in_thread(ctx.bot.services.privacy.forget_me, caller_of(ctx))
    if ctx.interaction is not None:  # what someone had stored is theirs to read
        await ctx.send(in_their_form(ctx, reply.text), ephemeral=True, allowed_mentions=ALLOWED_MENTIONS)
    else:
        await send_reply(ctx, reply)
