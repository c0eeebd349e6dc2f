"""Settings: the only module that reads the environment (variables and ``.env``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_INSTRUCTIONS = Path(__file__).with_name("instructions.md")
DEFAULT_PERSONA = (
    "You are trainerbot, a friendly and helpful assistant in a Discord server. Answer in a few clear sentences. "
    "Never give out or help find anyone's personal details, such as a home address or phone number."
)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_shard_ids(text: str) -> list[int]:
    """Shard ids as an operator writes them: `3`, `0-3` or `0,2,4-5`; sorted, each once."""
    ids: set[int] = set()
    for part in (part.strip() for part in text.split(",")):
        first, dash, last = part.partition("-")
        if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise ValueError(f"{part!r} is not a shard id: give a number (3), a range (0-3) or a list (0,2,4-5)")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{part}: a range goes from the lower id to the higher, as in {high}-{low}")
        ids.update(range(low, high + 1))
    return sorted(ids)


class Settings(BaseSettings):
    """Everything trainerbot can be told; each field is TRAINERBOT_<NAME> in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="TRAINERBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # The token is the one setting without the prefix, as every Discord tool names it.
    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")
    data_dir: Path = Path("./data")
    # None: SQLite in the data directory. A postgresql:// URL puts all state in PostgreSQL, which several
    # bot, shard and worker processes can share (docs/scaling.md); model files stay in the data directory.
    database_url: SecretStr | None = None
    command_prefix: str = Field(default="!", min_length=1, max_length=5)
    owner_ids: Annotated[list[int], NoDecode] = []
    admin_roles: Annotated[list[str], NoDecode] = ["Admin"]
    upload_limit_bytes: int = Field(default=10_000_000, gt=0)
    dev_guild_id: int | None = None
    instructions_path: Path = DEFAULT_INSTRUCTIONS
    # None: each model answers with the threshold it chose in training; a number overrides them all.
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    # Many servers: each has its own knowledge base, within these quotas (the bot's owners are exempt).
    server_max_examples: int = Field(default=20_000, ge=1)
    server_max_bytes: int = Field(default=50_000_000, ge=1)  # examples' text and the server folder's files
    server_jobs_per_hour: int = Field(default=20, ge=1)
    # What is taught answers at once; the model is refitted after this many quiet seconds in a
    # server, or as soon as this many examples wait to be taken in (`!retrain` starts one at once).
    auto_train_quiet_seconds: float = Field(default=30.0, ge=0.0, le=86_400.0)
    auto_train_examples: int = Field(default=100, ge=1)
    # Training processes at once, one per server at most. With PostgreSQL, the `trainerbot worker` processes the
    # bot starts beside itself; 0 there leaves training to workers started elsewhere (docs/scaling.md).
    training_workers: int = Field(default=2, ge=0, le=32)
    loaded_models: int = Field(default=256, ge=1, le=100_000)  # servers' models (and example indexes) kept loaded
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Conversation: who writes replies that were not taught.
    chat_engine: Literal["local", "openai", "none"] = "local"
    # A preset (`quality`, `small`: trainerbot/chat/models.py) or the path of any GGUF file.
    chat_model: str = Field(
        default="",
        validate_default=True,
        validation_alias=AliasChoices("TRAINERBOT_CHAT_MODEL", "TRAINERBOT_CHAT_MODEL_PATH", "chat_model"),
    )
    chat_context_tokens: int = Field(default=2048, ge=512, le=262_144)
    chat_max_reply_tokens: int = Field(default=400, ge=16, le=8192)
    chat_threads: int | None = Field(default=None, ge=1, le=64)  # None: 2 when idle, 1 beside training
    # Replies the local engine writes at once: above 1, llama.cpp's own server (llama-server, built by the
    # Makefile) runs the model with that many slots, batched; 1 keeps the model in the bot's process.
    chat_parallel: int = Field(default=4, ge=1, le=64)
    llama_server_args: str = ""  # more llama-server options, as on its command line (e.g. "--n-gpu-layers 99")
    chat_temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    chat_repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)  # the local engine's; 1 is none
    chat_timeout_seconds: float = Field(default=60.0, gt=0)
    chat_examples: int = Field(default=3, ge=0, le=10)
    persona: str = Field(default=DEFAULT_PERSONA, min_length=1, max_length=1000)
    openai_base_url: str | None = None  # None: OpenAI itself; e.g. http://localhost:11434/v1 for Ollama
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TRAINERBOT_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key")
    )
    openai_model: str = "gpt-4o-mini"
    openai_stream: bool = True
    openai_parallel: int = Field(default=4, ge=1, le=64)  # replies the server is asked to write at once

    # Heavy work waits its turn: each person may have this many requests in a queue, running or waiting.
    queue_per_user: int = Field(default=2, ge=1, le=100)

    # Speech: what turns voice messages and audio files into text.
    stt_engine: Literal["whisper", "google", "openai", "none"] = "whisper"
    # `openai`: an OpenAI-compatible /v1/audio/transcriptions server (None: OpenAI itself, which needs the key).
    stt_base_url: str | None = None
    stt_api_key: SecretStr | None = None
    stt_model: str = Field(default="whisper-1", min_length=1)
    whisper_model: str | None = None  # a CTranslate2 folder or a model name on disk; default: tiny.en, bundled
    stt_language: str = Field(default="en", min_length=2, max_length=10)
    stt_threads: int = Field(default=2, ge=1, le=64)
    audio_max_seconds: float = Field(default=300.0, gt=0)  # longest audio transcribed
    tts_engine: Literal["piper", "espeak", "gtts", "openai", "none"] = "piper"
    # `openai`: an OpenAI-compatible /v1/audio/speech server (None: OpenAI itself, which needs the key).
    tts_base_url: str | None = None
    tts_api_key: SecretStr | None = None
    tts_model: str = Field(default="tts-1", min_length=1)
    tts_voice: str = Field(default="alloy", min_length=1, max_length=100)  # the server's name for a voice
    espeak_voice: str = Field(default="en-us", min_length=1, max_length=40)  # `espeak-ng --voices` lists them
    piper_voice: Path | None = None  # a Piper .onnx voice (its .onnx.json beside it); default: en_US-joe-medium
    voice_idle_seconds: float = Field(default=300.0, gt=0)  # the bot leaves a voice channel this long unused

    # The dashboard (adapters/web), served in the bot's process; `trainerbot web` serves it alone.
    web: bool = True
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65_535)  # 0: any free port
    web_public_url: str | None = None  # where people reach it, e.g. https://bot.example.com; default http://host:port
    web_session_hours: float = Field(default=24.0 * 7, gt=0, le=24.0 * 90)
    # Signs the dashboard's cookies; default: made once and kept in the data directory (readable by its owner only).
    web_secret: SecretStr | None = None
    # Sign-in with Discord (OAuth2) needs the application's client id and secret (Developer Portal, OAuth2 page).
    discord_client_id: int | None = Field(
        default=None, validation_alias=AliasChoices("TRAINERBOT_DISCORD_CLIENT_ID", "DISCORD_CLIENT_ID")
    )
    discord_client_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TRAINERBOT_DISCORD_CLIENT_SECRET", "DISCORD_CLIENT_SECRET")
    )
    discord_url: str = "https://discord.com"  # Discord's site and API (tests point it at the loopback Discord)
    # Gateway shards (Discord requires them past 2,500 servers). No count: one process runs as many as
    # Discord recommends. Several processes each run some ids (`0-1`, `2-3`) of the same count.
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: Annotated[list[int] | None, NoDecode] = None

    @field_validator("owner_ids", "admin_roles", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("discord_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "dev_guild_id",
        "confidence_threshold",
        "chat_threads",
        "openai_base_url",
        "whisper_model",
        "piper_voice",
        "web_public_url",
        "discord_client_id",
        "stt_base_url",
        "tts_base_url",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "openai_api_key",
        "web_secret",
        "discord_client_secret",
        "stt_api_key",
        "tts_api_key",
        "database_url",
        mode="before",
    )
    @classmethod
    def _blank_key_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("chat_model", mode="before")
    @classmethod
    def _preset_or_file(cls, value: object) -> object:
        from trainerbot.chat.models import DEFAULT, PRESETS  # light: names and paths, no model library

        name = str(value).strip() if value is not None else ""
        if not name:
            return DEFAULT
        if name not in PRESETS and not Path(name).is_file():
            raise ValueError(f"{name}: neither a chat model preset ({', '.join(PRESETS)}) nor a GGUF file")
        return name

    @field_validator("piper_voice")
    @classmethod
    def _model_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _chat_settings_agree(self) -> Settings:
        if self.chat_max_reply_tokens > self.chat_context_tokens // 2:
            raise ValueError("chat_max_reply_tokens: must be at most half of TRAINERBOT_CHAT_CONTEXT_TOKENS")
        if self.chat_engine == "openai" and self.openai_base_url is None and self.openai_api_key is None:
            raise ValueError("openai_api_key: OpenAI needs an API key (or set TRAINERBOT_OPENAI_BASE_URL)")
        if self.stt_engine == "openai" and self.stt_base_url is None and self.stt_api_key is None:
            raise ValueError(
                "stt_api_key: OpenAI's speech recogniser needs an API key (or set TRAINERBOT_STT_BASE_URL)"
            )
        if self.training_workers == 0 and self.database_url is None:
            raise ValueError(
                "training_workers: 0 leaves training to `trainerbot worker` processes, which need PostgreSQL"
                " (TRAINERBOT_DATABASE_URL); give 1 or more"
            )
        if self.tts_engine == "openai" and self.tts_base_url is None and self.tts_api_key is None:
            raise ValueError("tts_api_key: OpenAI's voice needs an API key (or set TRAINERBOT_TTS_BASE_URL)")
        return self

    @field_validator("web_public_url", "discord_url")
    @classmethod
    def _web_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value}: give a web address starting with https:// (or http://)")
        return value.rstrip("/") if value is not None else None

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("give a PostgreSQL URL, postgresql://user:password@host:5432/database")
        return value

    @field_validator("shard_count", mode="before")
    @classmethod
    def _blank_count_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_ids_as_written(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_shard_ids(value) if value.strip() else None
        return value

    @model_validator(mode="after")
    def _shards_agree(self) -> Settings:
        if self.shard_ids is not None and self.shard_count is None:
            raise ValueError(
                "shard_ids: shard ids need the number of shards too (TRAINERBOT_SHARD_COUNT, or --shard-count): "
                "the same id is another set of servers with another count"
            )
        for shard in self.shard_ids or []:
            if self.shard_count is not None and shard >= self.shard_count:
                last = self.shard_count - 1
                raise ValueError(f"shard_ids: shard {shard} is not one of the {self.shard_count} shards (0 to {last})")
        return self

    @property
    def database_path(self) -> Path:
        return self.data_dir / "trainerbot.sqlite3"

    @property
    def database_address(self) -> str:
        """Where the state lives: the PostgreSQL URL, or the SQLite file's path."""
        return self.database_url.get_secret_value() if self.database_url else str(self.database_path)


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it in one line."""


def load_settings(**overrides: object) -> Settings:
    """Reads the settings, turning pydantic's report into one line that names the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = error["msg"].removeprefix("Value error, ")  # a check's own sentence, without pydantic's label
        if not error["loc"] and ": " in message:  # a check across settings names the one to fix first
            field, message = message.removeprefix("Value error, ").split(": ", 1)
        name = field.upper()
        env_name = name if name.startswith("TRAINERBOT_") or name == "DISCORD_TOKEN" else f"TRAINERBOT_{name}"
        raise SettingsError(f"setting {env_name} is invalid: {message}") from None
