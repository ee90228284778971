"""The Models tab's judge panel: several judges rate every conversation and their aggregate is
the AI rating (``judges:`` + ``panel:`` of the recipe, pipelines/panel.py).

Thin wiring over the workspace service: the tab keeps the panel being edited (server-side
``gr.State``), adds judges the service builds from the owner's endpoint registry (a key is the
registry's variable, never typed), and saves the whole panel with ``save_judge_panel``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor
from pipelines.panel import AGGREGATES
from pipelines.service import JudgePanelView, PanelJudge, ServiceError, WorkspaceService

HEADERS = ["#", "id", "endpoint", "model", "base URL", "key (env var)"]
EXPLAIN = (
    "Several judges rate every conversation; the panel's aggregate (mean, median or "
    "majority of their ratings) is the AI rating binarization uses. Judges run on the owner's "
    "registered endpoints (their key stays in the registry's variable), the embedded model, or "
    "a URL without a key. A panel of one judge is the recipe's single judge."
)


def _key_text(var: str | None, shown: set[str]) -> str:
    if not var:
        return "—"
    if var in shown or "*" in shown:  # set / not set: only owners, only registry variables
        return f"{var} ({'set' if os.environ.get(var) else 'NOT set'})"
    return var


def panel_html(judges: list[PanelJudge], aggregate: str, panel_id: str) -> str:
    """The panel being edited: one row per judge, and what the list amounts to."""
    from capyui.tabs.models import _shown_env_names

    if not judges:
        return render.notice_html(
            "No judge yet: add judges below (at least one), then save the panel.", "warn"
        )
    shown = _shown_env_names()
    rows = [
        (
            i + 1,
            j.id,
            j.endpoint or ("in process" if not j.urls else "not registered"),
            j.model or "—",
            ", ".join(j.urls) or "—",
            _key_text(j.api_key_env, shown),
        )
        for i, j in enumerate(judges)
    ]
    if len(judges) == 1:
        note = render.notice_html(
            f"One judge: '{judges[0].id}' is the recipe's judge (no panel). Add another judge "
            "to rate with a panel.",
            "info",
        )
    else:
        note = render.notice_html(
            f"Panel of {len(judges)} judges: the {aggregate} of their ratings is the AI rating "
            f"(stored as judge '{panel_id}').",
            "info",
        )
    return render.table_html(HEADERS, rows) + note


def _remove_choices(judges: list[PanelJudge]) -> Any:
    return gr.update(choices=[j.id for j in judges], value=None)


def open_panel(ws: WorkspaceService) -> tuple[Any, ...]:
    """The recipe's panel as saved: (draft, table, aggregate, min judges, panel id, remove
    picker, status)."""
    view: JudgePanelView = ws.judge_panel(current_actor())
    return (
        view.judges,
        panel_html(view.judges, view.aggregate, view.panel_id),
        view.aggregate,
        view.min_judges,
        view.panel_id,
        _remove_choices(view.judges),
        "",
    )


def endpoint_choices(ws: WorkspaceService) -> Any:
    """The endpoint picker: the owner's registry, the embedded model, another URL."""
    try:
        eps = ws.panel_endpoints(current_actor())
    except ServiceError as exc:
        return gr.update(choices=[], value=None, info=str(exc))
    return gr.update(choices=[(e.label, e.id) for e in eps], value=None)


def on_endpoint(ws: WorkspaceService, endpoint: str | None) -> tuple[Any, Any]:
    """The models the picked endpoint allows (any, typed, when it lists none) and the URL box
    for another URL."""
    eps = {e.id: e for e in ws.panel_endpoints(current_actor())}
    ep = eps.get(endpoint or "")
    models = list(ep.models) if ep is not None else []
    return (
        gr.update(choices=models, value=models[0] if len(models) == 1 else None),
        gr.update(visible=endpoint == "url"),
    )


def add_judge(
    ws: WorkspaceService,
    draft: list[PanelJudge] | None,
    aggregate: str,
    panel_id: str,
    endpoint: str | None,
    model: str | None,
    judge_id: str | None,
    base_url: str | None,
) -> tuple[Any, ...]:
    """(draft, table, remove picker, status, judge id box)."""
    judges = list(draft or [])
    try:
        judge = ws.new_panel_judge(
            current_actor(),
            endpoint or "",
            model or "",
            judge_id or "",
            base_url=base_url or "",
            taken=[j.id for j in judges],
        )
    except ServiceError as exc:
        return (
            judges,
            gr.skip(),
            gr.skip(),
            render.notice_html(str(exc), "error"),
            gr.skip(),
        )
    judges.append(judge)
    return (
        judges,
        panel_html(judges, aggregate, panel_id),
        _remove_choices(judges),
        render.notice_html(f"Added judge '{judge.id}': press Save panel to keep it.", "info"),
        "",
    )


def remove_judge(
    draft: list[PanelJudge] | None, aggregate: str, panel_id: str, judge_id: str | None
) -> tuple[Any, ...]:
    """(draft, table, remove picker, status)."""
    judges = list(draft or [])
    if not judge_id or judge_id not in {j.id for j in judges}:
        return judges, gr.skip(), gr.skip(), render.notice_html("Pick a judge to remove.", "error")
    judges = [j for j in judges if j.id != judge_id]
    return (
        judges,
        panel_html(judges, aggregate, panel_id),
        _remove_choices(judges),
        render.notice_html(f"Removed judge '{judge_id}': press Save panel to keep it.", "info"),
    )


