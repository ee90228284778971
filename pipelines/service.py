"""The workspace service: the one API the CLI and every tab of the app call (issue 9).

``WorkspaceService`` is the server-side state of one data folder (the store, the current
recipe, the background job manager) plus the operations a front end offers on it: review
(queue page, next item, submit), binarize preview and options, export, publish, jobs, Argilla
push/pull state. Every operation takes the ``Actor`` calling it and checks the actor's role
for its action (``pipelines.workspace.ACTIONS``) before doing anything, so the CLI, the Gradio
app and any later front end get the same authorization. Results are typed records
(dataclasses), never HTML: rendering is the front end's business. A user error is a
``ServiceError`` with a one-line message; a refusal is ``Forbidden``.

Reads are paged or SQL aggregates (issue 13): opening the review queue reads one page of ids
and counts; the Results overview is ``stats.store_stats``; neither grows with the store.

This module is part of the engine: it never imports gradio or capyui.
"""

from __future__ import annotations

import os
import sys
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.binarize.config import BinarizeConfig
from pipelines.errors import error_line
from pipelines.jobs import JobManager
from pipelines.panel_edit import JudgePanelView, PanelEndpoint, PanelJudge
from pipelines.recipe import (
    MOVED_TO_EXPORT_FILTERS,
    RECIPES_DIR,
    Recipe,
    RecipeError,
    load_recipe,
    parse_recipe,
)
from pipelines.store import Store, default_data_dir
from pipelines.workspace import CLI_ACTOR, Actor, Forbidden, Policy

__all__ = [
    "BinarizePreview",
    "ExportResult",
    "Forbidden",
    "JudgePanelView",
    "PanelEndpoint",
    "PanelJudge",
    "QueuePage",
    "ResultsOverview",
    "ReviewProgress",
    "ServiceError",
    "SubmitResult",
    "WorkspaceService",
    "get_service",
]

DEFAULT_RECIPE = "quickstart"
QUEUE_PAGE = 50  # review-queue ids read per page (keyset paging)
PREVIEW_PAIRS = 5  # pairs the Results preview shows
PREVIEW_CHUNK_ROWS = 5000  # conversations binarized at a time by the Results preview
# the Results preview is warmed in the background only up to this many conversations with
# candidates (issue 13: at 1M it held the GIL for minutes while every tab's events waited)
WARM_PREVIEW_MAX = 50_000
ARGILLA_PUSH_JOB = "argilla-push"  # the job name of a push started from a front end


class ServiceError(ValueError):
    """A request the service cannot carry out as given; the message is one line for the user."""


def _one_line(exc: BaseException) -> str:
    return error_line(exc, first_line=True)


def _default_policy() -> Policy:
    """The environment's roles for a loopback address (the CLI's case); a malformed
    ``CAPYUI_AUTH`` grants nobody anything beyond their actor's own role."""
    try:
        return Policy.from_env("127.0.0.1")
    except ValueError:
        return Policy(frozenset(), frozenset())


# -- typed results ---------------------------------------------------------------------------
@dataclass
class ReviewProgress:
    reviewable: int
    reviewed: int
    mine: int
    discarded: int


@dataclass
class QueuePage:
    """The review queue as far as it has been read: ids in load order (one page, extended a
    page at a time as the reviewer moves on) and the queue's size (SQL counts)."""

    filter: str
    reviewer: str | None
    ids: list[str] = field(default_factory=list)
    total: int = 0

    @property
    def complete(self) -> bool:
        return len(self.ids) >= self.total


@dataclass
class SubmitResult:
    ratings: dict[str, int]
    chosen: str | None
    rejected: str | None
    discard: bool
    comment: str | None
    accepted_ai: bool


@dataclass
class ResultsOverview:
    """What the Results tab shows before any binarize run: SQL aggregates of the store."""

    stats: dict[str, Any]  # stats.store_stats (no pair columns)
    reviewable: int
    not_generated: int
    generator_of: dict[str, str]  # model label of the statistics -> generator id (plots)


@dataclass
class BinarizePreview:
    """One binarize run over the whole store with some options: counts, the first pairs, and
    the statistics with the pair columns (win rates)."""

    options: dict[str, Any]
    summary: dict[str, Any]
    pairs: list[dict[str, Any]]  # the first PREVIEW_PAIRS
    num_pairs: int
    stats: dict[str, Any]
    panel: dict[str, Any] | None = None  # a judge panel's biases and agreement (issue 14)


@dataclass
class ExportResult:
    out_dir: Path
    files: list[Path]  # the data files and the card
    pairs: int


@dataclass
class ArgillaState:
    """The workspace's Argilla work in the background: the last push job started from a front
    end, and the live pull (a background thread) with its client."""

    push: Any = None  # jobs.JobHandle
    puller: Any = None  # argilla_queue.BackgroundPull
    puller_queue: Any = None  # argilla_queue.ArgillaQueue


