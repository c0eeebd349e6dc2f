"""Datasets: a directory of example files, validated, counted and snapshotted as a zip."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from trainerbot.core.errors import InvalidInput, TooLarge
from trainerbot.core.files import write_zip
from trainerbot.learning.examples import Example, parse_examples


@dataclass(frozen=True)
class DatasetSnapshot:
    name: str
    files: list[Path]
    examples: list[Example]
    manifest: dict[str, str]  # relative path -> sha256
    archive: Path


def read_directory(
    directory: Path, files: list[Path], positive: bool, limit: int
) -> tuple[list[Example], dict[str, str]]:
    """Parses every example file (all of them or none) and hashes each."""
    examples: list[Example] = []
    manifest: dict[str, str] = {}
    for path in files:
        relative = path.relative_to(directory).as_posix()
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(f"{relative} is {size} bytes; the limit is {limit}.")
        data = path.read_bytes()
        manifest[relative] = hashlib.sha256(data).hexdigest()
        examples.extend(parse_examples(data, relative, positive))
    return examples, manifest


def snapshot(
    directory: Path, files: list[Path], archive: Path, name: str, positive: bool, limit: int
) -> DatasetSnapshot:
    """Reads and checks every file, then zips them with a manifest of their SHA-256 hashes."""
    if not files:
        raise InvalidInput(f"`{name}` has no example files (.json, .jsonl, .csv, .tsv, .txt or .md).")
    examples, manifest = read_directory(directory, files, positive, limit)
    summary = {"dataset": name, "positive": positive, "examples": len(examples), "files": manifest}
    write_zip(archive, files, directory, {"manifest.json": json.dumps(summary, indent=2)})
    return DatasetSnapshot(name, files, examples, manifest, archive)
