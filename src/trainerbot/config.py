"""Settings: the only module that reads the environment (variables and ``.env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_INSTRUCTIONS = Path(__file__).with_name("instructions.md")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything trainerbot can be told; each field is TRAINERBOT_<NAME> in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="TRAINERBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # The token is the one setting without the prefix, as every Discord tool names it.
    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")
    data_dir: Path = Path("./data")
    command_prefix: str = Field(default="!", min_length=1, max_length=5)
    owner_ids: Annotated[list[int], NoDecode] = []
    admin_roles: Annotated[list[str], NoDecode] = ["Admin"]
    upload_limit_bytes: int = Field(default=10_000_000, gt=0)
    dev_guild_id: int | None = None
    instructions_path: Path = DEFAULT_INSTRUCTIONS
    confidence_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("owner_ids", "admin_roles", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("discord_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("dev_guild_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def database_path(self) -> Path:
        return self.data_dir / "trainerbot.sqlite3"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it in one line."""


def load_settings(**overrides: object) -> Settings:
    """Reads the settings, turning pydantic's report into one line that names the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        env_name = "DISCORD_TOKEN" if field in ("discord_token", "DISCORD_TOKEN") else f"TRAINERBOT_{field.upper()}"
        raise SettingsError(f"setting {env_name} is invalid: {error['msg']}") from None
