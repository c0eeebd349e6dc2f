"""Files under the data directory: safe path resolution, sending a file, zipping a directory."""

from __future__ import annotations

import logging
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trainerbot.core.errors import NotReady, TooLarge, UnsafePath
from trainerbot.core.messages import Caller, OutFile, Reply
from trainerbot.core.permissions import require_admin
from trainerbot.learning.examples import READABLE_SUFFIXES

log = logging.getLogger(__name__)
MAX_PATH_LENGTH = 1024
MAX_NAME_BYTES = 255  # of one file or folder name: what Linux and macOS allow
SLASH_LOOK_ALIKES = ("∕", "⁄", "⧸", "\\")  # division slash, fraction slash, big solidus, backslash
# Zips the bot writes itself (dataset snapshots, archives): a directory scan leaves them out, or
# every `!select_dataset datasets` would read the earlier snapshots' examples again.
BOT_ZIP = re.compile(r".+-\d{8}-\d{6}\.zip")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def write_zip(target: Path, files: list[Path], base: Path, extra: dict[str, str | bytes] | None = None) -> None:
    """Zips files (named relative to ``base``) and ``extra`` entries into ``target``; no partial zip on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, path.relative_to(base).as_posix())
            for name, text in (extra or {}).items():
                archive.writestr(name, text)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class DataDirectory:
    """The one folder the bot reads and writes; every path a user names must stay inside it."""

    root: Path

    def resolve(self, user_path: str) -> Path:
        """The real path a user's argument names, or UnsafePath; nothing is read here."""
        text = user_path.strip().strip("`\"'")
        if not text:
            raise UnsafePath("Give a path inside the data directory, for example `datasets/faq.csv`.")
        _check_path_text(text)
        root = self.root.resolve()
        real = _inside(root, text)
        # Look-alikes of `.` and `/` (fullwidth ．．／, the division slash ∕) are plain characters
        # here, but a tool that normalises names would make them real: refuse what they mimic.
        mimicked = unicodedata.normalize("NFKC", text)
        for look_alike in SLASH_LOOK_ALIKES:
            mimicked = mimicked.replace(look_alike, "/")
        if real is None or (mimicked != text and _inside(root, mimicked) is None):
            raise UnsafePath(f"`{_shown(text)}` is outside the data directory; only files inside it can be used.")
        return real

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root.resolve()).as_posix() or "."

    def existing_file(self, user_path: str, limit: int) -> Path:
        path = self.resolve(user_path)
        if not path.is_file():
            raise NotReady(f"There is no file `{_shown(user_path.strip())}` in the data directory.")
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(f"`{_shown(user_path.strip())}` is {human_size(size)}; the limit is {human_size(limit)}.")
        return path

    def existing_directory(self, user_path: str) -> Path:
        path = self.resolve(user_path)
        if not path.is_dir():
            raise NotReady(f"There is no directory `{_shown(user_path.strip())}` in the data directory.")
        return path

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
            for name in sorted(names):
                path = Path(base) / name
                real = path.resolve()
                if real.is_file() and root in real.parents:
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


class FileService:
    def __init__(self, data: DataDirectory, upload_limit: int) -> None:
        self.data = data
        self.upload_limit = upload_limit

    def getfile(self, caller: Caller, user_path: str) -> Reply:
        require_admin(caller, "read server files")
        path = self.data.existing_file(user_path, self.upload_limit)
        return Reply(
            f"`{self.data.relative(path)}` ({human_size(path.stat().st_size)})", [OutFile(path.name, path.read_bytes())]
        )

    def archive(self, caller: Caller, user_path: str) -> Reply:
        require_admin(caller, "archive server files")
        directory = self.data.existing_directory(user_path)
        archives = self.data.root / "archives"
        files = [p for p in self.data.files_under(directory) if archives.resolve() not in p.resolve().parents]
        if not files:
            raise NotReady(f"`{_shown(user_path.strip())}` has no files to archive.")
        target = archives / f"{self.data.label(directory)}-{timestamp()}.zip"
        write_zip(target, files, directory)
        log.info("archived %d files of %s into %s", len(files), directory, target.name)
        return Reply(
            f"Archived {len(files)} file{'s' * (len(files) != 1)} from `{self.data.relative(directory)}` into "
            f"`{self.data.relative(target)}` ({human_size(target.stat().st_size)})."
        )
