"""Datasets: a directory of example files (and zips of them), validated, counted and snapshotted as a zip."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from trainerbot.errors import InvalidInput, TooLarge
from trainerbot.learning.archives import Document, write_zip
from trainerbot.learning.examples import (
    SNAPSHOT_MANIFEST,
    is_snapshot_manifest,
    parse_examples,
    read_documents,
)
from trainerbot.types import Example, human_size


@dataclass(frozen=True)
class DatasetSnapshot:
    name: str
    files: list[Path]
    examples: list[Example]
    manifest: dict[str, str]  # relative path (archive.zip/member for a zip's) -> sha256
    archive: Path


# A directory is read whole into memory before anything is stored: all of it at most this many
# times the limit on one file (100 MB at the default 10 MB), counting what its zips unpack to.
DIRECTORY_LIMIT_FILES = 10


def read_directory(
    directory: Path, files: list[Path], positive: bool, limit: int
) -> tuple[list[Example], dict[str, Document]]:
    """Parses every example file, zips unpacked (all of them or none); also what each document was, by name."""
    examples: list[Example] = []
    documents: dict[str, Document] = {}
    total, total_limit = 0, DIRECTORY_LIMIT_FILES * limit
    for path in files:
        relative = path.relative_to(directory).as_posix()
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(f"{relative} is {human_size(size)}; the limit is {human_size(limit)}.")
        data = path.read_bytes()
        if is_snapshot_manifest(relative, data):  # an unpacked snapshot: its manifest is no examples
            continue
        for document in read_documents(data, relative, limit):
            total += len(document.data)
            if total > total_limit:
                raise TooLarge(
                    f"`{directory.name}` holds more than {human_size(total_limit)} of examples "
                    f"({DIRECTORY_LIMIT_FILES} times the limit on one file); choose a smaller directory."
                )
            examples.extend(parse_examples(document.data, document.name, positive))
            documents[document.name] = document
    return examples, documents


def snapshot(
    directory: Path, files: list[Path], archive: Path, name: str, positive: bool, limit: int
) -> DatasetSnapshot:
    """Reads and checks every file, then zips what was read with a manifest of SHA-256 hashes.

    The snapshot holds the bytes that were checked (a file changed since is not picked up),
    and a zip's members as files of their own, so the snapshot can itself be taught from.
    """
    if not files:
        raise InvalidInput(
            f"`{name}` has no example files (.json, .jsonl, .csv, .tsv, .txt or .md, or .zip archives of them)."
        )
    examples, documents = read_directory(directory, files, positive, limit)
    if SNAPSHOT_MANIFEST in documents:
        raise InvalidInput(f"`{SNAPSHOT_MANIFEST}` is the name the snapshot gives its manifest; rename that file.")
    manifest = {key: hashlib.sha256(d.data).hexdigest() for key, d in documents.items()}
    summary = {"dataset": name, "positive": positive, "examples": len(examples), "files": manifest}
    entries: dict[str, str | bytes] = {key: d.data for key, d in documents.items()}
    entries[SNAPSHOT_MANIFEST] = json.dumps(summary, indent=2)
    write_zip(archive, [], directory, entries)
    return DatasetSnapshot(name, files, examples, manifest, archive)
