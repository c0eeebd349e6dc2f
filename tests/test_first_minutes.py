"""What a new server's admins and members trip over in their first minutes (issue 13), kept fixed.

Through the loopback Discord in both forms where a command has both, and in the console.
"""

from __future__ import annotations

import io
import re

import discord
import pytest

from tests.conftest import CONFIGURED_OWNER, TRAINER
from tests.loopback_discord import FakeDiscord
from trainerbot.app import Services
from trainerbot.learning.evaluation import chart_figure, evaluate, parse_cases
from trainerbot.learning.model import Prediction

pytestmark = pytest.mark.usefixtures("bot")


async def say(server: FakeDiscord, content: str, *, author=None) -> dict:
    sent = await server.send_message(content, author=author)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=10)
    return reply


@pytest.mark.parametrize("typed", ["!HELP", "!Help", "! help", "!  help"])
async def test_commands_are_found_whatever_their_case_and_a_space_after_the_prefix(
    discord_server: FakeDiscord, typed: str
) -> None:
    reply = await say(discord_server, typed)
    assert "`!help <command>` explains one" in reply["content"], reply["content"]


async def test_a_capitalised_command_with_arguments_runs(discord_server: FakeDiscord) -> None:
    assert "Hi member" in (await say(discord_server, "!Hi"))["content"]
    explained = await say(discord_server, "!help TRAIN")
    assert "train" in explained["content"] and "I don't know" not in explained["content"]


async def test_a_bare_train_shows_how_to_teach_and_starts_nothing(
    discord_server: FakeDiscord, services: Services
) -> None:
    for reply in (
        await say(discord_server, "!train", author=TRAINER),
        await say(discord_server, "!train positive=false", author=TRAINER),
        (await (await discord_server.invoke_slash("train", {}, user=TRAINER)).wait_messages())[0],
    ):
        assert "What should I learn?" in reply["content"], reply["content"]
        assert "For example:" in reply["content"] and "=>" in reply["content"]
    assert services.store.jobs.recent(discord_server.guild_id) == []


def test_the_console_finds_commands_whatever_their_case(services: Services) -> None:
    from trainerbot.adapters.console.console import Console

    out = io.StringIO()
    Console(services, out).run(io.StringIO("!HELP\n! hi\n"))
    printed = out.getvalue()
    assert "Unknown command" not in printed and "Say hello." in printed and "Hi " in printed


def test_the_test_chart_counts_whole_cases() -> None:
    cases = parse_cases(b'[{"input": "a", "output": "x"}, {"input": "b", "output": "y"}]', "cases.json")
    report = evaluate(cases, [Prediction("x", 0.9, "x"), Prediction(None, 0.2, "x")])
    figure = chart_figure(report)
    figure.canvas.draw()  # the ticks are placed when drawn
    ticks = figure.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks), ticks


LIBRARY_WORDING = ("Converting to", "failed for parameter", "is a required argument that is missing", "Expected ")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("!job abc", "`abc` is not a number, and job id is one."),
        ("!retry x1", "`x1` is not a number, and job id is one."),
        ("!getfile", "`!getfile` needs path."),
        ("!select_dataset", "`!select_dataset` needs directory."),
        ("!select_dataset shop maybe", "`maybe` is not yes or no (for positive)."),
        ('!select_dataset "shop', None),
    ],
)
async def test_argument_errors_are_one_plain_sentence_with_the_usage(
    discord_server: FakeDiscord, typed: str, expected: str | None
) -> None:
    reply = (await say(discord_server, typed, author=TRAINER))["content"]
    assert not any(words in reply for words in LIBRARY_WORDING), reply
    assert "Usage: `!" in reply, reply
    if expected is not None:
        assert reply.startswith(expected), reply


async def test_correct_sent_as_a_reply_without_text_asks_for_the_answer(discord_server: FakeDiscord) -> None:
    answer = await say(discord_server, "what is this?")
    sent = await discord_server.send_message("!correct", author=TRAINER, reply_to=answer["id"])
    [reply, *_] = await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    assert "Say what the right answer is" in reply["content"], reply["content"]
    alone = await say(discord_server, "!correct", author=TRAINER)
    assert "Reply to my message with `!correct <the right answer>`" in alone["content"], alone["content"]


