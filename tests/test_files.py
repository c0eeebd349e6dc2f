"""Paths stay inside the data directory; getfile and archive are for admins."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from trainerbot.core.files import DataDirectory, FileService, Folders
from trainerbot.core.permissions import Access
from trainerbot.errors import NotReady, PermissionDenied, TooLarge, UnsafePath
from trainerbot.storage.database import Database
from trainerbot.storage.knowledge import Knowledge
from trainerbot.types import Caller

# Outside a server (the console): the bot's owner, whose folder is the data directory, and someone else.
ADMIN = Caller(1, "admin", is_owner=True)
MEMBER = Caller(2, "member")


@pytest.fixture
def data(tmp_path: Path) -> DataDirectory:
    root = tmp_path / "data"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("secret")
    return DataDirectory(root)


def file_service(data: DataDirectory, upload_limit: int) -> FileService:
    """The files of the bot-wide base, whose folder is ``data``'s root (the database kept outside it)."""
    knowledge = Knowledge(Database(data.root.parent / "db.sqlite3"))
    return FileService(Folders(data.root), Access(knowledge, ["Trainer"]), upload_limit)


@pytest.mark.parametrize(
    "path",
    ["..", "../secret.txt", "notes/../../secret.txt", "/etc/passwd", "a\x00b", "x" * 2000, "", "   "],
)
def test_paths_that_leave_or_are_invalid_are_refused(data: DataDirectory, path: str) -> None:
    with pytest.raises(UnsafePath):
        data.resolve(path)


def test_symlinks_leaving_the_directory_are_refused(data: DataDirectory, tmp_path: Path) -> None:
    (data.root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (data.root / "linkdir").symlink_to(tmp_path)
    for path in ("link.txt", "linkdir/secret.txt"):
        with pytest.raises(UnsafePath):
            data.resolve(path)


def test_paths_inside_are_accepted_absolute_or_relative(data: DataDirectory) -> None:
    inside = data.root.resolve() / "notes" / "a.txt"
    assert data.resolve("notes/a.txt") == inside
    assert data.resolve(str(inside)) == inside
    assert data.resolve("notes/./../notes/a.txt") == inside
    (data.root / "inner").symlink_to(data.root / "notes")
    assert data.resolve("inner/a.txt") == inside


def test_getfile(data: DataDirectory) -> None:
    files = file_service(data, upload_limit=10)
    reply = files.getfile(ADMIN, "notes/a.txt")
    assert [(f.name, f.data) for f in reply.files] == [("a.txt", b"hello")]
    with pytest.raises(PermissionDenied):
        files.getfile(MEMBER, "notes/a.txt")
    with pytest.raises(NotReady):
        files.getfile(ADMIN, "notes/missing.txt")
    (data.root / "big.bin").write_bytes(b"x" * 11)
    with pytest.raises(TooLarge):
        files.getfile(ADMIN, "big.bin")


def test_archive_skips_links_that_leave_and_earlier_archives(data: DataDirectory, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", data.root / "notes" / "leak.txt")
    files = file_service(data, upload_limit=1000)
    reply = files.archive(ADMIN, ".")
    assert "Archived 1 file from `.`" in reply.text
    [archive] = (data.root / "archives").glob("data-*.zip")
    assert zipfile.ZipFile(archive).namelist() == ["notes/a.txt"]
    with pytest.raises(PermissionDenied):
        files.archive(MEMBER, "notes")


def test_example_files_skip_links_that_leave(data: DataDirectory, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret => leaked")
    (data.root / "notes" / "faq.txt").write_text("a => b")
    (data.root / "notes" / "sneaky.txt").symlink_to(tmp_path / "outside.txt")
    assert [p.name for p in data.example_files(data.root / "notes")] == ["a.txt", "faq.txt"]
