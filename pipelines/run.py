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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.recipe import STAGES as STAGE_NAMES
from pipelines.recipe import Recipe, RecipeError
from pipelines.store import Store
from pipelines.types import Conversation, Progress, ProgressCallback

if TYPE_CHECKING:
    from pipelines.argilla_follow import ArgillaFollower, FollowSummary
    from pipelines.argilla_queue import PullSummary, PushSummary
    from pipelines.binarize import BinarizeResult, JudgedConversation


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
    # each stage's typed result (``StageResult``), by stage name; ``results`` holds their dicts
    # (and the live counters) for the job record and the CLI's JSON
    outcomes: dict[str, StageResult] = field(default_factory=dict)

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
    if recipe.has_judge():
        stages += ["judge", "binarize", "export"]
        if recipe.publish.repo_id:
            stages.append("publish")
    return stages


def parse_stages(text: str | None, recipe: Recipe) -> list[str]:
    if not text:
        return default_stages(recipe)
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise StageError(
            f"unknown stage(s): {', '.join(unknown)} (known: {', '.join(STAGE_NAMES)})"
        )
    return [s for s in STAGE_NAMES if s in stages]


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
    rows: list[JudgedConversation]
    result: BinarizeResult

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
    from pipelines.binarize import binarize, collect

    rows = collect(
        store,
        generator_ids=[g.id for g in recipe.generators],
        judge_id=recipe.rating_judge_id(),
    )
    result = binarize(rows, recipe.binarize)
    return Binarized(rows, result), {"pairs": result.num_pairs, "dropped": dict(result.dropped)}


def binarize_summary_streamed(recipe: Recipe, store: Store) -> dict[str, Any]:
    """What ``binarize_stage`` reports (pairs, dropped), binarizing one chunk of
    conversations at a time (issue 13): memory is one chunk whatever the store's size."""
    from collections import Counter

    from pipelines.binarize import binarize, collect_chunks

    pairs = 0
    dropped: Counter[str] = Counter()
    for rows in collect_chunks(
        store,
        generator_ids=[g.id for g in recipe.generators],
        judge_id=recipe.rating_judge_id(),
        chunk_rows=EXPORT_CHUNK_ROWS,
    ):
        result = binarize(rows, recipe.binarize)
        pairs += result.num_pairs
        dropped.update(result.dropped)
    return {"pairs": pairs, "dropped": dict(dropped)}


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
            "conversations judged": store.count_judged(recipe.rating_judge_id()),
            "conversations reviewed": totals["conversations"],
            # issue 12: a rationale that is the template's placeholder is a judge failure
            "judge failures: placeholder rationales": quality.get("placeholder_rationales", 0),
        },
        stats=stats,
        generator_models=[g.display_name() for g in recipe.generators],
        judge_model=recipe.rating_judge_name(),
        dropped=dropped,
        strategy=recipe.binarize.strategy,
        repo_id=recipe.publish.repo_id,
        reviewed=totals["conversations"],
        human_reviews=totals["reviews"],
        accepted_ai=totals["accepted_ai"],
        judge_template=recipe.all_judges()[0].template if recipe.has_judge() else None,
        usage=usage_report(store, recipe),  # issue 14
        pairwise=verdicts_per_model(store),
        panel=_panel_card(store, recipe),
    )


def _panel_card(store: Store, recipe: Recipe) -> dict[str, Any] | None:
    """The judge panel's report for the card (issue 14), None with a single judge."""
    from pipelines.panel import recipe_panel_report

    report = recipe_panel_report(store, recipe)
    return None if report is None else report.as_dict()


def export_stage(recipe: Recipe, store: Store, binarized: Binarized) -> Path:
    from pipelines.publish import export_local

    out = export_dir_for(recipe, store)
    card = card_context(store, recipe, binarized)
    from pipelines.panel import add_judge_ratings, judge_ratings_field
    from pipelines.profiles import row_sources_of

    pairs: Any = binarized.result
    judges = recipe.all_judges()
    if len(judges) > 1:  # issue 14: every judge's ratings beside the aggregate
        pairs = add_judge_ratings(store, binarized.result.table, binarized.rows, judges)
    return export_local(
        pairs,
        out,
        formats=tuple(recipe.export.formats),
        card=card,
        profile=recipe.export.profile,
        filters=recipe.export.filters,
        row_sources=row_sources_of(binarized.rows),
        extra_fields=[judge_ratings_field()] if len(judges) > 1 else [],
    )


