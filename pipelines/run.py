"""Running a recipe, stage by stage, against a workspace store.

    source ─▶ load ─▶ store ─▶ generate ─▶ judge ─▶ store ─▶ binarize ─▶ export ─▶ publish

Each stage reads what it needs from the store and commits as it goes, so any stage can be
re-run (or the whole recipe run again) and does only what is missing. The CLI and the UI both
call ``run_recipe``; neither holds engine logic.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.recipe import STAGES, Recipe, RecipeError
from pipelines.store import Store
from pipelines.types import Conversation, Progress, ProgressCallback


class StageError(Exception):
    """A stage cannot run (bad input, missing configuration); the message is one line."""


@dataclass
class RunSummary:
    job_id: str
    stages: list[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    export_dir: str | None = None
    published: str | None = None
    status: str = "done"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "error": self.error,
            "stages": self.stages,
            "results": self.results,
            "export_dir": self.export_dir,
            "published": self.published,
        }


def default_stages(recipe: Recipe) -> list[str]:
    stages = ["load", "generate"]
    if recipe.judge is not None:
        stages += ["judge", "binarize", "export"]
        if recipe.publish.repo_id:
            stages.append("publish")
    return stages


def parse_stages(text: str | None, recipe: Recipe) -> list[str]:
    if not text:
        return default_stages(recipe)
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise StageError(f"unknown stage(s): {', '.join(unknown)} (known: {', '.join(STAGES)})")
    return [s for s in STAGES if s in stages]


def export_dir_for(recipe: Recipe, store: Store) -> Path:
    """Where ``recipe`` exports: inside the workspace, checked after resolving symlinks (issue
    10). Only the CLI's explicit ``--out`` may name an absolute folder."""
    out = Path(recipe.export.out)
    if out.is_absolute():
        return out
    root = store.data_dir.resolve()
    target = (root / out / recipe.name).resolve()
    if not target.is_relative_to(root):
        raise RecipeError(f"export folder {recipe.export.out}/{recipe.name} leaves the workspace")
    return store.data_dir / out / recipe.name


PAGE_ROWS = 2000  # conversations a generate / judge stage holds at a time (issue 13)


def selected_conversations(
    store: Store, limit: int | None, page_rows: int | None = None
) -> Iterator[tuple[list[Conversation], bool]]:
    """The conversations a stage works on (the first ``limit`` in load order), one page at a
    time with keyset paging, so a million-conversation workspace is never held in memory:
    ``(page, is_last)`` (one page read ahead to tell the last one)."""
    pages = store.conversation_pages(page_rows or PAGE_ROWS, limit)
    page = next(pages, None)
    while page is not None:
        nxt = next(pages, None)
        yield page, nxt is None
        page = nxt


class PagedProgress:
    """One stage's progress over its pages: each page's counters on top of the pages before.
    Until the last page the total is extrapolated from the rows per conversation seen so far
    (the stage plans a page at a time); a page's "finished" is the stage's only on the last."""

    def __init__(self, stage: str, conversations: int, progress: ProgressCallback) -> None:
        self.done = Progress(stage=stage)  # the pages finished so far
        self.conversations = conversations
        self.seen = 0  # conversations in the pages finished so far
        self.progress = progress
        self.start = time.perf_counter()

    def combine(self, p: Progress, page: int, last: bool) -> Progress:
        b = self.done
        seen = self.seen + page
        total = b.total + p.total
        if not last and 0 < seen < self.conversations:
            total = max(total, round(total * self.conversations / seen))
        out = Progress(
            stage=p.stage,
            done=b.done + p.done,
            total=total,
            failed=b.failed + p.failed,
            skipped=b.skipped + p.skipped,
            output_tokens=b.output_tokens + p.output_tokens,
            elapsed_s=time.perf_counter() - self.start,
            message=p.message if last or p.message != "finished" else "running",
            notes=b.notes + [n for n in p.notes if n not in b.notes],
        )
        return out

    def callback(self, page: int, last: bool) -> ProgressCallback:
        return lambda p: self.progress(self.combine(p, page, last))

    def finish(self, p: Progress, page: int, last: bool) -> Progress:
        self.done = self.combine(p, page, True)
        if not last and self.done.message == "finished":
            self.done.message = "running"
        self.seen += page
        return self.done


def _count_selected(store: Store, limit: int | None) -> int:
    n = store.count_conversations()
    return n if limit is None else min(n, int(limit))


