"""Each knowledge base's folder: safe path resolution, sending a file, zipping a directory.

A server's folder is ``servers/<server id>`` in the data directory; the bot-wide base's is the
data directory itself, less the bot's own files (its database, log, models, the servers'
folders and the console's outbox), which no command reads, lists, sends or zips.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

from trainerbot.core.permissions import Access
from trainerbot.errors import NotReady, TooLarge, UnsafePath
from trainerbot.learning.archives import write_zip
from trainerbot.learning.examples import READABLE_SUFFIXES
from trainerbot.types import GLOBAL_BASE, Caller, OutFile, Reply, Upload, human_size

log = logging.getLogger(__name__)
MAX_PATH_LENGTH = 1024
MAX_NAME_BYTES = 255  # of one file or folder name: what Linux and macOS allow
SLASH_LOOK_ALIKES = ("∕", "⁄", "⧸", "\\")  # division slash, fraction slash, big solidus, backslash
# Zips the bot writes itself (dataset snapshots, archives): a directory scan leaves them out, or
# every `!select_dataset datasets` would read the earlier snapshots' examples again.
BOT_ZIP = re.compile(r".+-\d{8}-\d{6}\.zip")
SERVERS = "servers"  # the servers' folders, in the data directory
UPLOADS = "uploads"  # in a server's folder: the example files it sent with `!train`
# The bot's own files at the top of the data directory: never a user's to read, whoever asks.
BOT_FILES = ("trainerbot.sqlite3*", "*.jobs-lock", "trainerbot.log*", "models", SERVERS, "outbox", "backups")


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class DataDirectory:
    """A base's folder; every path a user names must stay inside it, and out of its ``hidden`` names."""

    root: Path
    hidden: Sequence[str] = ()  # patterns of names directly in ``root`` that belong to the bot itself
    called: str = "the data directory"  # how replies name it

    def is_hidden(self, real: Path) -> bool:
        """Whether a real path inside the folder is, or is inside, one of the bot's own files.

        A path outside the folder is not hidden: it is refused for being outside, wherever it is checked.
        """
        root = self.root.resolve()
        if not self.hidden or root not in real.parents:
            return False
        name = real.relative_to(root).parts[0]
        return any(fnmatch(name, pattern) for pattern in self.hidden)

    def resolve(self, user_path: str) -> Path:
        """The real path a user's argument names, or UnsafePath; nothing is read here."""
        text = user_path.strip().strip("`\"'")
        if not text:
            raise UnsafePath(f"Give a path inside {self.called}, for example `datasets/faq.csv`.")
        _check_path_text(text)
        root = self.root.resolve()
        real = _inside(root, text)
        # Look-alikes of `.` and `/` (fullwidth ．．／, the division slash ∕) are plain characters
        # here, but a tool that normalises names would make them real: refuse what they mimic.
        mimicked = unicodedata.normalize("NFKC", text)
        for look_alike in SLASH_LOOK_ALIKES:
            mimicked = mimicked.replace(look_alike, "/")
        if real is None or (mimicked != text and _inside(root, mimicked) is None):
            raise UnsafePath(f"`{_shown(text)}` is outside {self.called}; only files inside it can be used.")
        if self.is_hidden(real):
            raise UnsafePath(f"`{_shown(text)}` is one of the bot's own files, which no command can read or send.")
        return real

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root.resolve()).as_posix() or "."

    def existing_file(self, user_path: str, limit: int) -> Path:
        path = self.resolve(user_path)
        if path.is_dir():  # what is in it, and how to get it all
            typed = _shown(user_path.strip())
            inside = self.files_under(path)
            some = ", ".join(f"`{_shown(self.relative(file), 80)}`" for file in inside[:5])
            listed = f" of its {len(inside)} files: {some}{', …' if len(inside) > 5 else ''}" if inside else ""
            raise NotReady(
                f"`{typed}` is a directory. Name one{listed}; `!archive {typed}` zips all of it."
                if inside
                else f"`{typed}` is an empty directory."
            )
        if not path.is_file():
            raise NotReady(f"There is no file `{_shown(user_path.strip())}` in {self.called}.{self._what_there_is()}")
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(f"`{_shown(user_path.strip())}` is {human_size(size)}; the limit is {human_size(limit)}.")
        return path

    def existing_directory(self, user_path: str) -> Path:
        path = self.resolve(user_path)
        if path.is_file():
            typed = _shown(user_path.strip())
            raise NotReady(f"`{typed}` is a file, not a directory: `!getfile {typed}` sends it.")
        if not path.is_dir():
            raise NotReady(
                f"There is no directory `{_shown(user_path.strip())}` in {self.called}.{self._what_there_is()}"
            )
        return path

    def _shown_entry(self, root: Path, entry: Path) -> bool:
        """Whether a name at the folder's top may be shown: not the bot's own, and not a link that leaves or loops."""
        try:
            real = entry.resolve(strict=True)
        except (OSError, RuntimeError):  # a broken link, or one that loops
            return False
        return root in real.parents and not self.is_hidden(real)

    def _what_there_is(self) -> str:
        """After "there is no ...": what the folder holds at its top, or that it is empty and how files get there."""
        root = self.root.resolve()
        entries = sorted((p for p in (root.iterdir() if root.is_dir() else ()) if self._shown_entry(root, p)), key=str)
        if not entries:  # a server's folder keeps what its admins send with `!train`; the data directory does not
            return " It is empty so far." + ("" if self.hidden else " Files sent with `!train` are kept in `uploads/`.")
        shown = ", ".join(f"`{_shown(p.name, 60)}{'/' if p.is_dir() else ''}`" for p in entries[:10])
        return f" At its top: {shown}{', …' if len(entries) > 10 else ''}."

    def label(self, directory: Path) -> str:
        """A directory's name for archive names (cut, so the zip's name stays a valid name); the root is "data"."""
        return directory.name[:100] if directory != self.root.resolve() else "data"

    def example_files(self, directory: Path) -> list[Path]:
        """The example files and zips of them below a directory, without links that leave, or the bot's own zips."""
        return [p for p in self.files_under(directory) if p.suffix.lower() in READABLE_SUFFIXES and not self.written(p)]

    def written(self, path: Path) -> bool:
        """Whether a file is a zip the bot wrote: an archive, or a dataset snapshot."""
        root = self.root.resolve()
        real = path.resolve()
        return real.parent in (root / "archives", root / "datasets") and BOT_ZIP.fullmatch(real.name) is not None

    def files_under(self, directory: Path) -> list[Path]:
        """Regular files below a directory, leaving out links that point outside the data directory."""
        root = self.root.resolve()
        found = []
        for base, dirs, names in os.walk(directory):
            dirs.sort()
            dirs[:] = [d for d in dirs if not self.is_hidden((Path(base) / d).resolve())]
            for name in sorted(names):
                path = Path(base) / name
                try:
                    real = path.resolve(strict=True)
                except (OSError, RuntimeError):  # a broken link, or one that loops: nothing to read
                    continue
                if real.is_file() and root in real.parents and not self.is_hidden(real):
                    found.append(path)
        return found


