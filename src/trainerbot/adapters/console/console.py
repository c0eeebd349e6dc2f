"""The terminal front end: the same commands and conversation as on Discord, one line at a time.

Attachments are file paths: `--attach PATH` anywhere in a line. An audio file, attached or
given alone as the message, is transcribed and answered. Files the bot would send are
written to ``<data dir>/outbox`` and their paths printed.
"""

from __future__ import annotations

import getpass
import logging
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from trainerbot.app import Services
from trainerbot.chat.engine import CutShort
from trainerbot.core.conversation import CONSOLE_CONVERSATION, Where, written
from trainerbot.core.listening import quoted
from trainerbot.core.teaching import POINT_AT_A_REPLY, JobStarted
from trainerbot.errors import ChatUnavailable, InvalidInput, UserError
from trainerbot.speech.audio import is_audio
from trainerbot.types import Caller, Reply, Upload, human_size

log = logging.getLogger(__name__)
ROLES = ("owner", "admin", "member")

HELP = {
    "hi": "Say hello.",
    "help": "List the commands.",
    "instruction": "Show the instructions.",
    "train": "Teach: `question => answer`, a file or directory, or --attach FILE; positive=false for negatives; "
    "--global (owners, in a server): the bot-wide knowledge.",
    "retrain": "Train again on everything collected.",
    "retry": "Train again on the same examples as an interrupted or failed job: retry <id>.",
    "test": "Test the model with JSON cases (after the command or --attach FILE).",
    "errors": "List the failures of the last test.",
    "jobs": "List recent training jobs.",
    "job": "Show one training job: job <id>.",
    "model": "Show the model version that answers.",
    "rollback": "Return to the previous model version.",
    "select_dataset": "Teach a directory of example files (snapshotted): select_dataset <dir> [positive].",
    "correct": "Correct one of my replies: correct <message id> <correction> (a member's goes to the review inbox).",
    "review": "List the review inbox's open topics: what I couldn't answer, 👎 replies and members' corrections.",
    "answer": "Answer a review topic: answer <topic> <answer>, answer <topic> like <an answer I give>, "
    "or answer <topic> to accept a suggestion.",
    "dismiss": "Hide a review topic, or reject a suggestion: dismiss <topic>.",
    "feedback": "Send feedback: feedback <text>.",
    "forget": "Clear the conversation's memory; forget me: delete everything stored about you.",
    "mydata": "Save everything stored about you (as the console's user) to the outbox as JSON.",
    "persona": "Show the persona, set it (persona <text>) or go back to the default (persona reset).",
    "getfile": "Save a file of the folder (the data directory, or the server's) to the outbox: getfile <path>.",
    "archive": "Zip a directory of the folder: archive <dir>.",
    "config": "A server's settings: config, config admin-roles <roles>, config bot-wide on|off, config persona <text>.",
}


def _split_attachments(line: str) -> tuple[str, list[Path]]:
    """Takes `--attach PATH` (or `--attach=PATH`) out of a line."""
    try:
        tokens = shlex.split(line, posix=True)
    except ValueError:
        return line, []
    if not any(t == "--attach" or t.startswith("--attach=") for t in tokens):
        return line, []
    paths, rest, it = [], [], iter(tokens)
    for token in it:
        if token == "--attach":
            paths.append(Path(next(it, "")))
        elif token.startswith("--attach="):
            paths.append(Path(token.split("=", 1)[1]))
        else:
            rest.append(token)
    return " ".join(rest), paths


