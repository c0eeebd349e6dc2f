"""Command line: `trainerbot run | console | web | worker | train | test | transcribe | say | backup | models`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from pydantic import SecretStr

from trainerbot.config import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from trainerbot.app import Services

log = logging.getLogger("trainerbot")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"


class RedactingFormatter(logging.Formatter):
    """Writes ``[redacted]`` wherever a secret appears in a log line, its traceback included.

    trainerbot never logs a secret itself, but it does log what others say: a chat server's
    error message can quote the API key it was sent (LiteLLM's proxy did), and a library
    at DEBUG may print what it holds. Secrets under 8 characters are left alone: they are
    placeholders (a local server's "none"), and blanking such words would garble the log.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def settings_secrets(settings: Settings) -> list[str]:
    """The values of every secret setting (the token, API keys)."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [value.get_secret_value() for value in values if isinstance(value, SecretStr)]


def configure_logging(settings: Settings, console: bool) -> None:
    """Everything to data/trainerbot.log; the terminal gets warnings only when it is the chat window."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(settings.data_dir / "trainerbot.log", encoding="utf-8")
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.WARNING if console else settings.log_level)
    formatter = RedactingFormatter(LOG_FORMAT, settings_secrets(settings))
    for handler in (file_handler, terminal):
        handler.setFormatter(formatter)
    logging.basicConfig(level=settings.log_level, handlers=[file_handler, terminal], force=True)
    logging.getLogger("discord").setLevel(logging.WARNING if console else logging.INFO)
    # Python prints an uncaught exception straight to stderr, past the formatter: it goes through the log instead
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
    else:
        log.critical("uncaught exception", exc_info=(kind, error, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        where = args.thread.name if args.thread is not None else "a thread"
        log.critical("uncaught exception in %s", where, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _services(settings: Settings, *, chat: bool = True) -> Services:
    # Imported here so that `trainerbot --help` and a settings error answer without loading models.
    from trainerbot.app import build_services

    return build_services(settings, chat=chat)


def cmd_run(settings: Settings) -> int:
    if settings.discord_token is None:
        print("No DISCORD_TOKEN set: starting the terminal console instead of connecting to Discord.")
        return cmd_console(settings)
    configure_logging(settings, console=False)
    from trainerbot.adapters.discord.bot import run_discord

    run_discord(settings)
    return 0


def cmd_console(settings: Settings, server: int | None = None, role: str = "owner") -> int:
    configure_logging(settings, console=True)
    from trainerbot.adapters.console.console import Console

    services = _services(settings)
    web = None
    if settings.web and role == "owner":  # the console's operator may open the dashboard too
        from trainerbot.adapters.web.server import BackgroundWeb

        web = BackgroundWeb(services)
        if web.start():
            web.web.announce()
    try:
        Console(services, server=server, role=role).run()
    finally:
        if web is not None:
            web.stop()
        services.close()
    return 0


def cmd_web(settings: Settings) -> int:
    """The dashboard alone, over the data of a bot that runs elsewhere on the same database."""
    configure_logging(settings, console=False)
    import asyncio

    from trainerbot.adapters.web.directory import Directory, RestDirectory, StoredDirectory
    from trainerbot.adapters.web.server import WebServer

    services = _services(settings, chat=False)

    async def serve() -> int:
        directory: Directory = StoredDirectory(services.store.knowledge.bases, settings.owner_ids)
        if settings.discord_token is not None:  # members' roles, as the bot sees them, through Discord's REST API
            import discord

            try:
                directory = await RestDirectory.connect(settings.discord_token.get_secret_value(), settings.owner_ids)
            except discord.LoginFailure:
                log.error("Discord refused the token: check DISCORD_TOKEN")
                return 1
        web = WebServer(services, directory)
        try:
            if not await web.start():
                return 1
            web.announce()
            await asyncio.Event().wait()  # until Ctrl-C
        finally:
            await web.stop()
            if isinstance(directory, RestDirectory):
                await directory.close()
        return 0

    try:
        return asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    finally:
        services.close()


def cmd_train(settings: Settings, paths: list[Path], negative: bool, server: int | None = None) -> int:
    configure_logging(settings, console=True)
    from trainerbot.adapters.console.console import Console
    from trainerbot.errors import UserError
    from trainerbot.learning.examples import example_files
    from trainerbot.types import Upload

    services = _services(settings, chat=False)
    console = Console(services, server=server)  # the operator, as an owner: the server's base, else the bot-wide one
    try:
        uploads = []
        for path in paths:
            for file in example_files(path) if path.is_dir() else [path]:
                if not file.is_file():
                    print(f"{file}: no such file", file=sys.stderr)
                    return 2
                uploads.append(Upload(str(file), file.read_bytes(), file.stat().st_size))
        try:
            started = services.teaching.train(console.user, "", uploads, positive=not negative, now=True)
        except UserError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(started.text)
        console.follow_job(started.base, started.job_id)
        job = services.store.jobs.job(started.base, started.job_id)
        return 0 if job is not None and job.status == "succeeded" else 1
    finally:
        services.close()


def cmd_test(settings: Settings, path: Path, as_json: bool, server: int | None = None) -> int:
    """Tests the bot as it answers in a server (its own base, then the bot-wide one), else the bot-wide base."""
    configure_logging(settings, console=True)
    from trainerbot.errors import UserError
    from trainerbot.learning.evaluation import evaluate, parse_cases

    services = _services(settings, chat=False)
    try:
        try:
            cases = parse_cases(path.read_bytes(), str(path))
            answers = services.answers
            answered = answers.answer_many(answers.bases(server), [c.input for c in cases])
            if answered is None:
                raise UserError("No model has been trained yet: run `trainerbot train PATH` first.")
        except (UserError, OSError) as exc:
            print(exc, file=sys.stderr)
            return 1
        report = evaluate(cases, answered[0])
        if as_json:
            data = report.as_dict()
            data.pop("results")
            print(json.dumps(data, ensure_ascii=False))
        else:
            print(f"passed {report.passed} of {report.total} ({report.accuracy:.1%}); failed {report.failed}")
            if report.unknown_recall is not None:
                print(f"unknown recall {report.unknown_recall:.1%} of {report.unknown_total}")
        return 0
    finally:
        services.close()


def cmd_transcribe(settings: Settings, paths: list[Path]) -> int:
    """Prints what each audio file says: the text alone for one file, `path: text` lines for several."""
    configure_logging(settings, console=True)
    from trainerbot.core.listening import Listening
    from trainerbot.errors import UserError
    from trainerbot.speech.stt import build_recogniser
    from trainerbot.types import Upload

    listening = Listening(
        build_recogniser(settings), upload_limit=settings.upload_limit_bytes, max_seconds=settings.audio_max_seconds
    )
    failed = 0
    for path in paths:
        try:
            if not path.is_file():
                raise UserError("no such file")
            text = listening.transcribe(Upload(path.name, path.read_bytes(), path.stat().st_size))
        except UserError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(text if len(paths) == 1 else f"{path}: {text}", flush=True)
    return 1 if failed else 0


def cmd_say(settings: Settings, text: str, output: Path) -> int:
    """Writes ``text`` as speech to a WAV file."""
    configure_logging(settings, console=True)
    from trainerbot.errors import UserError
    from trainerbot.speech.audio import wav_bytes
    from trainerbot.speech.tts import build_voice

    voice = build_voice(settings)
    if voice is None:
        print("trainerbot: speech is turned off (TRAINERBOT_TTS_ENGINE=none)", file=sys.stderr)
        return 1
    try:
        pieces = list(voice.speak(text))
    except UserError as exc:
        print(f"trainerbot: {exc}", file=sys.stderr)
        return 1
    rate = pieces[0].rate
    output.write_bytes(wav_bytes(b"".join(p.pcm for p in pieces), rate))
    print(f"{output}: {sum(p.seconds for p in pieces):.1f} s of speech")
    return 0


def cmd_worker(settings: Settings, concurrency: int, parent: int | None) -> int:
    """Training jobs from the task queue, until Ctrl-C or SIGTERM (the job in hand is finished first)."""
    if settings.database_url is None:
        print(
            "trainerbot: a worker takes jobs from the task queue in PostgreSQL: set TRAINERBOT_DATABASE_URL"
            " (with SQLite, the bot trains in processes of its own)",
            file=sys.stderr,
        )
        return 2
    if concurrency < 1:
        print("trainerbot: --concurrency must be 1 or more", file=sys.stderr)
        return 2
    from trainerbot.learning.queue import run_worker

    configure_logging(settings, console=False)
    run_worker(settings, concurrency=concurrency, parent=parent)
    return 0


def cmd_backup(settings: Settings, target: Path) -> int:
    """A consistent copy of the database, taken with SQLite's online backup while the bot may be running."""
    from trainerbot.storage.database import Database

    if settings.database_url is not None:
        print(
            "trainerbot: the state is in PostgreSQL (TRAINERBOT_DATABASE_URL); back it up with PostgreSQL's own"
            " pg_dump, which takes a consistent copy while the bot runs",
            file=sys.stderr,
        )
        return 2
    if not settings.database_path.is_file():
        print(f"trainerbot: there is no database at {settings.database_path}", file=sys.stderr)
        return 1
    if target.resolve() == settings.database_path.resolve():
        print("trainerbot: the backup must go to another file than the database itself", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_path)
    try:
        db.backup(target)
    finally:
        db.close()
    models = settings.data_dir / "models"
    print(
        f"{target}: the database ({target.stat().st_size:,} bytes). Model files are not in it: "
        f"copy {models} beside it to keep them, and the servers' folders in {settings.data_dir / 'servers'}."
    )
    return 0


def cmd_copy_database(settings: Settings, url: str | None) -> int:
    """Copies the data directory's SQLite database into an empty PostgreSQL database, all or nothing."""
    import psycopg

    from trainerbot.errors import UserError
    from trainerbot.storage.copying import copy_to_postgres

    if url is None:
        if settings.database_url is None:
            print("trainerbot: say where to copy to: --to postgresql://user:password@host/database", file=sys.stderr)
            return 2
        url = settings.database_url.get_secret_value()  # from .env: the password stays out of the shell's history
    try:
        copied = copy_to_postgres(settings.database_path, url)
    except UserError as exc:
        print(f"trainerbot: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:  # its text names the server and the problem, never the password
        print(f"trainerbot: PostgreSQL: {exc}\nNothing was copied.", file=sys.stderr)
        return 1
    width = max(map(len, copied))
    print(f"Copied {sum(copied.values()):,} rows from {settings.database_path} into PostgreSQL:")
    for table, count in sorted(copied.items()):
        print(f"  {table:<{width}}  {count:>9,}")
    print(
        "The trained models went into the database too (model_files). Not copied: the datasets and the servers'"
        f" folders ({settings.data_dir / 'servers'}). They stay in the data directory, which every process on"
        " the PostgreSQL database (the bots, `trainerbot web`, workers) must share: start each with"
        f" TRAINERBOT_DATA_DIR={settings.data_dir} (a shared folder across machines) and"
        f" TRAINERBOT_DATABASE_URL set to this URL. {settings.database_path.name} is left as it was."
    )
    return 0


def cmd_models(install: list[str]) -> int:
    """Installs the named chat model presets, then lists every preset and where its file is."""
    from trainerbot.chat import models

    for name in install:
        print(f"installing the `{name}` chat model ({models.PRESETS[name].model})…", flush=True)
        try:
            models.install(name)
        except models.ModelInstallError as exc:
            print(f"trainerbot: {exc}", file=sys.stderr)
            return 1
    for preset in models.PRESETS.values():
        path = preset.path()
        default = " (the default)" if preset.name == models.DEFAULT else ""
        where = path if path is not None else f"not installed: trainerbot models install {preset.name}"
        print(f"{preset.name}{default}: {preset.model}: {where}")
    return 0


def _server_id(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("a server's id is a positive number")
    return value


def _shard_options(args: argparse.Namespace) -> dict[str, object]:
    """`run --shard-count N --shard-ids A-B`, as settings (over TRAINERBOT_SHARD_*); the settings check them."""
    given = {"shard_count": getattr(args, "shard_count", None), "shard_ids": getattr(args, "shard_ids", None)}
    return {name: value for name, value in given.items() if value is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainerbot", description="A Discord bot you chat with and teach.")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="connect to Discord with DISCORD_TOKEN, else open the console")
    run.add_argument(
        "--shard-count", type=int, metavar="N", help="gateway shards in all (default: as many as Discord recommends)"
    )
    run.add_argument(
        "--shard-ids", metavar="IDS", help="the shards this process runs: 3, 0-3 or 0,2,4-5 (default: all)"
    )
    console = sub.add_parser("console", help="chat and run commands in the terminal")
    console.add_argument("--server", type=_server_id, help="act in this Discord server (its id); default: none")
    console.add_argument("--role", choices=("owner", "admin", "member"), default="owner", help="who you are there")
    train = sub.add_parser("train", help="teach examples from files or directories and train")
    train.add_argument("paths", nargs="+", type=Path)
    train.add_argument("--negative", action="store_true", help="store them as answers not to give")
    train.add_argument("--server", type=_server_id, help="teach this server's base (default: the bot-wide base)")
    test = sub.add_parser("test", help="test the model on a JSON file of cases")
    test.add_argument("path", type=Path)
    test.add_argument("--json", action="store_true", help="print one JSON object")
    test.add_argument("--server", type=_server_id, help="test as the bot answers in this server")
    sub.add_parser("web", help="serve the dashboard alone, over the data of a bot running elsewhere")
    worker = sub.add_parser("worker", help="run training jobs from the task queue (needs TRAINERBOT_DATABASE_URL)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once in this process (default 1)")
    worker.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # set by a bot that starts workers beside it
    backup = sub.add_parser("backup", help="copy the database consistently, even while the bot runs")
    backup.add_argument("file", type=Path)
    copy = sub.add_parser("copy-database", help="copy the SQLite database into an empty PostgreSQL database")
    copy.add_argument(
        "--to", metavar="URL", help="postgresql://user:password@host:5432/database (default: TRAINERBOT_DATABASE_URL)"
    )
    transcribe = sub.add_parser("transcribe", help="print what audio files say")
    transcribe.add_argument("paths", nargs="+", type=Path)
    say = sub.add_parser("say", help="write text as speech to a WAV file")
    say.add_argument("text")
    say.add_argument("-o", "--output", type=Path, required=True, help="the WAV file to write")
    models = sub.add_parser("models", help="list the chat model presets, or install some")
    models.add_argument("action", nargs="?", choices=("list", "install"), default="list")
    models.add_argument("names", nargs="*", metavar="preset", help="the presets to install (quality, small)")
    args = parser.parse_args(argv)
    if args.command == "models":  # before the settings: installing a model needs none
        from trainerbot.chat.models import PRESETS

        unknown = [name for name in args.names if name not in PRESETS]
        if unknown or (args.action == "install" and not args.names):
            parser.error(f"models install needs one or more of: {', '.join(PRESETS)}")
        return cmd_models(args.names if args.action == "install" else [])

    try:
        settings = load_settings(**_shard_options(args))
    except SettingsError as exc:
        print(f"trainerbot: {exc}", file=sys.stderr)
        return 2
    if args.command == "console":
        return cmd_console(settings, args.server, args.role)
    if args.command == "train":
        return cmd_train(settings, args.paths, args.negative, args.server)
    if args.command == "test":
        return cmd_test(settings, args.path, args.json, args.server)
    if args.command == "web":
        return cmd_web(settings)
    if args.command == "backup":
        return cmd_backup(settings, args.file)
    if args.command == "worker":
        return cmd_worker(settings, args.concurrency, args.parent)
    if args.command == "copy-database":
        return cmd_copy_database(settings, args.to)
    if args.command == "transcribe":
        return cmd_transcribe(settings, args.paths)
    if args.command == "say":
        return cmd_say(settings, args.text, args.output)
    return cmd_run(settings)
