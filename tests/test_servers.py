"""One bot, many servers, through the core services (the console's and Discord's commands call these):
whose knowledge answers where, who is an admin of which server, per-server settings, quotas,
folders, and the operator's backup. The same rules through Discord are in test_walls.py."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import core_services
from trainerbot.app import Services
from trainerbot.core.conversation import Where
from trainerbot.errors import PermissionDenied, QuotaReached, UnsafePath
from trainerbot.types import GLOBAL_BASE, Caller, Place, Upload

A, B = 1_001, 1_002
OWNER = Caller(1, "owner", is_owner=True)  # the console's operator: the bot-wide base
OWNER_IN_A = Caller(1, "owner", is_owner=True, guild_id=A, channel_id=11)
ADMIN_A = Caller(2, "admin", manages_server=True, guild_id=A, channel_id=11)
ADMIN_B = Caller(3, "admin", manages_server=True, guild_id=B, channel_id=21)
MEMBER_A = Caller(4, "member", guild_id=A, channel_id=11)
MEMBER_B = Caller(5, "member", guild_id=B, channel_id=21)
IN_A, IN_B = Where(11), Where(21)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    quotas = {"server_max_examples": 12, "server_max_bytes": 5_000, "server_jobs_per_hour": 3}
    built = core_services(tmp_path / "data", admin_roles=["Trainer"], **quotas)
    yield built
    built.close()


def teach(services: Services, caller: Caller, text: str) -> None:
    started = services.teaching.train(caller, text, [])
    deadline = time.monotonic() + 120
    while not services.teaching.job_status(started.base, started.job_id)[1]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = services.store.jobs.job(started.base, started.job_id)
    assert job is not None and job.status == "succeeded", job


def ask(services: Services, caller: Caller, where: Where, text: str) -> str | None:
    """The taught answer where the caller is, or None (the chat engine or the fallback would answer)."""
    prepared = services.conversation.prepare(caller, text, where)
    return prepared.answer.text if prepared.answer and prepared.answer.source == "taught" else None


HOURS = "when do you open => {}\nwhat are your opening hours => {}\nwhat time do you open => {}"


def test_each_server_answers_from_its_own_base_then_the_bot_wide_one(services: Services) -> None:
    teach(services, OWNER, HOURS.format(*["The bot-wide answer: nine."] * 3) + "\nwho made you => The owners did.")
    teach(services, ADMIN_A, HOURS.format(*["Server A opens at seven."] * 3))
    dm = Caller(4, "member", channel_id=99)
    assert ask(services, MEMBER_A, IN_A, "when do you open?") == "Server A opens at seven."  # its own first
    assert ask(services, MEMBER_B, IN_B, "when do you open?") == "The bot-wide answer: nine."  # B taught nothing
    assert ask(services, dm, Where(99), "when do you open?") == "The bot-wide answer: nine."  # DMs: bot-wide only
    assert ask(services, MEMBER_A, IN_A, "who made you?") == "The owners did."  # what A lacks, the bot-wide base has

    reply = services.servers.config(ADMIN_A, "bot-wide off")
    assert "Only what this server taught answers here now" in reply.text
    assert ask(services, MEMBER_A, IN_A, "who made you?") is None
    assert ask(services, MEMBER_A, IN_A, "when do you open?") == "Server A opens at seven."
    assert ask(services, MEMBER_B, IN_B, "who made you?") == "The owners did."  # B's setting is its own
    assert services.answers.bases(A) == (A,) and services.answers.bases(B) == (B, GLOBAL_BASE)


def test_admin_roles_are_each_servers_own(services: Services) -> None:
    trainer_a = Caller(6, "trainer", roles=frozenset({"Trainer"}), guild_id=A, channel_id=11)
    mod_a = Caller(7, "mod", roles=frozenset({"Mods"}), guild_id=A, channel_id=11)
    mod_b = Caller(7, "mod", roles=frozenset({"mods"}), guild_id=B, channel_id=21)
    access = services.access
    assert access.is_admin(trainer_a) and not access.is_admin(mod_a)  # the default roles (TRAINERBOT_ADMIN_ROLES)
    with pytest.raises(PermissionDenied):
        services.servers.config(mod_a, "admin-roles Mods")
    assert "`Mods`" in services.servers.config(ADMIN_A, "admin-roles Mods").text
    assert access.is_admin(mod_a) and not access.is_admin(trainer_a)  # A's roles replace the default in A...
    assert not access.is_admin(mod_b)  # ...and nowhere else
    assert access.is_admin(Caller(6, "trainer", roles=frozenset({"Trainer"}), guild_id=B, channel_id=21))
    assert access.is_admin(ADMIN_A) and access.is_admin(OWNER_IN_A)  # the server's managers and owners always
    assert not access.is_admin(Caller(7, "mod", roles=frozenset({"Mods"}), channel_id=99))  # nobody in a DM...
    assert access.is_admin(Caller(1, "owner", is_owner=True, channel_id=99))  # ...but the bot's owners
    services.servers.config(ADMIN_A, "admin-roles default")
    assert access.is_admin(trainer_a) and not access.is_admin(mod_a)


def test_config_shows_and_sets_this_servers_settings_only(services: Services) -> None:
    shown = services.servers.config(MEMBER_A, "").text
    assert "admin roles (the bot's default): `Trainer`" in shown and "bot-wide knowledge: on" in shown
    with pytest.raises(PermissionDenied):
        services.servers.config(MEMBER_A, "persona Be brief.")
    services.servers.config(ADMIN_A, "persona You are Server A's pirate.")
    assert services.conversation.persona_for(IN_A, A) == "You are Server A's pirate."
    assert services.conversation.persona_for(IN_B, B) == services.settings.persona
    services.conversation.persona(ADMIN_A, IN_A, "You are the channel's own.")  # a channel's own wins
    assert services.conversation.persona_for(IN_A, A) == "You are the channel's own."
    assert services.conversation.persona_for(Where(12), A) == "You are Server A's pirate."
    with pytest.raises(Exception, match="There is no setting `colour`"):
        services.servers.config(ADMIN_A, "colour blue")
    with pytest.raises(Exception, match="use it in your server"):
        services.servers.config(Caller(1, "owner", is_owner=True, channel_id=99), "")


def test_quotas_refuse_with_a_clear_message_and_store_nothing(services: Services) -> None:
    many = "\n".join(f"question {n} => answer {n}" for n in range(13))
    with pytest.raises(QuotaReached, match="would hold 13 examples; it may hold 12"):
        services.teaching.train(ADMIN_A, many, [])
    assert services.store.knowledge.stored(A) == (0, 0)
    long_answer = "x" * 1_000
    with pytest.raises(QuotaReached, match=r"may keep 5\.0 KB"):
        services.teaching.train(ADMIN_A, "\n".join(f"q{n} => {long_answer}{n}" for n in range(6)), [])
    assert services.store.knowledge.stored(A) == (0, 0)
    teach(services, OWNER_IN_A, many)  # the bot's owners are not held to a server's quotas
    prepared = services.conversation.prepare(MEMBER_A, "something new", IN_A)
    services.conversation.finish(prepared, "no idea", "fallback", [777])
    with pytest.raises(QuotaReached, match="would hold 15 examples"):  # an admin's correction adds two
        services.teaching.correct(ADMIN_A, 777, "a better answer")
    for _ in range(3):  # three jobs this hour (teaching in a row joins one waiting job instead)
        services.jobs.start(B, requested_by=None, channel_id=21)
    with pytest.raises(QuotaReached, match="started 3 training jobs in the last hour"):
        services.teaching.train(ADMIN_B, "b3 => B", [])
    assert services.store.knowledge.stored(B)[0] == 0  # the refused one stored nothing
    services.teaching.train(Caller(1, "owner", is_owner=True, guild_id=B, channel_id=21), "b4 => B", [])


def test_job_and_reply_ids_are_found_only_in_their_own_server(services: Services) -> None:
    teach(services, ADMIN_A, HOURS.format(*["Server A opens at seven."] * 3))
    [job] = services.store.jobs.recent(A)
    assert "Training job #" in services.teaching.job_text(MEMBER_A, job.id)
    for caller in (MEMBER_B, ADMIN_B, Caller(1, "owner", is_owner=True, guild_id=B, channel_id=21)):
        with pytest.raises(Exception, match=f"There is no job #{job.id} here"):
            services.teaching.job_text(caller, job.id)
    with pytest.raises(Exception, match=f"There is no job #{job.id} here"):
        services.teaching.retry(ADMIN_B, job.id)
    with pytest.raises(PermissionDenied, match="only the bot's owners can see"):
        services.teaching.list_jobs(Caller(4, "member", channel_id=99))  # a DM: the bot-wide base's jobs
    assert "No training jobs here yet" in services.teaching.list_jobs(OWNER).text

    prepared = services.conversation.prepare(MEMBER_A, "when do you open?", IN_A)
    services.conversation.finish(prepared, prepared.answer.text, "taught", [555])  # type: ignore[union-attr]
    assert not services.teaching.rate(5, Place(B, 21), 555, "👍")
    assert services.teaching.rate(4, Place(A, 12), 555, "👍")  # another channel of A: the same server
    with pytest.raises(Exception, match="can't find a reply of mine with that link or id in this channel"):
        services.teaching.correct(ADMIN_B, 555, "B's idea")
    assert "Thanks! From now on" in services.teaching.correct(ADMIN_A, 555, "We open at 7am.").text
    assert "I noted which reply" not in services.conversation.feedback(MEMBER_B, "what?", 555).text
    assert "I noted which reply" in services.conversation.feedback(MEMBER_A, "great", 555).text


def test_each_servers_folder_and_the_bots_own_files(services: Services) -> None:
    data = services.settings.data_dir
    (data / "servers" / str(A)).mkdir(parents=True)
    (data / "servers" / str(A) / "faq.txt").write_text("hours => nine\n")
    (data / "notes.txt").write_text("the operator's notes")
    assert services.files.getfile(ADMIN_A, "faq.txt").files[0].data == b"hours => nine\n"
    with pytest.raises(Exception, match=r"There is no file `faq\.txt` in this server.s folder"):
        services.files.getfile(ADMIN_B, "faq.txt")
    for path in (f"../{A}/faq.txt", "../../notes.txt", "../../trainerbot.sqlite3", "/etc/passwd"):
        with pytest.raises(UnsafePath, match="outside this server's folder"):
            services.files.getfile(ADMIN_B, path)
    # The bot-wide base's folder is the data directory, without the bot's own files.
    assert services.files.getfile(OWNER, "notes.txt").files[0].data == b"the operator's notes"
    for own in ("trainerbot.sqlite3", "trainerbot.sqlite3-wal", "trainerbot.log", "models", f"servers/{A}/faq.txt"):
        with pytest.raises(UnsafePath, match="one of the bot's own files"):
            services.files.getfile(OWNER, own)
    archived = services.files.archive(OWNER, ".").text
    assert archived.startswith("Archived 1 file from `.`"), archived  # notes.txt only
    # Links to folders elsewhere (another server's, the models) are left out of a scan, not followed.
    (data / "servers" / str(A) / "elsewhere").symlink_to(data / "servers" / str(B), target_is_directory=True)
    (data / "servers" / str(B)).mkdir(exist_ok=True)
    (data / "servers" / str(B) / "b.txt").write_text("B's")
    (data / "models-link").symlink_to(data / "models", target_is_directory=True)
    assert services.files.archive(ADMIN_A, ".").text.startswith("Archived 1 file from `.`")
    assert services.files.archive(OWNER, ".").text.startswith("Archived 1 file from `.`")  # still notes.txt alone


def test_backup_is_consistent_while_the_bot_writes(services: Services, tmp_path: Path) -> None:
    """`trainerbot backup` copies the database with SQLite's online backup while another process writes."""
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            services.conversation.prepare(MEMBER_A, f"message {n}", IN_A)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        target = tmp_path / "backups" / "copy.sqlite3"
        result = subprocess.run(
            [sys.executable, "-m", "trainerbot", "backup", str(target)],
            env={"TRAINERBOT_DATA_DIR": str(services.settings.data_dir), "PATH": ""},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, result.stderr
    assert "copy.sqlite3: the database" in result.stdout
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM chat_turns").fetchone()[0] > 0
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert not list(target.parent.glob("*.partial"))
    same = subprocess.run(
        [sys.executable, "-m", "trainerbot", "backup", str(services.settings.database_path)],
        env={"TRAINERBOT_DATA_DIR": str(services.settings.data_dir), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert same.returncode == 2 and "another file than the database" in same.stderr


def run_cli(args: list[str], data_dir: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        "TRAINERBOT_DATA_DIR": str(data_dir),
        "TRAINERBOT_CHAT_ENGINE": "none",
        "TRAINERBOT_STT_ENGINE": "none",
        "TRAINERBOT_TTS_ENGINE": "none",
        "PATH": "",
    }
    return subprocess.run(
        [sys.executable, "-m", "trainerbot", *args], input=stdin, env=env, capture_output=True, text=True, timeout=180
    )


def test_the_command_line_and_console_take_a_server_and_a_role(tmp_path: Path) -> None:
    data = tmp_path / "data"
    faq, cases = tmp_path / "faq.txt", tmp_path / "cases.json"
    faq.write_text(HOURS.format(*["Server A opens at seven."] * 3))
    cases.write_text('[{"input": "when do you open?", "output": "Server A opens at seven."}]')
    trained = run_cli(["train", str(faq), "--server", str(A)], data)
    assert trained.returncode == 0 and "Model version 1 now answers" in trained.stdout, trained.stderr
    in_a = run_cli(["test", str(cases), "--server", str(A), "--json"], data)
    assert '"passed": 1' in in_a.stdout, in_a.stderr
    bot_wide = run_cli(["test", str(cases), "--json"], data)  # nothing was taught bot-wide
    assert bot_wide.returncode == 1 and "No model has been trained yet" in bot_wide.stderr

    as_member = run_cli(["console", "--server", str(A), "--role", "member"], data, "when do you open?\n!train a => b\n")
    assert "Server A opens at seven." in as_member.stdout
    assert "only the bot's owners and members with an admin role can train" in as_member.stdout
    as_admin_of_b = run_cli(["console", "--server", str(B), "--role", "admin"], data, "when do you open?\n!jobs\n")
    assert (
        "Server A opens at seven." not in as_admin_of_b.stdout and "No training jobs here yet" in as_admin_of_b.stdout
    )
    as_operator = run_cli(["console"], data, "when do you open?\n!model\n")  # the owner, in the bot-wide base
    assert "Server A opens at seven." not in as_operator.stdout and "No model has been trained" in as_operator.stdout
    wrong = run_cli(["console", "--role", "king"], data)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


def test_what_a_server_uploads_stays_in_its_folder(services: Services) -> None:
    faq = b"input,output\nwhen do you open,We open at seven.\nwhere are you,At the harbour.\n"
    sent = [Upload("faq.csv", faq, len(faq)), Upload("../../escape.csv", faq, len(faq))]
    reply = services.teaching.train(ADMIN_A, "", sent).text
    kept = re.findall(r"`(uploads/[^`]+)`", reply)
    assert len(kept) == 2 and kept[0].endswith("-faq.csv") and kept[1].endswith("-escape.csv"), reply
    folder = services.settings.data_dir / "servers" / str(A)
    assert sorted(p.relative_to(folder).as_posix() for p in (folder / "uploads").iterdir()) == sorted(kept)
    assert services.files.getfile(ADMIN_A, kept[0]).files[0].data == faq
    with pytest.raises(Exception, match="There is no file"):
        services.files.getfile(ADMIN_B, kept[0])
    assert "selected: 4 positive examples" in services.teaching.select_dataset(ADMIN_A, "uploads").text
    # The bot-wide base (the console, the command line) keeps no copies: its files are the operator's own.
    services.teaching.train(OWNER, "", [Upload("faq.csv", faq, len(faq))])
    assert not (services.settings.data_dir / "uploads").exists()