def save_panel(
    ws: WorkspaceService,
    draft: list[PanelJudge] | None,
    aggregate: str,
    min_judges: float | None,
    panel_id: str,
) -> tuple[Any, ...]:
    """(draft, table, remove picker, status, models table, model picker)."""
    from capyui.tabs.models import _choices, models_html

    try:
        view = ws.save_judge_panel(
            current_actor(),
            list(draft or []),
            aggregate=aggregate,
            panel_id=panel_id,
            min_judges=min_judges,
        )
    except ServiceError as exc:
        error = render.notice_html(str(exc), "error")
        return (draft or [], gr.skip(), gr.skip(), error, gr.skip(), gr.skip())
    n = len(view.judges)
    done = (
        f"Saved the panel: {n} judges, {view.aggregate} as '{view.panel_id}'."
        if view.is_panel
        else f"Saved: one judge ('{view.judges[0].id}'), no panel."
    )
    return (
        view.judges,
        panel_html(view.judges, view.aggregate, view.panel_id),
        _remove_choices(view.judges),
        render.notice_html(done, "ok"),
        models_html(ws),
        gr.update(choices=_choices(ws)),
    )


def build(
    ws: WorkspaceService, tab: gr.Tab, models_table: gr.HTML, pick: gr.Dropdown
) -> tuple[Callable[[], tuple[Any, ...]], list[Any]]:
    """The panel section, shown as the recipe has it whenever the tab opens; returns (refresh
    function, its outputs) for the events that change the recipe's judges elsewhere."""
    gr.Markdown("#### Judge panel (several judges)")
    gr.Markdown(EXPLAIN)
    draft = gr.State([])
    table = gr.HTML(js_on_load=None, elem_id="cu-panel")
    with gr.Row():
        remove_pick = gr.Dropdown(
            [], label="Panel judge", value=None, scale=2, elem_id="cu-panel-rm"
        )
        remove_btn = gr.Button("Remove judge", scale=1, elem_id="cu-panel-remove")
        gr.HTML("", js_on_load=None, scale=3, padding=False)  # keeps the pair narrow
    gr.Markdown("**Add a judge**")
    with gr.Row():
        endpoint = gr.Dropdown(
            [], label="Endpoint", value=None, scale=3, elem_id="cu-panel-endpoint"
        )
        model = gr.Dropdown(
            [],
            label="Judge model",
            value=None,
            allow_custom_value=True,
            scale=2,
            elem_id="cu-panel-model",
        )
        judge_id = gr.Textbox(
            label="Judge id",
            placeholder="default: the model's name",
            scale=2,
            elem_id="cu-panel-id",
        )
        add_btn = gr.Button("Add judge", scale=1, elem_id="cu-panel-add")
    base_url = gr.Textbox(
        label="Base URL (OpenAI-compatible server; no key is sent to it)",
        placeholder="http://127.0.0.1:8000/v1",
        visible=False,
        elem_id="cu-panel-url",
    )
    gr.Markdown("**How their ratings become one**")
    with gr.Row():
        aggregate = gr.Radio(
            list(AGGREGATES), value="mean", label="Aggregate", scale=2, elem_id="cu-panel-agg"
        )
        min_judges = gr.Number(
            label="Min judges (empty: all)",
            value=None,
            precision=0,
            minimum=1,
            scale=1,
            elem_id="cu-panel-min",
        )
        panel_id = gr.Textbox(
            label="Panel id (the aggregate's judge id)", value="panel", scale=1, elem_id="cu-pid"
        )
        save_btn = gr.Button("Save panel", variant="primary", scale=1, elem_id="cu-panel-save")
    status = gr.HTML(js_on_load=None, elem_id="cu-panel-status")

    outputs = [draft, table, aggregate, min_judges, panel_id, remove_pick, status]

    # the table's summary follows the settings as they are edited
    for setting in (aggregate.input, panel_id.blur):
        setting(
            lambda d, a, p: panel_html(list(d or []), a or "mean", p or "panel"),
            [draft, aggregate, panel_id],
            table,
            queue=False,
            show_progress="hidden",
        )
    endpoint.input(
        lambda e: on_endpoint(ws, e),
        endpoint,
        [model, base_url],
        queue=False,
        show_progress="hidden",
    )
    add_btn.click(
        lambda *a: add_judge(ws, *a),
        [draft, aggregate, panel_id, endpoint, model, judge_id, base_url],
        [draft, table, remove_pick, status, judge_id],
        api_name="panel_add",
    )
    remove_btn.click(
        lambda *a: remove_judge(*a),
        [draft, aggregate, panel_id, remove_pick],
        [draft, table, remove_pick, status],
        queue=False,
        show_progress="hidden",
    )
    save_btn.click(
        lambda *a: save_panel(ws, *a),
        [draft, aggregate, min_judges, panel_id],
        [draft, table, remove_pick, status, models_table, pick],
        api_name="save_panel",
    )
    tab.select(lambda: open_panel(ws), None, outputs, queue=False, show_progress="hidden")
    # the registry's entries: owners only (the service refuses others; the guard then shows
    # nothing)
    tab.select(lambda: endpoint_choices(ws), None, endpoint, queue=False, show_progress="hidden")
    return (lambda: open_panel(ws)), outputs