def _shown(text: str, limit: int = 200) -> str:
    """A path as a reply may quote it: long ones shortened, backticks and control characters replaced."""
    text = "".join("?" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c for c in text).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_path_text(text: str) -> None:
    """Refuses text no file name can be: NUL, lone surrogates, too long in all or in one part."""
    if "\x00" in text:
        raise UnsafePath("That path has a NUL character in it; no file name can.")
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise UnsafePath("That path has characters that are not valid text (lone surrogates).")
    if len(text) > MAX_PATH_LENGTH:
        raise UnsafePath(f"That path is {len(text)} characters long; the limit is {MAX_PATH_LENGTH}.")
    longest = max(len(part.encode()) for part in text.split("/"))
    if longest > MAX_NAME_BYTES:
        raise UnsafePath(f"A name in that path is {longest} bytes long; the limit is {MAX_NAME_BYTES}.")


def _inside(root: Path, text: str) -> Path | None:
    """The real path ``text`` names, relative to ``root`` unless absolute, when it is inside ``root``."""
    candidate = Path(text)
    candidate = candidate if candidate.is_absolute() else root / candidate
    # resolve() follows every symlink, so a link that leaves the folder is caught too.
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError):
        raise UnsafePath("That path cannot be resolved (a link that loops?).") from None
    return real if real == root or root in real.parents else None


class Folders:
    """Where each knowledge base keeps its files, made when first needed."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def of(self, base: int) -> DataDirectory:
        if base == GLOBAL_BASE:
            return DataDirectory(self.data_dir, BOT_FILES)
        root = self.data_dir / SERVERS / str(base)
        root.mkdir(parents=True, exist_ok=True)
        return DataDirectory(root, called="this server's folder")

    def keep(self, base: int, upload: Upload) -> str:
        """Saves a file a server sent into its folder's ``uploads``; returns its path there."""
        folder = self.of(base)
        stem = re.sub(r"[^\w.\- ]", "_", Path(upload.name).name).strip(" .")[:100] or "upload"
        target = folder.root / UPLOADS / f"{timestamp()}-{stem}"
        target.parent.mkdir(parents=True, exist_ok=True)
        for n in range(2, 1000):  # two files of one name in the same second both stay
            if not target.exists():
                break
            target = target.with_name(f"{timestamp()}-{n}-{stem}")
        target.write_bytes(upload.data)
        return folder.relative(target)

    def size(self, base: int) -> int:
        """Bytes of the files a base keeps (the bot-wide base: without the bot's own)."""
        folder = self.of(base)
        return sum(path.stat().st_size for path in folder.files_under(folder.root))


class FileService:
    def __init__(self, folders: Folders, access: Access, upload_limit: int) -> None:
        self.folders = folders
        self.access = access
        self.upload_limit = upload_limit

    def getfile(self, caller: Caller, user_path: str) -> Reply:
        self.access.require_admin(caller, "read server files")
        data = self.folders.of(caller.base)
        path = data.existing_file(user_path, self.upload_limit)
        return Reply(
            f"`{data.relative(path)}` ({human_size(path.stat().st_size)})", [OutFile(path.name, path.read_bytes())]
        )

    def archive(self, caller: Caller, user_path: str) -> Reply:
        self.access.require_admin(caller, "archive server files")
        data = self.folders.of(caller.base)
        directory = data.existing_directory(user_path)
        archives = data.root / "archives"
        files = [p for p in data.files_under(directory) if archives.resolve() not in p.resolve().parents]
        if not files:
            raise NotReady(f"`{_shown(user_path.strip())}` has no files to archive.")
        target = archives / f"{data.label(directory)}-{timestamp()}.zip"
        write_zip(target, files, directory)
        log.info("archived %d files of %s into %s", len(files), directory, target.name)
        return Reply(
            f"Archived {len(files)} file{'s' * (len(files) != 1)} from `{data.relative(directory)}` into "
            f"`{data.relative(target)}` ({human_size(target.stat().st_size)})."
        )