async def test_every_file_attached_to_train_is_read(discord_server: FakeDiscord, services: Services) -> None:
    files = [("hours.txt", b"when do you open? => At nine.\n"), ("staff.txt", b"who runs this? => Ada does.\n")]
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=files)
    [reply, *_] = await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    assert "Stored 2 positive examples from hours.txt, staff.txt" in reply["content"], reply["content"]
    assert sorted(services.store.knowledge.taught_outputs(discord_server.guild_id)) == ["Ada does.", "At nine."]


async def test_every_test_file_attached_is_read(discord_server: FakeDiscord) -> None:
    await say(discord_server, "!train hi => hello\nbye => see you", author=TRAINER)
    files = [("a.json", b'[{"input": "hi", "output": "hello"}]'), ("b.json", b'[{"input": "bye", "output": "nope"}]')]
    sent = await discord_server.send_message("!test", author=TRAINER, attachments=files)
    [reply, *_] = await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    assert reply["content"].startswith("Passed 1 of 2"), reply["content"]


async def test_only_attempts_that_did_the_work_count_against_a_cooldown(discord_server: FakeDiscord) -> None:
    mistakes = ["!train", "!train no such thing", "!train positive=maybe"]
    for typed in mistakes:  # three mistakes: as many as the allowance of three a minute
        await say(discord_server, typed, author=TRAINER)
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=[("broken.json", b"[{")])
    await discord_server.wait_for_bot_messages(after=sent["id"], timeout=10)
    refused = await discord_server.invoke_slash("train", {"data": "nonsense"}, user=TRAINER)
    assert "neither" in (await refused.wait_messages())[0]["content"]

    slash = await discord_server.invoke_slash("train", {"data": "when? => now"}, user=TRAINER)
    assert "Stored 1" in (await slash.wait_messages())[0]["content"]
    for question in ("where? => here", "who? => us"):
        assert "Stored 1" in (await say(discord_server, f"!train {question}", author=TRAINER))["content"]
    slow = await say(discord_server, "!train why? => because", author=TRAINER)  # the fourth that did the work
    assert slow["content"].startswith("Slow down a little"), slow["content"]


async def test_files_a_conversation_does_not_read_are_named(discord_server: FakeDiscord) -> None:
    sent = await discord_server.send_message("what is this?", attachments=[("photo.png", b"\x89PNG not really")])
    note, answer = await discord_server.wait_for_bot_messages(after=sent["id"], count=2, timeout=10)
    assert note["content"].startswith("I didn't read `photo.png`: in a conversation I read text"), note["content"]
    assert "`!train`" in note["content"]
    assert "haven't learned" in answer["content"] or "learn" in answer["content"], answer["content"]

    alone = await discord_server.send_message("", attachments=[("notes.pdf", b"%PDF-1.4")])
    [said] = await discord_server.wait_for_bot_messages(after=alone["id"], timeout=10)
    assert "`notes.pdf`" in said["content"], said["content"]

    two = [("first.ogg", b"OggS not audio"), ("second.ogg", b"OggS not audio either")]
    recordings = await discord_server.send_message("", attachments=two)
    [heard_one, *_] = await discord_server.wait_for_bot_messages(after=recordings["id"], timeout=10)
    assert "I listen to one recording a message, so I didn't hear `second.ogg`" in heard_one["content"]


EPHEMERAL = 64


async def test_slash_replies_name_commands_in_slash_form(discord_server: FakeDiscord) -> None:
    bare = await discord_server.invoke_slash("train", {}, user=TRAINER)
    [shown] = await bare.wait_messages()
    assert "`/train question => answer`" in shown["content"] and "`!" not in shown["content"], shown["content"]
    broken = await discord_server.invoke_slash("test", {"cases": "[{"}, user=TRAINER)
    [error] = await broken.wait_messages()
    assert error["content"].startswith("the `cases` option, line 1"), error["content"]
    assert "`!" not in error["content"] and error["flags"] & EPHEMERAL
    typed = await say(discord_server, "!train", author=TRAINER)  # the prefix form keeps its own
    assert "`!train question => answer`" in typed["content"]


