"""The judge stage: UltraFeedback rating of all candidates of a conversation in one call.

The candidates are shown in an order shuffled per conversation (seeded by the judge's
``shuffle_seed`` and the conversation id, recorded in the store) and the ratings are mapped back
to the candidates on storage. Structured output (a JSON schema) is asked for where the backend
supports it; the parser in ``judge_format`` aligns ratings by the ``Text N`` index either way.
A judgment is re-done when the set of candidates changed (e.g. a generator was added).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.backends import make_backend, short_error
from pipelines.config import JudgeConfig
from pipelines.judge_format import (
    ParsedJudgment,
    RubricUnavailable,
    judge_json_schema,
    parse_judge_output,
    render_judge_messages,
)
from pipelines.records import Candidate, shown_order
from pipelines.store import Store
from pipelines.types import (
    Conversation,
    GenerationRequest,
    Progress,
    ProgressCallback,
    progress_reporter,
)

MIN_CANDIDATES = 2
MAX_CANDIDATES = 8
PARSE_RETRIES = 2  # extra immediate tries when the output cannot be fully read


@dataclass
class JudgeTask:
    conversation: Conversation
    candidates: list[Candidate]


def plan_judging(
    store: Store,
    judge: JudgeConfig,
    generator_ids: Sequence[str],
    conversations: Sequence[Conversation],
    max_attempts: int = 3,
) -> tuple[list[JudgeTask], int, int, int]:
    """(tasks to do, already done, given up, too few candidates)."""
    few = len(conversations) <= 5000  # a pipelined batch or a page: look these up
    states = store.judgment_states(
        judge.id, [c.conversation_id for c in conversations] if few else None
    )
    tasks: list[JudgeTask] = []
    done = given_up = too_few = 0
    for conv in conversations:
        cands = store.candidates_for(conv.conversation_id, list(generator_ids))[:MAX_CANDIDATES]
        if len(cands) < MIN_CANDIDATES:
            too_few += 1
            continue
        keys = [c.key for c in cands]
        status, attempts, old_keys = states.get(conv.conversation_id, (None, 0, []))
        if old_keys == keys and status == "done":
            done += 1
        elif old_keys == keys and attempts >= max_attempts:
            given_up += 1
        else:
            tasks.append(JudgeTask(conv, cands))
    return tasks, done, given_up, too_few


def _request(
    judge: JudgeConfig, task: JudgeTask, order: list[int], attempt: int
) -> GenerationRequest:
    texts = [task.candidates[i].text for i in order]
    params = judge.sampling()
    if attempt > 0:  # a retry must not repeat the same unreadable output
        params.temperature = max(params.temperature, 0.3)
        params.seed = (params.seed or 0) + attempt
    structured = judge.uses_structured_output()

    def messages(structured: bool) -> list[dict[str, str]]:
        return render_judge_messages(
            judge.aspect,
            task.conversation.messages,
            texts,
            structured=structured,
            max_rationale_chars=judge.max_rationale_chars,
            template=judge.template,
        )

    return GenerationRequest(
        key=task.conversation.conversation_id,
        messages=messages(structured),
        params=params,
        json_schema=(
            judge_json_schema(len(texts), judge.max_rationale_chars) if structured else None
        ),
        # the last step of the response-format fallback: UltraFeedback's text format
        text_messages=messages(False) if structured else None,
    )


async def run_judging_async(
    store: Store,
    judge: JudgeConfig,
    generator_ids: Sequence[str],
    conversations: Sequence[Conversation],
    *,
    max_attempts: int = 3,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    budget: Any = None,
) -> Progress:
    """Judge every conversation whose candidates have no complete judgment yet. ``budget``: a
    ``cost.BudgetGuard`` that stops the stage before a request could exceed the budget."""
    tasks, done, given_up, too_few = plan_judging(
        store, judge, generator_ids, conversations, max_attempts
    )
    progress = Progress(
        stage="judge", total=len(tasks) + done + given_up, done=done, skipped=done, failed=given_up
    )
    if too_few:
        progress.message = f"{too_few} conversations have fewer than {MIN_CANDIDATES} candidates"
    report = progress_reporter(progress, on_progress)

    report()
    if not tasks:
        report("nothing to judge")
        return progress
    backend = make_backend(judge)
    passes = [False, True] if judge.reverse_pass else [False]
    states = {t.conversation.conversation_id: _TaskState(t, len(passes)) for t in tasks}
    failures: list[str | None] = [None]  # the last row failure, for the job's record

    def commit(state: _TaskState) -> None:
        state.committed = True
        cid, n = state.task.conversation.conversation_id, len(state.task.candidates)
        keys = [c.key for c in state.task.candidates]
        raw = "\n\n---\n\n".join(state.raw_outputs) or None
        results = [b for b in state.best if b is not None]
        if not results:
            store.put_judgment(
                cid,
                judge.id,
                model=backend.model_name,
                candidate_keys=keys,
                ratings=[None] * n,
                rationales=[None] * n,
                order_shown=shown_order(cid, n, judge.shuffle_seed),
                seed=judge.shuffle_seed,
                raw_output=raw,
                error=state.error or "no output",
                status="failed",
            )
            progress.failed += 1
            progress.message = f"judge failed: {state.error}"
            failures[0] = progress.message
        else:
            ratings, rationales, problems = _combine(results)
            status = "done" if all(r is not None for r in ratings) else "partial"
            store.put_judgment(
                cid,
                judge.id,
                model=backend.model_name,
                candidate_keys=keys,
                ratings=ratings,
                rationales=rationales,
                order_shown=results[0].order,
                seed=judge.shuffle_seed,
                raw_output=raw,
                error="; ".join(problems) if status != "done" else None,
                status=status,
                # issue 14: each pass's ratings, so the panel report measures position bias
                pass_ratings=[b.ratings if b else None for b in state.best]
                if len(passes) > 1
                else None,
            )
            if status == "done":
                progress.done += 1
            else:
                progress.failed += 1
                progress.message = f"unreadable ratings: {'; '.join(problems)[:200]}"
                failures[0] = progress.message
        if state.prompt_tokens or state.completion_tokens:  # issue 14: tokens per judgment
            store.set_judgment_usage(cid, judge.id, state.prompt_tokens, state.completion_tokens)
        report()

    try:
        for attempt in range(PARSE_RETRIES + 1):
            reqs, orders = [], {}
            for state in states.values():
                if state.committed or state.backend_failed:
                    continue
                cid = state.task.conversation.conversation_id
                for p, reverse in enumerate(passes):
                    if state.satisfied(p):
                        continue
                    order = shown_order(cid, len(state.task.candidates), judge.shuffle_seed)
                    order = order[::-1] if reverse else order
                    try:
                        req = _request(judge, state.task, order, attempt)
                    except RubricUnavailable:
                        raise  # every row would fail the same way: the stage fails, one line
                    except Exception as exc:  # noqa: BLE001 - this row fails, the stage goes on
                        state.error = f"cannot build the judge prompt: {short_error(exc)}"
                        state.backend_failed = True
                        break
                    req.key = (cid, p)
                    orders[req.key] = order
                    reqs.append(req)
            if not reqs:
                break
            reqs = [r for r in reqs if not states[r.key[0]].backend_failed]
            stream = (
                backend.generate(reqs)
                if budget is None
                else budget.generate(backend, reqs, judge.id, judge.model)
            )
            async for res in stream:
                cid, p = res.key
                state = states[cid]
                state.prompt_tokens += res.prompt_tokens or 0  # issue 14: usage per judgment
                state.completion_tokens += res.completion_tokens or 0
                # issue 14a: paid as it arrives, whether or not this judgment is committed
                store.record_usage(
                    "judge",
                    judge.id,
                    backend.model_name,
                    cid,
                    res.prompt_tokens,
                    res.completion_tokens,
                )
                try:
                    if not res.ok:
                        state.error, state.backend_failed = res.error, True
                    else:
                        state.raw_outputs.append(res.text or "")
                        progress.output_tokens += res.completion_tokens or 0
                        parsed = parse_judge_output(res.text or "", state.n)
                        state.offer(p, parsed, orders[res.key])
                        if all(state.satisfied(q) for q in range(len(passes))):
                            commit(state)
                except Exception as exc:  # noqa: BLE001 - one bad row never stops the stage
                    state.error = f"judge row failed: {short_error(exc)}"
                    state.backend_failed = True
                    state.best = [None] * len(passes)
                    if not state.committed:
                        commit(state)
                if cancel is not None and cancel.is_set():
                    break
            if cancel is not None and cancel.is_set():
                break
        for state in states.values():
            paused = budget is not None and budget.paused  # not sent: not a failure
            if not state.committed and (cancel is None or not cancel.is_set()) and not paused:
                commit(state)
    finally:
        progress.notes = list(getattr(backend, "format_notes", []))
        if failures[0]:
            progress.notes.append(f"last failure: {failures[0]}")
        await backend.aclose()
    report("cancelled" if cancel is not None and cancel.is_set() else "finished")
    return progress


@dataclass
class PassResult:
    """One pass of the judge over a conversation, mapped back to the stored candidates:
    ratings and rationales in storage order, what could not be read, and the order shown."""

    ratings: list[float | None]
    rationales: list[str | None]
    problems: list[str]
    order: list[int]


class _TaskState:
    """What one conversation's judging has gathered so far, over passes and retries."""

    def __init__(self, task: JudgeTask, passes: int) -> None:
        self.task = task
        self.n = len(task.candidates)
        self.best: list[PassResult | None] = [None] * passes
        self.raw_outputs: list[str] = []
        self.error: str | None = None
        self.backend_failed = False
        self.committed = False
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def satisfied(self, p: int) -> bool:
        best = self.best[p]
        return best is not None and not best.problems

    def offer(self, p: int, parsed: ParsedJudgment, order: list[int]) -> None:
        """Map a parsed output (by shown position) back to stored candidates; keep the best."""
        ratings: list[float | None] = [None] * self.n
        rationales: list[str | None] = [None] * self.n
        for pos, idx in enumerate(order):
            ratings[idx] = parsed.ratings[pos]
            rationales[idx] = parsed.rationales[pos]
        keys = [c.key for c in self.task.candidates]
        problems = [_name_candidates(pr, order, keys) for pr in parsed.problems]
        cand = PassResult(ratings, rationales, problems, order)
        best = self.best[p]
        if best is None or _nulls(ratings) < _nulls(best.ratings):
            self.best[p] = cand


