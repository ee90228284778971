"""The one interface every LLM backend implements.

A backend takes a batch of requests and yields one result per request *as each completes*,
so the caller can commit it at once. Errors never raise out of ``generate``: they come back as
a result with ``error`` set, so one bad row never stops the batch.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence

from pipelines.config import ModelConfig
from pipelines.types import GenerationRequest, GenerationResult


class BackendError(Exception):
    """A backend cannot run at all (missing install, unreachable server, bad key): one line."""


class Backend(abc.ABC):
    """Base class of backends. Subclasses implement ``generate``."""

    name: str = ""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @property
    def model_name(self) -> str:
        return self.config.display_name()

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> AsyncIterator[GenerationResult]:
        """Yield one result per request, in completion order."""

    async def check(self) -> str:
        """Send one tiny request; return a one-line description or raise BackendError."""
        from pipelines.types import SamplingParams

        req = GenerationRequest(
            key="check",
            messages=[{"role": "user", "content": "Say hello in one word."}],
            params=SamplingParams(temperature=0.0, max_tokens=8),
        )
        async for res in self.generate([req]):
            if res.error:
                raise BackendError(res.error)
            return f"{self.model_name}: ok ({res.latency_s or 0:.2f}s, reply {res.text!r})"
        raise BackendError(f"{self.model_name}: no answer")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources (HTTP clients, engines)."""


def short_error(exc: BaseException) -> str:
    """A one-line description of an exception with its class name, for the store and the UI
    (``pipelines.errors.error_line``, the one formatter)."""
    from pipelines.errors import error_line

    return error_line(exc, limit=500, with_type=True)
