"""The composition root: builds every service once from the settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from threadpoolctl import threadpool_limits

from trainerbot import allocator
from trainerbot.chat import build_engine
from trainerbot.chat.engine import ChatEngine
from trainerbot.config import Settings
from trainerbot.core.answers import TaughtAnswers
from trainerbot.core.conversation import ChatOptions, Conversation
from trainerbot.core.files import FileService, Folders
from trainerbot.core.knowledge import KnowledgeService
from trainerbot.core.listening import Listening
from trainerbot.core.overview import Overview
from trainerbot.core.permissions import Access
from trainerbot.core.privacy import PrivacyService
from trainerbot.core.queue import WorkQueue
from trainerbot.core.review import ReviewIntake, ReviewService
from trainerbot.core.servers import ServerConfig
from trainerbot.core.teaching import Quotas, Refit, TeachingService
from trainerbot.learning.encoder import MiniLMEncoder
from trainerbot.learning.jobs import ServingModels, TrainingJobs
from trainerbot.learning.retrieval import ExampleIndexes
from trainerbot.speech.stt import SpeechToText, build_recogniser
from trainerbot.speech.tts import TextToSpeech, build_voice
from trainerbot.storage.database import open_database
from trainerbot.storage.store import Store

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, Callable[[], bool]], ChatEngine | None]


@dataclass(frozen=True)
class Queues:
    """Where heavy work started by a message waits its turn (training has its own, in TrainingJobs)."""

    replies: WorkQueue  # the chat engine writing a reply
    transcriptions: WorkQueue  # speech-to-text of a voice message or audio file


@dataclass
class Services:
    settings: Settings
    store: Store
    access: Access
    files: FileService
    teaching: TeachingService
    review: ReviewService
    knowledge: KnowledgeService  # what a base knows, answer by answer, edited outright (the dashboard)
    overview: Overview
    conversation: Conversation
    privacy: PrivacyService
    servers: ServerConfig
    jobs: TrainingJobs
    models: ServingModels
    answers: TaughtAnswers
    engine: ChatEngine | None
    listening: Listening
    voice: TextToSpeech | None
    queues: Queues

    loading: list[threading.Thread] = field(default_factory=list)

    def close(self) -> None:
        # Models still loading in their threads are waited for: a C++ library torn down at exit
        # under a thread still inside it aborts the process.
        for thread in self.loading:
            thread.join(timeout=60)
        self.jobs.shutdown()
        for engine in (self.engine, self.listening.recogniser, self.voice):
            if engine is not None:
                engine.close()
        self.store.db.close()


def build_services(
    settings: Settings,
    *,
    make_engine: EngineFactory = build_engine,
    make_recogniser: Callable[[Settings], SpeechToText | None] = build_recogniser,
    make_voice: Callable[[Settings], TextToSpeech | None] = build_voice,
    chat: bool = True,
) -> Services:
    """``chat``: load the chat and speech engines at once (in threads); commands that never chat leave them.

    ``make_engine`` and ``make_recogniser`` let tests and benchmarks choose the engines.
    """
    # Predictions are small products; BLAS threads fighting over two cores only slow them down.
    threadpool_limits(1)
    allocator.return_large_blocks_to_the_system()
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(open_database(settings.database_address))
    encoder = MiniLMEncoder()
    models = ServingModels(store.knowledge, encoder, data_dir, capacity=settings.loaded_models)
    queue = None
    if settings.database_url is not None:  # PostgreSQL: jobs go to the task queue, for workers anywhere
        from trainerbot.learning.queue import QueuedRunner

        queue = QueuedRunner(store, settings, local_workers=settings.training_workers)
    jobs = TrainingJobs(
        store,
        data_dir,
        settings.confidence_threshold,
        on_finished=lambda job: models.model(job.base),  # loaded before that base's next question
        workers=settings.training_workers,
        queue=queue,
    )
    jobs.recover()
    recogniser = make_recogniser(settings)

    def busy() -> bool:  # the bot's other heavy work: the chat engine then takes one thread, not two
        return jobs.busy() or (recogniser is not None and recogniser.busy())

    engine = make_engine(settings, busy)
    voice = make_voice(settings)
    loading = []
    for loadable in (engine, recogniser, voice) if chat else ():  # loaded beside the start-up, not at the first message
        if loadable is not None:
            loading.append(threading.Thread(target=loadable.load, name=f"{loadable.name}-load", daemon=True))
            loading[-1].start()
    folders = Folders(data_dir)
    access = Access(store.knowledge, settings.admin_roles)
    answers = TaughtAnswers(store.knowledge, models, settings.confidence_threshold)
    quotas = Quotas(settings.server_max_examples, settings.server_max_bytes, settings.server_jobs_per_hour)
    intake = ReviewIntake(store, encoder)  # what the bot could not answer, for each server's admins
    options = ChatOptions(
        persona=settings.persona,
        max_reply_tokens=settings.chat_max_reply_tokens,
        examples=settings.chat_examples,
        stall_timeout=settings.chat_timeout_seconds,
    )
    conversation = Conversation(
        store,
        answers,
        ExampleIndexes(store.knowledge, encoder, capacity=settings.loaded_models),
        access,
        engine,
        options,
        instructions=settings.instructions_path,
        prefix=settings.command_prefix,
        review=intake,
    )
    teaching = TeachingService(
        store,
        folders,
        access,
        jobs,
        answers,
        settings.upload_limit_bytes,
        quotas,
        review=intake,
        refit=Refit(settings.auto_train_quiet_seconds, settings.auto_train_examples),
    )
    return Services(
        settings=settings,
        store=store,
        access=access,
        files=FileService(folders, access, settings.upload_limit_bytes),
        teaching=teaching,
        review=ReviewService(store, access, teaching),
        knowledge=KnowledgeService(store, access, teaching),
        overview=Overview(store, access),
        conversation=conversation,
        privacy=PrivacyService(store, conversation, settings.upload_limit_bytes, settings.command_prefix),
        servers=ServerConfig(store, access, folders, quotas, conversation),
        jobs=jobs,
        models=models,
        answers=answers,
        engine=engine,
        listening=Listening(
            recogniser, upload_limit=settings.upload_limit_bytes, max_seconds=settings.audio_max_seconds
        ),
        voice=voice,
        queues=Queues(
            replies=WorkQueue(
                "a written reply", capacity=engine.parallel if engine else 1, per_user=settings.queue_per_user
            ),
            # Whisper works on one file at a time with every thread it was given.
            transcriptions=WorkQueue("a transcription", capacity=1, per_user=settings.queue_per_user),
        ),
        loading=loading,
    )