# -- the service -----------------------------------------------------------------------------
class WorkspaceService:
    """One data folder: store, current recipe, jobs, and every operation on them.

    ``policy`` decides what an actor's role allows (demo mode lets anonymous visitors look);
    the default is the environment's for a loopback address (the CLI's case)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        policy: Policy | None = None,
        *,
        recipe: Recipe | None = None,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.store = Store(self.data_dir)
        self.jobs = JobManager(self.store)
        self.policy = policy or _default_policy()
        self._lock = threading.Lock()
        # the current recipe: ``recipe`` (server-side code's own), else the one saved in the
        # data folder, else quickstart, read on first use (the CLI runs recipe files instead)
        self._loaded: Recipe | None = recipe
        self._listeners: list[Callable[[], None]] = []
        # the Results preview of the last options, reused while the store is unchanged
        self._preview_cache: tuple[str, BinarizePreview] | None = None
        self._preview_lock = threading.Lock()
        self._warming = False
        self._warming_counts = False
        self._overview_cache: tuple[str, ResultsOverview] | None = None
        # the Argilla panel's last push and live pull (shared by every session, like the jobs)
        self.argilla = ArgillaState()

    # -- authorization ---------------------------------------------------------------------
    def authorize(self, actor: Actor, action: str) -> None:
        """Raise ``Forbidden`` unless ``actor`` may perform ``action`` here."""
        self.policy.authorize(actor, action)

    def allowed(self, actor: Actor, action: str) -> bool:
        return self.policy.allowed(actor, action)

    # -- recipe ------------------------------------------------------------------------------
    def on_recipe_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (cheap; start a thread for real work) after every recipe change."""
        self._listeners.append(listener)

    def on_job_finish(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (cheap; start a thread for real work) after every background job
        ends: its generations and judgments changed what the review counts and the Results
        preview read."""
        self.jobs.on_finish.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    @property
    def recipe_path(self) -> Path:
        """The workspace's current recipe survives restarts (secret-free, like any recipe)."""
        return self.data_dir / "recipe.yaml"

    def _saved_recipe(self) -> Recipe | None:
        if not self.recipe_path.is_file():
            return None
        try:
            recipe = load_recipe(self.recipe_path)
        except RecipeError as exc:
            print(f"warning: ignoring the saved recipe: {exc}", file=sys.stderr)
            return None
        return recipe

    def _save(self, recipe: Recipe) -> None:
        """Write the recipe with its source file path made absolute (it is read back from the
        data folder, not from where the recipe first came from)."""
        data = recipe.to_dict()
        if recipe.source.path:
            data["source"]["path"] = str(Path(recipe.source_path()).resolve())
        tmp = self.recipe_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
        tmp.replace(self.recipe_path)

    @property
    def _recipe(self) -> Recipe:
        if self._loaded is None:
            self._loaded = self._saved_recipe() or load_recipe(DEFAULT_RECIPE)
        return self._loaded

    @_recipe.setter
    def _recipe(self, recipe: Recipe) -> None:
        self._loaded = recipe

    @property
    def recipe(self) -> Recipe:
        with self._lock:
            return self._recipe

    def check_paths(self, recipe: Recipe) -> None:
        """A recipe of the app reads files only from the workspace or the bundled recipes,
        checked after resolving symlinks (issue 10). RecipeError otherwise."""
        if not recipe.source.path:
            return
        try:
            target = Path(recipe.source_path()).resolve()
        except (OSError, RuntimeError):
            raise RecipeError("source.path: cannot be resolved") from None
        roots = [self.data_dir.resolve(), RECIPES_DIR.resolve()]
        if not any(target.is_relative_to(r) for r in roots):
            raise RecipeError(
                "source.path: only files in the workspace (upload them in the Data tab) or "
                "the bundled samples can be read"
            )

    def set_recipe(self, recipe: Recipe) -> None:
        if recipe.base_dir is None:
            recipe.base_dir = self.base_dir
        self.check_paths(recipe)
        with self._lock:
            self._recipe = recipe
            self._save(recipe)
        self._changed()

    @property
    def base_dir(self) -> str:
        """Where relative source paths of an imported recipe resolve (the bundled recipes)."""
        return self.recipe.base_dir or str(RECIPES_DIR)

    def update_recipe(self, change: Callable[[dict[str, Any]], None]) -> Recipe:
        """Apply ``change`` to the recipe as a dict and validate (raises RecipeError)."""
        with self._lock:
            data = self._recipe.model_dump(mode="json", exclude_none=True)
            change(data)
            recipe = parse_recipe(data, name="recipe", base_dir=self._recipe.base_dir)
            self.check_paths(recipe)
            self._recipe = recipe
            self._save(recipe)
        self._changed()
        return recipe

    def candidate_recipe(self, change: Callable[[dict[str, Any]], None]) -> Recipe:
        """The recipe ``change`` would give, validated but NOT made current (raises
        RecipeError). Use ``set_recipe`` once whatever depends on it has worked (a load)."""
        with self._lock:
            data = self._recipe.model_dump(mode="json", exclude_none=True)
            base_dir = self._recipe.base_dir
        change(data)
        return parse_recipe(data, name="recipe", base_dir=base_dir)

    RECIPE_ACTIONS = frozenset({"edit_recipe", "configure_models", "manage_argilla"})

    def change_recipe(
        self, actor: Actor, action: str, change: Callable[[dict[str, Any]], None]
    ) -> Recipe:
        """``update_recipe`` for a front end: ``action`` names what part is changed (models,
        the Argilla section, the whole recipe) and the actor must be allowed it."""
        if action not in self.RECIPE_ACTIONS:
            raise ValueError(f"not a recipe action: {action}")
        self.authorize(actor, action)
        return self.update_recipe(change)

    def replace_recipe(self, actor: Actor, recipe: Recipe) -> None:
        """Make ``recipe`` (an imported one) the workspace's (``RecipeError`` for a source
        outside the workspace)."""
        self.authorize(actor, "edit_recipe")
        self.set_recipe(recipe)

    def storage_warning(self) -> str | None:
        """A warning when running on a Space whose data would not survive a restart."""
        if not os.environ.get("SPACE_ID"):
            return None
        try:
            resolved = self.data_dir.resolve()
        except OSError:
            resolved = self.data_dir
        if Path("/data").is_dir() and str(resolved).startswith("/data"):
            return None
        return (
            "This Space has no persistent storage: everything in the workspace (loaded data, "
            "candidates, judgments, reviews) is lost when the Space restarts. Enable persistent "
            "storage in the Space settings, and export or publish your results often."
        )

    def model_ids(self) -> tuple[list[str], str | None]:
        """(generator ids, judge id) of the current recipe: what the review and stats read."""
        r = self.recipe
        return [g.id for g in r.generators], r.rating_judge_id()

    # -- judge panel (the Models tab) ---------------------------------------------------------
    def _registry(self) -> list[Any]:
        from pipelines.endpoints import EndpointError, load_registry

        try:
            return load_registry(self.data_dir)
        except EndpointError as exc:
            raise ServiceError(str(exc)) from None

    def judge_panel(self, actor: Actor) -> JudgePanelView:
        """The recipe's judges (``judge:`` first, then ``judges:``) and ``panel:`` settings."""
        from pipelines.panel_edit import panel_view

        self.authorize(actor, "view")
        try:
            registry = self._registry()
        except ServiceError:
            registry = []  # a broken registry: the judges still show, without their entries
        return panel_view(self.recipe, registry)

    def panel_endpoints(self, actor: Actor) -> list[PanelEndpoint]:
        """Where a panel judge may run: the owner's registry entries (the name of each key's
        variable, never a value), the embedded model, another URL without a key."""
        from pipelines.panel_edit import panel_endpoints

        self.authorize(actor, "configure_models")
        return panel_endpoints(self._registry())

    def new_panel_judge(
        self,
        actor: Actor,
        endpoint: str,
        model: str,
        judge_id: str = "",
        *,
        base_url: str = "",
        taken: list[str] | None = None,
    ) -> PanelJudge:
        """A judge for the panel on ``endpoint`` (see ``panel_endpoints``): its key variable
        is the registry entry's, never one the caller names. Not saved: ``save_judge_panel``
        writes the whole panel. ``ServiceError`` (one line) otherwise."""
        from pipelines.panel_edit import PanelEditError, new_judge

        self.authorize(actor, "configure_models")
        try:
            return new_judge(
                endpoint, model, judge_id, self._registry(), base_url=base_url, taken=taken or []
            )
        except PanelEditError as exc:
            raise ServiceError(str(exc)) from None

    def save_judge_panel(
        self,
        actor: Actor,
        judges: list[PanelJudge] | list[dict[str, Any]],
        *,
        aggregate: str,
        panel_id: str = "panel",
        min_judges: Any = None,
    ) -> JudgePanelView:
        """Make ``judges`` the recipe's judges with the panel's settings (``judges:`` +
        ``panel:``; one judge is the recipe's ``judge:``, no panel). ``ServiceError`` (one
        line) for no judges, duplicate ids, ``min_judges`` above the number of judges, an
        unknown aggregate, a bad panel id or a URL / key the registry does not allow."""
        from pipelines.panel_edit import PanelEditError, apply_change, panel_change, panel_view

        self.authorize(actor, "configure_models")
        registry = self._registry()

        def change(data: dict[str, Any]) -> None:
            # checked against the recipe being changed (update_recipe holds the lock)
            sections = panel_change(
                self._recipe,
                judges,
                aggregate=aggregate,
                panel_id=panel_id,
                min_judges=min_judges,
                registry=registry,
            )
            apply_change(data, sections)

        try:
            recipe = self.update_recipe(change)
        except (PanelEditError, RecipeError) as exc:
            raise ServiceError(_one_line(exc)) from None
        return panel_view(recipe, registry)

    # -- data ---------------------------------------------------------------------------------
    def load_into_recipe(
        self, actor: Actor, source: dict[str, Any], base_dir: str, limit: int | None
    ) -> tuple[Recipe, dict[str, Any]]:
        """Load ``source`` (a recipe ``source:`` section) into the store, streamed; the
        recipe's source changes only once the load has worked (a failed load leaves the recipe
        and the next run as they were). ``RecipeError`` for a bad source; any other exception
        is the loader's one-line error."""
        from pipelines.run import load_stage

        self.authorize(actor, "load_data")

        def change(data: dict[str, Any]) -> None:
            data["source"] = source

        recipe = self.candidate_recipe(change)
        recipe.base_dir = base_dir
        report = load_stage(recipe, self.store, limit)
        self.set_recipe(recipe)
        return recipe, report

    def load_file(
        self,
        actor: Actor,
        source: str,
        *,
        format: str = "auto",
        columns: dict[str, str] | None = None,
        split: str = "train",
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Load a file or Hub dataset into the store (streamed, one chunk in memory at a
        time) without touching the recipe (the CLI's ``capyui load``); returns the report."""
        from pipelines.sources import load_source

        self.authorize(actor, "load_data")
        sink = self.store.conversation_sink()
        result = load_source(
            source, format=format, columns=columns, split=split, limit=limit, sink=sink
        )
        report = {**result.summary(), "added": sink.added, "already_in_store": sink.existing}
        self.store.record_load(source, report)
        return report

    def status(self, actor: Actor) -> dict[str, Any]:
        """What the workspace holds: counts per stage and the last jobs (``capyui status``)."""
        self.authorize(actor, "view")
        store = self.store
        return {
            "data_dir": str(store.data_dir),
            "conversations": store.count_conversations(),
            "candidates": store.candidate_counts(),
            "judgments": store.judgment_status_counts(),
            "reviews": store.review_totals()["reviews"],
            "jobs": [
                {k: j[k] for k in ("job_id", "kind", "status", "last_error", "counters")}
                for j in store.jobs(limit=5)
            ],
        }

    # -- jobs ---------------------------------------------------------------------------------
    def start_job(
        self, actor: Actor, stages: list[str], *, limit: int | None = None, name: str = "ui"
    ) -> Any:
        """Start the current recipe's ``stages`` in the background (one job at a time per
        workspace); returns the ``JobHandle``. ``ServiceError`` (one line) otherwise."""
        self.authorize(actor, "run_jobs")
        if "publish" in stages:
            self.authorize(actor, "publish")
        if not stages:
            raise ServiceError("Pick at least one stage.")
        recipe = self.recipe
        if "judge" in stages and not recipe.has_judge():
            raise ServiceError("The recipe has no judge: add one in the Models tab.")
        try:
            return self.jobs.start(recipe, stages, limit=limit, name=name)
        except RuntimeError as exc:
            raise ServiceError(str(exc)) from None

    def run(
        self,
        actor: Actor,
        recipe: Recipe,
        stages: list[str],
        *,
        limit: int | None = None,
        on_progress: Any = None,
        cancel: threading.Event | None = None,
        job_kind: str = "run",
    ) -> Any:
        """Run ``recipe``'s ``stages`` here, in the foreground (``capyui run`` / ``export``);
        returns the ``run.RunSummary``. Publishing needs the publish role as well, an
        export-only run the export role."""
        from pipelines.run import run_recipe

        needs = ["export"] if set(stages) <= {"binarize", "export"} else ["run_jobs"]
        for action in needs + (["publish"] if "publish" in stages else []):
            self.authorize(actor, action)
        return run_recipe(
            recipe,
            self.store,
            stages=stages,
            limit=limit,
            on_progress=on_progress,
            cancel=cancel,
            job_kind=job_kind,
        )

    def job(self, actor: Actor, job_id: str) -> dict[str, Any] | None:
        """One recorded job (of the recent ones), or None."""
        self.authorize(actor, "view")
        return next((j for j in self.store.jobs(limit=200) if j["job_id"] == job_id), None)

    def cancel_job(self, actor: Actor) -> bool:
        """Ask the running job to stop after the requests in flight; False when none runs."""
        self.authorize(actor, "run_jobs")
        return bool(self.jobs.cancel())

    def job_snapshot(self, actor: Actor) -> dict[str, Any] | None:
        """The current (or last) job's progress, or None."""
        self.authorize(actor, "view")
        h = self.jobs.current
        return h.snapshot() if h is not None else None

    # -- review ------------------------------------------------------------------------------
    def review_progress(self, actor: Actor, reviewer: str | None) -> ReviewProgress:
        """Reviewed / reviewable counts (SQL aggregates; cheap on every submit)."""
        from pipelines.review import review_progress

        self.authorize(actor, "view")
        gens, _ = self.model_ids()
        p = review_progress(self.store, generator_ids=gens, reviewer=(reviewer or None))
        return ReviewProgress(p["reviewable"], p["reviewed"], p["mine"], p["discarded"])

    def _queue_total(self, filter_: str, reviewer: str | None, first: list[str]) -> int:
        from pipelines.review import queue_count

        if len(first) < QUEUE_PAGE:  # the whole queue fits on the first page
            return len(first)
        gens, judge = self.model_ids()
        if filter_ in ("all", "unreviewed"):
            # from the progress aggregates (the reviewable count is cached in the store):
            # unreviewed = reviewable - reviewed (by this reviewer, or by anyone)
            p = self.review_progress(CLI_ACTOR, reviewer)
            if filter_ == "all":
                return p.reviewable
            return p.reviewable - (p.mine if reviewer else p.reviewed)
        return queue_count(
            self.store, filter_, generator_ids=gens, judge_id=judge, reviewer=reviewer
        )

    def review_queue(self, actor: Actor, filter_: str, reviewer: str | None) -> QueuePage:
        """Open a review queue: its first page of ids and its size. ``ServiceError`` for an
        unknown filter."""
        from pipelines.review import ReviewError, queue_page

        self.authorize(actor, "view")
        reviewer = (reviewer or "").strip() or None
        gens, judge = self.model_ids()
        try:
            ids = queue_page(
                self.store,
                filter_,
                page_size=QUEUE_PAGE,
                generator_ids=gens,
                judge_id=judge,
                reviewer=reviewer,
            )
        except ReviewError as exc:
            raise ServiceError(str(exc)) from None
        return QueuePage(filter_, reviewer, ids, self._queue_total(filter_, reviewer, ids))

    def review_more(self, actor: Actor, page: QueuePage) -> QueuePage:
        """``page`` with the next page of ids appended (keyset paging after its last id)."""
        from pipelines.review import queue_page

        self.authorize(actor, "view")
        if not page.ids or page.complete:
            return page
        gens, judge = self.model_ids()
        more = queue_page(
            self.store,
            page.filter,
            page_size=QUEUE_PAGE,
            after=page.ids[-1],
            generator_ids=gens,
            judge_id=judge,
            reviewer=page.reviewer,
        )
        ids = page.ids + [i for i in more if i not in set(page.ids)]
        total = page.total if more else len(ids)  # the queue ended early (rows went away)
        return QueuePage(page.filter, page.reviewer, ids, max(total, len(ids)))

    def empty_queue_message(self, actor: Actor, filter_: str, reviewer: str | None) -> str:
        """Why the queue is empty, and what to do: an empty 'Unreviewed' queue with reviewable
        conversations means the work is done, not that nothing was generated."""
        from pipelines.review import FILTERS

        p = self.review_progress(actor, reviewer)
        if p.reviewable == 0:
            return (
                "Nothing to review yet: no conversation has candidates. Generate them in the Run "
                "tab."
            )
        if filter_ == "unreviewed":
            who = "you have" if reviewer else "reviewers have"
            return (
                f"All done: {who} reviewed every one of the {p.reviewable} conversations with "
                "candidates. Pick 'All with candidates' to revisit them."
            )
        return f"No conversation matches '{FILTERS.get(filter_, filter_)}'. Pick another queue."

    def review_item(self, actor: Actor, conversation_id: str, reviewer: str | None) -> Any:
        """The conversation with its candidates (display order), AI ratings and reviews
        (``review.ReviewItem``), or None when it is gone."""
        from pipelines.review import review_item

        self.authorize(actor, "view")
        gens, judge = self.model_ids()
        return review_item(
            self.store,
            conversation_id,
            generator_ids=gens,
            judge_id=judge,
            reviewer=(reviewer or "").strip() or None,
        )

    def review_version(self, actor: Actor, conversation_id: str, reviewer: str) -> str:
        """What a view was rendered from: a submit from a stale view is refused (issue 10)."""
        self.authorize(actor, "view")
        return self.store.review_version(conversation_id, reviewer)

    def ai_suggestion(
        self, actor: Actor, conversation_id: str, candidate_keys: list[str]
    ) -> dict[str, int]:
        from pipelines.review import ai_suggestion

        self.authorize(actor, "view")
        _, judge = self.model_ids()
        return ai_suggestion(self.store, conversation_id, candidate_keys, judge)

    def submit_review(
        self,
        actor: Actor,
        conversation_id: str,
        reviewer: str,
        *,
        candidate_keys: list[str],
        ratings: dict[str, Any],
        chosen: str | None,
        rejected: str | None,
        discard: bool,
        comment: str | None,
        expected_version: str | None,
    ) -> SubmitResult:
        """Validate and store one review; ``ServiceError`` (one line) when it cannot be."""
        from pipelines.review import ReviewError, submit_review

        self.authorize(actor, "review")
        _, judge = self.model_ids()
        try:
            stored = submit_review(
                self.store,
                conversation_id,
                reviewer,
                candidate_keys=candidate_keys,
                ratings=ratings,
                chosen=chosen,
                rejected=rejected,
                discard=discard,
                comment=comment,
                judge_id=judge,
                expected_version=expected_version,
            )
        except ReviewError as exc:
            raise ServiceError(str(exc)) from None
        return SubmitResult(**stored)

    def live_usage(self, actor: Actor, snap: dict[str, Any] | None) -> Any:
        """The running (or last) job's live counters: tokens per model, throughput, ETA and
        cost so far (``cost.LiveUsage``); None before any job of this app session."""
        from pipelines.cost import live_usage

        self.authorize(actor, "view")
        if not snap or not snap.get("started_at"):
            return None
        running = snap.get("status") in ("running", "cancelling", "starting")
        return live_usage(
            self.store,
            self.recipe,
            since=float(snap["started_at"]),
            progress=snap.get("progress"),
            running=running,
        )

    # -- results: statistics, binarize preview, options ---------------------------------------
    @staticmethod
    def strategies() -> list[str]:
        """The binarize strategies, as the engine's options model declares them."""
        from pipelines.binarize import BinarizeOptions

        return list(typing.get_args(BinarizeOptions.model_fields["strategy"].annotation))

    def binarize_options(self, changes: dict[str, Any] | None = None) -> BinarizeConfig:
        """The recipe's binarize options with ``changes``, validated (``ServiceError``)."""
        from pydantic import ValidationError

        try:
            return self.recipe.binarize.with_overrides(changes or {})
        except (ValidationError, ValueError) as exc:
            raise ServiceError(f"Invalid options: {_one_line(exc)}") from None

    def results_overview(self, actor: Actor) -> ResultsOverview:
        """The Results statistics as SQL aggregates (histograms, mean ratings, agreement,
        review counts): what the tab shows first, at any size."""
        from pipelines.stats import store_stats

        self.authorize(actor, "view")
        gens, judge = self.model_ids()
        key = repr((gens, judge, self.store.change_marker()))
        hit = self._overview_cache
        if hit is not None and hit[0] == key:  # unchanged store: coming back is instant
            return hit[1]
        stats = store_stats(self.store, generator_ids=gens, judge_id=judge)
        reviewable = self.store.count_reviewable(gens or None)
        from pipelines.binarize import model_labels

        labels = model_labels(self.store.generator_models(gens or None))
        generator_of = {label: gen for (gen, _), label in labels.items()}
        overview = ResultsOverview(
            stats=stats,
            reviewable=reviewable,
            not_generated=max(0, self.store.count_conversations() - reviewable),
            generator_of=generator_of,
        )
        self._overview_cache = (key, overview)
        return overview

    def _preview_key(self, options: BinarizeConfig) -> str:
        gens, judge = self.model_ids()
        return repr((options.model_dump(), gens, judge, self.store.change_marker()))

    def cached_preview(self, actor: Actor, changes: dict[str, Any]) -> BinarizePreview | None:
        """The preview for ``changes`` if it is ready (computed since the last change)."""
        self.authorize(actor, "view")
        try:
            key = self._preview_key(self.binarize_options(changes))
        except ServiceError:
            return None
        with self._preview_lock:
            hit = self._preview_cache
        return hit[1] if hit is not None and hit[0] == key else None

    def binarize_preview(self, actor: Actor, changes: dict[str, Any]) -> BinarizePreview:
        """Binarize the whole store with the recipe's options plus ``changes`` (not saved):
        counts, the first pairs, statistics with win rates. Conversations without a single
        candidate are left out (work not done yet: ``summary["not_generated"]``). Reused while
        the store and the options are unchanged. ``ServiceError`` for invalid options."""
        from pipelines.binarize import binarize, collect_chunks
        from pipelines.panel import recipe_panel_report
        from pipelines.stats import PairLabels, store_stats

        self.authorize(actor, "view")
        options = self.binarize_options(changes)
        key = self._preview_key(options)
        with self._preview_lock:
            hit = self._preview_cache
        if hit is not None and hit[0] == key:
            return hit[1]
        gens, judge = self.model_ids()
        # one chunk of conversations at a time (issue 13): memory stays one chunk at any size
        summary = binarize([], options).summary()
        first: list[dict[str, Any]] = []
        labels = PairLabels()
        not_generated = 0
        for rows in collect_chunks(
            self.store, generator_ids=gens, judge_id=judge, chunk_rows=PREVIEW_CHUNK_ROWS
        ):
            generated = [r for r in rows if r.candidates]
            not_generated += len(rows) - len(generated)
            result = binarize(generated, options)
            for name, value in result.summary().items():  # every count adds up over chunks
                if isinstance(value, dict):
                    for reason, n in value.items():
                        summary[name][reason] = summary[name].get(reason, 0) + n
                else:
                    summary[name] += value
            if len(first) < PREVIEW_PAIRS:
                first += result.table.slice(0, PREVIEW_PAIRS - len(first)).to_pylist()
            labels.add(result.table)
        stats = store_stats(self.store, generator_ids=gens, judge_id=judge, pairs=labels)
        summary["not_generated"] = not_generated
        preview = BinarizePreview(
            options=options.model_dump(),
            summary=summary,
            pairs=first,
            num_pairs=summary["pairs"],
            stats=stats,
        )
        report = recipe_panel_report(self.store, self.recipe)
        preview.panel = None if report is None else report.as_dict()
        with self._preview_lock:
            self._preview_cache = (key, preview)
        return preview

    def sample_pairs(
        self, actor: Actor, changes: dict[str, Any], *, rows: int, limit: int
    ) -> list[dict[str, Any]]:
        """The first ``limit`` pairs of the first ``rows`` conversations with candidates (one
        page of the review queue, binarized): a look at the pairs that costs the same at any
        size. ``ServiceError`` for invalid options."""
        from pipelines.binarize import binarize, collect
        from pipelines.review import queue_page

        self.authorize(actor, "view")
        options = self.binarize_options(changes)
        gens, judge = self.model_ids()
        ids = queue_page(self.store, "all", page_size=rows, generator_ids=gens, judge_id=judge)
        if not ids:
            return []
        found = collect(self.store, generator_ids=gens, judge_id=judge, conversation_ids=ids)
        result = binarize([r for r in found if r.candidates], options)
        return list(result.table.slice(0, limit).to_pylist())

    def warm_preview(self) -> None:
        """Compute the default preview in a background thread (app start, recipe saved), so the
        Results tab finds the pair counts ready. Not above ``WARM_PREVIEW_MAX`` conversations
        with candidates: there the whole-store binarize would hold the cores (and this
        process's GIL) for minutes while the curator clicks; the tab shows the SQL statistics
        and the first page's pairs, and its Preview button binarizes everything on request."""
        with self._preview_lock:
            if self._warming:
                return
            self._warming = True

        def work() -> None:
            try:
                gens, _ = self.model_ids()
                if self.store.count_reviewable(gens) <= WARM_PREVIEW_MAX:
                    self.binarize_preview(CLI_ACTOR, {})
            except Exception:  # noqa: BLE001 - a bad recipe shows its error on the tab instead
                pass
            finally:
                with self._preview_lock:
                    self._warming = False

        threading.Thread(target=work, name="capyui-results-warm", daemon=True).start()

    def warm_review_counts(self) -> None:
        """Count the AI review queues (low AI, AI ties, AI unsure, judges disagree) in a
        background thread where their cached counts are out of date (app start, recipe saved, a
        queue opened): opening one of them then reads its count instead of counting up to a
        million conversations (``Store.review_queue_count`` keeps each until a candidate or a
        judgment is written; a review does not change them)."""
        from pipelines.review import queue_count
        from pipelines.store import AI_FILTERS

        with self._preview_lock:
            if self._warming_counts:
                return
            self._warming_counts = True

        def work() -> None:
            try:
                gens, judge = self.model_ids()
                for filter_ in sorted(AI_FILTERS):
                    kw: dict[str, Any] = {"generator_ids": gens, "judge_id": judge}
                    if self.store.cached_queue_count(filter_, **kw) is None:
                        queue_count(self.store, filter_, **kw)
            except Exception:  # noqa: BLE001 - a bad recipe or store shows its error on the tab
                pass
            finally:
                with self._preview_lock:
                    self._warming_counts = False

        threading.Thread(target=work, name="capyui-review-counts", daemon=True).start()

    def save_binarize_options(self, actor: Actor, changes: dict[str, Any]) -> Recipe:
        """Save binarize options to the recipe; thresholds are export filters (the build keeps
        every strictly ordered pair). ``ServiceError`` when the recipe refuses them."""
        self.authorize(actor, "binarize_options")
        self.binarize_options(changes)

        def change(data: dict[str, Any]) -> None:
            data["binarize"] = {**(data.get("binarize") or {}), **changes}
            for key in ("min_margin", "min_chosen_rating", "drop_null_ratings", "max_turns"):
                if key not in changes:
                    data["binarize"].pop(key, None)
            export_section = data.setdefault("export", {})
            export_section["filters"] = {
                k: data["binarize"].pop(k) for k in MOVED_TO_EXPORT_FILTERS if k in data["binarize"]
            }

        try:
            return self.update_recipe(change)
        except RecipeError as exc:
            raise ServiceError(_one_line(exc)) from None

    # -- export / publish ------------------------------------------------------------------------
    def export(
        self,
        actor: Actor,
        formats: list[str],
        changes: dict[str, Any] | None = None,
        *,
        profile: str | None = None,
    ) -> ExportResult:
        """Save the options, binarize and export the recipe's dataset (data files + card)."""
        from pipelines.profiles import PROFILES
        from pipelines.run import export_stage_streamed

        self.authorize(actor, "export")
        if not formats:
            raise ServiceError("Pick at least one format.")
        if changes is not None:
            self.save_binarize_options(actor, changes)

        def change(data: dict[str, Any]) -> None:
            data.setdefault("export", {})["formats"] = list(formats)
            if profile in PROFILES:
                data["export"]["profile"] = profile

        try:
            recipe = self.update_recipe(change)
            # binarized and written a chunk at a time (issue 13), as ``capyui run`` exports
            out, res = export_stage_streamed(recipe, self.store)
        except Exception as exc:  # noqa: BLE001 - PublishError and friends: one line
            raise ServiceError(f"Export failed: {_one_line(exc)}") from None
        out = Path(out)
        files = sorted((out / "data").glob("train-*")) + [out / "README.md"]
        return ExportResult(out, files, int(res["pairs"]))

    def publish(
        self,
        actor: Actor,
        repo_id: str,
        *,
        private: bool,
        user_token: str | None,
        replace: bool = False,
    ) -> str:
        """Push the last export to the Hub. On a Space only the signed-in user's own token
        (``user_token``) is used, never the Space owner's (issue 10); locally the user's token
        or the one in the recipe's ``publish.token_env``. Returns the URL; ``ServiceError``
        (one line) otherwise."""
        from pipelines.publish import PublishError, push_to_hub
        from pipelines.run import export_dir_for

        self.authorize(actor, "publish")
        repo_id = (repo_id or "").strip()
        if not repo_id:
            raise ServiceError("Enter a dataset repo id (namespace/name).")
        recipe = self.recipe
        out = export_dir_for(recipe, self.store)
        if not (out / "README.md").is_file():
            raise ServiceError("Export the dataset first (Download section).")
        on_space = bool(os.environ.get("SPACE_ID"))
        token = user_token if on_space else (user_token or os.environ.get(recipe.publish.token_env))
        if not token:
            where = (
                "Sign in with Hugging Face above"
                if on_space
                else f"Set {recipe.publish.token_env} (a token with write access), then restart "
                "the app"
            )
            raise ServiceError(f"No Hugging Face token. {where}.")
        try:
            url = push_to_hub(out, repo_id, token=token, private=bool(private), overwrite=replace)
        except PublishError as exc:
            raise ServiceError(str(exc)) from None

        def change(data: dict[str, Any]) -> None:
            data.setdefault("publish", {}).update({"repo_id": repo_id, "private": bool(private)})

        try:
            self.update_recipe(change)
        except RecipeError:
            pass
        return str(url)

    # -- data, jobs, cost: read-only views -----------------------------------------------------
    def source_preview(self, actor: Actor, source_name: str, limit: int) -> tuple[list[Any], int]:
        """The first ``limit`` conversations of one source (load order) and how many it has."""
        from pipelines.review import conversations_by_source

        self.authorize(actor, "view")
        convs = conversations_by_source(self.store, source_name, limit)
        return convs, self.store.count_conversations_from(source_name)

    def conversation_count(self, actor: Actor) -> int:
        self.authorize(actor, "view")
        return self.store.count_conversations()

    def job_history(self, actor: Actor, limit: int = 20) -> list[dict[str, Any]]:
        """The last ``limit`` recorded jobs, newest first."""
        self.authorize(actor, "view")
        return self.store.jobs(limit=limit)

    def cost(self, actor: Actor, limit: int | None = None) -> tuple[list[dict[str, Any]], Any]:
        """(tokens and cost so far per stage and model, the dry-run ``Projection`` of what the
        recipe still has to do)."""
        from pipelines.cost import dry_run, usage_report

        self.authorize(actor, "view_config")
        recipe = self.recipe
        return usage_report(self.store, recipe), dry_run(recipe, self.store, limit)

    # -- arena (pairwise review) ---------------------------------------------------------------
    def arena_progress(
        self, actor: Actor, reviewer: str | None, with_queues: bool = False
    ) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """(verdict counts, pairs judged per queue when ``with_queues``: a scan of the queue)."""
        self.authorize(actor, "view")
        p = self.store.pairwise_progress((reviewer or "").strip() or None)
        return p, (self.store.pairwise_pair_reason_count() if with_queues else {})

    def arena_refresh(self, actor: Actor) -> None:
        """Queue the informative pairs of what has been judged since the last refresh."""
        from pipelines.pairwise import refresh_pairs

        self.authorize(actor, "view")
        gens, judge = self.model_ids()
        refresh_pairs(self.store, judge_id=judge, generator_ids=gens)

    def arena_next(self, actor: Actor, reviewer: str, reasons: list[str], max_verdicts: int) -> Any:
        """The next pair for ``reviewer`` (``pairwise.PairItem``) or None; ``ServiceError``."""
        from pipelines.pairwise import PairwiseError, next_pair

        self.authorize(actor, "view")
        try:
            return next_pair(self.store, reviewer, reasons=reasons, max_verdicts=max_verdicts)
        except PairwiseError as exc:
            raise ServiceError(str(exc)) from None

    def arena_submit(
        self,
        actor: Actor,
        conversation_id: str,
        reviewer: str,
        *,
        left_key: str,
        right_key: str,
        verdict: str,
        reason: str | None,
    ) -> None:
        """Store a pairwise verdict; ``ServiceError`` (one line) when refused."""
        from pipelines.pairwise import PairwiseError, submit_verdict

        self.authorize(actor, "review")
        try:
            submit_verdict(
                self.store,
                conversation_id,
                reviewer,
                left_key=left_key,
                right_key=right_key,
                verdict=verdict,
                reason=reason,
            )
        except PairwiseError as exc:
            raise ServiceError(str(exc)) from None

    def arena_rankings(self, actor: Actor) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(verdicts per generator, the human and AI Bradley–Terry rankings)."""
        from pipelines.pairwise import rankings, verdicts_per_model

        self.authorize(actor, "view")
        _, judge = self.model_ids()
        return verdicts_per_model(self.store), rankings(self.store, judge)

    def argilla_review_totals(self, actor: Actor) -> dict[str, Any]:
        """How much human work from Argilla is in the workspace (reviews, people, latest)."""
        from pipelines.argilla_queue import REVIEW_SOURCE

        self.authorize(actor, "view")
        return dict(self.store.review_totals(REVIEW_SOURCE))

    # -- Argilla -----------------------------------------------------------------------------
    def argilla_status(self, actor: Actor, config: Any) -> dict[str, Any]:
        """``ArgillaQueue.status()`` for ``config`` (an ``ArgillaConfig``): never raises."""
        from pipelines.argilla_pairs import queue_for

        self.authorize(actor, "manage_argilla")
        queue = queue_for(config)
        try:
            return dict(queue.status())
        except Exception as exc:  # noqa: BLE001 - status() should not raise; one line if it does
            return {"ok": False, "url": queue.api_url, "error": _one_line(exc)}
        finally:
            queue.close()

    def argilla_push(self, actor: Actor, config: Any) -> Any:
        """Start pushing to Argilla as a background job (the Run tab shows it too); returns
        the job handle. ``ServiceError`` when a job is already running."""
        from pipelines.argilla_queue import STAGE_PUSH

        self.authorize(actor, "manage_argilla")
        recipe = self.recipe.model_copy(update={"argilla": config})
        try:
            handle = self.jobs.start(recipe, [STAGE_PUSH], name=ARGILLA_PUSH_JOB)
        except RuntimeError as exc:
            raise ServiceError(str(exc)) from None
        self.argilla.push = handle
        return handle

    def argilla_pull(self, actor: Actor, config: Any) -> dict[str, Any]:
        """Pull the humans' responses into the store's reviews now (``PullSummary`` as a
        dict). ``ServiceError`` (one line) when it fails."""
        from pipelines.argilla_pairs import queue_for
        from pipelines.argilla_queue import ArgillaQueueError

        self.authorize(actor, "manage_argilla")
        queue = queue_for(config)
        try:
            return dict(queue.pull(self.store).as_dict())
        except ArgillaQueueError as exc:
            raise ServiceError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - never a traceback in a front end
            raise ServiceError(f"pull failed: {_one_line(exc)}") from None
        finally:
            queue.close()

    def argilla_live(self, actor: Actor, config: Any | None) -> Any:
        """Stop the live pull, then (``config`` given) start one every
        ``config.pull_interval_s``; returns the running ``BackgroundPull`` or None."""
        from pipelines.argilla_pairs import queue_for

        self.authorize(actor, "manage_argilla")
        st = self.argilla
        puller, queue = st.puller, st.puller_queue
        st.puller = st.puller_queue = None
        if puller is not None:
            puller.stop(timeout=5)
        if queue is not None:
            queue.close()
        if config is None:
            return None
        st.puller_queue = queue_for(config)
        st.puller = st.puller_queue.start_background_pull(
            self.store, interval_s=config.pull_interval_s
        )
        return st.puller


_services: dict[str, WorkspaceService] = {}
_services_lock = threading.Lock()


def get_service(
    data_dir: str | os.PathLike[str] | None = None, policy: Policy | None = None
) -> WorkspaceService:
    """The one service of a data folder in this process (shared by every browser session: one
    store, one job manager). ``policy``, when given, becomes the service's."""
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    key = str(path.resolve())
    with _services_lock:
        if key not in _services:
            _services[key] = WorkspaceService(path, policy)
        elif policy is not None:
            _services[key].policy = policy
        return _services[key]
