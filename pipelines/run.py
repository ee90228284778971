"""Running a recipe, stage by stage, against a workspace store.

    source ─▶ load ─▶ store ─▶ generate ─▶ judge ─▶ store ─▶ binarize ─▶ export ─▶ publish

Each stage reads what it needs from the store and commits as it goes, so any stage can be
re-run (or the whole recipe run again) and does only what is missing. The CLI and the UI both
call ``run_recipe``; neither holds engine logic.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.recipe import STAGES, Recipe
from pipelines.store import Store
from pipelines.types import Conversation, Progress

ProgressCallback = Callable[[Progress], None]


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
    out = Path(recipe.export.out)
    return out if out.is_absolute() else store.data_dir / out / recipe.name


def selected_conversations(store: Store, limit: int | None) -> list[Conversation]:
    return store.conversations(limit=limit)


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
    )
    added, existing = store.add_conversations(result.conversations)
    report = {**result.summary(), "added": added, "already_in_store": existing}
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
    """Everything the dataset card reports, gathered from the store."""
    from pipelines.cost import usage_report
    from pipelines.pairwise import verdicts_per_model
    from pipelines.publish import CardContext
    from pipelines.stats import compute_stats

    counts = store.candidate_counts()
    judged = store.query(
        "SELECT COUNT(*) FROM judgments WHERE status = 'done'"
        + (" AND judge_id = ?" if recipe.judge else ""),
        (recipe.judge.id,) if recipe.judge else (),
    )[0][0]
    reviewed = store.query("SELECT COUNT(DISTINCT conversation_id) FROM reviews")[0][0]
    options = recipe.binarize
    return CardContext(
        dataset_name=recipe.export.dataset_name or recipe.name,
        recipe=recipe.to_dict(),
        load_reports=store.load_reports(),
        stage_counts={
            "conversations": store.count_conversations(),
            "candidates generated": sum(c["done"] for c in counts.values()),
            "candidates failed": sum(c["failed"] for c in counts.values()),
            "conversations judged": int(judged),
            "conversations reviewed": int(reviewed),
        },
        stats=compute_stats(binarized.rows, binarized.pair_labels()),
        generator_models=[g.display_name() for g in recipe.generators],
        judge_model=recipe.judge.display_name() if recipe.judge else None,
        dropped=dict(binarized.result.dropped),
        strategy=str(options.get("strategy", "best-vs-worst")),
        repo_id=recipe.publish.repo_id,
        reviewed=int(reviewed),
        usage=usage_report(store, recipe),  # issue 14
        pairwise=verdicts_per_model(store),
    )


def export_stage(recipe: Recipe, store: Store, binarized: Binarized) -> Path:
    from pipelines.publish import export_local

    out = export_dir_for(recipe, store)
    card = card_context(store, recipe, binarized)
    return export_local(binarized.result, out, formats=tuple(recipe.export.formats), card=card)


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
    from pipelines.argilla_queue import ArgillaQueue

    if recipe.argilla is None:
        raise StageError(f"{stage} needs an 'argilla:' section in the recipe")
    queue = ArgillaQueue.from_config(recipe.argilla)
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


def run_recipe(
    recipe: Recipe,
    store: Store,
    *,
    stages: Sequence[str] | None = None,
    limit: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    job_kind: str = "run",
) -> RunSummary:
    """Run the given stages (default: all the recipe configures). Records a job in the store.

    Raises nothing for a failing stage: the summary carries status 'failed' and a one-line
    error, the job row too. ``limit`` bounds how many conversations are loaded and processed.
    """
    stages = list(stages) if stages else default_stages(recipe)
    job_id = store.start_job(f"{job_kind}:{','.join(stages)}", recipe.to_dict())
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

    binarized = None
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
            elif stage == "generate":
                from pipelines.generate import run_generation

                convs = selected_conversations(store, limit)
                p = run_generation(
                    store,
                    recipe.generators,
                    convs,
                    max_attempts=recipe.generation.max_attempts,
                    on_progress=progress,
                    cancel=cancel,
                    budget=budget,
                )
                summary.results["generate"] = p.as_dict()
            elif stage == "judge":
                from pipelines.judge import run_judging

                if recipe.judge is None:
                    raise StageError("the recipe has no judge")
                convs = selected_conversations(store, limit)
                p = run_judging(
                    store,
                    recipe.judge,
                    [g.id for g in recipe.generators],
                    convs,
                    max_attempts=recipe.generation.max_attempts,
                    on_progress=progress,
                    cancel=cancel,
                    budget=budget,
                )
                summary.results["judge"] = p.as_dict()
            elif stage in ("push-argilla", "pull-argilla"):
                summary.results[stage] = argilla_stage(stage, recipe, store, progress, cancel)
            elif stage == "binarize":
                binarized, summary.results["binarize"] = binarize_stage(recipe, store)
            elif stage == "export":
                if binarized is None:
                    binarized, summary.results["binarize"] = binarize_stage(recipe, store)
                out = export_stage(recipe, store, binarized)
                summary.export_dir = str(out)
                summary.results["export"] = {"out": str(out), "pairs": binarized.num_pairs}
            elif stage == "publish":
                out = Path(summary.export_dir) if summary.export_dir else None
                if out is None:
                    if binarized is None:
                        binarized, summary.results["binarize"] = binarize_stage(recipe, store)
                    out = export_stage(recipe, store, binarized)
                    summary.export_dir = str(out)
                summary.published = publish_stage(recipe, out)
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


def is_user_error(exc: BaseException) -> bool:
    """Errors whose message is already a one-line explanation for the user (bad input,
    unreachable service), as opposed to bugs."""
    from pipelines.argilla_queue import ArgillaQueueError
    from pipelines.backends import BackendError
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
    )
    return isinstance(exc, user_errors)