def load_stage(recipe: Recipe, store: Store, limit: int | None = None) -> dict[str, Any]:
    from pipelines.sources import load_source

    src = recipe.source
    result = load_source(
        recipe.source_path(),
        format=src.format,
        columns=src.columns or None,
        split=src.split,
        limit=limit or src.limit,
        source_name=src.dataset or Path(src.path or "").name,
        sink=(sink := store.conversation_sink()),
        hub=bool(src.dataset),  # a Hub id is never read as a local path (issue 10)
    )
    report = {**result.summary(), "added": sink.added, "already_in_store": sink.existing}
    store.record_load(src.location, report)
    return report


@dataclass
class Binarized:
    rows: list[Any]  # binarize.JudgedConversation
    result: Any  # binarize.BinarizeResult

    @property
    def pairs(self) -> list[dict[str, Any]]:
        return self.result.pairs

    @property
    def num_pairs(self) -> int:
        return self.result.num_pairs

    def pair_labels(self) -> list[dict[str, Any]]:
        """Just the columns the stats need, without materialising every pair."""
        cols = ["chosen_model", "rejected_model", "rating_source"]
        return self.result.table.select(cols).to_pylist()


def binarize_stage(recipe: Recipe, store: Store) -> tuple[Binarized, dict[str, Any]]:
    from pipelines.binarize import BinarizeOptions, binarize, collect

    options = BinarizeOptions.model_validate(recipe.binarize)
    rows = collect(
        store,
        generator_ids=[g.id for g in recipe.generators],
        judge_id=recipe.judge.id if recipe.judge else None,
    )
    result = binarize(rows, options)
    return Binarized(rows, result), {"pairs": result.num_pairs, "dropped": dict(result.dropped)}


def card_context(store: Store, recipe: Recipe, binarized: Binarized) -> Any:
    """Everything the dataset card reports, gathered from the store (``binarized`` in memory:
    the Results tab's export)."""
    from pipelines.stats import compute_stats

    stats = compute_stats(binarized.rows, binarized.pair_labels(), store.reviews())
    return _card(store, recipe, stats, dict(binarized.result.dropped))


def _card(store: Store, recipe: Recipe, stats: dict[str, Any], dropped: dict[str, int]) -> Any:
    """The dataset card's context: ``stats`` (``compute_stats`` or ``store_stats``) and the
    binarize drop counts, plus the stage counts, reviews, usage and verdicts from the store."""
    from pipelines.cost import usage_report
    from pipelines.pairwise import verdicts_per_model
    from pipelines.publish import CardContext

    counts = store.candidate_counts()
    totals = store.review_totals()
    quality = stats.get("judge_quality") or {}
    return CardContext(
        dataset_name=recipe.export.dataset_name or recipe.name,
        recipe=recipe.to_dict(),
        load_reports=store.load_reports(),
        stage_counts={
            "conversations": store.count_conversations(),
            "candidates generated": sum(c["done"] for c in counts.values()),
            "candidates failed": sum(c["failed"] for c in counts.values()),
            "conversations judged": store.count_judged(recipe.judge.id if recipe.judge else None),
            "conversations reviewed": totals["conversations"],
            # issue 12: a rationale that is the template's placeholder is a judge failure
            "judge failures: placeholder rationales": quality.get("placeholder_rationales", 0),
        },
        stats=stats,
        generator_models=[g.display_name() for g in recipe.generators],
        judge_model=recipe.judge.display_name() if recipe.judge else None,
        dropped=dropped,
        strategy=str(recipe.binarize.get("strategy", "best-vs-worst")),
        repo_id=recipe.publish.repo_id,
        reviewed=totals["conversations"],
        human_reviews=totals["reviews"],
        accepted_ai=totals["accepted_ai"],
        judge_template=recipe.judge.template if recipe.judge else None,
        usage=usage_report(store, recipe),  # issue 14
        pairwise=verdicts_per_model(store),
    )


def export_stage(recipe: Recipe, store: Store, binarized: Binarized) -> Path:
    from pipelines.publish import export_local

    out = export_dir_for(recipe, store)
    card = card_context(store, recipe, binarized)
    from pipelines.profiles import row_sources_of

    return export_local(
        binarized.result,
        out,
        formats=tuple(recipe.export.formats),
        card=card,
        profile=recipe.export.profile,
        filters=recipe.export.filters,
        row_sources=row_sources_of(binarized.rows),
    )