def export_stage_streamed(recipe: Recipe, store: Store) -> tuple[Path, dict[str, Any]]:
    """Binarize and export in load-order chunks (issue 13): each chunk's pairs are written to
    Parquet / JSON Lines as they are decided and dropped, so peak memory is one chunk whatever
    the number of conversations; the card's statistics are SQL aggregates plus the pair
    counts gathered on the way. Same files and card as ``binarize_stage`` + ``export_stage``.
    Returns ``(out_dir, binarize summary)``."""
    from collections import Counter

    from pipelines.binarize import binarize, collect_chunks
    from pipelines.panel import add_judge_ratings, judge_ratings_field
    from pipelines.profiles import row_sources_of
    from pipelines.publish import CardContext, export_local_stream
    from pipelines.stats import PairLabels, store_stats

    options = recipe.binarize
    generator_ids = [g.id for g in recipe.generators]
    judge_id = recipe.rating_judge_id()
    judges = recipe.all_judges()
    dropped: Counter[str] = Counter()
    labels = PairLabels()

    def tables() -> Any:
        for rows in collect_chunks(
            store, generator_ids=generator_ids, judge_id=judge_id, chunk_rows=EXPORT_CHUNK_ROWS
        ):
            result = binarize(rows, options)
            dropped.update(result.dropped)
            labels.add(result.table)
            table = result.table
            if len(judges) > 1:  # issue 14: every judge's ratings beside the aggregate
                table = add_judge_ratings(store, table, rows, judges)
            yield table, row_sources_of(rows)

    def card(n_rows: int) -> CardContext:
        stats = store_stats(store, generator_ids=generator_ids, judge_id=judge_id, pairs=labels)
        return _card(store, recipe, stats, dict(dropped))

    out, n_pairs = export_local_stream(
        tables(),
        export_dir_for(recipe, store),
        formats=tuple(recipe.export.formats),
        card=card,
        profile=recipe.export.profile,
        filters=recipe.export.filters,
        extra_fields=[judge_ratings_field()] if len(judges) > 1 else [],
    )
    return out, {"pairs": n_pairs, "dropped": dict(dropped)}


def publish_stage(recipe: Recipe, out_dir: Path) -> str:
    from pipelines.publish import push_to_hub

    if not recipe.publish.repo_id:
        raise StageError("publish needs publish.repo_id in the recipe")
    token = os.environ.get(recipe.publish.token_env) or None
    return push_to_hub(out_dir, recipe.publish.repo_id, token=token, private=recipe.publish.private)


def argilla_run(
    stage: str,
    recipe: Recipe,
    store: Store,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> PushSummary | PullSummary:
    """Push records to the Argilla review queue, or pull the humans' responses back:
    the ``PushSummary`` / ``PullSummary``."""
    from pipelines.argilla_pairs import queue_for

    if recipe.argilla is None:
        raise StageError(f"{stage} needs an 'argilla:' section in the recipe")
    queue = queue_for(recipe.argilla)  # argilla.mode: ratings records or pairs (issue 14a)
    result: PushSummary | PullSummary
    try:
        if stage == "push-argilla":
            result = queue.push(
                store,
                recipe.rating_judge_id(),
                [g.id for g in recipe.generators],
                on_progress=on_progress,
                cancel=cancel,
            )
        else:
            result = queue.pull(store)
    finally:
        queue.close()
    return result


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
    from pipelines.panel import judge_conversations_async, judge_limits

    assert recipe.has_judge()
    limits = judge_limits(recipe)  # issue 14: each judge of a panel keeps its concurrency
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
            p = await judge_conversations_async(recipe, store, batch, cancel=cancel, limits=limits)
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

    workers = [
        asyncio.create_task(worker())
        for _ in range(max(j.concurrency for j in recipe.all_judges()))
    ]

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


# ---------------------------------------------------------------------------------------------
# the stage table
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    """What ``load`` read: the source's report (rows, loaded, rejections by reason...)."""

    report: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.report


@dataclass
class RowsResult:
    """A row-by-row stage (generate, judge): its final progress counters."""

    progress: Progress

    def as_dict(self) -> dict[str, Any]:
        return self.progress.as_dict()


@dataclass
class BinarizeSummary:
    """How many preference pairs binarize decided, and the conversations it dropped by why."""

    pairs: int
    dropped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "dropped": dict(self.dropped)}


