"""Settings: defaults, lists from the environment, one-line errors, a secret token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainerbot.config import SettingsError, load_settings


def test_defaults_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINERBOT_OWNER_IDS", "1, 2")
    monkeypatch.setenv("TRAINERBOT_ADMIN_ROLES", "Mods,Admin")
    settings = load_settings(_env_file=None)
    assert settings.owner_ids == [1, 2] and settings.admin_roles == ["Mods", "Admin"]
    assert settings.command_prefix == "!" and settings.upload_limit_bytes == 10_000_000
    assert settings.data_dir == Path("data") and settings.discord_token is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("TRAINERBOT_OWNER_IDS", "me"), ("TRAINERBOT_UPLOAD_LIMIT_BYTES", "-1"), ("TRAINERBOT_COMMAND_PREFIX", "")],
)
def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"setting {name} is invalid"):
        load_settings(_env_file=None)


def test_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "very-secret-token")
    settings = load_settings(_env_file=None)
    assert "very-secret-token" not in repr(settings) and "very-secret-token" not in str(settings)
    assert settings.discord_token.get_secret_value() == "very-secret-token"


def test_start_up_stops_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainerbot", "console"],
        env={"TRAINERBOT_UPLOAD_LIMIT_BYTES": "lots", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "trainerbot: setting TRAINERBOT_UPLOAD_LIMIT_BYTES is invalid: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]
