"""Answering people: greetings, instructions, messages that are not commands, and feedback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from trainerbot.core.errors import InvalidInput, NotReady
from trainerbot.core.messages import Caller, Reply
from trainerbot.learning.jobs import ServingModel
from trainerbot.storage.store import ReplyRecord, Store

log = logging.getLogger(__name__)
MAX_FEEDBACK = 2000


@dataclass(frozen=True)
class Answer:
    text: str
    source: str  # "taught" or "fallback"; the chat issue adds a language model here
    confidence: float | None


class Conversation:
    def __init__(self, store: Store, serving: ServingModel, threshold: float, instructions: Path, prefix: str) -> None:
        self.store = store
        self.serving = serving
        self.threshold = threshold
        self.instructions_path = instructions
        self.prefix = prefix

    def greet(self, caller: Caller) -> Reply:
        return Reply(
            f"Hi {caller.name}! Ask me anything I've been taught, or type `{self.prefix}help` to see what I can do."
        )

    def instructions(self) -> Reply:
        try:
            return Reply(self.instructions_path.read_text(encoding="utf-8").replace("{prefix}", self.prefix))
        except OSError as exc:
            log.error("cannot read the instructions file %s: %s", self.instructions_path, exc)
            raise NotReady("The instructions file is missing; ask the bot's owner to check its settings.") from None

    def answer(self, caller: Caller, text: str) -> Answer:
        """The taught answer when the model is confident; otherwise an honest 'not learned yet'."""
        prediction = self.serving.predict(text, self.threshold)
        if prediction is not None and prediction.output is not None:
            return Answer(prediction.output, "taught", prediction.confidence)
        confidence = prediction.confidence if prediction is not None else None
        return Answer(
            "I haven't learned that yet. An admin can teach me with "
            f"`{self.prefix}train {text[:60].strip() or 'question'} => the answer`, "
            f"or reply to this message with `{self.prefix}correct <the right answer>`.",
            "fallback",
            confidence,
        )

    def remember_reply(self, caller: Caller, bot_message_id: int, text: str, answer: Answer) -> None:
        """Links a sent reply to the message it answered, for corrections and ratings."""
        self.store.record_reply(
            ReplyRecord(
                bot_message_id, caller.message_id, caller.user_id, text, answer.text, answer.source, answer.confidence
            ),
            guild_id=caller.guild_id,
            channel_id=caller.channel_id,
        )

    def feedback(self, caller: Caller, text: str, about_message_id: int | None) -> Reply:
        text = text.strip()
        if not text:
            raise InvalidInput("Tell me what you think: `!feedback <text>`.")
        if len(text) > MAX_FEEDBACK:
            raise InvalidInput(f"Feedback must be at most {MAX_FEEDBACK} characters.")
        about = self.store.reply(about_message_id) if about_message_id else None
        self.store.add_feedback(
            user_id=caller.user_id,
            user_name=caller.name,
            guild_id=caller.guild_id,
            channel_id=caller.channel_id,
            message_id=caller.message_id,
            text=text,
            about=about,
        )
        return Reply("Thank you for the feedback!" + (" I noted which reply it is about." if about else ""))
