"""Results tab: binarization options with a live preview, statistics plots, download and
publish to the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from capyui import render
from pipelines.recipe import RecipeError

STRATEGIES = ["best-vs-worst", "best-vs-random-lower", "all-pairs"]
PREVIEW_PAIRS = 5


def _options(
    strategy: str,
    min_margin: float | None,
    min_chosen: float | None,
    drop_null: bool,
    max_turns: float | None,
) -> dict[str, Any]:
    opts: dict[str, Any] = {"strategy": strategy if strategy in STRATEGIES else "best-vs-worst"}
    if min_margin:
        opts["min_margin"] = float(min_margin)
    if min_chosen:
        opts["min_chosen_rating"] = float(min_chosen)
    if drop_null:
        opts["drop_null_ratings"] = True
    if max_turns and max_turns >= 1:
        opts["max_turns"] = int(max_turns)
    return opts


def compute(ws: Any, options: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(rows, BinarizeResult, stats) for the recipe's models and judge with ``options``."""
    from pipelines.binarize import BinarizeOptions, binarize, collect
    from pipelines.stats import compute_stats

    recipe = ws.recipe
    opts = BinarizeOptions.model_validate({**recipe.binarize, **options})
    rows = collect(
        ws.store,
        generator_ids=[g.id for g in recipe.generators],
        judge_id=recipe.judge.id if recipe.judge is not None else None,
    )
    result = binarize(rows, opts)
    return rows, result, compute_stats(rows, result.pairs)


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def pairs_html(pairs: list[dict[str, Any]]) -> str:
    if not pairs:
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
    more = len(pairs) - PREVIEW_PAIRS
    if more > 0:
        out.append(f'<div class="cu-muted">… and {more} more pair(s)</div>')
    return "".join(out)


def counts_html(summary: dict[str, Any]) -> str:
    head = render.table_html(
        ["conversations in", "kept", "pairs", "with human ratings/picks"],
        [(summary["rows_in"], summary["rows_kept"], summary["pairs"], summary["human_rows"])],
    )
    dropped = render.table_html(
        ["dropped by filter", "conversations"], list(summary["dropped"].items())
    )
    return head + dropped


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


