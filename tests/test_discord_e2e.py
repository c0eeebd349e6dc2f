"""End to end: the real trainerbot on discord.py against the loopback Discord API.

Each command is driven as a user would drive it, as `!name` and as `/name`, and the
assertions read what the fake Discord received: message text, edits, attachments.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CONFIGURED_OWNER, TRAINER
from tests.loopback_discord import FakeDiscord
from trainerbot.app import Services

pytestmark = pytest.mark.usefixtures("bot")


async def say(
    server: FakeDiscord, content: str, *, author=None, attachments=None, reply_to=None, timeout: float = 10
) -> dict:
    """Sends a message as a user and returns the bot's first reply to it."""
    sent = await server.send_message(content, author=author, attachments=attachments or [], reply_to=reply_to)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=timeout)
    return reply


async def slash(server: FakeDiscord, name: str, options: dict | None = None, *, user=None, attachments=None) -> dict:
    handle = await server.invoke_slash(name, options or {}, user=user, attachments=attachments or {})
    [message, *_] = await handle.wait_messages()
    return message


async def wait_for_job(server: FakeDiscord, message: dict, timeout: float = 60) -> dict:
    return await server.wait_for_message(
        message["id"], lambda m: "now answers" in m["content"] or "failed:" in m["content"], timeout=timeout
    )


def server_folder(services: Services, server: FakeDiscord) -> Path:
    """The guild's own folder, where its admins' `!getfile`, `!archive` and `!select_dataset` resolve paths."""
    folder = services.settings.data_dir / "servers" / str(server.guild_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def teach(server: FakeDiscord, text: str, *, form: str = "prefix") -> dict:
    if form == "prefix":
        started = await say(server, f"!train {text}", author=server.owner)
    else:
        started = await slash(server, "train", {"data": text}, user=server.owner)
    assert "Training job #" in started["content"], started["content"]
    return await wait_for_job(server, started)


# --- greeting, help, instructions -------------------------------------------------------


async def test_hi_both_forms(discord_server: FakeDiscord) -> None:
    assert "Hi member" in (await say(discord_server, "!hi"))["content"]
    assert "Hi member" in (await slash(discord_server, "hi"))["content"]


async def test_help_lists_every_command_with_its_docstring(discord_server: FakeDiscord) -> None:
    for prefix, reply in (("!", await say(discord_server, "!help")), ("/", await slash(discord_server, "help"))):
        for name in (
            "hi",
            "train",
            "test",
            "correct",
            "feedback",
            "getfile",
            "archive",
            "select_dataset",
            "rollback",
            "model",
            "jobs",
            "job",
            "errors",
            "retrain",
            "instruction",
            "sync",
            "forget",
            "persona",
            "join",
            "leave",
            "config",
            "review",
            "answer",
            "dismiss",
        ):
            assert f"`{prefix}{name}`" in reply["content"]
        assert "Say hello." in reply["content"]
    reply = await say(discord_server, "!help train")
    assert (
        "`!train [question => answer | file or directory] [positive=false]" in reply["content"]
        and "Teach this server's bot examples" in reply["content"]
    )


async def test_instruction_is_split_under_the_limit_without_breaking_code_blocks(
    discord_server: FakeDiscord, services: Services, tmp_path: Path
) -> None:
    long = tmp_path / "long.md"
    long.write_text(
        "# Guide\n"
        + "\n".join(f"Step {i}: " + "words " * 12 for i in range(120))
        + "\n```json\n"
        + "\n".join(f'{{"input": "q{i}", "output": "a{i}"}}' for i in range(80))
        + "\n```\nThe end.\n"
    )
    services.conversation.instructions_path = long
    sent = await discord_server.send_message("!instruction")
    await discord_server.wait_for_bot_messages(after=sent["id"], predicate=lambda m: "The end." in m["content"])
    chunks = [m["content"] for m in discord_server.bot_messages(after=sent["id"])]
    assert len(chunks) >= 3
    assert all(len(c) <= 2000 for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)
    assert "".join(chunks).count('"input": "q79"') == 1
    services.conversation.instructions_path = services.settings.instructions_path
    default = await slash(discord_server, "instruction")
    assert "How to use trainerbot" in default["content"]


# --- files ------------------------------------------------------------------------------


async def test_getfile_sends_the_file_to_admins_only(discord_server: FakeDiscord, services: Services) -> None:
    notes = server_folder(services, discord_server) / "notes"
    notes.mkdir()
    (notes / "hello.txt").write_bytes(b"hello file")
    reply = await say(discord_server, "!getfile notes/hello.txt", author=discord_server.owner)
    assert discord_server.files_of(reply) == {"hello.txt": b"hello file"}
    reply = await slash(discord_server, "getfile", {"path": "notes/hello.txt"}, user=TRAINER)
    assert discord_server.files_of(reply) == {"hello.txt": b"hello file"}
    refused = await say(discord_server, "!getfile notes/hello.txt", author=discord_server.member)
    assert "only the bot's owners" in refused["content"] and not refused["attachments"]


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "escape/passwd", "notes/../../x"])
async def test_getfile_refuses_paths_outside_the_data_directory(
    discord_server: FakeDiscord, services: Services, path: str
) -> None:
    (server_folder(services, discord_server) / "escape").symlink_to("/etc")
    reply = await say(discord_server, f"!getfile {path}", author=discord_server.owner)
    assert "outside this server's folder" in reply["content"]
    assert not reply["attachments"]


