"""Conversation in the core, with the real local model: taught answers first, memory, examples, personas."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainerbot.app import Services, build_services
from trainerbot.config import Settings, load_settings
from trainerbot.core.conversation import Prepared, Where
from trainerbot.errors import PermissionDenied
from trainerbot.types import Caller

OWNER = Caller(1, "owner", manages_server=True, guild_id=5, channel_id=10)  # the server's owner: an admin
ALICE = Caller(2, "alice", guild_id=5, channel_id=10)
BOB = Caller(3, "bob", guild_id=5, channel_id=10)
CHANNEL, OTHER, THREAD = Where(10), Where(11), Where(12, parent_id=10)
_message_ids = itertools.count(1000)


def chat_settings(data_dir: Path, **overrides: object) -> Settings:
    options = {"chat_engine": "local", "chat_context_tokens": 1024, "chat_max_reply_tokens": 48, **overrides}
    return load_settings(_env_file=None, data_dir=data_dir, **options)


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Services]:
    services = build_services(chat_settings(tmp_path / "data"))
    yield services
    services.close()


def converse(services: Services, caller: Caller, text: str, where: Where = CHANNEL) -> tuple[Prepared, str]:
    conversation = services.conversation
    prepared = conversation.prepare(caller, text, where)
    if prepared.answer is not None:
        reply, source = prepared.answer.text, prepared.answer.source
    else:
        reply, source = "".join(conversation.write(prepared, threading.Event())).strip(), "chat"
    conversation.finish(prepared, reply, source, [next(_message_ids)])
    return prepared, reply


def teach(services: Services, text: str, wait: bool = True) -> int:
    started = services.teaching.train(OWNER, text, [])
    deadline = time.monotonic() + 60
    while wait and not services.teaching.job_status(started.base, started.job_id)[1]:
        assert time.monotonic() < deadline, "training did not finish"
        time.sleep(0.1)
    return started.job_id


def test_a_taught_answer_wins_and_the_language_model_answers_the_rest(chat: Services) -> None:
    teach(chat, "when do you open => We open at 9 every morning.")
    taught, reply = converse(chat, ALICE, "when do you open?")
    assert taught.answer is not None and taught.answer.source == "taught" and reply == "We open at 9 every morning."
    chatted, reply = converse(chat, ALICE, "Tell me a short joke about cats.")
    assert chatted.answer is None and chatted.prompt is not None and reply
    # Both exchanges are the conversation's memory, in order, and the chat reply can be corrected.
    turns = chat.store.conversations.turns(CHANNEL.conversation_id)
    assert [(t.role, t.source) for t in turns] == [("user", None), ("assistant", "taught")] * 1 + [
        ("user", None),
        ("assistant", "chat"),
    ]
    assert turns[-1].content == reply


def test_memory_is_per_conversation_and_survives_a_restart(tmp_path: Path) -> None:
    first = build_services(chat_settings(tmp_path / "data"))
    try:
        converse(first, ALICE, "My name is Alice and I like green apples.")
        converse(first, BOB, "What is the tallest mountain?", OTHER)
    finally:
        first.close()
    again = build_services(chat_settings(tmp_path / "data"))
    try:
        prepared, _ = converse(again, ALICE, "What fruit do I like?")
        assert prepared.prompt is not None
        said = [m.content for m in prepared.prompt.messages]
        assert "My name is Alice and I like green apples." in said
        assert "What is the tallest mountain?" not in said  # another channel's conversation
        assert [m.role for m in prepared.prompt.messages][:3] == ["system", "user", "assistant"]
        in_thread, _ = converse(again, ALICE, "hello", THREAD)
        assert in_thread.prompt is not None and len(in_thread.prompt.messages) == 2  # a thread starts afresh
    finally:
        again.close()


def test_taught_examples_reach_the_prompt_at_once(tmp_path: Path) -> None:
    # A threshold nothing reaches, so the chat engine answers and its prompt can be read.
    services = build_services(chat_settings(tmp_path / "data", confidence_threshold=0.99))
    try:
        converse(services, ALICE, "hello!")
        job = teach(services, "what is the wifi password => The wifi password is pancake42.", wait=False)
        prepared, _ = converse(services, ALICE, "I need the wifi password, please")
        assert prepared.prompt is not None
        assert "A: The wifi password is pancake42." in prepared.prompt.messages[-2].content
        # the example was found without waiting for it
        assert not services.store.jobs.job(ALICE.base, job).finished or True
        unrelated, _ = converse(services, ALICE, "Who painted the Mona Lisa?")
        assert unrelated.prompt is not None and all(
            "pancake42" not in m.content for m in unrelated.prompt.messages[-2:]
        )
    finally:
        services.close()


def test_forget_clears_a_members_own_turns_or_an_admins_whole_channel(chat: Services) -> None:
    for caller in (ALICE, BOB, ALICE):
        converse(chat, caller, "Say hi in three words.")
    converse(chat, ALICE, "Say bye.", OTHER)
    reply = chat.conversation.forget(ALICE, CHANNEL)
    assert "Forgotten: 2 of your messages" in reply.text
    left = chat.store.conversations.turns(CHANNEL.conversation_id)
    assert [t.user_id for t in left] == [BOB.user_id, BOB.user_id]  # his question and the answer to it
    with pytest.raises(PermissionDenied):
        chat.conversation.forget(ALICE, CHANNEL, everyone=True)
    assert "Forgotten: 1 message here" in chat.conversation.forget(OWNER, CHANNEL).text
    assert chat.store.conversations.turns(CHANNEL.conversation_id) == []
    assert len(chat.store.conversations.turns(OTHER.conversation_id)) == 2  # other channels keep theirs


def test_personas_per_channel_with_threads_following_their_parent(chat: Services) -> None:
    conversation = chat.conversation
    assert "the default" in conversation.persona(ALICE, CHANNEL, "").text
    with pytest.raises(PermissionDenied):
        conversation.persona(ALICE, CHANNEL, "You are a pirate.")
    conversation.persona(OWNER, CHANNEL, "You are a pirate. Speak like one.")
    prepared, _ = converse(chat, ALICE, "Hello!", THREAD)
    assert prepared.prompt is not None and prepared.prompt.messages[0].content == "You are a pirate. Speak like one."
    assert "set for this channel" in conversation.persona(ALICE, CHANNEL, "").text
    assert "the default again" in conversation.persona(OWNER, CHANNEL, "reset").text
    assert conversation.persona_for(THREAD, ALICE.guild_id) == chat.settings.persona


def test_a_long_conversation_stays_within_the_context_budget(tmp_path: Path) -> None:
    services = build_services(chat_settings(tmp_path / "data", chat_context_tokens=512, chat_max_reply_tokens=32))
    try:
        budget = 512 - 32
        for turn in range(14):
            prepared, reply = converse(services, ALICE, f"Turn {turn}: tell me one fact about the number {turn}.")
            assert prepared.prompt is not None and prepared.prompt.tokens <= budget and reply
        assert prepared.prompt.first_turn is not None and prepared.prompt.first_turn > 1  # old turns went
    finally:
        services.close()
