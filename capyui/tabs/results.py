"""Results tab: binarization options with a live preview, statistics plots, download and
publish to the Hugging Face Hub.

Layout and wiring only: the statistics (SQL aggregates), the binarize preview, the options,
export and publish are ``pipelines.service.WorkspaceService`` operations with typed results;
the tab maps them onto its components (``ResultsView``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from capyui import render
from capyui.guard import current_actor
from pipelines.profiles import PROFILES
from pipelines.service import BinarizePreview, ResultsOverview, ServiceError, WorkspaceService

PREVIEW_PAIRS = 5
SAMPLE_ROWS = 50  # conversations the quick pair sample of the tab's first look binarizes

Updates = dict[Any, Any]  # component -> new value


def _options(
    strategy: str,
    min_margin: float | None,
    min_chosen: float | None,
    drop_null: bool,
    max_turns: float | None,
) -> dict[str, Any]:
    """The options the form shows, as binarize option changes (the engine validates them)."""
    opts: dict[str, Any] = {"strategy": strategy or "best-vs-worst"}
    if min_margin:
        opts["min_margin"] = float(min_margin)
    if min_chosen:
        opts["min_chosen_rating"] = float(min_chosen)
    if drop_null:
        opts["drop_null_ratings"] = True
    if max_turns and max_turns >= 1:
        opts["max_turns"] = int(max_turns)
    return opts


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def pairs_html(pairs: list[dict[str, Any]], total: int | None) -> str:
    """The first pairs; ``total``: how many the whole run made (None: a sample)."""
    if not pairs:
        if total is None:
            return render.notice_html("No pairs in the first conversations: press Preview.", "info")
        return render.notice_html("No pairs with these options.", "info")
    out = []
    for p in pairs[:PREVIEW_PAIRS]:
        chosen = p["chosen"][-1]["content"]
        rejected = p["rejected"][-1]["content"]
        out.append(
            '<div class="cu-chat">'
            f'<div class="cu-chat-title">{render.esc(p["conversation_id"])} · rating source '
            f"{render.esc(p['rating_source'])}</div>"
            f'<div class="cu-msg cu-user"><div class="cu-role">Last user turn</div>'
            f'<div class="cu-body">{render.markdown_html(_last_user(p["prompt"]))}</div></div>'
            '<div style="display:flex;gap:8px">'
            f'<div style="flex:1">{render.candidate_html("chosen", chosen, model=p["chosen_model"], ai_rating=p["rating_chosen"], show_ai=False)}</div>'  # noqa: E501
            f'<div style="flex:1">{render.candidate_html("rejected", rejected, model=p["rejected_model"], ai_rating=p["rating_rejected"], show_ai=False)}</div>'  # noqa: E501
            "</div>"
            f'<div class="cu-muted">rating chosen {render.esc(p["rating_chosen"])} · rating '
            f"rejected {render.esc(p['rating_rejected'])}</div></div>"
        )
    more = (len(pairs) if total is None else total) - PREVIEW_PAIRS
    if more > 0 and total is not None:
        out.append(f'<div class="cu-muted">… and {more} more pair(s)</div>')
    return "".join(out)


def counts_html(summary: dict[str, Any], stats: dict[str, Any] | None = None) -> str:
    stats = stats or {}
    head = render.table_html(
        ["conversations with candidates", "kept", "pairs", "with human ratings/picks"],
        [(summary["rows_in"], summary["rows_kept"], summary["pairs"], summary["human_rows"])],
    )
    reasons = [(k, v) for k, v in summary["dropped"].items() if v]
    dropped = (
        render.table_html(["dropped by filter", "conversations"], reasons)
        if reasons
        else render.notice_html("No conversation dropped by the filters.", "info")
    )
    return head + dropped + notes_html(stats)


def notes_html(stats: dict[str, Any]) -> str:
    """Work not done yet, reviews and judge failures, under the counts."""
    notes = []
    if stats.get("not_generated"):
        notes.append(
            f"{stats['not_generated']} conversation(s) have no candidates yet (not generated; "
            "run the generate stage for them) and are not counted above."
        )
    reviews = stats.get("reviews") or {}
    if reviews.get("reviews"):
        notes.append(
            f"Reviews: {reviews['human_judged']} human judgment(s), {reviews['accepted_ai']} "
            f"accepted the AI's suggestion, {reviews['discarded']} discarded."
        )
    quality = stats.get("judge_quality") or {}
    if quality.get("placeholder_rationales"):
        notes.append(
            f"Judge failures: {quality['placeholder_rationales']} rationale(s) in "
            f"{quality['judgments_with_placeholders']} judgment(s) are only the template's "
            "placeholder."
        )
    return "".join(render.notice_html(n, "info") for n in notes)


def agreement_html(stats: dict[str, Any]) -> str:
    a = stats.get("agreement") or {}

    def pct(v: Any) -> str:
        return "—" if v is None else f"{100 * v:.0f}%"

    rho = a.get("spearman")
    return render.table_html(
        ["judge–human pairs", "exact agreement", "within 1 point", "Spearman ρ"],
        [
            (
                a.get("n", 0),
                pct(a.get("exact")),
                pct(a.get("within_1")),
                "—" if rho is None else f"{rho:.2f}",
            )
        ],
    )


def short_label(model: str, generator_of: dict[str, str]) -> str:
    """The plots' axis / legend label: the generator id (short, set by the curator); the full
    model name is in the tooltip."""
    label = generator_of.get(model) or model
    return label if len(label) <= 24 else label[:23] + "…"


def plots(
    stats: dict[str, Any], gen_of: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from pipelines.stats import histogram_frame

    hist = histogram_frame(stats)
    hist.insert(0, "generator", [short_label(m, gen_of) for m in hist["model"]])
    models = pd.DataFrame.from_records(
        stats.get("models") or [], columns=["model", "mean_rating", "win_rate"]
    )
    models.insert(0, "generator", [short_label(m, gen_of) for m in models["model"]])
    mean = models[["generator", "model", "mean_rating"]].fillna({"mean_rating": 0.0})
    win = models[["generator", "model", "win_rate"]].fillna({"win_rate": 0.0})
    return hist, mean, win


@dataclass
class ResultsView:
    """The Results tab's statistics components; ``preview``/``overview`` map a typed result of
    the service onto them, by component (one place)."""

    counts: gr.HTML
    pairs: gr.HTML
    summary: gr.JSON
    hist: gr.BarPlot
    mean: gr.BarPlot
    win: gr.BarPlot
    agreement: gr.HTML

    @property
    def outputs(self) -> list[Any]:  # the API's output order
        return [self.counts, self.pairs, self.summary, self.hist, self.mean, self.win,
                self.agreement]  # fmt: skip

    def error(self, message: str) -> Updates:
        return {
            self.counts: render.notice_html(message, "error"),
            self.pairs: "",
            self.summary: {},
            self.hist: None,
            self.mean: None,
            self.win: None,
            self.agreement: "",
        }

    def preview(self, p: BinarizePreview, generator_of: dict[str, str]) -> Updates:
        stats = {**p.stats, "not_generated": p.summary.get("not_generated", 0)}
        hist, mean, win = plots(stats, generator_of)
        return {
            self.counts: counts_html(p.summary, stats),
            self.pairs: pairs_html(p.pairs, p.num_pairs),
            self.summary: p.summary,
            self.hist: hist,
            self.mean: mean,
            self.win: win,
            self.agreement: agreement_html(stats) + render.panel_html(p.panel),
        }

    def overview(self, o: ResultsOverview, sample: list[dict[str, Any]]) -> Updates:
        """The first look at any size: SQL statistics, a few pairs from the first
        conversations; the pair counts and win rates follow from Preview (or the warm-up)."""
        stats = {**o.stats, "not_generated": o.not_generated}
        hist, mean, _ = plots(stats, o.generator_of)
        head = render.table_html(["conversations with candidates"], [(o.reviewable,)])
        note = render.notice_html(
            "Pair counts and win rates are computed over the whole workspace: press Preview "
            "(the pairs below come from the first conversations).",
            "info",
        )
        return {
            self.counts: head + note + notes_html(stats),
            self.pairs: pairs_html(sample, None),
            self.summary: {},
            self.hist: hist,
            self.mean: mean,
            self.win: None,
            self.agreement: agreement_html(stats),
        }


def preview(ws: WorkspaceService, v: ResultsView, *args: Any) -> Updates:
    """Binarize the whole workspace with the form's options (the Preview button)."""
    try:
        p = ws.binarize_preview(current_actor(), _options(*args))
    except ServiceError as exc:
        return v.error(str(exc))
    return v.preview(p, ws.results_overview(current_actor()).generator_of)


