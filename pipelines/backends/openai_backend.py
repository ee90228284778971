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
from pipelines.config import OpenAIConfig
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


# The judge's response formats, most constrained first. A server that refuses one with a 4xx
# (llama.cpp's server: a 500 naming the field) gets the next, remembered per endpoint and model:
#   json_schema         structured outputs (OpenAI, vLLM)
#   json_object+schema  JSON mode with the schema, llama.cpp's server's extension (a grammar)
#   json_object         JSON mode with only the keys the OpenAI API defines; the prompt
#                       describes the JSON
#   text                UltraFeedback's "#### Output for Text N" format (the request's
#                       text_messages), as the Capybara-DPO seed judged
RESPONSE_FORMATS = ("json_schema", "json_object+schema", "json_object", "text")
# (base_url, model) -> the format that server last accepted; shared by every backend instance
# of this process, so a refusal costs one request per endpoint and model
_FORMAT_MEMORY: dict[tuple[str, str], str] = {}


# (base urls, model) -> whether that endpoint honours ``n`` (several choices in one request:
# vLLM and OpenAI do, llama.cpp's server does not), learnt from its first multi-sample answer
# and shared by every backend instance of this process (issue 13): later runs, and the later
# pages of a paged stage, send per-sample requests to llama.cpp without probing it again
_N_MEMORY: dict[tuple[tuple[str, ...], str], bool] = {}


def remembered_format(url: str, model: str) -> str:
    return _FORMAT_MEMORY.get((url.rstrip("/"), model), RESPONSE_FORMATS[0])


def _refuses_format(exc: openai.APIStatusError) -> bool:
    """The server refused the request's response format (not the key, the model name...)."""
    text = str(exc).lower()
    named = any(k in text for k in ("response_format", "json_schema", "json_object", "schema"))
    if exc.status_code in (400, 404, 415, 422):
        return named
    return exc.status_code == 500 and named  # llama.cpp's server: 500 on an unknown format


def response_format_kwargs(fmt: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` of one step of ``RESPONSE_FORMATS`` (none for "text")."""
    if fmt == "json_schema":
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "judgment", "schema": schema, "strict": False},
            }
        }
    if fmt == "json_object+schema":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if fmt == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config: OpenAIConfig) -> None:
        super().__init__(config)
        key = resolve_api_key(config.api_key_env, config.urls, config.model)
        # "url model: json_schema refused (HTTP 400 ...); using json_object" for the job record
        self.format_notes: list[str] = []
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

    @property
    def honours_n(self) -> bool | None:
        """The endpoint's ``n`` capability: True / False once known, None before."""
        return _N_MEMORY.get(self._n_key())

    @honours_n.setter
    def honours_n(self, value: bool) -> None:
        _N_MEMORY[self._n_key()] = bool(value)

    def _n_key(self) -> tuple[tuple[str, ...], str]:
        return (tuple(sorted(r.url.rstrip("/") for r in self.replicas)), self.config.model)

    def _pick(self, exclude: set[str]) -> _Replica:
        now = time.monotonic()
        healthy = [r for r in self.replicas if r.benched_until <= now and r.url not in exclude]
        pool = healthy or [r for r in self.replicas if r.url not in exclude] or self.replicas
        return min(pool, key=lambda r: (r.in_flight, r.requests))

    def _request_kwargs(self, req: GenerationRequest, fmt: str | None = None) -> dict[str, Any]:
        """The create() arguments; ``fmt`` is the response format of a request with a schema."""
        text = fmt == "text" and req.text_messages is not None
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": req.text_messages if text else req.messages,
            **req.params.request_kwargs(),
        }
        if req.json_schema is not None and fmt is not None:
            kwargs.update(response_format_kwargs(fmt, req.json_schema))
        return kwargs

    def _next_format(self, url: str, fmt: str, req: GenerationRequest, why: str) -> str | None:
        """The format after ``fmt`` for this endpoint and model (remembered), or None."""
        formats = list(RESPONSE_FORMATS)
        if req.text_messages is None:
            formats.remove("text")
        if fmt not in formats or formats.index(fmt) + 1 >= len(formats):
            return None
        key = (url.rstrip("/"), self.config.model)
        current = _FORMAT_MEMORY.get(key, RESPONSE_FORMATS[0])
        if RESPONSE_FORMATS.index(current) > RESPONSE_FORMATS.index(fmt):
            return current  # another request already stepped further down
        nxt = formats[formats.index(fmt) + 1]
        _FORMAT_MEMORY[key] = nxt
        self.format_notes.append(
            f"{key[0]} {self.config.model}: {fmt} refused ({why[:160]}); using {nxt}"
        )
        return nxt

    async def complete(self, req: GenerationRequest) -> GenerationResult:
        """One chat completion; errors come back on the result."""
        tried: set[str] = set()
        start = time.perf_counter()
        last_error = "no replica"
        fmt: str | None = None
        for _ in range(len(self.replicas) + len(RESPONSE_FORMATS) + 1):
            replica = self._pick(tried)
            tried.add(replica.url)
            if req.json_schema is not None:
                fmt = remembered_format(replica.url, self.config.model)
                if fmt == "text" and req.text_messages is None:
                    fmt = "json_object"
            kwargs = self._request_kwargs(req, fmt)
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
                if fmt is not None and _refuses_format(exc):
                    if self._next_format(replica.url, fmt, req, last_error) is not None:
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
                response_format=fmt,
            )
        return GenerationResult(
            key=req.key, error=last_error, model=self.model_name, response_format=fmt
        )

    async def complete_n(self, req: GenerationRequest, n: int) -> list[GenerationResult]:
        """``n`` samples of one prompt in ONE request (the server prefills the prompt once).
        Returns one result per choice the server sent: fewer than ``n`` means it ignores ``n``
        (llama.cpp); the caller asks for the rest one by one. Errors: one result with the
        error. Completion tokens are split over the choices by their length (the usage is a
        total); the prompt tokens are the prompt's, as for a single request."""
        kwargs = {**self._request_kwargs(req), "n": int(n)}
        replica = self._pick(set())
        replica.in_flight += 1
        replica.requests += 1
        start = time.perf_counter()
        try:
            resp = await replica.client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            return [
                GenerationResult(
                    key=req.key,
                    error=f"HTTP {exc.status_code}: {short_error(exc)}",
                    model=self.model_name,
                )
            ]
        except Exception as exc:  # noqa: BLE001 - recorded on the row
            return [GenerationResult(key=req.key, error=short_error(exc), model=self.model_name)]
        finally:
            replica.in_flight -= 1
        latency = time.perf_counter() - start
        choices = sorted(resp.choices or [], key=lambda c: c.index)
        usage = resp.usage
        texts = [c.message.content or "" for c in choices]
        total = usage.completion_tokens if usage else None
        shares: list[int | None] = [None] * len(choices)
        if total is not None and choices:
            weight = sum(len(t) for t in texts) or len(texts)
            split = [int(total * (len(t) if sum(map(len, texts)) else 1) / weight) for t in texts]
            split[-1] = total - sum(split[:-1])
            shares = list(split)
        return [
            GenerationResult(
                key=req.key,
                text=text,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=share,
                latency_s=latency,
                finish_reason=choice.finish_reason,
                model=self.model_name,
            )
            for choice, text, share in zip(choices, texts, shares, strict=True)
        ]

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
