"""The discord.py bot: services come in through the constructor, cogs load in setup_hook."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from typing import Any

import discord
from discord.ext import commands

from trainerbot.adapters.discord.cogs.admin import Admin
from trainerbot.adapters.discord.cogs.conversation import Conversation
from trainerbot.adapters.discord.cogs.feedback import Feedback
from trainerbot.adapters.discord.cogs.files import Files
from trainerbot.adapters.discord.cogs.general import General
from trainerbot.adapters.discord.cogs.privacy import Privacy
from trainerbot.adapters.discord.cogs.review import Review
from trainerbot.adapters.discord.cogs.teaching import Teaching
from trainerbot.adapters.discord.cogs.voice import Voice
from trainerbot.adapters.discord.delivery import Inbox, RepliesInWriting, answer_nonce, send_once
from trainerbot.adapters.discord.errors import ErrorHandler
from trainerbot.adapters.discord.limits import Cooldowns
from trainerbot.adapters.discord.render import ALLOWED_MENTIONS, in_thread, leading_mention
from trainerbot.app import Services, build_services
from trainerbot.config import Settings

log = logging.getLogger(__name__)
CUT_OFF_COMMAND = (
    "I was restarted while working on this command, so I can't tell whether it finished. "
    "If its result isn't here, please send it again."
)


def intents() -> discord.Intents:
    wanted = discord.Intents.default()
    wanted.message_content = True  # commands with a prefix and conversation read message text
    wanted.members = True  # admin roles of whoever sends a command
    wanted.voice_states = True  # who is in the bot's voice channel (in the defaults; named for the reader)
    return wanted


def prefixes(bot: TrainerBot, message: discord.Message) -> list[str]:
    """The server's prefix, and a mention of the bot when a command's name follows it (`@trainerbot help`).

    People talk to a bot by mentioning it: `@trainerbot hello there` is conversation, not the unknown
    command `hello`, so a mention is a prefix only before a command's name.
    """
    found = [bot.settings.command_prefix]
    mention = leading_mention(bot, message.content)
    if mention is not None:
        first = message.content[len(mention) :].split(maxsplit=1)[:1]
        if first and first[0] in bot.all_commands:  # case-insensitive, like the bot's commands
            found.append(mention)
    return found


class TrainerBot(commands.AutoShardedBot):
    """The bot, on the gateway shards the settings name (all of them, as many as Discord recommends, by default).

    Always the sharded kind, so that one process and many run the same code: with one shard it is
    the plain bot's equivalent, and each shard's new session (``on_shard_ready``) catches up its own
    servers, which the plain bot's ``on_ready`` cannot tell apart.
    """

    def __init__(
        self,
        services: Services,
        *,
        progress_interval: float = 1.0,
        reply_edit_interval: float = 1.0,
        voice_client_class: type[discord.VoiceProtocol] = discord.VoiceClient,
        **options: Any,
    ) -> None:
        settings = services.settings
        super().__init__(
            command_prefix=prefixes,
            case_insensitive=True,  # phones capitalise the first letter: `!Help` is `!help`
            strip_after_prefix=True,  # `! help` is `!help`
            intents=intents(),
            help_command=None,  # the General cog's hybrid help works as !help and /help
            allowed_mentions=ALLOWED_MENTIONS,
            owner_ids=set(settings.owner_ids) or None,
            shard_count=settings.shard_count,  # None: discord.py asks Discord (GET /gateway/bot)
            shard_ids=settings.shard_ids,  # None: every shard of the count
            **options,
        )
        self.services = services
        self.settings = settings
        self.progress_interval = progress_interval  # seconds between edits of a training job's message
        self.reply_edit_interval = reply_edit_interval  # seconds between edits of a streamed chat reply
        self.voice_client_class = voice_client_class  # tests give a double: the fake Discord has no voice servers
        self._tasks: set[asyncio.Task[None]] = set()
        self.inbox = Inbox(services.store.inbox)  # each user message handled once, none missed across sessions
        self.writing = RepliesInWriting()  # ratings, corrections and feedback wait for the reply they are about
        self.cooldowns = Cooldowns()  # per-person limits of the commands that cost real work

    async def setup_hook(self) -> None:
        if not self.owner_ids:  # no owners configured: the application's owner (or its team) is one
            info = await self.application_info()
            if info.team is not None:
                self.owner_ids = {member.id for member in info.team.members}
            else:
                self.owner_id = info.owner.id
        self.add_check(self.cooldowns)
        for cog in (ErrorHandler, General, Files, Feedback, Teaching, Review, Privacy, Admin, Voice, Conversation):
            await self.add_cog(cog(self))
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d slash commands to the development guild", len(synced))

    def background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Runs a coroutine beside the bot, keeping a reference so it is not collected mid-way."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        if not await self.inbox.claim(message):  # delivered again (a replay, a catch-up): already handled
            log.info("message %s was delivered again; it is handled once", message.id)
            return
        await self._handle(message)
        # Not reached when the bot is stopped or killed mid-way: the next start takes the message up again.
        await self.inbox.finish(message)

    async def _handle(self, message: discord.Message) -> None:
        ctx = await self.get_context(message)
        if ctx.prefix is not None:  # a command, known or not: the error handler answers unknown ones
            await self.invoke(ctx)
            return
        conversation = self.get_cog("Conversation")
        if isinstance(conversation, Conversation):
            try:
                await conversation.answer(message)
            except Exception:
                log.exception("failed to answer message %s", message.id)

    async def _take_up(self, message: discord.Message) -> None:
        """A message whose handling a restart cut off: answered now, but no command is run twice."""
        ctx = await self.get_context(message)
        if ctx.prefix is not None:  # it may have done its work already: the user decides
            await send_once(
                message.channel,
                CUT_OFF_COMMAND,
                nonce=answer_nonce(message.id, "r", 0),
                reference=message,
                allowed_mentions=ALLOWED_MENTIONS,
            )
        elif not await in_thread(self.services.store.conversations.has_answer, message.id):
            await self._handle(message)  # its memory is reused, not stored twice; the same nonces
        await self.inbox.finish(message)

    async def on_ready(self) -> None:
        shards = ", ".join(str(shard) for shard in sorted(self.shards))
        log.info(
            "connected as %s (%s) to %d servers on shard(s) %s of %s",
            self.user,
            self.user and self.user.id,
            len(self.guilds),
            shards,
            self.shard_count,
        )

    async def on_shard_ready(self, shard_id: int) -> None:
        # A new session of this shard (not a RESUME): what was said in its servers while it had none
        # never reaches it as events. Once per shard, also when it alone IDENTIFYs again later, which
        # (with more than one shard in the process) discord.py follows with no on_ready.
        servers = sum(1 for guild in self.guilds if guild.shard_id == shard_id)
        log.info("shard %d of %s ready with %d servers", shard_id, self.shard_count, servers)
        self.background(self._catch_up(shard_id))

    async def _catch_up(self, shard_id: int) -> None:
        await self.inbox.catch_up(self, self.on_message, self._take_up, shard_id=shard_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await super().close()
        self.inbox.close()


async def settle(bot: TrainerBot) -> None:
    """Once connected: what start-up made (modules, models, the servers' caches) lives as long as the process,
    so it is moved out of the garbage collector's sight; a full collection then takes a few ms instead of the
    ~100 ms that held up every reply (measured beside a busy dashboard, docs/benchmarks.md)."""
    await bot.wait_until_ready()
    gc.collect()
    gc.freeze()


def run_discord(settings: Settings) -> None:
    assert settings.discord_token is not None
    services = build_services(settings)

    async def main() -> None:
        async with TrainerBot(services) as bot:
            web = None
            if settings.web:  # the dashboard, in this event loop, with the gateway's view of servers and members
                from trainerbot.adapters.web.directory import GatewayDirectory
                from trainerbot.adapters.web.server import WebServer

                web = WebServer(services, GatewayDirectory(bot))
                if await web.start():
                    web.announce()
            settling = asyncio.create_task(settle(bot))
            try:
                await bot.start(settings.discord_token.get_secret_value())
            finally:
                settling.cancel()
                if web is not None:
                    await web.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except discord.LoginFailure:
        log.error("Discord refused the token: check DISCORD_TOKEN")
        raise SystemExit(1) from None
    finally:
        services.close()
