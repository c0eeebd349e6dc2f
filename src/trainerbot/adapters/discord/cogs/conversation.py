"""Messages that are not commands get an answer; the chat engine's replies stream in as they are written."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from functools import partial
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from trainerbot.adapters.discord.cogs.privacy import forget_me
from trainerbot.adapters.discord.cogs.voice import Voice as VoiceCog
from trainerbot.adapters.discord.delivery import Posted, answer_nonce, edit_until_done, send_once
from trainerbot.adapters.discord.render import (
    ALLOWED_MENTIONS,
    caller_of,
    in_thread,
    leading_mention,
    person,
    read_uploads,
    send_reply,
    server_only,
)
from trainerbot.adapters.discord.voice import Speaker
from trainerbot.chat.engine import CutShort
from trainerbot.core.conversation import Prepared, Where, written
from trainerbot.core.listening import quoted
from trainerbot.core.queue import Busy, WorkQueue
from trainerbot.core.streaming import pieces_from_thread
from trainerbot.core.text import PageSplitter, about, short, split_message
from trainerbot.errors import ChatUnavailable, UserError
from trainerbot.speech.audio import is_audio
from trainerbot.speech.tts import spoken_so_far

if TYPE_CHECKING:
    from trainerbot.adapters.discord.bot import TrainerBot

log = logging.getLogger(__name__)
# A language model's words mention nobody: a user could otherwise have it ping whoever they like.
NO_MENTIONS = discord.AllowedMentions.none()


def where_of(channel: discord.abc.Messageable) -> Where:
    """A thread is its own conversation; its persona falls back to its parent channel's."""
    if isinstance(channel, discord.Thread):
        return Where(channel.id, channel.parent_id)
    return Where(channel.id)  # type: ignore[attr-defined]


def skipped_files(more_audio: list[discord.Attachment], others: list[discord.Attachment], prefix: str) -> str:
    """What a conversation does not read of a message's files, and why; empty when it reads them all."""

    def names(files: list[discord.Attachment]) -> str:
        return ", ".join("`" + short(file.filename.replace("`", "'"), 60) + "`" for file in files)

    said = []
    if more_audio:
        said.append(f"I listen to one recording a message, so I didn't hear {names(more_audio)}: send it on its own.")
    if others:
        said.append(
            f"I didn't read {names(others)}: in a conversation I read text and listen to recordings. "
            f"To teach me from a file, attach it to `{prefix}train`; to test me, to `{prefix}test`."
        )
    return " ".join(said)


class StreamedReply:
    """The Discord messages of one reply as it is written: posted at the first text, then edited.

    Edits come at most every ``interval`` seconds; when the text outgrows a message, that
    message gets its final text and the reply continues in a new one at once.
    """

    def __init__(self, question: discord.Message, interval: float, first: discord.Message | None = None) -> None:
        self.question = question
        self.interval = interval
        self.splitter = PageSplitter()
        # ``first``: a message already posted (the notice of a place in line) that becomes the reply's first page
        self.messages: list[discord.Message] = [first] if first is not None else []
        self._shown: list[str] = [first.content] if first is not None else []
        self._last_update = 0.0

    @property
    def started(self) -> bool:
        return bool(self.messages)

    async def update(self, text: str) -> None:
        self.splitter.feed(text)
        now = asyncio.get_running_loop().time()
        new_page = self.started and len(self.splitter.pages) >= len(self.messages)
        due = not self.started or new_page or now - self._last_update >= self.interval
        if due and (self.splitter.current or self.splitter.pages):
            await self._show([*self.splitter.pages, self.splitter.current])
            self._last_update = now

    async def finish(self, text: str, note: str = "") -> list[discord.Message]:
        self.splitter.feed(text)
        pages = self.splitter.finish()
        if note:
            pages = pages[:-1] + split_message(f"{pages[-1]}\n\n{note}") if pages else [note]
        await self._show(pages)
        return self.messages

    async def _show(self, pages: list[str]) -> None:
        for index, content in enumerate(page for page in pages if page):
            if index < len(self.messages):
                if self._shown[index] != content:
                    self.messages[index] = await edit_until_done(
                        self.messages[index], content, allowed_mentions=NO_MENTIONS
                    )
                    self._shown[index] = content
            else:  # page n of the answer, posted once even if a send must be repeated
                sent = await send_once(
                    self.question.channel,
                    content,
                    nonce=answer_nonce(self.question.id, "a", index),
                    reference=self.question if index == 0 else None,
                    allowed_mentions=NO_MENTIONS,
                )
                self.messages.append(sent)
                self._shown.append(content)