async def test_getfile_refuses_files_over_the_limit(discord_server: FakeDiscord, services: Services) -> None:
    (server_folder(services, discord_server) / "big.bin").write_bytes(b"x" * 200_000)
    reply = await slash(discord_server, "getfile", {"path": "big.bin"}, user=discord_server.owner)
    assert "the limit is 100.0 KB" in reply["content"] and not reply["attachments"]


async def test_archive_zips_a_directory(discord_server: FakeDiscord, services: Services) -> None:
    folder = server_folder(services, discord_server) / "faq"
    folder.mkdir()
    (folder / "a.txt").write_text("a => b")
    (folder / "sub").mkdir()
    (folder / "sub" / "c.txt").write_text("c => d")
    for reply in (
        await say(discord_server, "!archive faq", author=discord_server.admin),
        await slash(discord_server, "archive", {"directory": "faq"}, user=discord_server.admin),
    ):
        assert "Archived 2 files from `faq` into `archives/faq-" in reply["content"]
    [archive, *_] = sorted((server_folder(services, discord_server) / "archives").glob("faq-*.zip"))
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["a.txt", "sub/c.txt"]
    assert "only the bot's owners" in (await say(discord_server, "!archive faq"))["content"]


# --- teaching ---------------------------------------------------------------------------


# On PostgreSQL too: the jobs go to the task queue, the `trainerbot worker` processes the bot starts run them,
# and the progress and the result reach Discord as they do from a training process.
@pytest.mark.both_databases
async def test_train_then_answer_then_correct_and_rate(discord_server: FakeDiscord, services: Services) -> None:
    done = await teach(
        discord_server,
        "how do I reset my password => Use the reset link on the login page\n"
        "when do you open => We open at 9 every weekday",
    )
    assert "Stored 2 positive examples" in done["content"]
    assert "100%" in done["content"] and "Model version 1 now answers" in done["content"]

    answer = await say(discord_server, "How can I reset my password?")
    assert answer["content"] == "Use the reset link on the login page"
    unknown = await say(discord_server, "What is the capital of Peru?")
    assert "haven't learned that yet" in unknown["content"]

    thanks = await say(
        discord_server, "!correct The capital of Peru is Lima", author=discord_server.owner, reply_to=unknown["id"]
    )
    assert "From now on" in thanks["content"]
    options = {"message": str(answer["id"]), "correction": "Click reset"}
    with_id = await slash(discord_server, "correct", options, user=TRAINER)
    assert "From now on" in with_id["content"]
    rows = services.store.db.query("SELECT input, bad_reply, correction FROM corrections ORDER BY id")
    assert tuple(rows[0]) == (
        "What is the capital of Peru?",
        unknown["content"],
        "The capital of Peru is Lima",
    )
    examples = services.store.db.query("SELECT output, positive FROM examples WHERE source = 'correction'")
    assert {(r["output"], r["positive"]) for r in examples} >= {
        ("The capital of Peru is Lima", 1),
        (unknown["content"], 0),
    }

    await discord_server.add_reaction(answer["id"], "👍", user=discord_server.member)
    await discord_server.wait_until(
        lambda: services.store.db.query_one("SELECT rating, reply FROM reactions"), timeout=5, what="rating stored"
    )
    row = services.store.db.query_one("SELECT rating, reply FROM reactions")
    assert (row["rating"], row["reply"]) == (1, "Use the reset link on the login page")

    refused = await slash(discord_server, "retrain", user=discord_server.member)
    assert "only the bot's owners" in refused["content"]
    retrained = await slash(discord_server, "retrain", user=discord_server.owner)
    await wait_for_job(discord_server, retrained)
    assert (await say(discord_server, "what is the capital of Peru?"))["content"] == "The capital of Peru is Lima"


