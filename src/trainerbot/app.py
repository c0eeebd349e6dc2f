"""The composition root: builds every service once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from trainerbot.config import Settings
from trainerbot.core.conversation import Conversation
from trainerbot.core.files import DataDirectory, FileService
from trainerbot.core.teaching import TeachingService
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.jobs import ServingModel, TrainingJobs
from trainerbot.storage.database import Database
from trainerbot.storage.store import Store

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: Store
    files: FileService
    teaching: TeachingService
    conversation: Conversation
    jobs: TrainingJobs
    serving: ServingModel

    def close(self) -> None:
        self.jobs.shutdown()
        self.store.db.close()


def build_services(settings: Settings) -> Services:
    # Predictions are small products; BLAS threads fighting over two cores only slow them down.
    threadpool_limits(1)
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(Database(settings.database_path))
    serving = ServingModel(store, MiniLMEncoder())
    jobs = TrainingJobs(
        store, data_dir / "models", settings.confidence_threshold, on_finished=lambda job_id: serving.reload()
    )
    jobs.recover()
    serving.reload()
    data = DataDirectory(data_dir)
    return Services(
        settings=settings,
        store=store,
        files=FileService(data, settings.upload_limit_bytes),
        teaching=TeachingService(
            store, data, jobs, serving, settings.confidence_threshold, settings.upload_limit_bytes
        ),
        conversation=Conversation(
            store, serving, settings.confidence_threshold, settings.instructions_path, settings.command_prefix
        ),
        jobs=jobs,
        serving=serving,
    )