def first_look(ws: WorkspaceService, v: ResultsView, *args: Any) -> Updates:
    """What the tab shows when opened: the full preview if it is ready (warmed since the last
    change), else the SQL overview; neither grows with the workspace."""
    actor = current_actor()
    options = _options(*args)
    ready = ws.cached_preview(actor, options)
    overview = ws.results_overview(actor)
    if ready is not None:
        return v.preview(ready, overview.generator_of)
    try:
        sample = ws.sample_pairs(actor, options, rows=SAMPLE_ROWS, limit=PREVIEW_PAIRS)
    except ServiceError as exc:
        return v.error(str(exc))
    return v.overview(overview, sample)


def save_options(ws: WorkspaceService, *args: Any) -> str:
    try:
        ws.save_binarize_options(current_actor(), _options(*args))
    except ServiceError as exc:
        return render.notice_html(str(exc), "error")
    return render.notice_html("Binarization options saved to the recipe.", "ok")


def export(
    ws: WorkspaceService, formats: list[str], *args: Any, profile: str | None = None
) -> tuple[Any, str, list[str]]:
    try:
        made = ws.export(current_actor(), formats, _options(*args), profile=profile)
    except ServiceError as exc:
        return None, render.notice_html(str(exc), "error"), []
    files = downloadable([str(p) for p in made.files])
    return (
        files,
        render.notice_html(f"Exported {made.pairs} pair(s) to {made.out_dir}.", "ok"),
        files,
    )


