"""Chat engines: who writes a reply when nothing taught fits. The engine is chosen in the settings."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable

from trainerbot.chat.engine import ChatEngine
from trainerbot.config import Settings

log = logging.getLogger(__name__)


def build_engine(settings: Settings, busy: Callable[[], bool] = lambda: False) -> ChatEngine | None:
    """The engine the settings name; None for `none` (the bot then says what it has not learned)."""
    if settings.chat_engine == "none":
        return None
    if settings.chat_engine == "openai":
        from trainerbot.chat.openai_compatible import OpenAIEngine

        return OpenAIEngine(
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            context_tokens=settings.chat_context_tokens,
            timeout=settings.chat_timeout_seconds,
            temperature=settings.chat_temperature,
            streaming=settings.openai_stream,
            parallel=settings.openai_parallel,
        )
    from trainerbot.chat.llama_server import LlamaServerEngine, server_binary
    from trainerbot.chat.local import LocalEngine
    from trainerbot.chat.models import ModelInstallError, model_file

    try:
        path = model_file(settings.chat_model)
    except ModelInstallError as exc:
        raise RuntimeError(str(exc)) from None
    if settings.chat_parallel > 1:
        binary = server_binary()
        if binary is not None:
            return LlamaServerEngine(
                path,
                binary,
                parallel=settings.chat_parallel,
                context_tokens=settings.chat_context_tokens,
                threads=settings.chat_threads,
                temperature=settings.chat_temperature,
                repeat_penalty=settings.chat_repeat_penalty,
                timeout=settings.chat_timeout_seconds,
                log_path=settings.data_dir / "llama-server.log",
                extra_args=shlex.split(settings.llama_server_args),
            )
        log.warning("llama-server is not installed (make llama-server): writing one reply at a time, in process")
    return LocalEngine(
        path,
        context_tokens=settings.chat_context_tokens,
        threads=settings.chat_threads,
        busy=busy,
        temperature=settings.chat_temperature,
        repeat_penalty=settings.chat_repeat_penalty,
    )