@pytest.mark.parametrize(
    ("name", "options"), [("train", {"data": "when? => now"}), ("test", {"cases": "[{"}), ("retrain", {})]
)
async def test_every_refusal_and_error_of_a_slash_command_is_ephemeral(
    discord_server: FakeDiscord, name: str, options: dict
) -> None:
    invoked = await discord_server.invoke_slash(name, options)  # a member, who may not teach
    [refusal] = await invoked.wait_messages()
    assert refusal["flags"] & EPHEMERAL, refusal
    public = [m for m in discord_server.bot_messages() if not m["flags"] & EPHEMERAL]
    assert public == [], public  # not even the "thinking..." of a deferral is left behind


async def test_slash_correct_takes_a_message_link_and_needs_both_options(discord_server: FakeDiscord) -> None:
    await say(discord_server, "!sync", author=CONFIGURED_OWNER)
    [definition] = [c for c in discord_server.global_commands if c["name"] == "correct"]
    assert all(option.get("required") for option in definition["options"]), definition

    answer = await say(discord_server, "what is the password?")
    link = f"https://discord.com/channels/{discord_server.guild_id}/{discord_server.channel_id}/{answer['id']}"
    options = {"message": link, "correction": "Ask an admin."}
    invoked = await discord_server.invoke_slash("correct", options, user=TRAINER)
    [done] = await invoked.wait_messages()
    assert "Ask an admin." in done["content"] and not done["flags"] & EPHEMERAL, done["content"]
    assert "Ask an admin." in (await say(discord_server, "what is the password?"))["content"]

    wrong = await discord_server.invoke_slash("correct", {"message": "that one", "correction": "x"}, user=TRAINER)
    [refused] = await wrong.wait_messages()
    assert "Copy Message Link" in refused["content"] and refused["flags"] & EPHEMERAL, refused


async def test_prefix_correct_takes_a_message_link(discord_server: FakeDiscord) -> None:
    answer = await say(discord_server, "who made you?")
    link = f"<https://discord.com/channels/{discord_server.guild_id}/{discord_server.channel_id}/{answer['id']}>"
    await say(discord_server, f"!correct {link} The trainerbot team.", author=TRAINER)
    assert "The trainerbot team." in (await say(discord_server, "who made you?"))["content"]


DM_REFUSALS = (
    "only works in a server",
    "In direct messages this would show the bot-wide knowledge",
    "In direct messages only the bot's owners",
    "In direct messages the review inbox",
)


@pytest.mark.parametrize("owner", [False, True], ids=["member", "owner"])
async def test_help_in_a_dm_lists_only_what_works_there(discord_server: FakeDiscord, owner: bool) -> None:
    author = CONFIGURED_OWNER if owner else None
    sent = await discord_server.send_dm("!help", author=author)
    [listing] = await discord_server.wait_for_bot_messages(discord_server.dm_channel_id(author), after=sent["id"])
    listed = re.findall(r"^`!(\w+)`", listing["content"], re.MULTILINE)
    assert "hi" in listed and "feedback" in listed and "train" not in listed and "getfile" not in listed, listed
    assert ("review" in listed) is owner and ("model" in listed) is owner, listed
    for name in listed:  # each one it lists does its work here, or asks for its arguments
        sent = await discord_server.send_dm(f"!{name}", author=author)
        replies = await discord_server.wait_for_bot_messages(
            discord_server.dm_channel_id(author),
            after=sent["id"],
            predicate=lambda m, sent=sent: str(m.get("nonce", "")).startswith(sent["id"]),  # not the guide's pages
        )
        assert not any(refusal in replies[0]["content"] for refusal in DM_REFUSALS), (name, replies[0]["content"])
    in_server = await say(discord_server, "!help")
    assert "`!train`" in in_server["content"] and "`!getfile`" in in_server["content"]
    explained = await discord_server.send_dm("!help train", author=author)
    [train] = await discord_server.wait_for_bot_messages(discord_server.dm_channel_id(author), after=explained["id"])
    assert "It works in a server, not in direct messages." in train["content"]


