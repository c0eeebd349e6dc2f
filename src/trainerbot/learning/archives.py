"""Zip archives of example files, read without trusting them.

A zip can claim anything about itself, so every check is made on what is actually there:

* the entry count is read from the end record before ``zipfile`` builds an object per entry;
* sizes are counted while decompressing (the headers' sizes are only used to refuse early),
  in chunks, so a member that expands to gigabytes costs the limit and no more;
* a member that expands more than ``MAX_RATIO`` times is refused as a likely bomb;
* only stored and deflated members are read: bzip2 and LZMA can expand a few kilobytes to
  gigabytes inside one call of their decompressor, before any count can stop them;
* archives inside the archive, encrypted members, links, and names that climb out (``..``),
  are absolute, or hide a NUL are refused.

Nothing is extracted to disk: members are read into memory and handed back as bytes.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from trainerbot.errors import InvalidInput, TooLarge

MAX_MEMBERS = 1000  # entries of every kind, folders included
MAX_NAME = 255  # characters of a member's name, folders included
MAX_RATIO = 100  # uncompressed / compressed: text rarely passes 10, a bomb is in the thousands
RATIO_FLOOR = 64 * 1024  # below this many bytes a member is too small to matter, whatever its ratio
CHUNK = 64 * 1024
READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
ARCHIVE_SUFFIXES = (".zip", ".jar", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".zst", ".7z", ".rar", ".lz", ".lzma")
# Magic numbers of archives and compressed streams, for a nested one that hides behind a text name.
ARCHIVE_MAGIC = {
    b"PK\x03\x04": "a zip archive",
    b"PK\x05\x06": "a zip archive",
    b"\x1f\x8b": "a gzip file",
    b"BZh": "a bzip2 file",
    b"\xfd7zXZ\x00": "an xz file",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
    b"Rar!\x1a\x07": "a RAR archive",
    b"\x28\xb5\x2f\xfd": "a zstd file",
}
_END_RECORD = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_S_IFMT, _S_IFLNK = 0o170000, 0o120000
_BROKEN = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    UnicodeDecodeError,
)


@dataclass(frozen=True)
class Document:
    """One file's bytes and the name messages call it by (``archive.zip/member`` for a member)."""

    name: str
    data: bytes


@dataclass
class _Budget:
    left: int
    read: int = field(default=0)


def is_zip(data: bytes) -> bool:
    """Whether the bytes are a zip archive, by their first bytes (a name can say anything)."""
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def archive_kind(data: bytes) -> str | None:
    """What kind of archive or compressed stream the bytes start like, if any."""
    if data[257:262] == b"ustar":
        return "a tar archive"
    return next((kind for magic, kind in ARCHIVE_MAGIC.items() if data.startswith(magic)), None)


def shown(name: str, limit: int = 80) -> str:
    """A name as a message may quote it: no control characters or backticks, and not too long."""
    text = "".join("?" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c for c in name).replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def unsafe_name(name: str) -> str | None:
    """Why a member's name could not be a relative path inside a folder, or None when it could."""
    if "\x00" in name:
        return "has a NUL character in its name"
    # Look-alikes (fullwidth ．．／, the division slash) are read as what they look like: a
    # tool that normalises names on extraction would turn them into the real thing.
    plain = unicodedata.normalize("NFKC", name)
    for look_alike in ("∕", "⁄", "⧸", "\\"):
        plain = plain.replace(look_alike, "/")
    if plain.startswith("/") or (len(plain) > 1 and plain[1] == ":"):
        return "has an absolute path as its name"
    if ".." in PurePosixPath(plain).parts:
        return "has `..` in its name"
    return None


def declared_entries(data: bytes, name: str) -> int:
    """The entry count the end record declares; read before zipfile builds an object per entry."""
    at = data.rfind(_END_RECORD, max(0, len(data) - _END_RECORD_SIZE - 0xFFFF))
    if at < 0 or len(data) < at + _END_RECORD_SIZE:
        raise InvalidInput(f"{shown(name)} is not a readable zip archive (it may be damaged or cut short).")
    # A zip64 archive writes 0xFFFF here, which is over the limit as well.
    return struct.unpack_from("<H", data, at + 10)[0]