def _nulls(ratings: list[float | None]) -> int:
    return sum(r is None for r in ratings)


def _name_candidates(problem: str, order: list[int], keys: list[str]) -> str:
    """Problems name a text by its shown position; add which stored candidate that was."""

    def name(m: re.Match[str]) -> str:
        pos = int(m.group(1)) - 1
        if 0 <= pos < len(order):
            return f"{m.group(0)} ({keys[order[pos]]})"
        return m.group(0)

    return re.sub(r"Text (\d+)", name, problem)


def _combine(
    results: list[PassResult],
) -> tuple[list[float | None], list[str | None], list[str]]:
    """Average the passes' ratings per candidate (ignoring nulls); keep the first rationale."""
    n = len(results[0].ratings)
    ratings: list[float | None] = []
    rationales: list[str | None] = []
    for i in range(n):
        vals = [v for r in results if (v := r.ratings[i]) is not None]
        if len(vals) == 1:
            ratings.append(vals[0])
        else:
            ratings.append(sum(vals) / len(vals) if vals else None)
        rationales.append(next((r.rationales[i] for r in results if r.rationales[i]), None))
    problems = [p for r in results for p in r.problems]
    return ratings, rationales, problems


def run_judging(
    store: Store,
    judge: JudgeConfig,
    generator_ids: Sequence[str],
    conversations: Sequence[Conversation],
    **kwargs: object,
) -> Progress:
    return asyncio.run(
        run_judging_async(store, judge, generator_ids, conversations, **kwargs)  # type: ignore[arg-type]
    )