def downloadable(paths: list[str]) -> list[str]:
    """Copies of the export in a fresh temporary folder, which Gradio serves to the caller only.

    Gradio refuses to send files from outside its temp dir and the working directory (the
    workspace on a Space is under /data); adding the workspace to ``allowed_paths`` would let
    anyone download it by URL, so the owner's download goes through a copy (issue 10)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="capyui-export-"))
    out = []
    for p in paths:
        dest = tmp / Path(p).name
        shutil.copyfile(p, dest)
        out.append(str(dest))
    return out


def publish(
    ws: WorkspaceService,
    repo_id: str,
    private: bool,
    oauth: gr.OAuthToken | None = None,
    replace: bool = False,
) -> str:
    try:
        url = ws.publish(
            current_actor(),
            repo_id,
            private=bool(private),
            user_token=oauth.token if oauth is not None else None,
            replace=bool(replace),
        )
    except ServiceError as exc:
        return render.notice_html(str(exc), "error")
    return render.notice_html(f"Published to {url}", "ok")


def build(ws: WorkspaceService, tab: gr.Tab) -> None:
    from capyui.tabs import argilla  # reviews pulled from Argilla, live-pull state

    argilla.build_results_line(ws, tab)
    config = ws.recipe.binarize
    filters = ws.recipe.export.filters.active()  # the thresholds the recipe applies at export
    with gr.Row():
        strategy = gr.Dropdown(ws.strategies(), value=config.strategy, label="Strategy")
        min_margin = gr.Number(
            label="Min rating margin", value=filters.get("min_margin", config.min_margin)
        )
        min_chosen = gr.Number(
            label="Min chosen rating (0 = none)",
            value=filters.get("min_chosen_rating", config.min_chosen_rating) or 0,
        )
        drop_null = gr.Checkbox(
            label="Drop rows with a null rating", value=config.drop_null_ratings
        )
        max_turns = gr.Number(
            label="Max user turns (0 = any)",
            value=filters.get("max_turns", config.max_turns) or 0,
            precision=0,
        )
    options: list[Any] = [strategy, min_margin, min_chosen, drop_null, max_turns]
    with gr.Row():
        preview_btn = gr.Button("Preview", elem_id="cu-preview")
        save_btn = gr.Button("Save options to recipe")
    counts = gr.HTML(js_on_load=None, elem_id="cu-bin-counts")
    summary = gr.JSON(visible=False)
    with gr.Row():
        # short labels (the generator id) on the axes and in the legend; the full model
        # name on hover
        hist = gr.BarPlot(
            x="rating",
            y="count",
            color="generator",
            title="AI rating distribution",
            x_title="rating",
            y_title="candidates",
            color_title="generator",
            tooltip=["generator", "model", "rating", "count"],
            height=300,
            elem_id="cu-plot-hist",
        )
        mean = gr.BarPlot(
            x="generator",
            y="mean_rating",
            title="Mean AI rating per generator",
            y_lim=[0, 5],
            x_label_angle=-30,
            tooltip=["generator", "model", "mean_rating"],
            height=300,
            elem_id="cu-plot-mean",
        )
        win = gr.BarPlot(
            x="generator",
            y="win_rate",
            title="Win rate per generator (chosen share)",
            y_lim=[0, 1],
            x_label_angle=-30,
            tooltip=["generator", "model", "win_rate"],
            height=300,
            elem_id="cu-plot-win",
        )
    agreement = gr.HTML(js_on_load=None)
    gr.Markdown("#### Pairs (first few)")
    pairs = gr.HTML(js_on_load=None, elem_id="cu-pairs")
    v = ResultsView(counts, pairs, summary, hist, mean, win, agreement)
    outputs = v.outputs
    preview_btn.click(lambda *a: preview(ws, v, *a), options, outputs, api_name="binarize_preview")
    for comp in options:
        comp.change(
            lambda *a: preview(ws, v, *a),
            options,
            outputs,
            trigger_mode="always_last",
            show_progress="hidden",
        )
    status = gr.HTML(js_on_load=None)
    save_btn.click(lambda *a: save_options(ws, *a), options, status, api_name="save_binarize")

    gr.Markdown("### Download")
    with gr.Row():
        formats = gr.CheckboxGroup(
            ["parquet", "jsonl"], value=["parquet", "jsonl"], label="Formats"
        )
        profile = gr.Dropdown(
            list(PROFILES),
            value=ws.recipe.export.profile,
            label="Profile (columns)",
            info="capybara-dpo / capybara-kto: the published Capybara features; trl: TRL's format",
            elem_id="cu-export-profile",
        )
        export_btn = gr.Button("Export", variant="primary", elem_id="cu-export")
    files = gr.File(
        label="Exported files", file_count="multiple", interactive=False, elem_id="cu-files"
    )
    export_status = gr.HTML(js_on_load=None, elem_id="cu-export-status")
    export_paths = gr.JSON(visible=False)
    export_btn.click(
        lambda f, p, *a: export(ws, f, *a, profile=p),
        [formats, profile, *options],
        [files, export_status, export_paths],
        api_name="export",
    )

    gr.Markdown("### Publish to the Hugging Face Hub")
    if os.environ.get("SPACE_ID"):
        gr.Markdown(
            "Sign in with the button at the top of the page; your token is used once "
            "for the upload and never stored."
        )
    else:
        gr.Markdown(
            f"Uses the token in `${ws.recipe.publish.token_env}` of the server "
            "process (never shown or stored)."
        )
    with gr.Row():
        repo_id = gr.Textbox(
            label="Dataset repo id",
            placeholder="your-name/my-dpo-dataset",
            value=ws.recipe.publish.repo_id or "",
        )
        private = gr.Checkbox(label="Private", value=ws.recipe.publish.private)
        replace = gr.Checkbox(
            label="Replace the dataset if it exists", value=False, elem_id="cu-publish-replace"
        )
        publish_btn = gr.Button("Publish")
    publish_status = gr.HTML(js_on_load=None, elem_id="cu-publish-status")

    def do_publish(repo: str, priv: bool, repl: bool, oauth: gr.OAuthToken | None) -> str:
        return publish(ws, repo, priv, oauth, replace=repl)

    publish_btn.click(do_publish, [repo_id, private, replace], publish_status, api_name="publish")
    # SQL statistics at once; the full preview when it is ready (warmed at start, whenever the
    # recipe changes and after each job)
    tab.select(lambda *a: first_look(ws, v, *a), options, outputs, show_progress="hidden")
    ws.warm_preview()
    ws.on_recipe_change(ws.warm_preview)
    ws.on_job_finish(ws.warm_preview)

    from capyui.tabs import arena  # pairwise verdicts and rankings (issue 14)

    arena.results_panel(ws)
