"""The generation stage: one candidate row per conversation × generator × sample index.

Only what is missing is requested: rows already done are skipped, failed rows are retried
until they have been tried ``max_attempts`` times. Each completion is committed to the store
the moment it arrives, so killing the process loses at most the requests in flight.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.backends import make_backend
from pipelines.config import GeneratorConfig
from pipelines.store import Store
from pipelines.types import Conversation, GenerationRequest, Message, Progress

ProgressCallback = Callable[[Progress], None]


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
    for gen in generators:
        states = store.candidate_states(gen.id)
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


async def run_generation_async(
    store: Store,
    generators: Sequence[GeneratorConfig],
    conversations: Sequence[Conversation],
    *,
    max_attempts: int = 3,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    budget: Any = None,
) -> Progress:
    """Generate every missing candidate; returns the final progress. ``budget``: a
    ``cost.BudgetGuard`` that stops the stage before a request could exceed the budget."""
    plans = plan_generation(store, generators, conversations, max_attempts)
    skipped = sum(p.already_done for p in plans)
    progress = Progress(
        stage="generate",
        total=sum(p.expected for p in plans),
        done=skipped,
        skipped=skipped,
        failed=sum(p.given_up for p in plans),
    )
    start = time.perf_counter()

    def report(message: str = "") -> None:
        progress.elapsed_s = time.perf_counter() - start
        if message:
            progress.message = message
        if on_progress is not None:
            on_progress(progress)

    report("starting")

    async def run_one(plan: GenerationPlan) -> None:
        if not plan.todo:
            return
        gen = plan.generator
        backend = make_backend(gen)
        params = gen.sampling()
        requests = []
        for conv, idx in plan.todo:
            p = params
            if params.seed is not None:
                p = type(params)(**{**params.as_dict(), "seed": params.seed + idx})
            requests.append(
                GenerationRequest(
                    key=(conv.conversation_id, idx),
                    messages=prompt_messages(gen, conv),
                    params=p,
                    original_response=conv.original_response,
                )
            )
        record_params = {**params.as_dict(), "system_prompt": gen.system_prompt}
        try:
            stream = (
                backend.generate(requests)
                if budget is None
                else budget.generate(backend, requests, gen.id, gen.model)
            )
            async for result in stream:
                conv_id, idx = result.key
                store.put_candidate(conv_id, gen.id, idx, result, record_params)
                if result.ok:
                    progress.done += 1
                    progress.output_tokens += result.completion_tokens or 0
                else:
                    progress.failed += 1
                    progress.message = f"{gen.id}: {result.error}"
                report()
                if cancel is not None and cancel.is_set():
                    break
        finally:
            await backend.aclose()

    await asyncio.gather(*(run_one(p) for p in plans))
    report("cancelled" if cancel is not None and cancel.is_set() else "finished")
    return progress


def run_generation(
    store: Store,
    generators: Sequence[GeneratorConfig],
    conversations: Sequence[Conversation],
    **kwargs: object,
) -> Progress:
    """Synchronous wrapper of ``run_generation_async``."""
    return asyncio.run(run_generation_async(store, generators, conversations, **kwargs))  # type: ignore[arg-type]
