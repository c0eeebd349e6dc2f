"""Messages that are not commands get an answer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from trainerbot.adapters.discord.render import ALLOWED_MENTIONS, in_thread, is_admin
from trainerbot.core.messages import Caller
from trainerbot.core.text import split_message

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

log = logging.getLogger(__name__)


class Conversation(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    async def answer(self, message: discord.Message) -> None:
        text = message.content.strip()
        if not text:
            return
        caller = Caller(
            user_id=message.author.id,
            name=message.author.display_name,
            is_admin=is_admin(self.bot, message.author, message.guild),
            guild_id=message.guild.id if message.guild else None,
            channel_id=message.channel.id,
            message_id=message.id,
        )
        conversation = self.bot.services.conversation
        answer = await in_thread(conversation.answer, caller, text)
        for chunk in split_message(answer.text):
            sent = await message.reply(chunk, mention_author=False, allowed_mentions=ALLOWED_MENTIONS)
            await in_thread(conversation.remember_reply, caller, sent.id, text, answer)
