"""Any OpenAI-compatible server (vLLM ``serve``, TGI, llama.cpp server, Ollama, OpenAI)
through ``openai.AsyncOpenAI``.

Bounded concurrency (a pool of ``concurrency`` workers), a per-request timeout, and retries
with exponential backoff that honour ``Retry-After`` (the openai client's own retry loop,
``max_retries``). A request that still fails comes back as a result with its error, never an
exception. Several ``base_urls`` (replicas) spread the load: each request goes to the least
busy healthy replica; a replica that fails to connect is benched for a while and the request
is tried on another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from pipelines.backends.base import Backend, BackendError, short_error
from pipelines.config import ModelConfig
from pipelines.types import GenerationRequest, GenerationResult

REPLICA_BENCH_S = 15.0


def resolve_api_key(api_key_env: str | None, urls: list[str] | None = None, model: str = "") -> str:
    """The key from the environment variable named in the config (never from the config), only
    for URLs the owner's endpoint registry allows it to reach (``pipelines.endpoints``). A model
    without ``api_key_env`` sends no key (never an implicit $OPENAI_API_KEY)."""
    from pipelines.endpoints import EndpointError, api_key_for

    try:
        return api_key_for(list(urls or []), api_key_env, model) or "not-needed"
    except EndpointError as exc:
        raise BackendError(str(exc)) from None


@dataclass
class _Replica:
    url: str
    client: openai.AsyncOpenAI
    in_flight: int = 0
    benched_until: float = 0.0
    requests: int = 0


def _rejects_json_schema(exc: openai.APIStatusError) -> bool:
    """The server refused the request because it knows no `json_schema` response format
    (llama.cpp's server answers 500 with a validation error naming the field)."""
    text = str(exc)
    return exc.status_code in (400, 422, 500) and (
        "json_schema" in text or "response_format" in text
    )


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        key = resolve_api_key(config.api_key_env, config.urls, config.model)
        self.schema_mode = "json_schema"
        self.replicas = [
            _Replica(
                url=url,
                client=openai.AsyncOpenAI(
                    base_url=url,
                    api_key=key,
                    timeout=config.timeout_s,
                    max_retries=config.max_retries,
                ),
            )
            for url in config.urls
        ]

    def _pick(self, exclude: set[str]) -> _Replica:
        now = time.monotonic()
        healthy = [r for r in self.replicas if r.benched_until <= now and r.url not in exclude]
        pool = healthy or [r for r in self.replicas if r.url not in exclude] or self.replicas
        return min(pool, key=lambda r: (r.in_flight, r.requests))

    def _request_kwargs(self, req: GenerationRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": req.messages,
            **req.params.request_kwargs(),
        }
        if req.json_schema is not None:
            kwargs["response_format"] = self._response_format(req.json_schema)
        return kwargs

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.schema_mode == "json_object":
            # llama.cpp's server: JSON mode with a schema, compiled to a grammar
            return {"type": "json_object", "schema": schema}
        # OpenAI / vLLM: structured outputs
        return {
            "type": "json_schema",
            "json_schema": {"name": "judgment", "schema": schema, "strict": False},
        }

    async def complete(self, req: GenerationRequest) -> GenerationResult:
        """One chat completion; errors come back on the result."""
        kwargs = self._request_kwargs(req)
        tried: set[str] = set()
        start = time.perf_counter()
        last_error = "no replica"
        for _ in range(len(self.replicas) + 1):
            replica = self._pick(tried)
            tried.add(replica.url)
            replica.in_flight += 1
            replica.requests += 1
            try:
                resp = await replica.client.chat.completions.create(**kwargs)
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                last_error = short_error(exc)
                if len(self.replicas) > 1:
                    replica.benched_until = time.monotonic() + REPLICA_BENCH_S
                    continue
                break
            except openai.APIStatusError as exc:
                last_error = f"HTTP {exc.status_code}: {short_error(exc)}"
                if kwargs.get("response_format", {}).get(
                    "type"
                ) == "json_schema" and _rejects_json_schema(exc):
                    # The server knows no `json_schema` response format (llama.cpp's): use
                    # JSON mode with a schema instead, from now on.
                    self.schema_mode = "json_object"
                    kwargs["response_format"] = self._response_format(req.json_schema or {})
                    tried.discard(replica.url)
                    continue
                break
            except Exception as exc:  # noqa: BLE001 - recorded on the row
                last_error = short_error(exc)
                break
            finally:
                replica.in_flight -= 1
            if not resp.choices:
                last_error = "empty response (no choices)"
                break
            choice = resp.choices[0]
            usage = resp.usage
            return GenerationResult(
                key=req.key,
                text=choice.message.content or "",
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                latency_s=time.perf_counter() - start,
                finish_reason=choice.finish_reason,
                model=self.model_name,
            )
        return GenerationResult(key=req.key, error=last_error, model=self.model_name)

    async def generate(
        self, requests: Sequence[GenerationRequest]
    ) -> AsyncIterator[GenerationResult]:
        queue: asyncio.Queue[GenerationResult] = asyncio.Queue()
        pending = iter(requests)
        n = len(requests)

        async def worker() -> None:
            for req in pending:
                await queue.put(await self.complete(req))

        workers = [
            asyncio.create_task(worker())
            for _ in range(min(self.config.concurrency * max(len(self.replicas), 1), n))
        ]
        try:
            for _ in range(n):
                yield await queue.get()
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def aclose(self) -> None:
        for r in self.replicas:
            await r.client.close()