def read_zip(data: bytes, name: str, *, limit: int, wanted: Callable[[str], bool]) -> list[Document]:
    """The members ``wanted`` accepts by name, read and checked; a UserError naming the archive when any is unsafe.

    ``limit`` is the most bytes all wanted members may decompress to together. Members not
    wanted are never decompressed, but a dangerous name or a nested archive refuses the whole.
    """
    label = shown(name)
    entries = declared_entries(data, name)
    if entries > MAX_MEMBERS:
        raise TooLarge(f"{label} has {entries} entries; the limit is {MAX_MEMBERS}.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise TooLarge(f"{label} has {len(members)} entries; the limit is {MAX_MEMBERS}.")
            for member in members:
                _check_name(member, label)
            chosen = [m for m in members if not m.is_dir() and wanted(m.filename)]
            for member in chosen:
                _check_readable(member, label)
            _check_declared(chosen, label, limit)
            budget = _Budget(limit)
            return [Document(f"{name}/{m.filename}", _read_member(archive, m, label, budget)) for m in chosen]
    except _BROKEN as exc:
        reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise InvalidInput(f"{label} is not a readable zip archive ({shown(reason)}).") from None


def _where(label: str, member: zipfile.ZipInfo) -> str:
    return f"{label}: `{shown(member.orig_filename)}`"


def _check_name(member: zipfile.ZipInfo, label: str) -> None:
    """Refuses an entry whose name is dangerous or is another archive, whether or not it would be read."""
    problem = unsafe_name(member.orig_filename)
    if problem is None and len(member.orig_filename) > MAX_NAME:
        problem = f"has a name of {len(member.orig_filename)} characters; the limit is {MAX_NAME}"
    if problem:
        raise InvalidInput(f"{_where(label, member)} {problem}; nothing was stored.")
    if not member.is_dir() and member.filename.lower().endswith(ARCHIVE_SUFFIXES):
        raise InvalidInput(f"{_where(label, member)} is an archive inside the archive; nested archives are not read.")


def _check_readable(member: zipfile.ZipInfo, label: str) -> None:
    """Refuses a member that is to be read but cannot be read safely, from what its headers say."""
    where = _where(label, member)
    if (member.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        raise InvalidInput(f"{where} is a symbolic link; only plain files are read from an archive.")
    if member.flag_bits & 0x1:
        raise InvalidInput(f"{where} is encrypted; send the archive without a password.")
    if member.compress_type not in READABLE_METHODS:
        raise InvalidInput(
            f"{where} is compressed with method {member.compress_type}; only stored and deflated members "
            "(what every zip tool makes by default) are read."
        )
    ratio = member.file_size // max(member.compress_size, 1)
    if member.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
        raise TooLarge(f"{where} claims to expand {ratio} times; {_BOMB}")


def _check_declared(chosen: list[zipfile.ZipInfo], label: str, limit: int) -> None:
    """Refuses at once what the headers admit is too big; what they hide is counted while reading."""
    declared = sum(m.file_size for m in chosen)
    if declared > limit:
        raise TooLarge(f"{label} would unpack to {declared:,} bytes; the limit is {limit:,}.")


_BOMB = f"more than {MAX_RATIO} times is refused as a possible zip bomb."


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, label: str, budget: _Budget) -> bytes:
    """A member's bytes, counted as they are decompressed against the budget and the ratio."""
    where = _where(label, member)
    chunks: list[bytes] = []
    size = 0
    with archive.open(member) as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > budget.left:
                raise TooLarge(f"{label} unpacks to more than {budget.read + budget.left:,} bytes, the limit.")
            if size > RATIO_FLOOR and size > MAX_RATIO * max(member.compress_size, 1):
                raise TooLarge(f"{where} expands more than {MAX_RATIO} times; {_BOMB}")
            if not chunks and (kind := archive_kind(chunk)):
                raise InvalidInput(f"{where} is {kind}; nested archives are not read.")
            chunks.append(chunk)
    budget.left -= size
    budget.read += size
    return b"".join(chunks)


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
