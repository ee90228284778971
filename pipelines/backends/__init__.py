"""LLM backends behind one interface (see ``base.Backend``); ``make_backend`` picks one.

``BACKENDS`` is the registry: a backend's name (a model config's ``backend:``), its config model
(validated when a recipe loads: ``pipelines.config``) and where its ``Backend`` class lives
(imported only when a model uses it, so heavy libraries load only then). A new backend is its
module (a ``ModelConfig`` subclass with ``backend: Literal["name"]`` and a ``Backend`` subclass,
heavy imports inside functions) plus one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pipelines.backends.base import Backend, BackendError, short_error
from pipelines.config import (
    EmbeddedConfig,
    ModelConfig,
    OpenAIConfig,
    OriginalConfig,
    VLLMConfig,
)

__all__ = ["BACKENDS", "Backend", "BackendError", "BackendSpec", "make_backend", "short_error"]


@dataclass(frozen=True)
class BackendSpec:
    config: type[ModelConfig]
    backend: str  # "module:Class" of the Backend
    missing: str = ""  # the one-line reason when the module cannot be imported


BACKENDS: dict[str, BackendSpec] = {
    "embedded": BackendSpec(EmbeddedConfig, "pipelines.backends.embedded:EmbeddedBackend"),
    "openai": BackendSpec(OpenAIConfig, "pipelines.backends.openai_backend:OpenAIBackend"),
    "vllm": BackendSpec(
        VLLMConfig,
        "pipelines.backends.vllm_backend:VLLMBackend",
        missing="the vllm backend is not available in this install "
        "(pip install -r requirements-vllm.txt on a machine with a GPU)",
    ),
    "original": BackendSpec(OriginalConfig, "pipelines.backends.original:OriginalBackend"),
}


def make_backend(config: ModelConfig) -> Backend:
    """The backend for a model config. Heavy libraries are imported only when used."""
    spec = BACKENDS.get(config.backend)
    if spec is None:
        raise BackendError(f"unknown backend '{config.backend}'")
    module_name, _, class_name = spec.backend.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if not spec.missing:
            raise
        raise BackendError(spec.missing) from exc
    backend: Any = getattr(module, class_name)
    return backend(config)