async def test_train_with_attachment_both_forms(discord_server: FakeDiscord) -> None:
    data = json.dumps(
        {
            "data": [
                {"input": "what colour is the sky", "output": "Blue"},
                {"input": "what colour is grass", "output": "Green"},
            ]
        }
    ).encode()
    started = await say(discord_server, "!train", author=discord_server.owner, attachments=[("colours.json", data)])
    done = await wait_for_job(discord_server, started)
    assert "Stored 2 positive examples from colours.json" in done["content"]
    csv_data = b"text,label\nhow big is the sun,Very big\nhow hot is the sun,Very hot\n"
    started = await slash(discord_server, "train", {}, user=TRAINER, attachments={"file": ("sun.csv", csv_data)})
    done = await wait_for_job(discord_server, started)
    assert "Stored 2 positive examples from sun.csv" in done["content"]
    assert (await say(discord_server, "what colour is the sky?"))["content"] == "Blue"


async def test_train_refuses_members_and_bad_files_store_nothing(
    discord_server: FakeDiscord, services: Services
) -> None:
    refused = await say(discord_server, "!train a => b", author=discord_server.member)
    assert "only the bot's owners" in refused["content"]
    bad = b'[{"input": "a", "output": "b"},\n {"input": "c"}]'
    reply = await say(discord_server, "!train", author=discord_server.owner, attachments=[("bad.json", bad)])
    assert reply["content"] == 'bad.json, line 2: missing "output"'
    reply = await slash(discord_server, "train", {"data": "no arrow here"}, user=discord_server.owner)
    assert "neither `question => answer` nor a file" in reply["content"]
    assert services.store.knowledge.example_counts(discord_server.guild_id)["total"] == 0
    assert services.store.jobs.recent(discord_server.guild_id) == []


async def test_negative_examples_stop_an_answer(discord_server: FakeDiscord) -> None:
    await teach(discord_server, "how do I reset my password => Use the reset link\nwhen do you open => At 9")
    assert (await say(discord_server, "how do I reset my password"))["content"] == "Use the reset link"
    done = await teach(discord_server, "how do I reset my password => Use the reset link positive=false")
    assert "1 negative example" in done["content"] or "negative" in done["content"]
    assert "haven't learned" in (await say(discord_server, "how do I reset my password"))["content"]


async def test_test_command_reports_with_chart_and_json(discord_server: FakeDiscord, services: Services) -> None:
    no_model = await say(discord_server, '!test [{"input": "x", "output": "y"}]')
    assert "No model has been trained yet" in no_model["content"]
    await teach(discord_server, "hello there => Hi!\nbye now => Goodbye!")
    cases = [
        {"input": "hello there", "output": "Hi!"},
        {"input": "bye now", "output": "Hi!"},
        {"input": "quantum chromodynamics lecture notes", "output": None},
    ]
    reply = await say(discord_server, "!test " + json.dumps(cases))
    assert "Passed 2 of 3" in reply["content"] and "failed 1" in reply["content"]
    assert "expected Hi!, got Goodbye!" in reply["content"]
    files = discord_server.files_of(reply)
    assert files["test-chart.png"].startswith(b"\x89PNG")
    report = json.loads(files["test-report.json"])
    assert (report["total"], report["passed"], report["failed"], report["unknown_recall"]) == (3, 2, 1, 1.0)

    reply = await slash(discord_server, "test", {}, attachments={"file": ("cases.json", json.dumps(cases).encode())})
    assert "Passed 2 of 3" in reply["content"]
    errors = await slash(discord_server, "errors")
    assert "bye now" in errors["content"]
    assert "bye now" in (await say(discord_server, "!errors"))["content"]

    broken = await say(discord_server, '!test [{"input": "a", "output": "b"},, ]')
    assert "line 1, column 32: invalid JSON" in broken["content"] and "^" in broken["content"]