def export_stage_streamed(recipe: Recipe, store: Store) -> tuple[Path, dict[str, Any]]:
    """Binarize and export in load-order chunks (issue 13): each chunk's pairs are written to
    Parquet / JSON Lines as they are decided and dropped, so peak memory is one chunk whatever
    the number of conversations; the card's statistics are SQL aggregates plus the pair
    counts gathered on the way. Same files and card as ``binarize_stage`` + ``export_stage``.
    Returns ``(out_dir, binarize summary)``."""
    from collections import Counter

    from pipelines.binarize import BinarizeOptions, binarize, collect_chunks
    from pipelines.profiles import row_sources_of
    from pipelines.publish import CardContext, export_local_stream
    from pipelines.stats import store_stats

    options = BinarizeOptions.model_validate(recipe.binarize)
    generator_ids = [g.id for g in recipe.generators]
    judge_id = recipe.judge.id if recipe.judge else None
    dropped: Counter[str] = Counter()
    labels: Counter[tuple[str, str, str]] = Counter()

    def tables() -> Any:
        for rows in collect_chunks(
            store, generator_ids=generator_ids, judge_id=judge_id, chunk_rows=EXPORT_CHUNK_ROWS
        ):
            result = binarize(rows, options)
            dropped.update(result.dropped)
            cols = result.table.select(["chosen_model", "rejected_model", "rating_source"])
            labels.update(zip(*(c.to_pylist() for c in cols.columns), strict=True))
            yield result.table, row_sources_of(rows)

    def pair_labels() -> Any:
        for (chosen, rejected, source), n in labels.items():
            for _ in range(n):
                yield {"chosen_model": chosen, "rejected_model": rejected, "rating_source": source}

    def card(n_rows: int) -> CardContext:
        stats = store_stats(
            store, generator_ids=generator_ids, judge_id=judge_id, pairs=pair_labels()
        )
        return _card(store, recipe, stats, dict(dropped))

    out, n_pairs = export_local_stream(
        tables(),
        export_dir_for(recipe, store),
        formats=tuple(recipe.export.formats),
        card=card,
        profile=recipe.export.profile,
        filters=recipe.export.filters,
    )
    return out, {"pairs": n_pairs, "dropped": dict(dropped)}


def publish_stage(recipe: Recipe, out_dir: Path) -> str:
    from pipelines.publish import push_to_hub

    if not recipe.publish.repo_id:
        raise StageError("publish needs publish.repo_id in the recipe")
    token = os.environ.get(recipe.publish.token_env) or None
    return push_to_hub(out_dir, recipe.publish.repo_id, token=token, private=recipe.publish.private)