async def test_help_explains_what_each_person_can_use_and_names_the_rest(discord_server: FakeDiscord) -> None:
    member = (await say(discord_server, "!help"))["content"]
    assert "`!hi` Say hello." in member and "`!train` Teach" not in member, member
    assert "For admins: `!answer`, `!archive`" in member and "For owners: `!sync`." in member, member
    admin = (await say(discord_server, "!help", author=TRAINER))["content"]
    assert "`!train` Teach" in admin and "For admins" not in admin and "For owners: `!sync`." in admin, admin
    owner = (await say(discord_server, "!help", author=CONFIGURED_OWNER))["content"]
    assert "`!sync` Register" in owner and "For owners" not in owner, owner


# --- the next ten: found by trying the first minutes again as a new admin and a new member ----------------


async def test_test_cases_with_a_key_other_than_output_are_refused(discord_server: FakeDiscord) -> None:
    await say(discord_server, "!train hello => hi there", author=TRAINER)  # "expected" once passed as "unknown"
    reply = await say(discord_server, '!test [{"input": "hello", "expected": "hi there"}]', author=TRAINER)
    assert reply["content"].startswith('your message, line 1: a case has "input" and "output"'), reply["content"]
    assert 'not "expected"' in reply["content"]


async def test_an_faq_written_as_a_json_object_is_read(discord_server: FakeDiscord) -> None:
    faq = b'{\n  "when do you open?": "At nine.",\n  "where are you?": "Main Street 1."\n}'
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=[("faq.json", faq)])
    [reply] = await discord_server.wait_for_bot_messages(after=sent["id"])
    assert "Stored 2 positive examples from faq.json" in reply["content"], reply["content"]
    broken = b'{\n  "when do you open?": "At nine.",\n  "where are you?": ""\n}'
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=[("faq.json", broken)])
    [refused] = await discord_server.wait_for_bot_messages(after=sent["id"])
    assert refused["content"] == "faq.json, line 3: the answer is empty", refused["content"]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("faq.csv", b"question;answer\nwhen do you open?;At nine.\n", "Stored 1 positive example from faq.csv"),
        ("faq.xlsx", b"PK\x03\x04 a spreadsheet", "faq.xlsx is a spreadsheet, which I can't read. Save it as CSV"),
        ("faq.txt", b"when do you open? =>\n", "faq.txt, line 1: there is no answer after `=>`"),
    ],
)
async def test_files_from_office_programs_are_read_or_explained(
    discord_server: FakeDiscord, name: str, data: bytes, expected: str
) -> None:
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=[(name, data)])
    [reply] = await discord_server.wait_for_bot_messages(after=sent["id"])
    assert reply["content"].startswith(expected), reply["content"]


async def test_repeated_examples_are_stored_once(discord_server: FakeDiscord, services: Services) -> None:
    first = await say(discord_server, "!train hi => hello\nhi => hello\nbye => ciao", author=TRAINER)
    assert "Stored 2 positive examples from your message (1 repeat left out)" in first["content"], first["content"]
    again = await say(discord_server, "!train hi => hello", author=TRAINER)
    assert again["content"].startswith("I knew it already: nothing new was stored."), again["content"]
    assert services.store.knowledge.example_counts(discord_server.guild_id)["total"] == 2


async def test_counts_read_as_words(discord_server: FakeDiscord) -> None:
    stored = await say(discord_server, "!train hi => hello", author=TRAINER)
    assert "Stored 1 positive example from your message." in stored["content"], stored["content"]
    await discord_server.wait_until(lambda: "done" in discord_server.messages[int(stored["id"])]["content"])
    done = discord_server.messages[int(stored["id"])]["content"]
    assert "Learned 1 answer from 1 example (" in done, done
    model = await say(discord_server, "!model", author=TRAINER)
    assert ": 1 example, 1 answer;" in model["content"], model["content"]


