"""Typed configuration of models (generators and the judge), validated with pydantic.

A model config names a backend and how to reach it. Keys are never part of it: only the
*name* of the environment variable (or Space secret) that holds the key, in ``api_key_env``.

Each backend has its own config model (``EmbeddedConfig``, ``OpenAIConfig``, ``VLLMConfig``,
``OriginalConfig``: the fields every model has, ``ModelConfig``, plus its own), registered in
``pipelines.backends.BACKENDS``; a recipe's ``generators`` and ``judge`` are a discriminated
union of them on ``backend``, so a field of another backend is a one-line error naming the
backend. The roles add their fields (``GeneratorConfig.samples``, ``JudgeConfig.aspect`` ...):
a generator on the openai backend is an ``OpenAIConfig`` and a ``GeneratorConfig``.

``ModelConfig``, ``GeneratorConfig`` and ``JudgeConfig`` stand for "any backend" wherever they
are used: as a pydantic field type (the union), with ``model_validate``, or called with a
``backend=`` (``GeneratorConfig(id="g", backend="openai", base_url=...)`` returns the openai
generator). A new backend is its module (its ``ModelConfig`` subclass with
``backend: Literal["name"]`` and its ``Backend``) plus one line in ``BACKENDS``.
"""

from __future__ import annotations

import re
import sys
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from pipelines.secrets import check_env_name, url_has_credentials
from pipelines.types import SamplingParams

BackendName = Literal["embedded", "openai", "vllm", "original"]  # the built-in backends

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
_ROLES_READY = False  # True once the role classes below exist (see ModelConfig's schema)

