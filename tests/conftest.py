"""Shared fixtures: settings on a temporary data directory, the services, and the bot on a loopback Discord."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.databases import PostgresServer
from tests.loopback_discord import FakeDiscord, FakeUser, GuildSetup, run_bot
from tests.loopback_discord.payloads import EVERYONE_PERMISSIONS
from trainerbot.app import Services, build_services
from trainerbot.config import Settings, load_settings

# Tests wait for training jobs: the refit after teaching starts at once, not after the usual quiet
# spell, unless a test sets it (test_live_teaching.py does).
os.environ.setdefault("TRAINERBOT_AUTO_TRAIN_QUIET_SECONDS", "0")
# Tests that chat but do not judge the replies' quality write them with the small model: it is ten times faster.
os.environ.setdefault("TRAINERBOT_CHAT_MODEL", "small")
# ... in the bot's process, one reply at a time; tests/test_llama_server.py runs the default, llama-server.
os.environ.setdefault("TRAINERBOT_CHAT_PARALLEL", "1")
# The dashboard is served only where a test asks for it (tests/test_dashboard*.py): many bots run at once here.
os.environ.setdefault("TRAINERBOT_WEB", "false")

OWNER_ID = 900_000_000_000_000_999  # a configured owner who holds no role in the guild
TRAINER = FakeUser(900_000_000_000_000_204, "trainer", role_names=("Trainer",))
CONFIGURED_OWNER = FakeUser(OWNER_ID, "botowner")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_databases`` run on SQLite in `make test` and on PostgreSQL in `make test-slow`."""
    if "database_engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        engines = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]
        metafunc.parametrize("database_engine", engines, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def database_engine(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(autouse=True)
def database_url(
    database_engine: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """None on SQLite; on PostgreSQL, the URL of a database of the test's own.

    It is set as TRAINERBOT_DATABASE_URL, so every bot the test builds, in its process or in a child
    process, keeps its state there, as a bot configured so would.
    """
    if database_engine == "sqlite":
        yield None
        return
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("TRAINERBOT_DATABASE_URL", url)
    yield url


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty PostgreSQL database of the test's own, dropped afterwards."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop(url)


@pytest.fixture
def database_address(database_url: str | None, tmp_path: Path) -> str:
    """Where a test's own store lives: its PostgreSQL database, or a SQLite file in its folder."""
    return database_url or str(tmp_path / "db.sqlite3")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        owner_ids=[OWNER_ID],
        admin_roles=["Trainer"],
        upload_limit_bytes=100_000,
        chat_engine="none",  # teaching tests want the fixed "not learned yet" reply; chat tests choose an engine
    )


def core_services(data_dir: Path, **settings: object) -> Services:
    """The services as the bot builds them, without chat or speech engines (teaching, answers, jobs)."""
    quiet = {"chat_engine": "none", "stt_engine": "none", "tts_engine": "none"}
    return build_services(load_settings(_env_file=None, data_dir=data_dir, **(quiet | settings)), chat=False)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.close()


def guild_setup() -> GuildSetup:
    setup = GuildSetup(extra_users=[TRAINER, CONFIGURED_OWNER])
    setup.roles["Trainer"] = (900_000_000_000_000_303, EVERYONE_PERMISSIONS)
    return setup


@pytest.fixture
async def discord_server() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(guild_setup()) as server:
        yield server


@pytest.fixture
async def bot(services: Services, discord_server: FakeDiscord) -> AsyncIterator[object]:
    from trainerbot.adapters.discord.bot import TrainerBot

    async with run_bot(TrainerBot(services, progress_interval=0.05), discord_server) as running:
        yield running