async def test_in_a_dm_the_owner_is_pointed_to_the_bot_wide_knowledge(discord_server: FakeDiscord) -> None:
    sent = await discord_server.send_dm("!train hi => hello", author=CONFIGURED_OWNER)
    channel = discord_server.dm_channel_id(CONFIGURED_OWNER)
    [train] = await discord_server.wait_for_bot_messages(channel, after=sent["id"])
    assert "teach it in a server with `!train --global question => answer`" in train["content"], train["content"]
    sent = await discord_server.send_dm("!model", author=CONFIGURED_OWNER)
    [model] = await discord_server.wait_for_bot_messages(channel, after=sent["id"])
    assert "bot-wide knowledge" in model["content"] and "this server" not in model["content"], model["content"]


async def test_a_reply_that_is_not_found_says_how_to_point_at_one(discord_server: FakeDiscord) -> None:
    reply = await say(discord_server, "!correct 123456789012345678 Paris", author=TRAINER)
    assert "Copy Message Link" in reply["content"] and "Developer Mode" not in reply["content"], reply["content"]


# What discord.py says of bad arguments (discord/ext/commands/errors.py and converter.py): none of it reaches people.
LIBRARY_TEXTS = (
    "is a required argument that is missing",
    "Converting to",
    "failed for parameter",
    "is not a recognised boolean option",
    "Could not convert",
    "Unexpected quote mark",
    "Expected space after closing quotation",
    "Expected closing",
    "Command raised an exception",
    "Hybrid command raised an error",
    "Too many arguments passed",
    "does not follow a valid ID",
)
SIDE_EFFECTS = {"instruction", "mydata", "join", "leave"}  # their bare forms post elsewhere or need a voice channel


def wrong_arguments(command) -> list[str]:
    """Every wrong way to call ``command`` its signature allows: nothing, an open quote, and each typed
    parameter given a value of the wrong type (the ones before it given something that fits)."""
    import typing

    tried = [] if command.name in SIDE_EFFECTS else [""]
    tried.append('"unclosed words')
    fitting: list[str] = []
    for parameter in command.clean_params.values():
        annotation = parameter.annotation
        if typing.get_origin(annotation) is typing.Union:  # Optional[X]: X
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        if annotation is discord.Attachment:  # taken from the message's files, not its words
            continue
        if parameter.kind is parameter.KEYWORD_ONLY:  # the rest of the message, as words: nothing after it
            break
        wrong = {int: "abc", bool: "maybe"}.get(annotation)
        if typing.get_origin(annotation) is typing.Literal:
            wrong = "nonsense"
        if wrong is not None:
            tried.append(" ".join([*fitting, wrong]))
        fitting.append({int: "1", bool: "yes"}.get(annotation, "x"))
    return tried


async def test_no_command_answers_a_wrong_argument_in_the_librarys_words(discord_server: FakeDiscord, bot) -> None:
    calls = [(c.name, args) for c in bot.commands if not c.hidden for args in wrong_arguments(c)]
    assert len(calls) > 40 and ("job", "abc") in calls and ("forget", "nonsense") in calls, calls
    for name, args in calls:
        sent = await discord_server.send_message(f"!{name} {args}".strip(), author=CONFIGURED_OWNER)
        [reply, *_] = await discord_server.wait_for_bot_messages(
            after=sent["id"], timeout=15, predicate=lambda m, sent=sent: str(m.get("nonce", "")).startswith(sent["id"])
        )
        text = reply["content"]
        assert not any(words in text for words in LIBRARY_TEXTS), (name, args, text)
        if args.split()[-1:] in (["abc"], ["maybe"], ["nonsense"]):  # a value of the wrong type: surely wrong
            assert f"Usage: `!{name}" in text, (name, args, text)


async def test_a_typo_in_forget_forgets_nothing(discord_server: FakeDiscord, services: Services) -> None:
    await say(discord_server, "remember this, please")
    reply = await say(discord_server, "!forget mien", author=TRAINER)  # once: the whole channel, as a bare !forget
    assert reply["content"].startswith("`mien` is not one of `all`, `mine`, `me` (for whose)."), reply["content"]
    assert "Usage: `!forget [mine | all | me]`" in reply["content"]
    assert services.store.conversations.turns(discord_server.channel_id) != []  # a thread or channel is its own


