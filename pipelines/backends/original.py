"""The dataset's own last assistant answer, kept as a candidate (as the Capybara recipe did)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from pipelines.backends.base import Backend
from pipelines.types import GenerationRequest, GenerationResult


class OriginalBackend(Backend):
    name = "original"

    @property
    def model_name(self) -> str:
        return "original"

    async def generate(
        self, requests: Sequence[GenerationRequest]
    ) -> AsyncIterator[GenerationResult]:
        for req in requests:
            if req.original_response is None or not req.original_response.strip():
                yield GenerationResult(
                    key=req.key, error="no_original_response", model=self.model_name
                )
            else:
                yield GenerationResult(
                    key=req.key,
                    text=req.original_response,
                    finish_reason="original",
                    latency_s=0.0,
                    model=self.model_name,
                )