def plots(stats: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from pipelines.stats import histogram_frame

    hist = histogram_frame(stats)
    models = pd.DataFrame.from_records(
        stats.get("models") or [], columns=["model", "mean_rating", "win_rate"]
    )
    mean = models[["model", "mean_rating"]].fillna(0.0)
    win = models[["model", "win_rate"]].fillna(0.0)
    return hist, mean, win


def preview(ws: Any, *args: Any) -> list[Any]:
    from pydantic import ValidationError

    try:
        _, result, stats = compute(ws, _options(*args))
    except (ValidationError, ValueError) as exc:
        msg = str(exc).splitlines()[0]
        err = render.notice_html(f"Invalid options: {msg}", "error")
        return [err, "", {}, None, None, None, ""]
    summary = result.summary()
    hist, mean, win = plots(stats)
    return [
        counts_html(summary),
        pairs_html(result.pairs),
        summary,
        hist,
        mean,
        win,
        agreement_html(stats),
    ]


def save_options(ws: Any, *args: Any) -> str:
    opts = _options(*args)

    def change(data: dict[str, Any]) -> None:
        data["binarize"] = {**(data.get("binarize") or {}), **opts}
        for key in ("min_margin", "min_chosen_rating", "drop_null_ratings", "max_turns"):
            if key not in opts:
                data["binarize"].pop(key, None)

    try:
        ws.update_recipe(change)
    except RecipeError as exc:
        return render.notice_html(str(exc), "error")
    return render.notice_html("Binarization options saved to the recipe.", "ok")


def export(ws: Any, formats: list[str], *args: Any) -> tuple[Any, str, list[str]]:
    from pipelines.run import binarize_stage, export_stage

    if not formats:
        return None, render.notice_html("Pick at least one format.", "error"), []
    save = save_options(ws, *args)
    if "cu-error" in save:
        return None, save, []

    def change(data: dict[str, Any]) -> None:
        data.setdefault("export", {})["formats"] = formats

    try:
        recipe = ws.update_recipe(change)
        binarized, _ = binarize_stage(recipe, ws.store)
        out = export_stage(recipe, ws.store, binarized)
    except Exception as exc:  # noqa: BLE001 - PublishError and friends: one line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, render.notice_html(f"Export failed: {msg}", "error"), []
    files = sorted(str(p) for p in (Path(out) / "data").glob("train-*")) + [
        str(Path(out) / "README.md")
    ]
    return (
        files,
        render.notice_html(f"Exported {len(binarized.pairs)} pair(s) to {out}.", "ok"),
        files,
    )


def publish(ws: Any, repo_id: str, private: bool, oauth: gr.OAuthToken | None = None) -> str:
    from pipelines.publish import PublishError, push_to_hub
    from pipelines.run import export_dir_for

    repo_id = (repo_id or "").strip()
    if not repo_id:
        return render.notice_html("Enter a dataset repo id (namespace/name).", "error")
    recipe = ws.recipe
    out = export_dir_for(recipe, ws.store)
    if not (out / "README.md").is_file():
        return render.notice_html("Export the dataset first (Download section).", "error")
    token = oauth.token if oauth is not None else os.environ.get(recipe.publish.token_env)
    if not token:
        where = (
            "Sign in with Hugging Face above"
            if os.environ.get("SPACE_ID")
            else f"Set {recipe.publish.token_env} (a token with write access), then restart the app"
        )
        return render.notice_html(f"No Hugging Face token. {where}.", "error")
    try:
        url = push_to_hub(out, repo_id, token=token, private=bool(private))
    except PublishError as exc:
        return render.notice_html(str(exc), "error")

    def change(data: dict[str, Any]) -> None:
        data.setdefault("publish", {}).update({"repo_id": repo_id, "private": bool(private)})

    try:
        ws.update_recipe(change)
    except RecipeError:
        pass
    return render.notice_html(f"Published to {url}", "ok")


def build(ws: Any, tab: gr.Tab) -> None:
    from capyui.tabs import argilla  # reviews pulled from Argilla, live-pull state

    argilla.build_results_line(ws, tab)
    b = ws.recipe.binarize
    with gr.Row():
        strategy = gr.Dropdown(
            STRATEGIES, value=b.get("strategy", "best-vs-worst"), label="Strategy"
        )
        min_margin = gr.Number(label="Min rating margin", value=b.get("min_margin", 0))
        min_chosen = gr.Number(
            label="Min chosen rating (0 = none)", value=b.get("min_chosen_rating") or 0
        )
        drop_null = gr.Checkbox(
            label="Drop rows with a null rating", value=bool(b.get("drop_null_ratings"))
        )
        max_turns = gr.Number(
            label="Max user turns (0 = any)", value=b.get("max_turns") or 0, precision=0
        )
    options = [strategy, min_margin, min_chosen, drop_null, max_turns]
    with gr.Row():
        preview_btn = gr.Button("Preview", elem_id="cu-preview")
        save_btn = gr.Button("Save options to recipe")
    counts = gr.HTML(js_on_load=None, elem_id="cu-bin-counts")
    summary = gr.JSON(visible=False)
    with gr.Row():
        hist = gr.BarPlot(
            x="rating",
            y="count",
            color="model",
            title="AI rating distribution",
            x_title="rating",
            y_title="candidates",
            height=260,
        )
        mean = gr.BarPlot(
            x="model", y="mean_rating", title="Mean AI rating per model", y_lim=[0, 5], height=260
        )
        win = gr.BarPlot(
            x="model",
            y="win_rate",
            title="Win rate per model (chosen share)",
            y_lim=[0, 1],
            height=260,
        )
    agreement = gr.HTML(js_on_load=None)
    gr.Markdown("#### Pairs (first few)")
    pairs = gr.HTML(js_on_load=None, elem_id="cu-pairs")
    outputs = [counts, pairs, summary, hist, mean, win, agreement]
    preview_btn.click(lambda *a: preview(ws, *a), options, outputs, api_name="binarize_preview")
    for comp in options:
        comp.change(
            lambda *a: preview(ws, *a),
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
        export_btn = gr.Button("Export", variant="primary", elem_id="cu-export")
    files = gr.File(
        label="Exported files", file_count="multiple", interactive=False, elem_id="cu-files"
    )
    export_status = gr.HTML(js_on_load=None, elem_id="cu-export-status")
    export_paths = gr.JSON(visible=False)
    export_btn.click(
        lambda f, *a: export(ws, f, *a),
        [formats, *options],
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
        publish_btn = gr.Button("Publish")
    publish_status = gr.HTML(js_on_load=None)

    def do_publish(repo: str, priv: bool, oauth: gr.OAuthToken | None) -> str:
        return publish(ws, repo, priv, oauth)

    publish_btn.click(do_publish, [repo_id, private], publish_status, api_name="publish")
    tab.select(lambda *a: preview(ws, *a), options, outputs, show_progress="hidden")

    from capyui.tabs import arena  # pairwise verdicts and rankings (issue 14)

    arena.results_panel(ws)
