"""Results tab: binarization options with a live preview, statistics plots, download and
publish to the Hugging Face Hub."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from capyui import render
from pipelines.profiles import PROFILES
from pipelines.recipe import MOVED_TO_EXPORT_FILTERS, RecipeError

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


_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()
_warming: set[str] = set()


def compute(ws: Any, options: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """(rows, BinarizeResult, stats) for the recipe's models and judge with ``options``.

    Conversations without a single candidate (never generated) are left out: they are not
    "too few candidates", they are work not done yet (``stats["not_generated"]`` counts them).
    The result is reused while the store and the options are unchanged (``Store.change_marker``),
    so coming back to the Results tab is instant on a large workspace."""
    from pipelines.binarize import BinarizeOptions, binarize, collect
    from pipelines.stats import compute_stats

    recipe = ws.recipe
    opts = BinarizeOptions.model_validate({**recipe.binarize, **options})
    gens = [g.id for g in recipe.generators]
    judge_id = recipe.rating_judge_id()
    key = repr((str(ws.data_dir), opts.model_dump(), gens, judge_id, ws.store.change_marker()))
    with _cache_lock:
        hit = _cache.get(str(ws.data_dir))
        if hit is not None and hit[0] == key:
            return hit[1]
    rows = collect(ws.store, generator_ids=gens, judge_id=judge_id)
    generated = [r for r in rows if r.candidates]
    result = binarize(generated, opts)
    stats = compute_stats(generated, result.pairs, ws.store.reviews())
    stats["not_generated"] = len(rows) - len(generated)
    stats["generator_of"] = {c[2]: c[1] for r in generated for c in r.candidates}
    out = (generated, result, stats)
    with _cache_lock:
        _cache[str(ws.data_dir)] = (key, out)
    return out


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
    return head + dropped + "".join(render.notice_html(n, "info") for n in notes)


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


def plots(stats: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from pipelines.stats import histogram_frame

    gen_of = stats.get("generator_of") or {}
    hist = histogram_frame(stats)
    hist.insert(0, "generator", [short_label(m, gen_of) for m in hist["model"]])
    models = pd.DataFrame.from_records(
        stats.get("models") or [], columns=["model", "mean_rating", "win_rate"]
    )
    models.insert(0, "generator", [short_label(m, gen_of) for m in models["model"]])
    mean = models[["generator", "model", "mean_rating"]].fillna({"mean_rating": 0.0})
    win = models[["generator", "model", "win_rate"]].fillna({"win_rate": 0.0})
    return hist, mean, win


def cached(ws: Any, options: dict[str, Any]) -> bool:
    """True when ``compute(ws, options)`` would answer from the cache (cheap to check)."""
    from pipelines.binarize import BinarizeOptions

    recipe = ws.recipe
    try:
        opts = BinarizeOptions.model_validate({**recipe.binarize, **options})
    except ValueError:
        return True  # an error is instant too
    gens = [g.id for g in recipe.generators]
    judge_id = recipe.rating_judge_id()
    key = repr((str(ws.data_dir), opts.model_dump(), gens, judge_id, ws.store.change_marker()))
    with _cache_lock:
        hit = _cache.get(str(ws.data_dir))
    return hit is not None and hit[0] == key


def warm(ws: Any) -> None:
    """Compute the default preview in a background thread (app start, recipe saved), so the
    first visit of the Results tab finds it ready instead of waiting on a large workspace."""

    key = str(ws.data_dir)
    with _cache_lock:
        if key in _warming:
            return
        _warming.add(key)

    def work() -> None:
        try:
            compute(ws, {})
        except Exception:  # noqa: BLE001 - a bad recipe shows its error on the tab instead
            pass
        finally:
            with _cache_lock:
                _warming.discard(key)

    threading.Thread(target=work, name="capyui-results-warm", daemon=True).start()


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
        counts_html(summary, stats),
        pairs_html(result.pairs),
        summary,
        hist,
        mean,
        win,
        agreement_html(stats) + panel_section(ws),
    ]


def panel_section(ws: Any) -> str:
    """Issue 14: a judge panel's biases and agreement (empty with one judge)."""
    from pipelines.panel import recipe_panel_report

    report = recipe_panel_report(ws.store, ws.recipe)
    return render.panel_html(None if report is None else report.as_dict())


