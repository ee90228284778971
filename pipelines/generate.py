"""The generation stage: one candidate row per conversation × generator × sample index.

Only what is missing is requested: rows already done are skipped, failed rows are retried
until they have been tried ``max_attempts`` times. Each completion is committed to the store
the moment it arrives, so killing the process loses at most the requests in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.backends import make_backend
from pipelines.config import GeneratorConfig
from pipelines.store import Store
from pipelines.types import (
    Conversation,
    GenerationRequest,
    GenerationResult,
    Message,
    Progress,
    ProgressCallback,
    progress_reporter,
)


@dataclass
class GenerationPlan:
    generator: GeneratorConfig
    todo: list[tuple[Conversation, int]]  # (conversation, sample_index) still to request
    already_done: int
    given_up: int  # failed rows that used up their attempts

    @property
    def expected(self) -> int:
        return self.already_done + self.given_up + len(self.todo)


def prompt_messages(generator: GeneratorConfig, conversation: Conversation) -> list[Message]:
    """What the generator is sent: its system prompt (if any) before the conversation."""
    messages = list(conversation.messages)
    if generator.system_prompt:
        if messages and messages[0]["role"] == "system":
            merged = f"{generator.system_prompt}\n\n{messages[0]['content']}"
            messages[0] = {"role": "system", "content": merged}
        else:
            messages.insert(0, {"role": "system", "content": generator.system_prompt})
    return messages


def plan_generation(
    store: Store,
    generators: Sequence[GeneratorConfig],
    conversations: Sequence[Conversation],
    max_attempts: int = 3,
) -> list[GenerationPlan]:
    plans = []
    # a page of a stage (issue 13): look its conversations up, not every row of the generator
    ids = [c.conversation_id for c in conversations] if len(conversations) <= 5000 else None
    for gen in generators:
        states = store.candidate_states(gen.id, ids)
        todo, done, given_up = [], 0, 0
        for conv in conversations:
            if gen.backend == "original" and conv.original_response is None:
                continue  # nothing to keep: not a missing row
            for idx in range(1 if gen.backend == "original" else gen.samples):
                status, attempts = states.get((conv.conversation_id, idx), (None, 0))
                if status == "done":
                    done += 1
                elif status == "failed" and attempts >= max_attempts:
                    given_up += 1
                else:
                    todo.append((conv, idx))
        plans.append(GenerationPlan(gen, todo, done, given_up))
    return plans


ReadyCallback = Callable[[Conversation], Awaitable[None]]


def endpoint_key(generator: GeneratorConfig) -> tuple[str, ...]:
    """Generators with the same key send to the same server, so their requests for one
    conversation share a prompt prefix in its cache (llama.cpp's slot cache, vLLM's automatic
    prefix caching): they are scheduled together, conversation by conversation."""
    if generator.backend == "openai":
        return ("openai", *sorted(generator.urls))
    return (generator.backend, generator.id)


def n_declared(generator: GeneratorConfig) -> bool | None:
    """The generator's ``supports_n`` where its recipe declares it (True / False); None for
    "auto" and backends without the setting (the server's first answer decides)."""
    value = getattr(generator, "supports_n", "auto")
    return value if isinstance(value, bool) else None


def _request(gen: GeneratorConfig, conv: Conversation, idx: int | None) -> GenerationRequest:
    params = gen.sampling()
    if idx is not None and params.seed is not None:
        params = type(params)(**{**params.as_dict(), "seed": params.seed + idx})
    return GenerationRequest(
        key=(conv.conversation_id, idx),
        messages=prompt_messages(gen, conv),
        params=params,
        original_response=conv.original_response,
    )


async def run_generation_async(
    store: Store,
    generators: Sequence[GeneratorConfig],
    conversations: Sequence[Conversation],
    *,
    max_attempts: int = 3,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    on_ready: ReadyCallback | None = None,
    use_n: bool = True,
    budget: Any = None,
) -> Progress:
    """Generate every missing candidate; returns the final progress.

    Cache-aware order: generators on one server (same ``endpoint_key``) share one pool of
    workers fed conversation by conversation, so every request of a conversation (each
    generator, each sample) is sent back to back and the server's prefix cache hits. Several
    samples of one generator go as ONE request with ``n`` when the sampling has no seed and
    the server honours ``n`` (vLLM, OpenAI); a server that ignores it (llama.cpp) is asked for
    the rest one by one, from then on. A recipe's ``supports_n: true / false`` overrides that
    detection: true sends every conversation's samples with ``n`` (choices missing from an
    answer are asked again one by one, each stored or recorded as failed), false one request
    per sample. Stored rows are the same either way.

    ``on_ready(conversation)`` is awaited once per conversation as soon as every row this run
    plans for it is finished (at once for conversations with nothing to do): the judge of a
    pipelined run starts there while generation goes on (see ``run.run_pipelined``).

    ``budget``: a ``cost.BudgetGuard`` that stops the stage before a request could exceed the
    budget (issue 14): each request (or ``n``-sample request) reserves its worst case first."""
    plans = plan_generation(store, generators, conversations, max_attempts)
    skipped = sum(p.already_done for p in plans)
    progress = Progress(
        stage="generate",
        total=sum(p.expected for p in plans),
        done=skipped,
        skipped=skipped,
        failed=sum(p.given_up for p in plans),
    )
    report = progress_reporter(progress, on_progress)

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    report("starting")

    # rows this run still has to finish, per conversation (for on_ready)
    remaining: dict[str, int] = {}
    by_id: dict[str, Conversation] = {}
    for plan in plans:
        for conv, _ in plan.todo:
            remaining[conv.conversation_id] = remaining.get(conv.conversation_id, 0) + 1
            by_id[conv.conversation_id] = conv

    async def finished(conversation_id: str) -> None:
        left = remaining[conversation_id] - 1
        remaining[conversation_id] = left
        if left == 0 and on_ready is not None and not cancelled():
            await on_ready(by_id[conversation_id])

    def commit(gen: GeneratorConfig, idx: int, result: GenerationResult) -> None:
        record_params = {**gen.sampling().as_dict(), "system_prompt": gen.system_prompt}
        store.put_candidate(result.key[0], gen.id, idx, result, record_params)
        if result.ok:
            progress.done += 1
            progress.output_tokens += result.completion_tokens or 0
        else:
            progress.failed += 1
            progress.message = f"{gen.id}: {result.error}"
        report()

    async def feed_ready() -> None:
        """Conversations with nothing left to generate go to the judge at once."""
        if on_ready is None:
            return
        for conv in conversations:
            if cancelled():
                return
            if conv.conversation_id not in remaining:
                await on_ready(conv)

    async def run_solo(plan: GenerationPlan) -> None:
        """A backend that batches on its own (embedded, vllm, original): one request stream."""
        gen = plan.generator
        backend = make_backend(gen)
        requests = [_request(gen, conv, idx) for conv, idx in plan.todo]
        try:
            stream = (
                backend.generate(requests)
                if budget is None
                else budget.generate(backend, requests, gen.id, gen.model)
            )
            async for result in stream:
                conv_id, idx = result.key
                commit(gen, idx, result)
                await finished(conv_id)
                if cancelled():
                    break
        finally:
            await backend.aclose()

    async def run_shared(group: list[GenerationPlan]) -> None:
        """OpenAI-compatible generators on one server: one conversation-ordered stream."""
        from pipelines.backends.openai_backend import OpenAIBackend

        backends = {p.generator.id: make_backend(p.generator) for p in group}
        todo: dict[str, dict[str, list[int]]] = {}
        for p in group:
            per = todo.setdefault(p.generator.id, {})
            for conv, idx in p.todo:
                per.setdefault(conv.conversation_id, []).append(idx)
        # the endpoint's n capability (issue 13): as the recipe declares it (supports_n), else
        # where this process learnt it already, else None (the first answer tells)
        declared = {p.generator.id: n_declared(p.generator) for p in group}
        n_honoured: dict[str, bool | None] = {
            gid: declared[gid]
            if declared[gid] is not None
            else getattr(backends[gid], "honours_n", None)
            for gid in declared
        }

        def units() -> Iterator[tuple[GeneratorConfig, Conversation, list[int]]]:
            for conv in conversations:
                for p in group:
                    idxs = todo[p.generator.id].pop(conv.conversation_id, None)
                    if not idxs:
                        continue
                    gen = p.generator
                    if (
                        use_n
                        and len(idxs) > 1
                        and gen.seed is None
                        and n_honoured[gen.id] is not False
                        and isinstance(backends[gen.id], OpenAIBackend)
                    ):
                        yield gen, conv, idxs  # one request, n samples
                    else:
                        for idx in idxs:
                            yield gen, conv, [idx]

        async def one(gen: GeneratorConfig, conv: Conversation, idx: int) -> GenerationResult:
            backend = backends[gen.id]
            assert isinstance(backend, OpenAIBackend)
            result = await backend.complete(_request(gen, conv, idx))
            result.key = (conv.conversation_id, idx)
            commit(gen, idx, result)
            await finished(conv.conversation_id)
            return result

        async def several(
            gen: GeneratorConfig, conv: Conversation, idxs: list[int]
        ) -> list[GenerationResult]:
            backend = backends[gen.id]
            assert isinstance(backend, OpenAIBackend)
            results = await backend.complete_n(_request(gen, conv, None), len(idxs))
            got = [r for r in results if r.ok]
            if declared[gen.id] is not None:
                pass  # the recipe says: nothing to learn (short answers are re-asked below)
            elif len(got) < len(idxs):
                n_honoured[gen.id] = False  # ignored or refused: one request per sample
                if len(got) == 1:  # one choice back: the server ignores n (not an error)
                    backend.honours_n = False
            elif n_honoured[gen.id] is None:
                n_honoured[gen.id] = True
                backend.honours_n = True
            for idx, result in zip(idxs, got, strict=False):
                result.key = (conv.conversation_id, idx)
                commit(gen, idx, result)
                await finished(conv.conversation_id)
            rest = idxs[len(got) :]
            if rest:
                results += await asyncio.gather(*(one(gen, conv, idx) for idx in rest))
            return results

        stream = units()

        async def worker() -> None:
            for gen, conv, idxs in stream:
                if cancelled():
                    return
                hold = None
                if budget is not None:  # reserve the worst case before sending (issue 14)
                    hold = budget.reserve(gen.id, gen.model, _request(gen, conv, None), len(idxs))
                    if hold is None:
                        return  # paused: this and later requests would not fit
                results: list[GenerationResult] = []
                try:
                    if len(idxs) == 1:
                        results = [await one(gen, conv, idxs[0])]
                    else:
                        results = await several(gen, conv, idxs)
                finally:
                    if hold is not None:
                        budget.settle(gen.id, gen.model, hold, results)

        replicas = max((len(p.generator.urls) for p in group), default=1) or 1
        workers = sum(p.generator.concurrency for p in group) * replicas
        workers = min(workers, sum(len(p.todo) for p in group))
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            for b in backends.values():
                await b.aclose()

    groups: dict[tuple[str, ...], list[GenerationPlan]] = {}
    for plan in plans:
        if plan.todo:
            groups.setdefault(endpoint_key(plan.generator), []).append(plan)
    tasks = [feed_ready()]
    for group in groups.values():
        if group[0].generator.backend == "openai":
            tasks.append(run_shared(group))
        else:
            tasks.extend(run_solo(p) for p in group)
    await asyncio.gather(*tasks)
    report("cancelled" if cancelled() else "finished")
    return progress


def run_generation(
    store: Store,
    generators: Sequence[GeneratorConfig],
    conversations: Sequence[Conversation],
    **kwargs: object,
) -> Progress:
    """Synchronous wrapper of ``run_generation_async``."""
    return asyncio.run(run_generation_async(store, generators, conversations, **kwargs))  # type: ignore[arg-type]
