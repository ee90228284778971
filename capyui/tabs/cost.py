"""The Run tab's "Tokens and cost" panel (issue 14): tokens and cost so far per stage and model,
and the dry-run projection of what the recipe still has to do against its budget."""

from __future__ import annotations

from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor
from pipelines.cost import LiveUsage
from pipelines.service import WorkspaceService


def cost_html(ws: WorkspaceService, limit: float | None = None) -> str:
    spent, projection = ws.cost(current_actor(), int(limit) if limit else None)
    proj = projection.as_dict()

    def money(row: dict[str, Any]) -> str:
        return f"${row['usd']:.4f}" if row["priced"] else "no price"

    parts = ["<h4>So far</h4>"]
    if spent:
        parts.append(
            render.table_html(
                ["stage", "model", "rows", "prompt tokens", "completion tokens", "cost"],
                [
                    (
                        r["stage"],
                        f"{r['model']} ({r['id']})",
                        r["rows"],
                        r["prompt_tokens"],
                        r["completion_tokens"],
                        money(r),
                    )
                    for r in spent
                ],
            )
        )
    else:
        parts.append(render.notice_html("Nothing generated or judged yet.", "info"))
    parts.append("<h4>Still to do (dry run)</h4>")
    if proj["rows"]:
        parts.append(
            render.table_html(
                ["stage", "model", "requests", "prompt tokens", "completion tokens", "cost", "how"],
                [
                    (
                        r["stage"],
                        f"{r['model']} ({r['id']})",
                        r["requests"],
                        r["prompt_tokens"],
                        r["completion_tokens"],
                        money(r),
                        f"prompt: {r['tokens_by']}; completion: {r['completion_by']}",
                    )
                    for r in proj["rows"]
                ],
            )
        )
    else:
        parts.append(render.notice_html("Nothing left to generate or judge.", "info"))
    summary = (
        f"Spent ${proj['spent_usd']:.4f} ({proj['spent_tokens']} tokens) · projected "
        f"${proj['projected_usd']:.4f} ({proj['projected_tokens']} tokens) · total "
        f"${proj['total_usd']:.4f}"
    )
    kind = "info"
    if "budget" in proj:
        fits = proj["fits_budget"]
        summary += f" · budget {proj['budget']}: " + (
            "fits" if fits else "does not fit: the job will pause when it is reached"
        )
        kind = "ok" if fits else "warn"
    parts.append(render.notice_html(summary, kind))
    return "".join(parts)


def build(ws: WorkspaceService, limit: Any) -> None:
    """An accordion under the Run tab's controls; ``limit`` is the tab's row-limit input."""
    with gr.Accordion("Tokens and cost (prices and budget in the recipe)", open=False):
        out = gr.HTML(js_on_load=None, elem_id="cu-cost")
        btn = gr.Button("Refresh / dry run", elem_id="cu-cost-refresh")
    btn.click(lambda lim: cost_html(ws, lim), [limit], out, api_name="cost")


# -- live counters of the running job (issue 14a) -------------------------------------------------
def _rate(x: float, unit: str) -> str:
    return f"{x:,.1f} {unit}/s" if x >= 0.1 or x == 0 else f"{x * 60:,.2f} {unit}/min"


def _eta(eta: float | None) -> str:
    if eta is None:
        return "estimating…"
    if eta <= 0:
        return "done"
    eta_i = int(eta)
    return f"{eta_i // 60}m{eta_i % 60:02d}s" if eta_i >= 60 else f"{eta_i}s"


def live_usage_of(ws: WorkspaceService, snap: dict[str, Any] | None) -> LiveUsage | None:
    """The job's live counters (None before any job of this app session)."""
    return ws.live_usage(current_actor(), snap)


def live_html(live: LiveUsage | None) -> str:
    """Tokens per model, throughput, ETA and cost so far of the job, for the progress area."""
    if live is None:
        return ""
    priced = live.priced
    # a rate over the whole job (since it started), where the stage table above measures each
    # stage over its own time: the header says which
    head = [
        "stage",
        "model",
        "requests",
        "prompt tokens",
        "completion tokens",
        "tokens/s over the job",
    ]
    rows: list[tuple[Any, ...]] = []
    for m in live.models:
        row: tuple[Any, ...] = (
            m.stage,
            f"{m.model} ({m.id})",
            m.requests,
            f"{m.prompt_tokens:,}",
            f"{m.completion_tokens:,}",
            f"{_rate(m.tokens_per_s, 'tok')} · out {_rate(m.completion_tokens_per_s, 'tok')}",
        )
        if priced:
            row = (*row, "no price" if m.usd is None else f"${m.usd:.4f}")
        rows.append(row)
    if priced:
        head.append("cost so far")
    stages = " · ".join(  # the stages still working (a finished one has nothing to estimate)
        f"{s.stage}: {s.done}/{s.total} rows, {_rate(s.rows_per_s, 'rows')}, ETA {_eta(s.eta_s)}"
        for s in live.stages
        if s.eta_s != 0.0
    )
    secs = int(live.elapsed_s)
    took = f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"
    summary = f"This job: {live.tokens:,} tokens in {took}"
    if priced:
        summary += f", ${live.usd:.4f}"
    summary += f" · workspace so far: {live.workspace_tokens:,} tokens"
    if priced or live.workspace_usd:
        summary += f", ${live.workspace_usd:.4f}"
    if live.budget:
        summary += f" · budget {live.budget}"
    table = (
        render.table_html(head, rows)
        if rows
        else render.notice_html("No tokens reported yet in this job.", "info")
    )
    line = f'<div class="cu-muted">{render.esc(stages)}</div>' if stages else ""
    return (
        '<div id="cu-live-usage"><h4>Tokens, throughput and cost '
        + ("(live)" if live.running else "of the last job")
        + "</h4>"
        + table
        + line
        + render.notice_html(summary, "info")
        + "</div>"
    )