class Console:
    """The terminal as one person in one place: by default the bot's owner, outside any server.

    ``server`` and ``role`` let anyone try the rules without Discord: an admin or a member of a
    server (its id), acting on that server's knowledge as they would in its channels.
    """

    def __init__(
        self, services: Services, out: TextIO = sys.stdout, *, server: int | None = None, role: str = "owner"
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if server is not None and server <= 0:
            raise ValueError("a server's id is a positive number")
        self.services = services
        self.out = out
        self.prefix = services.settings.command_prefix
        # The console's conversation: 0 outside a server, minus the server's id in one (Discord's ids are positive).
        self.here = Where(CONSOLE_CONVERSATION if server is None else -server)
        self.user = Caller(
            user_id=0,
            name=getpass.getuser(),
            is_owner=role == "owner",
            manages_server=role == "admin" and server is not None,
            guild_id=server,
            channel_id=self.here.conversation_id,
            via="console",
        )
        self.outbox = services.settings.data_dir / "outbox"
        self._next_id = services.store.conversations.next_local_message_id()
        self._following: dict[int, threading.Thread] = {}  # jobs followed in the background, by id

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self, stdin: TextIO = sys.stdin) -> None:
        interactive = stdin.isatty()
        if interactive:
            self.print(f"trainerbot console: type a message, or {self.prefix}help. Ctrl-D quits.")
        while True:
            try:
                line = input("> ") if interactive and stdin is sys.stdin else stdin.readline()
            except (EOFError, KeyboardInterrupt):
                break
            if not interactive and line == "":
                break
            if line.strip():
                self.handle(line.rstrip("\n"))
        self.finish()

    def _caller(self) -> Caller:
        message_id = self._next_id
        self._next_id += 1
        return replace(self.user, message_id=message_id)

    def handle(self, line: str) -> None:
        caller = self._caller()
        try:
            if line.startswith(self.prefix):
                self._command(caller, line[len(self.prefix) :])
                return
            text, paths = _split_attachments(line)
            if not paths and is_audio(line.strip()) and Path(line.strip()).expanduser().is_file():
                text, paths = "", [Path(line.strip()).expanduser()]  # an audio file given as the message
            if paths:
                heard = self.services.listening.transcribe(self._uploads(paths)[0])
                self.print(quoted(heard))
                text = heard
            self.converse(caller, text)
        except UserError as exc:
            self.print(str(exc).replace(POINT_AT_A_REPLY, CONSOLE_POINTING))
        except Exception:
            log.exception("console command failed: %s", line[:100])
            self.print("Something went wrong; the details are in the log.")

    def converse(self, caller: Caller, text: str) -> None:
        """Answers a message; a chat reply is printed as the engine writes it."""
        conversation = self.services.conversation
        prepared = conversation.prepare(caller, text, self.here)
        reply_id = self._next_id
        self._next_id += 1
        if prepared.answer is not None:
            self.print(f"[#{reply_id}] {_named(prepared.answer.text, reply_id)}")
            conversation.finish(prepared, prepared.answer.text, prepared.answer.source, [reply_id])
            return
        self.out.write(f"[#{reply_id}] ")
        reply, failure, cut = "", "", False
        try:
            for piece in conversation.write(prepared, threading.Event()):
                if isinstance(piece, CutShort):  # the length limit: the note below says so
                    cut = True
                    continue
                piece = piece if reply else piece.lstrip()
                reply += piece
                self.out.write(piece)
                self.out.flush()
        except ChatUnavailable as exc:
            failure = str(exc)
        outcome = written(reply, failure, cut=cut)
        if not reply.strip():
            self.print(outcome.text)
        else:
            self.print(f" (cut off: {outcome.failure})" if outcome.failure else "")
        conversation.finish(prepared, outcome.text, outcome.source, [reply_id])

    def _uploads(self, paths: list[Path]) -> list[Upload]:
        uploads = []
        for path in paths:
            if not path.is_file():
                raise InvalidInput(f"{path} is not a file.")
            size = path.stat().st_size
            limit = self.services.settings.upload_limit_bytes
            if size > limit:
                raise InvalidInput(f"{path.name} is {human_size(size)}; the limit is {human_size(limit)}.")
            uploads.append(Upload(path.name, path.read_bytes(), size))
        return uploads

    def _command(self, caller: Caller, text: str) -> None:
        text, paths = _split_attachments(text)
        name, _, rest = text.strip().partition(" ")
        name, rest = name.lower(), rest.strip()  # `!Help` and `! help` are `!help`, as on Discord
        s = self.services
        handlers: dict[str, Callable[[], Reply | JobStarted]] = {
            "hi": lambda: s.conversation.greet(caller),
            "help": lambda: Reply("\n".join(f"{self.prefix}{n}: {h}" for n, h in HELP.items())),
            "instruction": s.conversation.instructions,
            "train": lambda: s.teaching.train(caller, rest, self._uploads(paths)),
            "retrain": lambda: s.teaching.retrain(caller),
            "retry": lambda: s.teaching.retry(caller, _int(rest, "retry <job id>")),
            "test": lambda: s.teaching.test(caller, rest, self._uploads(paths)),
            "errors": lambda: s.teaching.errors(caller),
            "jobs": lambda: s.teaching.list_jobs(caller),
            "job": lambda: Reply(s.teaching.job_text(caller, _int(rest, "job <id>"))),
            "model": lambda: s.teaching.model_info(caller),
            "rollback": lambda: s.teaching.rollback(caller),
            "select_dataset": lambda: s.teaching.select_dataset(caller, *_dataset_args(rest)),
            "correct": lambda: s.teaching.correct(
                caller, _int(rest.partition(" ")[0], "correct <message id> <correction>"), rest.partition(" ")[2]
            ),
            "review": lambda: s.review.review(caller),
            "answer": lambda: s.review.answer(caller, rest.partition(" ")[0], rest.partition(" ")[2]),
            "dismiss": lambda: s.review.dismiss(caller, rest),
            "feedback": lambda: s.conversation.feedback(caller, rest, None),
            "forget": lambda: s.privacy.forget_me(caller) if rest == "me" else self._forget(caller, rest),
            "mydata": lambda: s.privacy.my_data(caller),
            "persona": lambda: s.conversation.persona(caller, self.here, rest),
            "getfile": lambda: s.files.getfile(caller, rest),
            "archive": lambda: s.files.archive(caller, rest),
            "config": lambda: s.servers.config(caller, rest),
        }
        handler = handlers.get(name)
        if handler is None:
            raise InvalidInput(f"Unknown command `{self.prefix}{name}`. Type `{self.prefix}help` for the list.")
        result = handler()
        if isinstance(result, JobStarted):
            self.print(result.text)
            self.follow_job(result.base, result.job_id)
        else:
            self.show(result)

    def _forget(self, caller: Caller, whose: str) -> Reply:
        if whose not in ("", "all", "mine"):
            raise InvalidInput("Usage: forget [mine | all | me]")
        return self.services.conversation.forget(caller, self.here, None if not whose else whose == "all")

    def follow_job(self, base: int, job_id: int, interval: float = 0.5) -> None:
        """Prints the job's progress as it changes, until it ends.

        A job waiting for teaching to pause is followed in the background, so more can be taught
        meanwhile; at the end of the input the console starts it and waits for it (``finish``).
        """
        if self.services.jobs.starts_in(base, job_id) > 0:
            waiting = self.services.teaching.job_status(base, job_id)[0]
            self.print(waiting)
            if job_id not in self._following:
                follower = threading.Thread(
                    target=self._follow,
                    args=(base, job_id, interval, waiting),
                    name=f"follow-job-{job_id}",
                    daemon=True,
                )
                self._following[job_id] = follower
                follower.start()
            return
        self._follow(base, job_id, interval)

    def _follow(self, base: int, job_id: int, interval: float, shown: str = "") -> None:
        teaching = self.services.teaching
        while True:
            text, finished = teaching.job_status(base, job_id)
            if text != shown:
                self.print(text)
                shown = text
            if finished:
                return
            time.sleep(interval)

    def finish(self) -> None:
        """The input ended: the refits waiting for a pause start now, and their results are printed."""
        if self._following:
            self.services.jobs.start_waiting()
            for follower in self._following.values():
                follower.join()

    def show(self, reply: Reply) -> None:
        if reply.text:
            self.print(reply.text)
        for file in reply.files:
            self.outbox.mkdir(parents=True, exist_ok=True)
            target = self.outbox / file.name
            target.write_bytes(file.data)
            self.print(f"[file {file.name}, {human_size(len(file.data))}: {target}]")


def _int(text: str, usage: str) -> int:
    try:
        return int(text.strip().lstrip("#"))
    except ValueError:
        raise InvalidInput(f"Usage: {usage}") from None


def _dataset_args(text: str) -> tuple[str, bool]:
    directory, _, flag = text.partition(" ")
    flag = flag.strip().lower()
    if flag and flag not in ("true", "false", "yes", "no", "positive", "negative"):
        raise InvalidInput("Usage: select_dataset <directory> [positive: true or false]")
    return directory, flag not in ("false", "no", "negative")


CONSOLE_POINTING = "Give its number, the one in brackets before my reply: `!correct 2 <the right answer>`."
_REPLY_WITH = re.compile(r"([Rr])eply to this message with `(\S+) ")


def _named(text: str, reply_id: int) -> str:
    """The console has no replies to messages: "reply to this message with `!correct ...`" names it instead."""
    return _REPLY_WITH.sub(lambda m: f"{'S' if m[1] == 'R' else 's'}end `{m[2]} {reply_id} ", text)