# The backend fields of the flat ModelConfig every backend shared until issue 9, with the
# defaults its recipes were written with (``Recipe.to_yaml`` wrote them all on every model).
FLAT_DEFAULTS: dict[str, Any] = {
    "base_url": None,
    "base_urls": None,
    "api_key_env": None,
    "timeout_s": 120.0,
    "max_retries": 3,
    "n_ctx": 4096,
    "n_threads": None,
    "engine": {},
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(StrictModel):
    """One model endpoint: the fields every backend has. Shared by generators and the judge.

    Called or validated as such, it gives the config of its ``backend`` (see the module
    docstring); subclasses are the backends' configs and the role x backend combinations."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    backend: str
    model: str = ""
    concurrency: int = Field(default=8, ge=1, le=1024)
    # sampling
    temperature: float = Field(default=0.7, ge=0, le=5)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=512, ge=1, le=131072)
    seed: int | None = None
    stop: list[str] | None = None
    system_prompt: str | None = None

    # whether the backend constrains decoding to a JSON schema itself (structured judge output)
    constrains_decoding: ClassVar[bool] = False

    def __new__(cls, *args: Any, **data: Any) -> Self:
        # GeneratorConfig(backend="openai", ...) is the openai generator; model_copy, pickle and
        # model_construct call __new__ without data and keep the class they are given
        if data and cls in _ROLES:
            cls = concrete_config(cls, data.get("backend"))  # type: ignore[assignment]
        return super().__new__(cls)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        if cls in _ROLES and isinstance(obj, dict):
            sub = concrete_config(cls, obj.get("backend"))
            if sub is not cls:
                return sub.model_validate(obj, **kwargs)  # type: ignore[return-value]
        return super().model_validate(obj, **kwargs)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler, /
    ) -> CoreSchema:
        # As a field type (Recipe.generators, Recipe.judge ...), a role is the discriminated
        # union of its backends' configs. While this module is loading, the plain model.
        if _ROLES_READY and source in _ROLES:
            choices = {name: handler(concrete_config(source, name)) for name in backend_names()}
            return core_schema.tagged_union_schema(choices, discriminator="backend")
        return handler(source)

    @model_validator(mode="before")
    @classmethod
    def _drop_flat_defaults(cls, data: Any) -> Any:
        # Recipes written while ModelConfig was one flat model carry every backend's fields at
        # their defaults (``timeout_s: 120.0``, ``engine: {}`` on an embedded model): they load
        # as before. A value someone set on a field this backend lacks stays, and is an error.
        if not isinstance(data, dict) or cls in _ROLES:
            return data
        own = cls.model_fields
        stale = [
            k
            for k, v in data.items()
            if k not in own and k in FLAT_DEFAULTS and v == FLAT_DEFAULTS[k]
        ]
        return {k: v for k, v in data.items() if k not in stale} if stale else data

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in backend_names():
            raise ValueError(f"unknown backend '{v}' (one of: {', '.join(backend_names())})")
        return v

    @property
    def urls(self) -> list[str]:
        """The servers the model is reached at (none for in-process backends)."""
        return []

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=self.seed,
            stop=self.stop,
        )

    def display_name(self) -> str:
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
        if self.constrains_decoding:
            return True
        return bool(STRUCTURED_OUTPUT_MODELS.search(self.model))


# Models known to support JSON-schema structured outputs on the OpenAI API (gpt-4-1106-preview,
# the seed's judge, is not one of them: it has JSON mode only).
STRUCTURED_OUTPUT_MODELS = re.compile(
    r"^(?:openai/)?(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4)(?:[-.:]|$)", re.IGNORECASE
)


# -- the built-in backends' configs (pipelines.backends.BACKENDS registers them) -----------------
class EmbeddedConfig(ModelConfig):
    """llama.cpp in process (llama-cpp-python), the bundled SmolLM2 by default."""

    backend: Literal["embedded"]
    n_ctx: int = Field(default=4096, ge=256, le=MAX_N_CTX)
    n_threads: int | None = Field(default=None, ge=1, le=MAX_N_THREADS)

    constrains_decoding: ClassVar[bool] = True

    def display_name(self) -> str:
        return self.model or "SmolLM2-135M-Instruct"


class OpenAIConfig(ModelConfig):
    """An OpenAI-compatible server (vLLM serve, llama.cpp server, the OpenAI API ...): one
    ``base_url`` or several ``base_urls`` (replicas)."""

    backend: Literal["openai"]
    base_url: str | None = None
    base_urls: list[str] | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    # whether the server honours ``n`` (several samples of one prompt in ONE request, prefilled
    # once: vLLM, SGLang, TGI, OpenAI do; llama.cpp's server and some proxies ignore it) (issue
    # 13). "auto": the first multi-sample request asks with ``n`` and its answer decides for
    # this endpoint and model; true: every conversation's samples go as one request with ``n``
    # (choices missing from an answer are asked again one by one); false: one request per
    # sample. Samples of a generator with a ``seed`` always go one by one (each its own seed).
    supports_n: bool | Literal["auto"] = "auto"

    @field_validator("supports_n", mode="before")
    @classmethod
    def _supports_n(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("auto", "true", "false"):
            return {"auto": "auto", "true": True, "false": False}[v.strip().lower()]
        if v == "auto" or isinstance(v, bool):
            return v
        raise ValueError(f"must be auto, true or false (got {str(v)[:40]!r})")

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

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if not (self.base_url or self.base_urls):
            raise ValueError(f"model '{self.id}': backend openai needs base_url (or base_urls)")
        if not self.model:
            raise ValueError(f"model '{self.id}': backend openai needs 'model'")
        return self

    @property
    def urls(self) -> list[str]:
        return list(self.base_urls or ([self.base_url] if self.base_url else []))


class VLLMConfig(ModelConfig):
    """vLLM's offline engine in process (a GPU machine); ``engine`` options go to ``vllm.LLM``."""

    backend: Literal["vllm"]
    engine: dict[str, Any] = Field(default_factory=dict)

    constrains_decoding: ClassVar[bool] = True

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
    def _has_model(self) -> Self:
        if not self.model:
            raise ValueError(f"model '{self.id}': backend vllm needs 'model' (path or hub id)")
        return self


class OriginalConfig(ModelConfig):
    """The dataset's own last assistant answer, kept as a candidate."""

    backend: Literal["original"]

    def display_name(self) -> str:
        return "original"


def _check_url(url: str) -> None:
    if not url.strip().lower().startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    if url_has_credentials(url):
        raise ValueError(
            "base_url must not carry credentials (user:password@ or a key): name the key's "
            "environment variable in api_key_env"
        )


# -- the registry's view: backend name -> config class, role x backend classes ------------------
_ROLES: tuple[type[ModelConfig], ...] = (ModelConfig, GeneratorConfig, JudgeConfig)
_ROLES_READY = True
_COMBINED: dict[tuple[type[ModelConfig], str], type[ModelConfig]] = {}


def backend_configs() -> dict[str, type[ModelConfig]]:
    """Each registered backend's config class (``pipelines.backends.BACKENDS``)."""
    from pipelines.backends import BACKENDS

    return {name: spec.config for name, spec in BACKENDS.items()}


def backend_names() -> list[str]:
    from pipelines.backends import BACKENDS

    return list(BACKENDS)


def concrete_config(role: type[ModelConfig], backend: Any) -> type[ModelConfig]:
    """The class of a ``role`` (``ModelConfig``, ``GeneratorConfig``, ``JudgeConfig``) on
    ``backend``; ``role`` itself for an unknown backend (its validation then says so)."""
    config = backend_configs().get(backend) if isinstance(backend, str) else None
    if config is None or role not in _ROLES:
        return role
    if role is ModelConfig:
        return config
    combined = _COMBINED.get((role, backend))
    if combined is None:
        # role first: its defaults (a judge's temperature 0) win over the common ones
        name = config.__name__.removesuffix("Config") + role.__name__
        module = sys.modules[__name__]
        combined = type(name, (role, config), {"__module__": __name__, "__qualname__": name})
        setattr(module, name, combined)  # importable by name (pickle)
        _COMBINED[role, backend] = combined
    return combined


def options_of(backend: str) -> frozenset[str]:
    """The recipe keys a model on ``backend`` may have (either role)."""
    config = backend_configs().get(backend)
    if config is None:
        return frozenset()
    return (
        frozenset(config.model_fields)
        | frozenset(GeneratorConfig.model_fields)
        | frozenset(JudgeConfig.model_fields)
    )
