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
from capyui.guard import current_actor
from capyui.tabs import cost
from pipelines.service import ServiceError, WorkspaceService

STAGE_CHOICES = ["load", "generate", "judge"]
RESUMABLE = ("interrupted", "cancelled", "failed", "paused")  # paused: by the budget


def _fmt_eta(eta: float | None) -> str:
    if eta is None:
        return "—"
    eta = int(eta)
    return f"{eta // 60}m{eta % 60:02d}s" if eta >= 60 else f"{eta}s"


def _fmt_s(seconds: float | None) -> str:
    return _fmt_eta(seconds) if seconds is not None else "—"


def eta_text(p: dict[str, Any]) -> str:
    """The ETA cell: 'done' when nothing remains, 'estimating…' until a row finished in this
    run (never "0s" while work remains), else the estimate from the live rate."""
    remaining = max(int(p.get("total", 0)) - int(p.get("done", 0)) - int(p.get("failed", 0)), 0)
    if remaining == 0:
        return "done"
    eta = p.get("eta_s")
    if eta is None or eta <= 0:
        return "estimating…" if p.get("active") else "—"
    return _fmt_eta(eta)


def rate_text(p: dict[str, Any]) -> str:
    parts = []
    per_min = float(p.get("rows_per_min") or 0)
    if per_min > 0:
        parts.append(f"{per_min:.1f} rows/min" if per_min < 60 else f"{per_min / 60:.1f} rows/s")
    tps = float(p.get("tokens_per_s") or 0)
    if tps > 0:
        parts.append(f"out {tps:.1f} tok/s")  # completion tokens, as "out" in the live table
    return " · ".join(parts) or "—"


def activity_text(p: dict[str, Any]) -> str:
    """The heartbeat: what the stage is doing right now."""
    if not p.get("active"):
        msg = str(p.get("message") or "")
        return "" if msg == "starting" else msg
    since = p.get("since_update_s")
    if since is not None and since >= 3:
        return f"working: waiting on the model, last row {_fmt_s(since)} ago"
    msg = str(p.get("message") or "")
    return "working" + (f": {msg}" if msg and msg != "starting" else "")


def stage_rows(progress: dict[str, dict[str, Any]]) -> str:
    """One row per stage: a done/total bar, failures, live rate, ETA, elapsed, activity."""
    rows = []
    for stage, p in progress.items():
        bar = render.progress_bar_html(int(p.get("done", 0)), int(p.get("total", 0)), stage)
        pulse = '<span class="cu-pulse" title="working"></span>' if p.get("active") else ""
        cells = [
            f"<td>{render.esc(stage)}</td>",
            f'<td class="cu-stage-bar">{bar}</td>',
            f"<td>{render.esc(p.get('failed', 0))}</td>",
            f"<td>{render.esc(rate_text(p))}</td>",
            f'<td class="cu-eta">{render.esc(eta_text(p))}</td>',
            f"<td>{render.esc(_fmt_s(p.get('elapsed_s')))}</td>",
            f'<td class="cu-activity">{pulse}{render.esc(render.one_line(activity_text(p), 160))}'
            "</td>",
        ]
        rows.append(f'<tr data-stage="{render.esc(stage)}">{"".join(cells)}</tr>')
    head = "".join(
        f"<th>{h}</th>" for h in ("stage", "progress", "failed", "rate", "ETA", "elapsed", "now")
    )
    return (
        f'<table class="cu-table cu-stages"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


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
    limit = snap.get("limit")
    head = render.notice_html(
        f"Job '{snap['name']}' ({', '.join(snap['stages'])}): {snap['status']}"
        + (f" — stage {snap['current_stage']}" if snap.get("current_stage") else "")
        + (f" · limit {limit} conversation(s)" if limit else ""),
        kind,
    )
    progress = snap.get("progress") or {}
    table = stage_rows(progress) if progress else ""
    err = render.error_html(snap["error"]) if snap.get("error") else ""
    return head + table + err


def snapshot(ws: WorkspaceService) -> dict[str, Any] | None:
    return ws.job_snapshot(current_actor())


def stages_of(kind: str) -> list[str]:
    """Stages of a stored job from its kind (``name:stage,stage``)."""
    _, _, stages = kind.partition(":")
    return [s for s in stages.split(",") if s in STAGE_CHOICES]


def _progress_line(counters: dict[str, Any]) -> str:
    return ", ".join(
        f"{s} {c.get('done', '?')}/{c.get('total', '?')}"
        for s, c in (counters or {}).items()
        if isinstance(c, dict) and "total" in c
    )


def history(ws: WorkspaceService, snap: dict[str, Any] | None = None) -> tuple[str, Any]:
    """The jobs table. The running job's row shows the same live counters as the stage table
    above it (``snap``), not the store's copy, which is written at most once a second."""
    jobs = ws.job_history(current_actor(), 20)
    rows = []
    for j in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["started_at"]))
        counters = j.get("counters") or {}
        status = j["status"]
        if snap is not None and snap.get("job_id") == j["job_id"]:
            counters = snap.get("progress") or counters
            status = snap.get("status") or status
        limit = j.get("run_limit")
        rows.append(
            (
                j["job_id"],
                j["kind"],
                status,
                started,
                "all" if not limit else limit,
                _progress_line(counters),
                render.one_line(j.get("last_error") or ""),
            )
        )
    resumable = [j["job_id"] for j in jobs if j["status"] in RESUMABLE and stages_of(j["kind"])]
    table = render.table_html(
        ["job", "kind", "status", "started", "limit", "progress", "error"], rows
    )
    return table, gr.update(choices=resumable, value=resumable[0] if resumable else None)


