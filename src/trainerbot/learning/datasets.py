"""Datasets: a directory of example files, validated, counted and snapshotted as a zip."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from trainerbot.core.errors import InvalidInput, TooLarge
from trainerbot.learning.examples import Example, example_files, parse_examples


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


def snapshot(directory: Path, archive_dir: Path, name: str, stamp: str, positive: bool, limit: int) -> DatasetSnapshot:
    files = [p for p in example_files(directory) if p.resolve().is_file()]
    if not files:
        raise InvalidInput(f"`{name}` has no example files (.json, .jsonl, .csv, .tsv, .txt or .md).")
    examples, manifest = read_directory(directory, files, positive, limit)
    archive_dir.mkdir(parents=True, exist_ok=True)
    archive = archive_dir / f"{name}-{stamp}.zip"
    partial = archive.with_suffix(".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, path.relative_to(directory).as_posix())
            zf.writestr(
                "manifest.json",
                json.dumps(
                    {"dataset": name, "positive": positive, "examples": len(examples), "files": manifest}, indent=2
                ),
            )
        partial.replace(archive)
    finally:
        partial.unlink(missing_ok=True)
    return DatasetSnapshot(name, files, examples, manifest, archive)
