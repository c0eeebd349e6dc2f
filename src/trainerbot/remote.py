"""Inference servers (OpenAI's API and compatible ones): what a failed request means, said plainly.

The chat engine and the speech engines that use such a server make their client here, and raise
their own UserError with these sentences, logging the failure for the owners.
"""

from __future__ import annotations

import openai


def client(base_url: str | None, api_key: str | None, timeout: float) -> openai.OpenAI:
    """The client for one server (None: OpenAI itself), trying a failed request once more."""
    # A server on one's own machine needs no key, but the client insists on one.
    return openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=1)


def trouble(exc: openai.OpenAIError, what: str, model: str) -> str:
    """A sentence for the person waiting: ``what`` names the server ("The chat server")."""
    if isinstance(exc, openai.APITimeoutError):
        return f"{what} took too long to answer. Try again in a moment."
    if isinstance(exc, openai.APIConnectionError):
        return f"{what} can't be reached right now. Try again later."
    if isinstance(exc, openai.RateLimitError):
        return f"{what} is busy (rate limited). Try again in a minute."
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return f"{what} refused the bot's API key; an owner needs to check the settings."
    if isinstance(exc, openai.NotFoundError):
        return f"{what} has no model `{model}`; an owner needs to check the settings."
    if isinstance(exc, openai.APIStatusError):
        return f"{what} answered with an error (HTTP {exc.status_code}). Try again later."
    return f"{what} sent something the bot could not read. Try again later."