def _limit(limit: float | None) -> int | None:
    return int(limit) if limit and limit >= 1 else None


def _start(
    ws: WorkspaceService, stages: list[str], limit: float | None, name: str
) -> tuple[str, str]:
    stages = [s for s in STAGE_CHOICES if s in (stages or [])]
    try:
        ws.start_job(current_actor(), stages, limit=_limit(limit), name=name)
    except ServiceError as exc:
        return "", render.notice_html(str(exc), "error")
    n = _limit(limit)
    return "", render.notice_html(
        f"Started {', '.join(stages)}"
        + (f" on the first {n} conversation(s)." if n else " on every conversation."),
        "ok",
    )


def poll(ws: WorkspaceService) -> tuple[str, dict[str, Any], Any, str, Any, Any, Any]:
    """Everything the Run tab shows, from one snapshot of the current job."""
    snap = snapshot(ws)
    running = snap is not None and snap["status"] in ("running", "cancelling", "starting")
    table, pick = history(ws, snap)
    live = cost.live_usage_of(ws, snap)  # issue 14a: tokens, throughput, ETA, cost so far
    if snap is not None and live is not None:
        snap = {**snap, "usage": live.as_dict()}
    return (
        status_html(snap) + cost.live_html(live),
        snap or {},
        gr.Timer(active=running),
        table,
        pick,
        gr.update(interactive=not running),  # Start
        gr.update(interactive=running),  # Cancel…
    )


def build(ws: WorkspaceService, tab: gr.Tab, demo: gr.Blocks) -> None:
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
        cancel_btn = gr.Button(
            "Cancel job…", variant="stop", elem_id="cu-cancel", interactive=False
        )
    with gr.Row(visible=False, elem_classes=["cu-confirm"]) as confirm_row:
        gr.HTML(
            render.notice_html(
                "Stop the running job? Finished rows are kept; Resume continues later.", "warn"
            ),
            js_on_load=None,
        )
        yes_btn = gr.Button("Yes, cancel the job", variant="stop", scale=0, elem_id="cu-cancel-yes")
        keep_btn = gr.Button("Keep running", scale=0, elem_id="cu-cancel-keep")
    message = gr.HTML(js_on_load=None, elem_id="cu-run-message")
    status = gr.HTML(status_html(snapshot(ws)), js_on_load=None, elem_id="cu-job-status")
    status_json = gr.JSON(visible=False)
    refresh_btn = gr.Button("Refresh", size="sm")
    timer = gr.Timer(1.0, active=False)
    gr.Markdown("#### Jobs in this workspace")
    table0, pick0 = history(ws)
    jobs_table = gr.HTML(table0, js_on_load=None, elem_id="cu-jobs")
    with gr.Row():
        resume_pick = gr.Dropdown(label="Interrupted / cancelled job", **_dd(pick0))
        resume_btn = gr.Button("Resume", elem_id="cu-resume")
    gr.Markdown(
        "Resume runs the picked job's own stages with its own limit again; only what is "
        "missing is done.",
        elem_classes=["cu-muted"],
    )

    poll_outputs = [status, status_json, timer, jobs_table, resume_pick, start_btn, cancel_btn]

    def start(stages_: list[str], limit_: float | None) -> tuple[str, str]:
        return _start(ws, stages_, limit_, "ui")

    def resume(job_id: str | None, limit_: float | None) -> tuple[str, str]:
        # the job's own stored limit and stages; the Limit box only for jobs recorded before
        # limits were stored (their run_limit is unknown)
        job = ws.job(current_actor(), job_id) if job_id else None
        if job is None:
            return "", render.notice_html("Pick a job to resume.", "error")
        stored = job.get("run_limit")
        return _start(ws, stages_of(job["kind"]), stored if stored else limit_, "ui-resume")

    def cancel() -> tuple[str, Any]:
        if ws.cancel_job(current_actor()):
            return render.notice_html(
                "Cancelling: the job stops after the requests in flight.", "warn"
            ), gr.update(visible=False)
        return render.notice_html("No job is running.", "info"), gr.update(visible=False)

    # Start greys out at once in the browser (no double start), the poll keeps it so
    start_btn.click(
        lambda: gr.update(interactive=False), None, start_btn, queue=False, show_progress="hidden"
    )
    start_btn.click(start, [stages, limit], [status, message], api_name="start_job").then(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden"
    )
    resume_btn.click(resume, [resume_pick, limit], [status, message], api_name="resume_job").then(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden"
    )
    # Cancel asks first
    cancel_btn.click(
        lambda: gr.update(visible=True), None, confirm_row, queue=False, show_progress="hidden"
    )
    keep_btn.click(
        lambda: gr.update(visible=False), None, confirm_row, queue=False, show_progress="hidden"
    )
    yes_btn.click(cancel, None, [message, confirm_row], api_name="cancel_job").then(
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

    cost.build(ws, limit)  # tokens, cost and the dry run (issue 14)


def _dd(update: dict[str, Any]) -> dict[str, Any]:
    return {"choices": update.get("choices") or [], "value": update.get("value")}