class PlaceInLine:
    """Tells someone who must wait for heavy work their place; the answer then takes that message's place."""

    def __init__(self, question: discord.Message, queue: WorkQueue, kind: str = "a") -> None:
        self.question = question
        self.queue = queue
        self.kind = kind  # the notice is the first message of the answer: it has that message's nonce
        self.message: discord.Message | None = None

    async def __call__(self, place: int) -> None:
        text = f"⏳ You're number {place} in line for {self.queue.what}{about(self.queue.expected_wait(place))}; " + (
            "I'll answer here when it's your turn."
        )
        try:
            self.message = await send_once(
                self.question.channel,
                text,
                nonce=answer_nonce(self.question.id, self.kind, 0),
                reference=self.question,
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException as exc:  # the wait goes on without the notice
            log.warning("could not post a place in line: %s", exc)


class Conversation(commands.Cog):
    def __init__(self, bot: TrainerBot) -> None:
        self.bot = bot
        # One message at a time per channel reaches the memory and the line for the engine, in the order
        # they arrived; a lock lives as long as someone holds or awaits it.
        self._arrival: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def answer(self, message: discord.Message) -> None:
        text, addressed = self._addressed(message.content)
        audio = [a for a in message.attachments if is_audio(a.filename, a.content_type)]
        note = skipped_files(
            audio[1:], [a for a in message.attachments if a not in audio], self.bot.settings.command_prefix
        )
        if note:  # every file is read or named, never dropped without a word
            nonce = answer_nonce(message.id, "s", 0)
            await send_once(message.channel, note, nonce=nonce, reference=message, allowed_mentions=NO_MENTIONS)
        if audio:  # a voice message or an audio file: answered as what it says
            heard = await self._listen(message, audio[0])
            if heard is None:
                return
            text = heard
        caller = person(self.bot, message.author, message.guild, channel_id=message.channel.id, message_id=message.id)
        if not text:
            if addressed and not message.attachments:  # a bare mention of the bot: it says hello and how to start
                nonce = answer_nonce(message.id, "a", 0)
                greeting = self.bot.services.conversation.greet(caller).text
                await send_once(message.channel, greeting, nonce=nonce, reference=message, allowed_mentions=NO_MENTIONS)
            return
        conversation = self.bot.services.conversation
        arrival = self._arrival.setdefault(message.channel.id, asyncio.Lock())
        async with arrival:
            prepared = await in_thread(conversation.prepare, caller, text, where_of(message.channel))
        with self.bot.writing.track() as posted:
            if prepared.answer is None:
                await self._write(message, prepared, posted)
                return
            sent = []
            for index, chunk in enumerate(split_message(prepared.answer.text)):
                nonce = answer_nonce(message.id, "a", index)
                sent.append(
                    await send_once(
                        message.channel, chunk, nonce=nonce, reference=message, allowed_mentions=ALLOWED_MENTIONS
                    )
                )
                posted(sent)
            self._speak(message, prepared.answer.text)
            await in_thread(
                conversation.finish, prepared, prepared.answer.text, prepared.answer.source, [m.id for m in sent]
            )

    def _addressed(self, content: str) -> tuple[str, bool]:
        """A message's text without a mention of the bot in front (`@trainerbot, when do you open?`),
        and whether it had one: the mention is how people talk to a bot, not part of the question."""
        text = content.strip()
        mention = leading_mention(self.bot, text)
        if mention is None:
            return text, False
        return text.removeprefix(mention).lstrip(" ,:;").strip(), True

    def _speaker(self, message: discord.Message) -> Speaker | None:
        """Where the reply is also said aloud: the bot's voice channel, when the author is in it."""
        voice = self.bot.get_cog("Voice")
        return voice.speaker_for(message) if isinstance(voice, VoiceCog) else None

    def _speak(self, message: discord.Message, text: str) -> None:
        speaker = self._speaker(message)
        if speaker is not None:
            speaker.say(text)

    async def _listen(self, message: discord.Message, attachment: discord.Attachment) -> str | None:
        """Transcribes an audio attachment and shows what was understood; None when nothing was."""
        line = PlaceInLine(message, self.bot.services.queues.transcriptions, kind="h")
        typing = asyncio.create_task(self._typing(message.channel))
        try:
            upload = (await read_uploads([attachment], self.bot.settings.upload_limit_bytes))[0]
            async with line.queue.turn(message.author.id, on_wait=line):
                heard = await in_thread(self.bot.services.listening.transcribe, upload)
        except UserError as exc:
            await self._say(message, str(exc), line.message, kind="h")
            return None
        finally:
            typing.cancel()
        chunks = split_message(quoted(heard))
        await self._say(message, chunks[0], line.message, kind="h")
        for index, chunk in enumerate(chunks[1:], start=1):
            nonce = answer_nonce(message.id, "h", index)
            await send_once(message.channel, chunk, nonce=nonce, reference=message, allowed_mentions=NO_MENTIONS)
        return heard

    async def _say(
        self, message: discord.Message, text: str, notice: discord.Message | None, *, kind: str = "a"
    ) -> discord.Message:
        """Answers ``message``: in place of the notice of its place in line, if one was posted."""
        if notice is not None:
            return await edit_until_done(notice, text, allowed_mentions=NO_MENTIONS)
        nonce = answer_nonce(message.id, kind, 0)
        return await send_once(message.channel, text, nonce=nonce, reference=message, allowed_mentions=NO_MENTIONS)

    async def _write(self, message: discord.Message, prepared: Prepared, posted: Posted) -> None:
        """Streams the chat engine's reply, with the typing indicator on until its first words.

        ``posted`` is told of each message the reply shows in, until the reply is stored.
        """
        conversation = self.bot.services.conversation
        line = PlaceInLine(message, self.bot.services.queues.replies)
        typing = asyncio.create_task(self._typing(message.channel))
        text, note, cut = "", "", False  # text: the reply so far, without the whitespace a model may start with
        speaker, spoken = self._speaker(message), 0  # said aloud a whole sentence at a time, as written
        reply = StreamedReply(message, self.bot.reply_edit_interval)
        try:
            async with line.queue.turn(message.author.id, on_wait=line):
                reply = StreamedReply(message, self.bot.reply_edit_interval, first=line.message)
                pieces = pieces_from_thread(
                    partial(conversation.write, prepared), stall_timeout=conversation.options.stall_timeout
                )
                async for piece in pieces:
                    if isinstance(piece, CutShort):  # the length limit: a note under the reply says so
                        cut = True
                        continue
                    text = (text + piece).lstrip()
                    if text:
                        await reply.update(text)
                        posted(reply.messages)
                        typing.cancel()
                    if speaker is not None and (end := spoken_so_far(text, spoken)) > spoken:
                        speaker.say(text[spoken:end])
                        spoken = end
        except ChatUnavailable as exc:
            note = str(exc)
        except Busy as exc:  # this person already has replies waiting: their message is remembered, not answered
            typing.cancel()
            nonce = answer_nonce(message.id, "b", 0)
            await send_once(message.channel, str(exc), nonce=nonce, reference=message, allowed_mentions=NO_MENTIONS)
            return
        finally:
            typing.cancel()
        outcome = written(text, note, cut=cut)
        if not text.strip():
            said = await self._say(message, outcome.text, line.message)
            posted([said])
            await in_thread(conversation.finish, prepared, outcome.text, outcome.source, [said.id])
            return
        sent = await reply.finish(text, f"*(cut off: {outcome.failure})*" if outcome.failure else "")
        posted(sent)
        if speaker is not None:
            speaker.say(text[spoken:])
        await in_thread(conversation.finish, prepared, outcome.text, outcome.source, [m.id for m in sent])

    async def _typing(self, channel: discord.abc.Messageable) -> None:
        with contextlib.suppress(discord.HTTPException):
            async with channel.typing():
                await asyncio.Event().wait()  # until cancelled by the first text

    @commands.hybrid_command(usage="[mine | all | me]")
    @app_commands.describe(
        whose="`mine` (members' default), `all` (admins' default), or `me`: everything about you, everywhere"
    )
    async def forget(
        self,
        ctx: commands.Context[TrainerBot],
        # Not `| None`: discord.py passes a word an Optional parameter can't convert on to the next one,
        # so `!forget mien` would forget the whole channel. A plain default makes a typo an error.
        whose: Literal["all", "mine", "me"] = commands.parameter(default=None),
    ) -> None:
        """Forget this channel's conversation (members: their own messages); `me`: everything about you."""
        if whose == "me":
            await forget_me(ctx)
            return
        everyone = None if whose is None else whose == "all"  # None: everyone's for admins, their own for others
        await send_reply(
            ctx, await in_thread(self.bot.services.conversation.forget, caller_of(ctx), where_of(ctx.channel), everyone)
        )

    @commands.hybrid_command()
    @app_commands.describe(text="The new persona (admins), or `reset` for the default; leave out to see it")
    @server_only()
    async def persona(self, ctx: commands.Context[TrainerBot], *, text: str = "") -> None:
        """Show how I behave in this channel, or set it (admins)."""
        reply = await in_thread(self.bot.services.conversation.persona, caller_of(ctx), where_of(ctx.channel), text)
        await send_reply(ctx, reply)