def save_options(ws: Any, *args: Any) -> str:
    opts = _options(*args)

    def change(data: dict[str, Any]) -> None:
        data["binarize"] = {**(data.get("binarize") or {}), **opts}
        for key in ("min_margin", "min_chosen_rating", "drop_null_ratings", "max_turns"):
            if key not in opts:
                data["binarize"].pop(key, None)
        # thresholds are export filters (the build keeps every strictly ordered pair)
        export_section = data.setdefault("export", {})
        export_section["filters"] = {
            k: data["binarize"].pop(k) for k in MOVED_TO_EXPORT_FILTERS if k in data["binarize"]
        }

    try:
        ws.update_recipe(change)
    except RecipeError as exc:
        return render.notice_html(str(exc), "error")
    return render.notice_html("Binarization options saved to the recipe.", "ok")


def export(
    ws: Any, formats: list[str], *args: Any, profile: str | None = None
) -> tuple[Any, str, list[str]]:
    from pipelines.run import binarize_stage, export_stage

    if not formats:
        return None, render.notice_html("Pick at least one format.", "error"), []
    save = save_options(ws, *args)
    if "cu-error" in save:
        return None, save, []

    def change(data: dict[str, Any]) -> None:
        data.setdefault("export", {})["formats"] = formats
        if profile in PROFILES:
            data["export"]["profile"] = profile

    try:
        recipe = ws.update_recipe(change)
        binarized, _ = binarize_stage(recipe, ws.store)
        out = export_stage(recipe, ws.store, binarized)
    except Exception as exc:  # noqa: BLE001 - PublishError and friends: one line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, render.notice_html(f"Export failed: {msg}", "error"), []
    made = sorted(str(p) for p in (Path(out) / "data").glob("train-*"))
    files = downloadable([*made, str(Path(out) / "README.md")])
    return (
        files,
        render.notice_html(f"Exported {len(binarized.pairs)} pair(s) to {out}.", "ok"),
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
    ws: Any,
    repo_id: str,
    private: bool,
    oauth: gr.OAuthToken | None = None,
    replace: bool = False,
) -> str:
    from pipelines.publish import PublishError, push_to_hub
    from pipelines.run import export_dir_for

    repo_id = (repo_id or "").strip()
    if not repo_id:
        return render.notice_html("Enter a dataset repo id (namespace/name).", "error")
    recipe = ws.recipe
    out = export_dir_for(recipe, ws.store)
    if not (out / "README.md").is_file():
        return render.notice_html("Export the dataset first (Download section).", "error")
    if os.environ.get("SPACE_ID"):
        # on a Space: the signed-in user's own token, never the Space owner's HF_TOKEN (issue 10)
        token = oauth.token if oauth is not None else None
    else:
        token = oauth.token if oauth is not None else os.environ.get(recipe.publish.token_env)
    if not token:
        where = (
            "Sign in with Hugging Face above"
            if os.environ.get("SPACE_ID")
            else f"Set {recipe.publish.token_env} (a token with write access), then restart the app"
        )
        return render.notice_html(f"No Hugging Face token. {where}.", "error")
    try:
        url = push_to_hub(out, repo_id, token=token, private=bool(private), overwrite=bool(replace))
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
    b = {**ws.recipe.binarize, **ws.recipe.export.filters.active()}
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
    # the preview is usually ready (warmed at start and whenever the recipe changes)
    tab.select(lambda *a: preview(ws, *a), options, outputs, show_progress="hidden")
    warm(ws)
    ws.on_recipe_change(lambda: warm(ws))

    from capyui.tabs import arena  # pairwise verdicts and rankings (issue 14)

    arena.results_panel(ws)
