"""Typed configuration of models (generators and the judge), validated with pydantic.

A model config names a backend and how to reach it. Keys are never part of it: only the
*name* of the environment variable (or Space secret) that holds the key, in ``api_key_env``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.secrets import TOKEN_PATTERN
from pipelines.types import SamplingParams

BackendName = Literal["embedded", "openai", "vllm", "original"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(StrictModel):
    """One model endpoint. Shared by generators and the judge."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    backend: BackendName
    model: str = ""
    # openai backend
    base_url: str | None = None
    base_urls: list[str] | None = None
    api_key_env: str | None = None
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    # sampling
    temperature: float = Field(default=0.7, ge=0, le=5)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=512, ge=1, le=131072)
    seed: int | None = None
    stop: list[str] | None = None
    system_prompt: str | None = None
    # embedded backend
    n_ctx: int = Field(default=4096, ge=256, le=131072)
    n_threads: int | None = Field(default=None, ge=1)
    # vllm backend: engine options passed to vllm.LLM
    engine: dict[str, Any] = Field(default_factory=dict)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.replace("_", "").isalnum() or TOKEN_PATTERN.search(v)):
            raise ValueError(
                "api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                "never the key itself"
            )
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelConfig:
        if self.backend == "openai":
            if not (self.base_url or self.base_urls):
                raise ValueError(f"model '{self.id}': backend openai needs base_url (or base_urls)")
            if not self.model:
                raise ValueError(f"model '{self.id}': backend openai needs 'model'")
        if self.backend == "vllm" and not self.model:
            raise ValueError(f"model '{self.id}': backend vllm needs 'model' (path or hub id)")
        return self

    @property
    def urls(self) -> list[str]:
        return list(self.base_urls or ([self.base_url] if self.base_url else []))

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=self.seed,
            stop=self.stop,
        )

    def display_name(self) -> str:
        if self.backend == "original":
            return "original"
        if self.backend == "embedded":
            return self.model or "SmolLM2-135M-Instruct"
        return self.model


class GeneratorConfig(ModelConfig):
    samples: int = Field(default=1, ge=1, le=16)


Aspect = Literal[
    "overall-rating", "helpfulness", "honesty", "instruction-following", "truthfulness"
]


class JudgeConfig(ModelConfig):
    aspect: Aspect = "overall-rating"
    temperature: float = Field(default=0.0, ge=0, le=5)
    max_tokens: int = Field(default=1024, ge=16, le=131072)
    # shuffle seed; the per-conversation permutation derives from it and the conversation id
    shuffle_seed: int = 42
    # judge a second time with the shown order reversed and average the two
    reverse_pass: bool = False
    # structured output (a JSON schema) or UltraFeedback's text format; "auto": structured
    # where the backend constrains decoding itself (embedded, vllm) or the model is known to
    # support JSON-schema structured outputs (STRUCTURED_OUTPUT_MODELS), else the text format,
    # as the Capybara-DPO seed judged. An openai server that refuses a format falls back
    # json_schema -> json_object -> text (see backends/openai_backend.py).
    structured: bool | Literal["auto"] = True
    max_rationale_chars: int = Field(default=300, ge=20, le=4000)
    # the judge prompt: "ultrafeedback" (UltraFeedback's original rubrics, read from the pinned
    # distilabel package) or "capyui" (CapyUI's paraphrase)
    template: Literal["ultrafeedback", "capyui"] = "ultrafeedback"

    def uses_structured_output(self) -> bool:
        """Whether this judge asks for JSON (see ``structured``)."""
        if self.structured != "auto":
            return bool(self.structured)
        if self.backend in ("embedded", "vllm"):
            return True
        return bool(STRUCTURED_OUTPUT_MODELS.search(self.model))


# Models known to support JSON-schema structured outputs on the OpenAI API (gpt-4-1106-preview,
# the seed's judge, is not one of them: it has JSON mode only).
STRUCTURED_OUTPUT_MODELS = re.compile(
    r"^(?:openai/)?(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4)(?:[-.:]|$)", re.IGNORECASE
)
