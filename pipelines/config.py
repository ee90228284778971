"""Typed configuration of models (generators and the judge), validated with pydantic.

A model config names a backend and how to reach it. Keys are never part of it: only the
*name* of the environment variable (or Space secret) that holds the key, in ``api_key_env``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.secrets import check_env_name, url_has_credentials
from pipelines.types import SamplingParams

BackendName = Literal["embedded", "openai", "vllm", "original"]

# issue 10: `engine:` options that may reach vllm.LLM (scalars only). trust_remote_code runs code
# from the model repository: only an owner's endpoint registry entry may turn it on
# (pipelines.endpoints), never a recipe.
ENGINE_OPTIONS = frozenset(
    {
        "dtype",
        "max_model_len",
        "gpu_memory_utilization",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "seed",
        "enforce_eager",
        "max_num_seqs",
        "max_num_batched_tokens",
        "quantization",
        "kv_cache_dtype",
        "enable_prefix_caching",
        "swap_space",
        "cpu_offload_gb",
        "tokenizer_mode",
        "revision",
        "chunk_size",
    }
)
MAX_N_CTX = 32768
MAX_N_THREADS = 64


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
    n_ctx: int = Field(default=4096, ge=256, le=MAX_N_CTX)
    n_threads: int | None = Field(default=None, ge=1, le=MAX_N_THREADS)
    # vllm backend: engine options passed to vllm.LLM
    engine: dict[str, Any] = Field(default_factory=dict)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        return None if v is None else check_env_name(v, "api_key_env")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            _check_url(v)
        return v

    @field_validator("base_urls")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        for url in v or []:
            _check_url(url)
        return v

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(str(k) for k in v if k not in ENGINE_OPTIONS)
        if unknown:
            raise ValueError(
                f"engine option(s) not allowed: {', '.join(unknown)[:120]} (allowed: "
                f"{', '.join(sorted(ENGINE_OPTIONS))}; trust_remote_code only through the "
                "owner's endpoint registry)"
            )
        for k, val in v.items():
            if not isinstance(val, (str, int, float, bool)) or (
                isinstance(val, str) and len(val) > 200
            ):
                raise ValueError(f"engine option {k}: a number, a boolean or a short string")
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


def _check_url(url: str) -> None:
    if not url.strip().lower().startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    if url_has_credentials(url):
        raise ValueError(
            "base_url must not carry credentials (user:password@ or a key): name the key's "
            "environment variable in api_key_env"
        )


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
