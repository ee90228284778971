"""Run tab: start, cancel and resume generation and judging as background jobs.

Jobs run in a worker thread of the server (``pipelines.jobs.JobManager``), so they keep going
when the browser tab closes; the page polls their progress with a ``gr.Timer`` that is active
only while a job runs. A job that was cut short (app restart, cancel) is resumed by starting
the same stages again: the engine does only what is missing."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from capyui import render

STAGE_CHOICES = ["load", "generate", "judge"]
RESUMABLE = ("interrupted", "cancelled", "failed", "paused")  # paused: by the budget


def _fmt_eta(eta: float | None) -> str:
    if eta is None:
        return "—"
    eta = int(eta)
    return f"{eta // 60}m{eta % 60:02d}s" if eta >= 60 else f"{eta}s"


def status_html(snap: dict[str, Any] | None) -> str:
    if snap is None:
        return render.notice_html("No job started in this session of the app.", "info")
    kind = {
        "running": "info",
        "cancelling": "warn",
        "done": "ok",
        "failed": "error",
        "cancelled": "warn",
        "paused": "warn",
    }.get(snap["status"], "info")
    head = render.notice_html(
        f"Job '{snap['name']}' ({', '.join(snap['stages'])}): {snap['status']}"
        + (f" — stage {snap['current_stage']}" if snap.get("current_stage") else ""),
        kind,
    )
    rows = []
    for stage, p in snap.get("progress", {}).items():
        rows.append(
            (
                stage,
                f"{p.get('done', 0)}/{p.get('total', 0)}",
                p.get("failed", 0),
                p.get("tokens_per_s", 0),
                _fmt_eta(p.get("eta_s")),
                p.get("elapsed_s", 0),
                p.get("message", ""),
            )
        )
    table = (
        render.table_html(
            ["stage", "done/total", "failed", "tokens/s", "ETA", "elapsed s", "last message"], rows
        )
        if rows
        else ""
    )
    err = render.notice_html(snap["error"], "error") if snap.get("error") else ""
    return head + table + err


def snapshot(ws: Any) -> dict[str, Any] | None:
    h = ws.jobs.current
    return None if h is None else h.snapshot()


def stages_of(kind: str) -> list[str]:
    """Stages of a stored job from its kind (``name:stage,stage``)."""
    _, _, stages = kind.partition(":")
    return [s for s in stages.split(",") if s in STAGE_CHOICES]


def history(ws: Any) -> tuple[str, Any]:
    jobs = ws.store.jobs(limit=20)
    rows = []
    for j in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["started_at"]))
        done = ", ".join(
            f"{s} {c.get('done', '?')}/{c.get('total', '?')}"
            for s, c in (j.get("counters") or {}).items()
            if isinstance(c, dict) and "total" in c
        )
        rows.append((j["job_id"], j["kind"], j["status"], started, done, j.get("last_error") or ""))
    resumable = [j["job_id"] for j in jobs if j["status"] in RESUMABLE and stages_of(j["kind"])]
    table = render.table_html(["job", "kind", "status", "started", "progress", "error"], rows)
    return table, gr.update(choices=resumable, value=resumable[0] if resumable else None)


def _limit(limit: float | None) -> int | None:
    return int(limit) if limit and limit >= 1 else None


def _start(ws: Any, stages: list[str], limit: float | None, name: str) -> tuple[str, str]:
    stages = [s for s in STAGE_CHOICES if s in (stages or [])]
    if not stages:
        return "", render.notice_html("Pick at least one stage.", "error")
    if "judge" in stages and ws.recipe.judge is None:
        return "", render.notice_html(
            "The recipe has no judge: add one in the Models tab.", "error"
        )
    try:
        ws.jobs.start(ws.recipe, stages, limit=_limit(limit), name=name)
    except RuntimeError as exc:
        return "", render.notice_html(str(exc), "error")
    return "", render.notice_html(f"Started {', '.join(stages)}.", "ok")


def poll(ws: Any) -> tuple[str, dict[str, Any], Any, str, Any]:
    snap = snapshot(ws)
    running = snap is not None and snap["status"] in ("running", "cancelling", "starting")
    table, pick = history(ws)
    return status_html(snap), snap or {}, gr.Timer(active=running), table, pick


def build(ws: Any, tab: gr.Tab, demo: gr.Blocks) -> None:
    gr.Markdown(
        "Jobs run on the server and keep running if you close this page. Everything finished "
        "is saved as it completes; resuming does only what is missing."
    )
    with gr.Row():
        stages = gr.CheckboxGroup(
            STAGE_CHOICES, value=["load", "generate", "judge"], label="Stages"
        )
        limit = gr.Number(
            label="Limit (conversations; 0 = all)", precision=0, value=0, elem_id="cu-run-limit"
        )
        start_btn = gr.Button("Start", variant="primary", elem_id="cu-start")
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cu-cancel")
    message = gr.HTML(js_on_load=None)
    status = gr.HTML(status_html(snapshot(ws)), js_on_load=None, elem_id="cu-job-status")
    status_json = gr.JSON(visible=False)
    refresh_btn = gr.Button("Refresh", size="sm")
    timer = gr.Timer(1.0, active=False)
    gr.Markdown("#### Jobs in this workspace")
    table0, pick0 = history(ws)
    jobs_table = gr.HTML(table0, js_on_load=None, elem_id="cu-jobs")
    with gr.Row():
        resume_pick = gr.Dropdown(label="Interrupted / cancelled job", **_dd(pick0))
        resume_btn = gr.Button("Resume (same stages, limit above)", elem_id="cu-resume")

    poll_outputs = [status, status_json, timer, jobs_table, resume_pick]

    def start(stages_: list[str], limit_: float | None) -> tuple[str, str]:
        return _start(ws, stages_, limit_, "ui")

    def resume(job_id: str | None, limit_: float | None) -> tuple[str, str]:
        job = next((j for j in ws.store.jobs(limit=200) if j["job_id"] == job_id), None)
        if job is None:
            return "", render.notice_html("Pick a job to resume.", "error")
        return _start(ws, stages_of(job["kind"]), limit_, "ui-resume")

    def cancel() -> str:
        if ws.jobs.cancel():
            return render.notice_html(
                "Cancelling: the job stops after the requests in flight.", "warn"
            )
        return render.notice_html("No job is running.", "info")

    start_btn.click(start, [stages, limit], [status, message], api_name="start_job").then(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden"
    )
    resume_btn.click(resume, [resume_pick, limit], [status, message], api_name="resume_job").then(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden"
    )
    cancel_btn.click(cancel, None, message, api_name="cancel_job").then(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden"
    )
    refresh_btn.click(
        lambda: poll(ws), None, poll_outputs, api_name="job_status", show_progress="hidden"
    )
    timer.tick(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden", api_visibility="private"
    )
    tab.select(lambda: poll(ws), None, poll_outputs, show_progress="hidden")
    demo.load(lambda: poll(ws), None, poll_outputs, show_progress="hidden")

    from capyui.tabs import cost  # tokens, cost and the dry run (issue 14)

    cost.build(ws, limit)


def _dd(update: dict[str, Any]) -> dict[str, Any]:
    return {"choices": update.get("choices") or [], "value": update.get("value")}