def argilla_stage(
    stage: str,
    recipe: Recipe,
    store: Store,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Push records to the Argilla review queue, or pull the humans' responses back."""
    from pipelines.argilla_queue import ArgillaQueue, PullSummary, PushSummary

    if recipe.argilla is None:
        raise StageError(f"{stage} needs an 'argilla:' section in the recipe")
    queue = ArgillaQueue.from_config(recipe.argilla)
    result: PushSummary | PullSummary
    try:
        if stage == "push-argilla":
            result = queue.push(
                store,
                recipe.judge.id if recipe.judge else None,
                [g.id for g in recipe.generators],
                on_progress=on_progress,
                cancel=cancel,
            )
        else:
            result = queue.pull(store)
    finally:
        queue.close()
    return result.as_dict()


EXPORT_CHUNK_ROWS = 5000  # conversations binarized and written at a time by a streamed export
PIPELINE_QUEUE = 256  # conversations waiting for the judge, at most
JUDGE_BATCH = 4  # conversations one judge worker takes at a time


async def generate_and_judge(
    recipe: Recipe,
    store: Store,
    conversations: Sequence[Conversation],
    progress: ProgressCallback,
    cancel: threading.Event | None = None,
) -> tuple[Progress, Progress]:
    """Generation and judging pipelined: a conversation goes to the judge as soon as all of
    its candidates are finished, while generation goes on. A bounded queue between them; the
    judge runs ``judge.concurrency`` workers (each one request at a time, so the judge server
    sees the concurrency it was given). Every row is committed as before, so a kill at any
    moment loses nothing and a re-run does only what is missing."""
    from pipelines.generate import run_generation_async
    from pipelines.judge import run_judging_async

    assert recipe.judge is not None
    judge = recipe.judge
    one_at_a_time = judge.model_copy(update={"concurrency": 1})
    generator_ids = [g.id for g in recipe.generators]
    queue: asyncio.Queue[Conversation | None] = asyncio.Queue(PIPELINE_QUEUE)
    judged = Progress(stage="judge")
    notes: list[str] = []
    start = time.perf_counter()

    async def worker() -> None:
        while True:
            first = await queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < JUDGE_BATCH and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    queue.put_nowait(None)  # leave the stop for the others... and for us
                    break
                batch.append(nxt)
            p = await run_judging_async(
                store,
                one_at_a_time,
                generator_ids,
                batch,
                max_attempts=recipe.generation.max_attempts,
                cancel=cancel,
            )
            judged.total += p.total
            judged.done += p.done
            judged.failed += p.failed
            judged.skipped += p.skipped
            judged.output_tokens += p.output_tokens
            judged.notes.extend(n for n in p.notes if n not in judged.notes)
            if p.message and p.message not in ("finished", "nothing to judge"):
                notes.append(p.message)
                judged.message = p.message
            judged.elapsed_s = time.perf_counter() - start
            progress(judged)

    workers = [asyncio.create_task(worker()) for _ in range(judge.concurrency)]

    async def ready(conv: Conversation) -> None:
        await queue.put(conv)

    try:
        generated = await run_generation_async(
            store,
            recipe.generators,
            conversations,
            max_attempts=recipe.generation.max_attempts,
            on_progress=progress,
            cancel=cancel,
            on_ready=ready,
        )
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    judged.elapsed_s = time.perf_counter() - start
    cancelled = cancel is not None and cancel.is_set()
    judged.message = "cancelled" if cancelled else "finished"
    progress(judged)
    if notes and not cancelled:
        judged.message = notes[-1]
    return generated, judged


def run_recipe(
    recipe: Recipe,
    store: Store,
    *,
    stages: Sequence[str] | None = None,
    limit: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    job_kind: str = "run",
    on_job: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run the given stages (default: all the recipe configures). Records a job in the store.

    Raises nothing for a failing stage: the summary carries status 'failed' and a one-line
    error, the job row too. ``limit`` bounds how many conversations are loaded and processed
    (stored with the job, so a resume can reuse it). ``on_job`` gets the job id once recorded.
    """
    stages = list(stages) if stages else default_stages(recipe)
    job_id = store.start_job(f"{job_kind}:{','.join(stages)}", recipe.to_dict(), limit=limit)
    if on_job is not None:
        on_job(job_id)
    summary = RunSummary(job_id=job_id, stages=stages)
    last_write = 0.0

    def progress(p: Progress) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write > 1.0 or p.message in ("finished", "cancelled"):
            last_write = now
            summary.results[p.stage] = p.as_dict()
            store.update_job(job_id, counters=summary.results)
        if on_progress is not None:
            on_progress(p)

    pipelined = False
    from pipelines.cost import BudgetGuard

    budget = BudgetGuard.for_recipe(recipe, store)  # issue 14: None without a budget
    try:
        for stage in stages:
            if cancel is not None and cancel.is_set():
                summary.status = "cancelled"
                break
            if stage == "load":
                report = load_stage(recipe, store, limit)
                summary.results["load"] = report
                store.update_job(job_id, counters=summary.results)
                if on_progress is not None:
                    on_progress(
                        Progress(
                            stage="load",
                            done=report["loaded"],
                            total=report["total_rows"],
                            message="finished",
                        )
                    )
            elif (
                stage == "generate"
                and "judge" in stages
                and recipe.judge is not None
                and budget is None  # a budget admits requests stage by stage, in order
            ):
                # pipelined: the judge starts on each conversation as its candidates finish
                n = _count_selected(store, limit)
                gen_pages = PagedProgress("generate", n, progress)
                judge_pages = PagedProgress("judge", n, progress)
                gen_p, judge_p = Progress(stage="generate"), Progress(stage="judge")
                for convs, last in selected_conversations(store, limit):
                    k = len(convs)

                    def paged(
                        p: Progress,
                        k: int = k,
                        last: bool = last,
                        both: tuple[PagedProgress, PagedProgress] = (gen_pages, judge_pages),
                    ) -> None:
                        both[p.stage != "generate"].callback(k, last)(p)

                    g, j = asyncio.run(generate_and_judge(recipe, store, convs, paged, cancel))
                    gen_p = gen_pages.finish(g, k, last)
                    judge_p = judge_pages.finish(j, k, last)
                    if cancel is not None and cancel.is_set():
                        break
                summary.results["generate"] = gen_p.as_dict()
                summary.results["judge"] = judge_p.as_dict()
                pipelined = True
                _fail_if_every_row_failed(gen_p, cancel)
                _fail_if_every_row_failed(judge_p, cancel)
            elif stage == "judge" and pipelined:
                continue
            elif stage == "generate":
                from pipelines.generate import run_generation

                pages = PagedProgress("generate", _count_selected(store, limit), progress)
                p = Progress(stage="generate")
                for convs, last in selected_conversations(store, limit):
                    page_p = run_generation(
                        store,
                        recipe.generators,
                        convs,
                        max_attempts=recipe.generation.max_attempts,
                        on_progress=pages.callback(len(convs), last),
                        cancel=cancel,
                        budget=budget,
                    )
                    p = pages.finish(page_p, len(convs), last)
                    if (cancel is not None and cancel.is_set()) or (budget and budget.paused):
                        break
                summary.results["generate"] = p.as_dict()
                _fail_if_every_row_failed(p, cancel)
            elif stage == "judge":
                from pipelines.judge import run_judging

                if recipe.judge is None:
                    raise StageError("the recipe has no judge")
                pages = PagedProgress("judge", _count_selected(store, limit), progress)
                p = Progress(stage="judge")
                for convs, last in selected_conversations(store, limit):
                    page_p = run_judging(
                        store,
                        recipe.judge,
                        [g.id for g in recipe.generators],
                        convs,
                        max_attempts=recipe.generation.max_attempts,
                        on_progress=pages.callback(len(convs), last),
                        cancel=cancel,
                        budget=budget,
                    )
                    p = pages.finish(page_p, len(convs), last)
                    if (cancel is not None and cancel.is_set()) or (budget and budget.paused):
                        break
                summary.results["judge"] = p.as_dict()
                _fail_if_every_row_failed(p, cancel)
            elif stage in ("push-argilla", "pull-argilla"):
                summary.results[stage] = argilla_stage(stage, recipe, store, progress, cancel)
            elif stage == "binarize" and ("export" in stages or "publish" in stages):
                continue  # streamed together with the export, chunk by chunk
            elif stage == "binarize":
                _, summary.results["binarize"] = binarize_stage(recipe, store)
            elif stage == "export":
                out, summary.results["binarize"] = export_stage_streamed(recipe, store)
                summary.export_dir = str(out)
                summary.results["export"] = {
                    "out": str(out),
                    "pairs": summary.results["binarize"]["pairs"],
                    "profile": recipe.export.profile,
                    "filters": recipe.export.filters.active(),
                }
            elif stage == "publish":
                if not summary.export_dir:
                    exported, summary.results["binarize"] = export_stage_streamed(recipe, store)
                    summary.export_dir = str(exported)
                summary.published = publish_stage(recipe, Path(summary.export_dir))
                summary.results["publish"] = {"url": summary.published}
            if cancel is not None and cancel.is_set():
                summary.status = "cancelled"
                break
            if budget is not None and budget.paused:  # issue 14: stop before exceeding it
                summary.status = "paused"
                summary.error = budget.reason
                summary.results["budget"] = {
                    "spent_usd": round(budget.spent_usd, 6),
                    "spent_tokens": budget.spent_tokens,
                    "held_back": budget.held_back,
                }
                break
    except Exception as exc:  # noqa: BLE001 - reported as one line, job marked failed
        from pipelines.backends import short_error

        summary.status = "failed"
        message = str(exc).strip()
        summary.error = (
            message.splitlines()[0] if message and is_user_error(exc) else short_error(exc)
        )
    store.update_job(
        job_id, counters=summary.results, status=summary.status, last_error=summary.error
    )
    return summary


def _fail_if_every_row_failed(p: Progress, cancel: threading.Event | None) -> None:
    """A stage that failed on every row it had to do ends the job failed, saying why (the
    rows stay recorded failed, with their reasons, for a resume to retry)."""
    if cancel is not None and cancel.is_set():
        return
    to_do = p.total - p.skipped
    if to_do > 0 and p.done - p.skipped <= 0 and p.failed >= to_do:
        why = p.message if p.message and p.message not in ("finished", "cancelled") else ""
        notes = "; ".join(p.notes)
        detail = "; ".join(x for x in (why, notes) if x)
        raise StageError(
            f"{p.stage}: every one of the {to_do} rows failed" + (f" ({detail})" if detail else "")
        )


def is_user_error(exc: BaseException) -> bool:
    """Errors whose message is already a one-line explanation for the user (bad input,
    unreachable service), as opposed to bugs."""
    from pipelines.argilla_queue import ArgillaQueueError
    from pipelines.backends import BackendError
    from pipelines.judge_format import RubricUnavailable
    from pipelines.publish import PublishError
    from pipelines.recipe import RecipeError
    from pipelines.sources import SourceError

    user_errors = (
        StageError,
        BackendError,
        RecipeError,
        SourceError,
        PublishError,
        ArgillaQueueError,
        RubricUnavailable,
    )
    return isinstance(exc, user_errors)
