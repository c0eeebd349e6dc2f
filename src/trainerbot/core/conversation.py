"""Answering people: greetings, instructions, conversation with memory, personas, and feedback.

A message that is not a command goes through three steps, so that a front end can stream:
``prepare`` stores the message and decides who answers (a confident taught answer wins;
otherwise the chat engine, given the conversation so far and the closest taught examples),
``write`` streams the chat engine's reply, and ``finish`` stores the reply and links the
messages that carried it to the question, for corrections and ratings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from trainerbot.chat.engine import ChatEngine, ChatMessage, CutShort
from trainerbot.chat.loops import stop_loops
from trainerbot.chat.prompt import Prompt, build_prompt, examples_note
from trainerbot.core.answers import TaughtAnswers
from trainerbot.core.permissions import Access
from trainerbot.core.text import count, valid_text
from trainerbot.errors import InvalidInput, NotReady
from trainerbot.learning.retrieval import ExampleIndexes
from trainerbot.storage.audit import Change
from trainerbot.storage.store import Store
from trainerbot.types import Caller, Reply, ReplyRecord, place_of

if TYPE_CHECKING:
    from trainerbot.core.review import ReviewIntake

log = logging.getLogger(__name__)
MAX_FEEDBACK = 2000
MAX_PERSONA = 1000
CONSOLE_CONVERSATION = 0  # the terminal console's conversation without a server; with one, minus its id
COPIED = 40  # characters of an earlier reply that a new one repeats before it counts as a copy
NOTHING_TO_SAY = "I couldn't think of a reply to that. Try saying it another way?"  # when a model writes nothing
# Under a reply that reached the length limit. "Go on" works: the reply so far is in the conversation's memory.
LENGTH_LIMIT = "that's as long as my replies get. Ask me to go on."


@dataclass(frozen=True)
class ChatOptions:
    persona: str
    max_reply_tokens: int = 400
    examples: int = 3  # taught examples shown to the chat engine with each message
    stall_timeout: float = 60.0  # seconds without a new piece of reply before giving up


@dataclass(frozen=True)
class Answer:
    text: str
    source: str  # "taught", "chat" or "fallback"
    confidence: float | None


@dataclass(frozen=True)
class Written:
    """How a chat reply ends, the same for every front end: what to show, a note, and what to keep."""

    text: str  # the reply, or what to say instead when nothing was written
    failure: str = ""  # why writing stopped early; shown under the text as a note
    source: str | None = "chat"  # what it is stored as; None: nothing is (the engine failed before a word)


def written(text: str, failure: str = "", *, cut: bool = False) -> Written:
    """The outcome of streaming: a reply (perhaps cut off), a failure with no words, or a model that said nothing.

    ``cut``: the engine stopped at the length limit (it wrote ``CUT_SHORT``), which the note says. The
    note is shown, never stored: the model would learn to end its replies with it.
    A model that writes nothing gets a fixed answer, stored like any reply so that it can be corrected.
    """
    if text.strip():
        return Written(text.strip(), failure or (LENGTH_LIMIT if cut else ""))
    if failure:
        return Written(failure, "", None)
    return Written(NOTHING_TO_SAY, "", "fallback")


def _quotable(text: str, limit: int = 80) -> str | None:
    """The question as it can be shown in a `!train` line to copy, or None when it cannot be shown as typed.

    Inline code cannot hold a backtick or a line break; `<@…>`, `<@&…>` and `@everyone` must not reach a
    reply, which may ping users; `=` and words starting with `-` could read as `=>` or as the command's flags.
    """
    text = text.strip()
    if len(text) > limit or not text.isprintable() or any(c in text for c in "`<@="):
        return None
    return None if any(word.startswith("-") for word in text.split()) else text


@dataclass(frozen=True)
class Where:
    """Which conversation a message belongs to: a channel, or a thread (with its parent channel)."""

    conversation_id: int
    parent_id: int | None = None


@dataclass(frozen=True)
class Prepared:
    """A message on its way to an answer: the answer itself, or the prompt for the chat engine."""

    caller: Caller
    text: str
    where: Where
    turn_id: int
    answer: Answer | None  # set when no chat engine is needed
    prompt: Prompt | None
    confidence: float | None


class Conversation:
    def __init__(
        self,
        store: Store,
        answers: TaughtAnswers,
        indexes: ExampleIndexes,
        access: Access,
        engine: ChatEngine | None,
        options: ChatOptions,
        *,
        instructions: Path,
        prefix: str,
        review: ReviewIntake | None = None,
    ) -> None:
        """``review``: where messages no taught answer was confident about go for the admins (None: nowhere)."""
        self.store = store
        self.review = review
        self.answers = answers
        self.indexes = indexes
        self.access = access
        self.engine = engine
        self.options = options
        self.instructions_path = instructions
        self.prefix = prefix
        self._windows: dict[int, int | None] = {}  # conversation -> oldest turn of its last prompt
        self._windows_lock = threading.Lock()

    def greet(self, caller: Caller) -> Reply:
        return Reply(
            f"Hi {caller.name}! Talk to me, ask me anything I've been taught, "
            f"or type `{self.prefix}help` to see what I can do."
        )

    def instructions(self) -> Reply:
        try:
            return Reply(self.instructions_path.read_text(encoding="utf-8").replace("{prefix}", self.prefix))
        except OSError as exc:
            log.error("cannot read the instructions file %s: %s", self.instructions_path, exc)
            raise NotReady("The instructions file is missing; ask the bot's owner to check its settings.") from None

    # --- answering ------------------------------------------------------------------------

    def prepare(self, caller: Caller, text: str, where: Where) -> Prepared:
        """Stores the message, then answers it from what was taught or prepares the chat prompt."""
        text = valid_text(text)
        conversations = self.store.conversations
        turn_id = conversations.add_turn(
            conversation_id=where.conversation_id,
            guild_id=caller.guild_id,
            user_id=caller.user_id,
            role="user",
            content=text,
            message_id=caller.message_id,
        )
        bases = self.answers.bases(caller.guild_id)  # this server's own, then (unless turned off) the bot-wide one
        vector = self.answers.models.encoder.encode([text])[0]
        found = self.answers.answer(bases, text, vector)
        confidence = found.prediction.confidence if found is not None else None
        if found is not None and found.prediction.output is not None:
            answer = Answer(found.prediction.output, "taught", confidence)
            return Prepared(caller, text, where, turn_id, answer, None, confidence)
        if self.review is not None:  # for the admins' review inbox (it never raises)
            self.review.unknown(caller, text, vector)
        if self.engine is None:
            return Prepared(caller, text, where, turn_id, self._fallback(caller, text, confidence), None, confidence)
        note = examples_note(self.indexes.nearest(bases, vector, self.options.examples))
        if note:
            conversations.set_turn_context(turn_id, note)
        with self._windows_lock:
            keep_from = self._windows.get(where.conversation_id)
        prompt = build_prompt(
            persona=self.persona_for(where, caller.guild_id),
            history=conversations.turns(where.conversation_id, before=turn_id),
            note=note,
            message=text,
            budget=self.engine.context_tokens - self.options.max_reply_tokens,
            count=self.engine.count_tokens,
            keep_from=keep_from,
        )
        with self._windows_lock:
            self._windows[where.conversation_id] = prompt.first_turn
        return Prepared(caller, text, where, turn_id, None, prompt, confidence)

    def write(self, prepared: Prepared, cancel: threading.Event) -> Iterator[str]:
        """The chat engine's reply, piece by piece (blocking: run it in a thread).

        A small model given a long message after some history may answer with its previous reply
        word for word (SmolLM2-135M does, deterministically, also on a fresh read of the prompt: the
        model's doing, not a reused state). A reply that starts as one of the earlier replies in its
        prompt is held back until it differs; one that keeps to an earlier reply for ``COPIED``
        characters is dropped unseen and written again from the prompt without the history.
        A reply that goes into a loop ends where the loop began (trainerbot/chat/loops.py).
        """
        assert self.engine is not None and prepared.prompt is not None
        prompt = prepared.prompt
        stream = partial(self.engine.stream, max_tokens=self.options.max_reply_tokens, cancel=cancel)
        earlier = [reply for reply in prompt.earlier_replies() if len(reply) >= COPIED]
        if not earlier:
            return stop_loops(stream(prompt.messages))
        return stop_loops(self._unless_copied(stream, prompt, earlier, prepared.turn_id))

    @staticmethod
    def _unless_copied(
        stream: Callable[[Sequence[ChatMessage]], Iterator[str]], prompt: Prompt, earlier: list[str], turn_id: int
    ) -> Iterator[str]:
        held = ""  # what the reply wrote while it could still be a copy
        pieces = stream(prompt.messages)
        for piece in pieces:
            if held is not None and isinstance(piece, CutShort):  # the length limit, while still unsure
                yield held
                held = None
            if held is None:
                yield piece
                continue
            held += piece
            start = held.lstrip()[:COPIED]
            if not any(reply.startswith(start) for reply in earlier):
                yield held  # it differs from every earlier reply: what follows streams as written
                held = None
            elif len(start) == COPIED:
                pieces.close()
                log.info("the reply to turn %d began as an earlier reply; written again without the history", turn_id)
                yield from stream(prompt.alone)
                return
            else:
                yield ""  # still unsure, and still writing: the stall timeout counts pieces
        if held:
            yield held

    def finish(self, prepared: Prepared, reply: str, source: str | None, message_ids: Sequence[int]) -> None:
        """Stores the reply as the bot's turn and links every message that carried it to the question.

        ``source`` None: nothing to keep (see ``written``); the question stays in the memory alone.
        """
        if source is None:
            return
        caller = prepared.caller
        self.store.conversations.record_answer(
            conversation_id=prepared.where.conversation_id,
            guild_id=caller.guild_id,
            channel_id=caller.channel_id,
            asked=prepared.turn_id,
            answer=ReplyRecord(
                message_ids[0] if message_ids else 0,
                caller.message_id,
                caller.user_id,
                prepared.text,
                reply,
                source,
                prepared.confidence,
            ),
            message_ids=message_ids,
        )

    def _fallback(self, caller: Caller, text: str, confidence: float | None) -> Answer:
        """Nothing taught matches and no chat engine writes: says so, and what this person can do about it."""
        p = self.prefix
        if self.access.is_admin(caller):  # an owner anywhere, a server's admin in their server
            question = _quotable(text) or "<the question>"
            how = (
                f"Teach me with `{p}train {question} => <the answer>`, "
                f"or reply to this message with `{p}correct <the right answer>`."
            )
        elif caller.guild_id is None:  # what is taught in a DM answers everywhere: the owners' alone
            how = (
                "In direct messages only the bot's owners teach me; to tell them the answer, "
                f"reply to this message with `{p}feedback <the right answer>`."
            )
        elif self.review is not None:  # a member's `!correct` is a suggestion for the admins' review inbox
            how = (
                f"Know the answer? Reply to this message with `{p}correct <the right answer>`; "
                "this server's admins review it before I use it."
            )
        else:
            how = "This server's admins can teach me."
        return Answer(f"I haven't learned that yet. {how}", "fallback", confidence)

    # --- memory and personas ----------------------------------------------------------------

    def server_persona(self, guild_id: int | None) -> str:
        """A server's default persona (its admins set it with `!config persona`), else the bot's."""
        own = self.store.knowledge.settings(guild_id).persona if guild_id is not None else None
        return own or self.options.persona

    def persona_for(self, where: Where, guild_id: int | None) -> str:
        """The conversation's own persona, else its parent channel's (for a thread), else the server's default."""
        for conversation_id in (where.conversation_id, where.parent_id):
            if conversation_id is not None:
                text = self.store.conversations.persona(conversation_id)
                if text:
                    return text
        return self.server_persona(guild_id)

    def persona(self, caller: Caller, where: Where, text: str) -> Reply:
        """Shows the persona, or sets it (admins); `reset` returns to the server's default."""
        text = text.strip()
        conversations = self.store.conversations
        if not text:
            current = self.persona_for(where, caller.guild_id)
            own = conversations.persona(where.conversation_id) is not None
            origin = "set for this channel" if own else "the default"
            return Reply(f"The persona here ({origin}):\n> {current}")
        self.access.require_admin(caller, "change the persona")
        text = valid_text(text)
        if text.lower() == "reset":
            conversations.set_persona(where.conversation_id, None, user_id=caller.user_id)
            self._audit_persona(caller, where, "the default again")
            return Reply(f"The persona here is the default again:\n> {self.server_persona(caller.guild_id)}")
        if len(text) > MAX_PERSONA:
            raise InvalidInput(f"A persona must be at most {MAX_PERSONA} characters; this one has {len(text)}.")
        conversations.set_persona(where.conversation_id, text, user_id=caller.user_id)
        self._audit_persona(caller, where, text)
        return Reply(f"From now on, here I am:\n> {text}")

    def _audit_persona(self, caller: Caller, where: Where, persona: str) -> None:
        """The server's audit trail gets the change (personas are stored by channel, without a transaction to share)."""
        said = f"Channel {where.conversation_id}: {persona}"
        self.store.audit.add_change(caller.base, Change.by(caller, "persona", said))

    def forget(self, caller: Caller, where: Where, everyone: bool | None = None) -> Reply:
        """Clears the conversation's memory: all of it for admins, only the caller's own turns for others."""
        everyone = self.access.is_admin(caller) if everyone is None else everyone
        if everyone:
            self.access.require_admin(caller, "clear everyone's messages from my memory")
        forgotten = self.store.conversations.forget_conversation(
            where.conversation_id, None if everyone else caller.user_id
        )
        with self._windows_lock:
            self._windows.pop(where.conversation_id, None)
        what = count(forgotten, "message") if everyone else count(forgotten, "of your messages", "of your messages")
        return Reply(f"Forgotten: {what} here, with my replies to them. Taught answers stay.")

    def reset_windows(self, conversation_ids: Sequence[int]) -> None:
        """Turns of these conversations were deleted: their next prompts start afresh."""
        with self._windows_lock:
            for conversation_id in conversation_ids:
                self._windows.pop(conversation_id, None)

    # --- feedback ---------------------------------------------------------------------------

    def feedback(self, caller: Caller, text: str, about_message_id: int | None) -> Reply:
        text = valid_text(text.strip())
        if not text:
            raise InvalidInput("Tell me what you think: `!feedback <text>`.")
        if len(text) > MAX_FEEDBACK:
            raise InvalidInput(f"Feedback must be at most {MAX_FEEDBACK} characters.")
        about = self.store.conversations.reply(place_of(caller), about_message_id) if about_message_id else None
        self.store.feedback.add_feedback(
            user_id=caller.user_id,
            user_name=valid_text(caller.name),
            guild_id=caller.guild_id,
            channel_id=caller.channel_id,
            message_id=caller.message_id,
            text=text,
            about=about,
        )
        return Reply("Thank you for the feedback!" + (" I noted which reply it is about." if about else ""))
