"""LLM backends behind one interface (see ``base.Backend``); ``make_backend`` picks one."""

from __future__ import annotations

from pipelines.backends.base import Backend, BackendError, short_error
from pipelines.config import ModelConfig

__all__ = ["Backend", "BackendError", "make_backend", "short_error"]


def make_backend(config: ModelConfig) -> Backend:
    """The backend for a model config. Heavy libraries are imported only when used."""
    if config.backend == "embedded":
        from pipelines.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(config)
    if config.backend == "openai":
        from pipelines.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(config)
    if config.backend == "original":
        from pipelines.backends.original import OriginalBackend

        return OriginalBackend(config)
    if config.backend == "vllm":
        try:
            from pipelines.backends.vllm_backend import VLLMBackend
        except ImportError as exc:
            raise BackendError(
                "the vllm backend is not available in this install "
                "(pip install -r requirements-vllm.txt on a machine with a GPU)"
            ) from exc
        return VLLMBackend(config)
    raise BackendError(f"unknown backend '{config.backend}'")