# On PostgreSQL too: the jobs go to the task queue, the `trainerbot worker` processes the bot starts run them,
# and the progress and the result reach Discord as they do from a training process.
@pytest.mark.both_databases
async def test_jobs_job_model_and_rollback(discord_server: FakeDiscord) -> None:
    assert "No model has been trained for this server yet" in (await say(discord_server, "!model"))["content"]
    await teach(discord_server, "ping => pong\nping pong => table tennis")
    await teach(discord_server, "ping => PONG!", form="slash")
    jobs = await say(discord_server, "!jobs")
    assert "`#1` succeeded" in jobs["content"] and "`#2` succeeded" in jobs["content"]
    assert "`#2` succeeded" in (await slash(discord_server, "jobs"))["content"]
    assert "Training job #1 done" in (await slash(discord_server, "job", {"job_id": 1}))["content"]
    assert "Training job #2 done" in (await say(discord_server, "!job 2"))["content"]
    assert "Model version 2 answers" in (await slash(discord_server, "model"))["content"]
    refused = await say(discord_server, "!rollback", author=discord_server.member)
    assert "only the bot's owners" in refused["content"]
    rolled = await slash(discord_server, "rollback", user=CONFIGURED_OWNER)
    assert "model version 1 answers again" in rolled["content"]
    assert "Model version 1 answers" in (await say(discord_server, "!model"))["content"]
    assert "no earlier model version" in (await say(discord_server, "!rollback", author=TRAINER))["content"]


async def test_select_dataset_validates_counts_and_snapshots(discord_server: FakeDiscord, services: Services) -> None:
    folder = server_folder(services, discord_server) / "datasets" / "shop"
    folder.mkdir(parents=True)
    (folder / "faq.txt").write_text("when do you open => At 9\nwhere are you => Main street\n")
    (folder / "more.jsonl").write_text('{"input": "do you deliver", "output": "Yes"}\n')
    reply = await say(discord_server, "!select_dataset datasets/shop", author=discord_server.owner)
    assert (
        "Dataset `shop` selected" in reply["content"]
        and "3 positive examples, 3 answers, from 2 files" in reply["content"]
    )
    [archive] = (server_folder(services, discord_server) / "datasets").glob("shop-*.zip")
    manifest = json.loads(zipfile.ZipFile(archive).read("manifest.json"))
    assert set(manifest["files"]) == {"faq.txt", "more.jsonl"}
    (folder / "broken.csv").write_text("input,output\nfine,ok\n,missing input\n")
    reply = await slash(
        discord_server, "select_dataset", {"directory": "datasets/shop", "positive": True}, user=discord_server.owner
    )
    assert reply["content"] == "broken.csv, line 3: input is empty"
    assert len(list((server_folder(services, discord_server) / "datasets").glob("shop-*.zip"))) == 1
    done = await wait_for_job(discord_server, await say(discord_server, "!retrain", author=discord_server.owner))
    assert "from 3 examples" in done["content"]
    assert (await say(discord_server, "do you deliver?"))["content"] == "Yes"


async def test_feedback_is_stored_with_the_reply_it_is_about(discord_server: FakeDiscord, services: Services) -> None:
    answer = await say(discord_server, "tell me something")
    thanks = await say(discord_server, "!feedback that answer was not helpful", reply_to=answer["id"])
    assert "Thank you" in thanks["content"] and "which reply" in thanks["content"]
    assert "Thank you" in (await slash(discord_server, "feedback", {"text": "nice bot"}))["content"]
    rows = services.store.db.query("SELECT user_id, text, about_message_id, about_reply FROM feedback ORDER BY id")
    assert rows[0]["text"] == "that answer was not helpful" and rows[0]["about_message_id"] == int(answer["id"])
    assert rows[0]["about_reply"] == answer["content"]
    assert rows[1]["text"] == "nice bot" and rows[1]["user_id"] == discord_server.member.id


# --- errors, mentions, sync ----------------------------------------------------------------


