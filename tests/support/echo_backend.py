"""A backend added the way the registry says a new one is: this module (its config model and
its ``Backend``) plus one line in ``pipelines.backends.BACKENDS`` (tests/test_config.py adds it).
It answers with the last user message, ``repeat`` times."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal

from pydantic import Field

from pipelines.backends.base import Backend
from pipelines.config import ModelConfig
from pipelines.types import GenerationRequest, GenerationResult


class EchoConfig(ModelConfig):
    backend: Literal["echo"]
    repeat: int = Field(default=1, ge=1, le=3)


class EchoBackend(Backend):
    name = "echo"
    config: EchoConfig

    async def generate(
        self, requests: Sequence[GenerationRequest]
    ) -> AsyncIterator[GenerationResult]:
        for req in requests:
            last = req.messages[-1]["content"]
            yield GenerationResult(
                key=req.key, text=" ".join([last] * self.config.repeat), model=self.model_name
            )