@dataclass
class ExportResult:
    """Where ``export`` wrote the dataset (and its card), with how many pairs."""

    out: Path
    pairs: int
    profile: str
    filters: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "pairs": self.pairs,
            "profile": self.profile,
            "filters": self.filters,
        }


@dataclass
class PublishResult:
    """The Hub dataset ``publish`` pushed the export to."""

    url: str

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url}


@dataclass
class ArgillaResult:
    """A push to or a pull from the Argilla review queue (``PushSummary`` / ``PullSummary``)."""

    summary: PushSummary | PullSummary
    # issue 13: what the follower pushed while the judge ran, before this final push (whose
    # ``unchanged`` counts those records again)
    followed: FollowSummary | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.summary.as_dict()
        if self.followed is not None:
            out["followed"] = self.followed.as_dict()
        return out


StageResult = (
    LoadResult | RowsResult | BinarizeSummary | ExportResult | PublishResult | ArgillaResult
)

# what a stage may need that an earlier stage makes: the binarized pairs (``binarize``, or the
# export computing them itself) and an exported folder (``export``, or publish exporting first)
BINARIZED_PAIRS = "binarized pairs"
EXPORTED_FOLDER = "an exported dataset"
# issue 13: the judged records pushed to Argilla while the judge ran (``argilla_follow``); the
# final push-argilla stage reports them beside what it pushed itself
ARGILLA_FOLLOWED = "records pushed to Argilla as they were judged"


@dataclass
class StageContext:
    """What every stage of one run shares: its inputs, the live callbacks, and what the stages
    before it made (``results``, typed; ``provides``: the facts of ``Stage.provides``)."""

    recipe: Recipe
    store: Store
    stages: list[str]
    limit: int | None
    progress: ProgressCallback  # records counters on the job, then calls ``on_progress``
    on_progress: ProgressCallback | None
    cancel: threading.Event | None
    budget: Any  # cost.BudgetGuard | None
    results: dict[str, StageResult] = field(default_factory=dict)
    provides: set[str] = field(default_factory=set)
    export_dir: Path | None = None
    follower: ArgillaFollower | None = None  # pushing to Argilla while the judge runs

    def announce(self, stage: str, message: str) -> None:
        """A one-line progress event, e.g. a dependency computed on the way."""
        if self.on_progress is not None:
            self.on_progress(Progress(stage=stage, message=message))

    def judge_id(self) -> str | None:
        """The judge whose judgments are the AI rating (a panel's aggregate with several)."""
        return self.recipe.rating_judge_id()

    def generator_ids(self) -> list[str]:
        return [g.id for g in self.recipe.generators]


@dataclass(frozen=True)
class Stage:
    """One named step of a recipe. ``needs``: facts an earlier stage of the run provides
    (``StageContext.provides``); when none did, ``run`` computes them itself, and the run says
    so first ("computing binarized pairs for export"). ``provides``: what it makes for the
    stages after it."""

    name: str
    run: Callable[[StageContext], None]
    doc: str
    needs: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()


def _run_load(ctx: StageContext) -> None:
    report = load_stage(ctx.recipe, ctx.store, ctx.limit)
    ctx.results["load"] = LoadResult(report)
    if ctx.on_progress is not None:
        ctx.on_progress(
            Progress(
                stage="load", done=report["loaded"], total=report["total_rows"], message="finished"
            )
        )


def _pipelines_judge(ctx: StageContext) -> bool:
    return (
        "judge" in ctx.stages
        and ctx.recipe.has_judge()
        and ctx.budget is None  # a budget admits requests stage by stage, in order
    )


def _paged_stop(ctx: StageContext) -> bool:
    return (ctx.cancel is not None and ctx.cancel.is_set()) or bool(
        ctx.budget and ctx.budget.paused
    )


def _run_paged(
    ctx: StageContext,
    stage: str,
    conversations: int,
    run_page: Callable[[list[Conversation], ProgressCallback], Progress],
) -> None:
    """``run_page(page, on_progress)`` over the selected conversations (``conversations`` of
    them) a page at a time, the pages' progress combined into the stage's; stops after a page
    when the run is cancelled or its budget paused it."""
    pages = PagedProgress(stage, conversations, ctx.progress)
    p = Progress(stage=stage)
    for convs, last in selected_conversations(ctx.store, ctx.limit):
        p = pages.finish(run_page(convs, pages.callback(len(convs), last)), len(convs), last)
        if _paged_stop(ctx):
            break
    ctx.results[stage] = RowsResult(p)
    _fail_if_every_row_failed(p, ctx.cancel)


