"""The Run tab's "Tokens and cost" panel (issue 14): tokens and cost so far per stage and model,
and the dry-run projection of what the recipe still has to do against its budget."""

from __future__ import annotations

from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor
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
