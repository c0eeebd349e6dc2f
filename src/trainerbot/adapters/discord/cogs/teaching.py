"""The teaching loop on Discord: train, test, datasets, corrections and model versions."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.delivery import answer_nonce, edit_until_done, send_once
from trainerbot.adapters.discord.limits import per_person
from trainerbot.adapters.discord.render import (
    ALLOWED_MENTIONS,
    attachments_of,
    caller_of,
    for_admins,
    in_their_form,
    in_thread,
    message_id_in,
    owners_in_dms,
    read_uploads,
    send_reply,
    server_only,
)
from trainerbot.core.teaching import JobStarted
from trainerbot.core.text import short
from trainerbot.errors import InvalidInput
from trainerbot.types import Reply

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

log = logging.getLogger(__name__)


class Teaching(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot

    @property
    def teaching(self):
        return self.bot.services.teaching

    async def _announce(self, ctx: commands.Context[TrainerBot], started: JobStarted) -> None:
        message = await send_reply(ctx, Reply(started.text))
        self.bot.background(self._follow(ctx, message, started))

    async def _follow(self, ctx: commands.Context[TrainerBot], message: discord.Message, started: JobStarted) -> None:
        """Edits the job's message with its progress until it ends."""
        shown = started.text
        head = started.text.split("Training job #")[0]
        while True:
            await asyncio.sleep(self.bot.progress_interval)
            status, finished = await in_thread(self.teaching.job_status, started.base, started.job_id)
            text = in_their_form(ctx, head + status)
            if text != shown:
                try:
                    await edit_until_done(message, text, allowed_mentions=ALLOWED_MENTIONS)
                except discord.HTTPException as exc:  # e.g. an interaction token past its 15 minutes
                    log.warning("could not edit the progress of job %d: %s", started.job_id, exc)
                    if finished:  # how it ended is not lost: it comes as a message of its own
                        nonce = answer_nonce(message.id, "j", 0)
                        await send_once(ctx.channel, text, nonce=nonce, allowed_mentions=ALLOWED_MENTIONS)
                shown = text
            if finished:
                return

    @commands.hybrid_command(usage="[question => answer | file or directory] [positive=false] (+ attached file)")
    @app_commands.describe(
        file="A .json, .jsonl, .csv or .txt file of examples, or a .zip of them",
        data="`question => answer` (one a line), or a file or directory in this server's folder",
        positive="False: these are answers the bot must not give",
        bot_wide="Owners: teach the bot-wide knowledge (every server and DM) instead of this server's",
    )
    @per_person(3, 60)
    @server_only()
    @for_admins
    async def train(
        self,
        ctx: commands.Context[TrainerBot],
        file: discord.Attachment | None = None,
        *,
        data: str = "",
        positive: bool = True,
        bot_wide: bool = False,
    ) -> None:
        """Teach this server's bot examples and train (admins); positive=false: answers not to give."""
        await ctx.defer()
        uploads = await read_uploads(attachments_of(ctx, file), self.bot.settings.upload_limit_bytes)
        started = await in_thread(self.teaching.train, caller_of(ctx), data, uploads, positive, bot_wide)
        await self._announce(ctx, started)

    @commands.hybrid_command()
    @per_person(3, 60)
    @server_only()
    @for_admins
    async def retrain(self, ctx: commands.Context[TrainerBot]) -> None:
        """Train again on everything collected (owners and admins)."""
        await self._announce(ctx, await in_thread(self.teaching.retrain, caller_of(ctx)))

    @commands.hybrid_command()
    @app_commands.describe(job_id="The number of the interrupted or failed job")
    @per_person(3, 60)
    @server_only()
    @for_admins
    async def retry(self, ctx: commands.Context[TrainerBot], job_id: int) -> None:
        """Train again on the same examples as an interrupted or failed job (owners and admins)."""
        await self._announce(ctx, await in_thread(self.teaching.retry, caller_of(ctx), job_id))

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """After a restart, each channel that was waiting on a training job is told it was interrupted."""
        for channel_id, text in await in_thread(self.teaching.restart_notices):
            # Whichever process starts first finds the jobs a kill cut off, also those started in servers of
            # other processes' shards (or in a DM), which are not in this one's cache: REST reaches them by id.
            channel = self.bot.get_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                channel = self.bot.get_partial_messageable(channel_id)
            try:
                await channel.send(text, allowed_mentions=ALLOWED_MENTIONS)
            except discord.HTTPException as exc:
                log.warning("could not tell channel %s about interrupted jobs: %s", channel_id, exc)

    @commands.hybrid_command(usage="[JSON cases] (or an attached .json file)")
    @app_commands.describe(file="A .json file of test cases", cases='JSON: [{"input": ..., "output": ...}]')
    @per_person(5, 60)
    @owners_in_dms
    async def test(
        self, ctx: commands.Context[TrainerBot], file: discord.Attachment | None = None, *, cases: str = ""
    ) -> None:
        """Test the model on JSON cases; "output": null means the answer should be unknown."""
        await ctx.defer()
        uploads = await read_uploads(attachments_of(ctx, file), self.bot.settings.upload_limit_bytes)
        typed_in = "your message" if ctx.interaction is None else "the `cases` option"
        await send_reply(ctx, await in_thread(self.teaching.test, caller_of(ctx), cases, uploads, typed_in))

    @commands.hybrid_command()
    @owners_in_dms
    async def errors(self, ctx: commands.Context[TrainerBot]) -> None:
        """List the failures of the last test."""
        await send_reply(ctx, await in_thread(self.teaching.errors, caller_of(ctx)))

    @commands.hybrid_command()
    @owners_in_dms
    async def jobs(self, ctx: commands.Context[TrainerBot]) -> None:
        """List recent training jobs."""
        await send_reply(ctx, await in_thread(self.teaching.list_jobs, caller_of(ctx)))

    @commands.hybrid_command()
    @app_commands.describe(job_id="The job number that !train answered with")
    @owners_in_dms
    async def job(self, ctx: commands.Context[TrainerBot], job_id: int) -> None:
        """Show a training job's progress or result."""
        await send_reply(ctx, Reply(await in_thread(self.teaching.job_text, caller_of(ctx), job_id)))

    @commands.hybrid_command()
    @owners_in_dms
    async def model(self, ctx: commands.Context[TrainerBot]) -> None:
        """Show which model version answers and how well it did."""
        await send_reply(ctx, await in_thread(self.teaching.model_info, caller_of(ctx)))

    @commands.hybrid_command()
    @server_only()
    @for_admins
    async def rollback(self, ctx: commands.Context[TrainerBot]) -> None:
        """Go back to the previous model version (owners and admins)."""
        await send_reply(ctx, await in_thread(self.teaching.rollback, caller_of(ctx)))

    @commands.hybrid_command()
    @app_commands.describe(
        directory="A directory of example files in this server's folder",
        positive="False: its examples are answers not to give",
    )
    @per_person(2, 60)
    @server_only()
    @for_admins
    async def select_dataset(self, ctx: commands.Context[TrainerBot], directory: str, positive: bool = True) -> None:
        """Teach a directory of examples of this server's folder, snapshotted (owners and admins)."""
        await ctx.defer()
        await send_reply(ctx, await in_thread(self.teaching.select_dataset, caller_of(ctx), directory, positive))

    # Two commands, not one hybrid: as a reply, `!correct <answer>` needs no message named, while
    # `/correct` cannot be a reply, so both of its options are required (a hybrid's would be optional).
    @commands.command(usage="<my reply's link or id> <the right answer> (or as a reply: <the right answer>)")
    @owners_in_dms
    async def correct(self, ctx: commands.Context[TrainerBot], message: str = "", *, correction: str = "") -> None:
        """Correct one of my replies: as a reply to it, or with its link or id."""
        target, text = _correction_target(ctx, message, correction)
        await self._correct(ctx, target, text)

    @app_commands.command(name="correct", description="Correct one of my replies, named by its link or id")
    @app_commands.describe(
        message="My reply's link (right-click it, Copy Message Link) or its id", correction="The right answer"
    )
    async def correct_slash(self, interaction: discord.Interaction, message: str, correction: str) -> None:
        ctx = await commands.Context.from_interaction(interaction)
        target = message_id_in(message)
        if target is None:
            raise InvalidInput(f"`{short(message)}` is neither a link to one of my replies nor its id. {FIND_A_REPLY}")
        await self._correct(ctx, target, correction)

    async def _correct(self, ctx: commands.Context[TrainerBot], target: int, correction: str) -> None:
        await self.bot.writing.stored(target)
        await send_reply(ctx, await in_thread(self.teaching.correct, caller_of(ctx), target, correction))


FIND_A_REPLY = "To find one: right-click (or long-press) my reply, then Copy Message Link."


def _correction_target(ctx: commands.Context[TrainerBot], first: str, rest: str) -> tuple[int, str]:
    """`!correct <link or id> <text>`, or as a reply `!correct <text>` where the first word is text too."""
    reference = ctx.message.reference
    named = message_id_in(first)
    # As a reply, a short number is the answer ("!correct 42"): Discord's ids have 17 to 20 digits.
    points_elsewhere = named is not None and (not first.isdigit() or len(first) >= 15)
    if reference is not None and reference.message_id and not points_elsewhere:
        return reference.message_id, f"{first} {rest}".strip()
    if named is None:
        raise InvalidInput(
            "Reply to my message with `!correct <the right answer>`, "
            f"or name it: `!correct <its link or id> <the right answer>`. {FIND_A_REPLY}"
        )
    return named, rest