def test_the_console_names_its_replies_by_number(services: Services) -> None:
    from trainerbot.adapters.console.console import Console

    out = io.StringIO()
    Console(services, out).run(io.StringIO("what is the capital of France?\n!correct 1 Paris.\n!correct 2 Paris.\n"))
    printed = out.getvalue()
    assert "or send `!correct 2 <the right answer>`." in printed and "reply to this message" not in printed, printed
    assert "Give its number, the one in brackets before my reply" in printed and "Copy Message Link" not in printed
    assert "From now on, to `what is the capital of France?` I answer `Paris.`" in printed, printed


async def test_people_can_talk_to_the_bot_by_mentioning_it(discord_server: FakeDiscord, bot) -> None:
    me = f"<@{bot.user.id}>"
    await say(discord_server, "!train what time do you open? => At nine.", author=TRAINER)
    asked = await say(discord_server, f"{me} what time do you open?")  # once: "I don't know `@trainerbot what`"
    assert asked["content"] == "At nine.", asked["content"]
    chatted = await say(discord_server, f"{me}, hello there")
    assert "I don't know" not in chatted["content"] and "haven't learned" in chatted["content"], chatted["content"]
    hello = await say(discord_server, me)  # a bare mention: hello, and how to start
    assert hello["content"].startswith("Hi member! Talk to me"), hello["content"]
    listing = await say(discord_server, f"{me} HELP")  # a command's name after the mention is a command
    assert "`!hi` Say hello." in listing["content"] and "@trainerbot hi" not in listing["content"], listing["content"]


async def test_an_admin_cannot_take_their_own_admin_rights_by_mistake(
    discord_server: FakeDiscord, services: Services
) -> None:
    refused = await say(discord_server, "!config admin-roles Mods", author=TRAINER)  # Trainer is their only role
    assert refused["content"].startswith("That would take your own admin rights away"), refused["content"]
    assert services.store.knowledge.settings(discord_server.guild_id).admin_roles is None  # nothing changed
    typo = await say(discord_server, "!config admin-roles Trainer, Moderators", author=TRAINER)
    assert "No role here is called `Moderators` yet (this server's roles: `Admin`, `Bot`, `Trainer`)" in typo["content"]
    assert services.store.knowledge.settings(discord_server.guild_id).admin_roles == ("Trainer", "Moderators")


async def test_getfile_on_a_directory_names_its_files(discord_server: FakeDiscord) -> None:
    empty = await say(discord_server, "!getfile faq.txt", author=TRAINER)
    assert "It is empty so far. Files sent with `!train` are kept in `uploads/`." in empty["content"], empty
    sent = await discord_server.send_message("!train", author=TRAINER, attachments=[("faq.txt", b"a? => b\n")])
    await discord_server.wait_for_bot_messages(after=sent["id"])
    folder = await say(discord_server, "!getfile uploads", author=TRAINER)  # once: "There is no file `uploads`"
    assert folder["content"].startswith("`uploads` is a directory. Name one of its 1 files: `uploads/"), folder
    assert "`!archive uploads` zips all of it." in folder["content"]
    missing = await say(discord_server, "!getfile nothing.txt", author=TRAINER)
    assert "At its top: `uploads/`." in missing["content"], missing["content"]
    a_file = await say(discord_server, f"!archive {folder['content'].split('`')[3]}", author=TRAINER)
    assert "is a file, not a directory: `!getfile uploads/" in a_file["content"], a_file["content"]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("cases.csv", b"input,output\nwhen do you open?,At nine.\nwhat is the weather?,\n"),
        (
            "cases.jsonl",
            b'{"input": "when do you open?", "output": "At nine."}\n{"input": "the weather?", "output": null}',
        ),
    ],
)
async def test_test_cases_come_in_the_files_people_have(discord_server: FakeDiscord, name: str, data: bytes) -> None:
    await say(discord_server, "!train when do you open? => At nine.", author=TRAINER)
    sent = await discord_server.send_message("!test", author=TRAINER, attachments=[(name, data)])
    [reply] = await discord_server.wait_for_bot_messages(after=sent["id"])
    assert reply["content"].startswith("Passed 2 of 2"), reply["content"]  # once: "invalid JSON"