@contextmanager
def _following_argilla(ctx: StageContext, stage: str) -> Iterator[None]:
    """While ``stage`` judges (``judge``, or ``generate`` pipelined with the judge): push what
    it judged to Argilla (``argilla_follow``) when the run pushes to Argilla too. The follower
    stops (and waits for its upsert in flight) when the judging ends, however it ends, before
    the final push-argilla stage."""
    from pipelines.argilla_follow import ArgillaFollower, should_follow

    judges = stage == "judge" or (stage == "generate" and _pipelines_judge(ctx))
    if not judges or ctx.follower is not None or not should_follow(ctx.recipe, ctx.stages):
        yield
        return
    ctx.follower = ArgillaFollower(ctx.recipe, ctx.store, ctx.progress, ctx.cancel).start()
    try:
        yield
    finally:
        ctx.follower.close()
        ctx.provides.add(ARGILLA_FOLLOWED)


def _run_generate(ctx: StageContext) -> None:
    """Generation (pipelined with the judge when the run judges too), a page of
    conversations at a time (``selected_conversations``): bounded memory at any size."""
    n = _count_selected(ctx.store, ctx.limit)
    if _pipelines_judge(ctx):
        # pipelined: the judge starts on each conversation as its candidates finish
        gen_pages = PagedProgress("generate", n, ctx.progress)
        judge_pages = PagedProgress("judge", n, ctx.progress)
        gen_p, judge_p = Progress(stage="generate"), Progress(stage="judge")
        for convs, last in selected_conversations(ctx.store, ctx.limit):
            k = len(convs)

            def paged(
                p: Progress,
                k: int = k,
                last: bool = last,
                both: tuple[PagedProgress, PagedProgress] = (gen_pages, judge_pages),
            ) -> None:
                both[p.stage != "generate"].callback(k, last)(p)

            g, j = asyncio.run(generate_and_judge(ctx.recipe, ctx.store, convs, paged, ctx.cancel))
            gen_p = gen_pages.finish(g, k, last)
            judge_p = judge_pages.finish(j, k, last)
            if _paged_stop(ctx):
                break
        ctx.results["generate"] = RowsResult(gen_p)
        ctx.results["judge"] = RowsResult(judge_p)
        _fail_if_every_row_failed(gen_p, ctx.cancel)
        _fail_if_every_row_failed(judge_p, ctx.cancel)
        return
    from pipelines.generate import run_generation

    _run_paged(
        ctx,
        "generate",
        n,
        lambda convs, on_progress: run_generation(
            ctx.store,
            ctx.recipe.generators,
            convs,
            max_attempts=ctx.recipe.generation.max_attempts,
            on_progress=on_progress,
            cancel=ctx.cancel,
            budget=ctx.budget,
        ),
    )


def _run_judge(ctx: StageContext) -> None:
    """Every judge of the recipe (a panel's aggregate too), a page at a time."""
    if "judge" in ctx.results:
        return  # judged already, pipelined with the generation
    from pipelines.panel import judge_conversations_async

    if not ctx.recipe.has_judge():
        raise StageError("the recipe has no judge")
    _run_paged(
        ctx,
        "judge",
        _count_selected(ctx.store, ctx.limit),
        lambda convs, on_progress: asyncio.run(
            judge_conversations_async(
                ctx.recipe,
                ctx.store,
                convs,
                on_progress=on_progress,
                cancel=ctx.cancel,
                budget=ctx.budget,
            )
        ),
    )