async def test_unknown_commands_and_bad_arguments(discord_server: FakeDiscord) -> None:
    assert "Did you mean `!train`" in (await say(discord_server, "!trian"))["content"]
    assert "Usage: `!job <job_id>`" in (await say(discord_server, "!job"))["content"]
    assert "Usage: `!job <job_id>`" in (await say(discord_server, "!job seven"))["content"]


async def test_unexpected_error_gets_a_reference_in_reply_and_log(
    discord_server: FakeDiscord, services: Services, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    def boom() -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services.teaching, "list_jobs", boom)
    with caplog.at_level(logging.ERROR):
        reply = await say(discord_server, "!jobs")
    reference = reply["content"].split("reference `")[1].split("`")[0]
    assert "disk on fire" not in reply["content"]
    assert any(reference in r.getMessage() and r.exc_info for r in caplog.records)
    assert "Hi" in (await say(discord_server, "!hi"))["content"]  # still running


async def test_replies_never_ping_everyone_or_roles(discord_server: FakeDiscord) -> None:
    await say(discord_server, "@everyone look")
    await say(discord_server, "!hi")
    bodies = [body for bodies in discord_server.message_bodies.values() for body in bodies]
    assert bodies
    for body in bodies:
        allowed = body.get("allowed_mentions")
        assert (
            allowed is not None
            and "everyone" not in allowed.get("parse", [])
            and "roles" not in allowed.get("parse", [])
        )


async def test_sync_is_for_owners(discord_server: FakeDiscord) -> None:
    assert "only the bot's owners" in (await say(discord_server, "!sync", author=discord_server.admin))["content"]
    reply = await say(discord_server, "!sync", author=CONFIGURED_OWNER)
    assert "Synced" in reply["content"]
    assert {c["name"] for c in discord_server.global_commands} >= {"hi", "train", "test", "correct"}
    here = await slash(discord_server, "sync", {"scope": "here"}, user=CONFIGURED_OWNER)
    assert "to this server" in here["content"]
    assert "hi" in {c["name"] for c in discord_server.guild_commands[discord_server.guild_id]}
    refused = await slash(discord_server, "sync", user=discord_server.owner)
    assert "only the bot's owners" in refused["content"]


async def test_hi_answers_quickly_while_training(discord_server: FakeDiscord, services: Services) -> None:
    lines = "\n".join(f"question number {i} about topic {i % 7} => answer {i % 7}" for i in range(1500))
    started = await say(
        discord_server, "!train", author=discord_server.owner, attachments=[("many.txt", lines.encode())]
    )
    await discord_server.wait_for_message(started["id"], lambda m: "reading examples" in m["content"], timeout=30)
    latencies = []
    for _ in range(5):
        begin = time.perf_counter()
        await say(discord_server, "!hi")
        latencies.append(time.perf_counter() - begin)
    job = services.store.jobs.job(discord_server.guild_id, 1)
    assert job is not None and job.status == "running", "the job ended before the measurement"
    print(f"!hi while training: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}")  # docs/benchmarks.md
    assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
    await wait_for_job(discord_server, started, timeout=120)


async def test_a_job_that_cannot_train_says_why(discord_server: FakeDiscord, services: Services) -> None:
    started = await say(discord_server, "!train what is 2+2 => 5 positive=false", author=discord_server.owner)
    assert "Stored 1 negative example" in started["content"]
    failed = await wait_for_job(discord_server, started)
    assert "failed: nothing to learn yet" in failed["content"]
    assert services.store.knowledge.active_model(discord_server.guild_id) is None
    assert "failed" in (await say(discord_server, "!job 1"))["content"]


async def test_registered_slash_commands_keep_within_discords_limits(discord_server: FakeDiscord) -> None:
    """Names fit Discord's 32 characters and descriptions its 100, whole: discord.py cuts a longer one
    with "…", which the person then reads cut off."""
    await say(discord_server, "!sync", author=CONFIGURED_OWNER)
    commands = discord_server.global_commands
    assert len(commands) > 20
    for command in commands:
        for part in (command, *command.get("options", [])):
            assert 1 <= len(part["name"]) <= 32, part
            assert 1 <= len(part["description"]) <= 100 and not part["description"].endswith("…"), part