def _run_argilla(name: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        followed = ctx.follower.summary if ctx.follower is not None else None
        if name == "push-argilla" and ARGILLA_FOLLOWED in ctx.provides and followed is not None:
            # the judged records went out as they were judged: this push sends the rest
            ctx.announce(name, f"{followed.pushed} records pushed while judging; pushing the rest")
        else:
            followed = None
        ctx.results[name] = ArgillaResult(
            argilla_run(name, ctx.recipe, ctx.store, ctx.progress, ctx.cancel), followed
        )

    return run


def _run_binarize(ctx: StageContext) -> None:
    if "export" in ctx.stages or "publish" in ctx.stages:
        return  # the export binarizes as it writes, chunk by chunk (it says so)
    res = binarize_summary_streamed(ctx.recipe, ctx.store)
    ctx.results["binarize"] = BinarizeSummary(res["pairs"], res["dropped"])
    ctx.provides.add(BINARIZED_PAIRS)


def _export(ctx: StageContext) -> Path:
    """Binarize and export in one streamed pass (the pairs are never all in memory)."""
    out, res = export_stage_streamed(ctx.recipe, ctx.store)
    ctx.results["binarize"] = BinarizeSummary(res["pairs"], res["dropped"])
    ctx.provides.update((BINARIZED_PAIRS, EXPORTED_FOLDER))
    ctx.export_dir = out
    return out


def _run_export(ctx: StageContext) -> None:
    out = _export(ctx)
    binarized = ctx.results["binarize"]
    assert isinstance(binarized, BinarizeSummary)
    ctx.results["export"] = ExportResult(
        out=out,
        pairs=binarized.pairs,
        profile=ctx.recipe.export.profile,
        filters=ctx.recipe.export.filters.active(),
    )


def _run_publish(ctx: StageContext) -> None:
    if EXPORTED_FOLDER not in ctx.provides:
        _export(ctx)
    assert ctx.export_dir is not None
    ctx.results["publish"] = PublishResult(publish_stage(ctx.recipe, ctx.export_dir))


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("load", _run_load, "read the source into the store"),
        Stage(
            "generate",
            _run_generate,
            "every generator answers every conversation",
            provides=(ARGILLA_FOLLOWED,),  # pipelined with the judge
        ),
        Stage(
            "judge",
            _run_judge,
            "the AI judge rates every conversation's candidates",
            provides=(ARGILLA_FOLLOWED,),  # with push-argilla in the run
        ),
        Stage("push-argilla", _run_argilla("push-argilla"), "send records to Argilla"),
        Stage("pull-argilla", _run_argilla("pull-argilla"), "copy Argilla's reviews back"),
        Stage(
            "binarize",
            _run_binarize,
            "decide the chosen / rejected pairs",
            provides=(BINARIZED_PAIRS,),
        ),
        Stage(
            "export",
            _run_export,
            "write the pairs and the dataset card",
            needs=(BINARIZED_PAIRS,),
            provides=(EXPORTED_FOLDER,),
        ),
        Stage(
            "publish",
            _run_publish,
            "push the export to the Hugging Face Hub",
            needs=(EXPORTED_FOLDER,),
        ),
    )
}
assert tuple(STAGES) == STAGE_NAMES, "the recipe's stage names and the stage table differ"


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
    """Run the given stages (default: all the recipe configures) from the stage table
    ``STAGES``. Records a job in the store.

    Raises nothing for a failing stage: the summary carries status 'failed' and a one-line
    error, the job row too. ``limit`` bounds how many conversations are loaded and processed
    (stored with the job, so a resume can reuse it). ``on_job`` gets the job id once recorded.
    ``RunSummary.outcomes`` holds each stage's typed result; ``results`` their dicts.
    """
    stages = list(stages) if stages else default_stages(recipe)
    unknown = [s for s in stages if s not in STAGES]
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

    from pipelines.cost import BudgetGuard

    budget = BudgetGuard.for_recipe(recipe, store)  # issue 14: None without a budget
    ctx = StageContext(
        recipe=recipe,
        store=store,
        stages=stages,
        limit=limit,
        progress=progress,
        on_progress=on_progress,
        cancel=cancel,
        budget=budget,
        results=summary.outcomes,
    )
    try:
        if unknown:
            raise StageError(f"unknown stage(s): {', '.join(unknown)} (known: {', '.join(STAGES)})")
        for name in stages:
            if cancel is not None and cancel.is_set():
                summary.status = "cancelled"
                break
            stage = STAGES[name]
            for need in stage.needs:
                if need not in ctx.provides:
                    ctx.announce(name, f"computing {need} for {name}")
            with _following_argilla(ctx, name):
                stage.run(ctx)
            for result_name, result in summary.outcomes.items():
                summary.results[result_name] = result.as_dict()
            if name == "load":
                store.update_job(job_id, counters=summary.results)
            summary.export_dir = str(ctx.export_dir) if ctx.export_dir else None
            published = summary.outcomes.get("publish")
            if isinstance(published, PublishResult):
                summary.published = published.url
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
        from pipelines.errors import error_line

        summary.status = "failed"
        summary.error = error_line(exc, limit=500, with_type=not is_user_error(exc))
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
