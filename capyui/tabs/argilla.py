"""Argilla panel (in the Review tab; a status line in Results): human review in Argilla.

The connection comes from the recipe's ``argilla:`` section and is edited here: the API URL
(or the NAME of the env var holding it), the NAME of the env var holding the API key (never a
key: there is no key field, and a value that looks like one is refused), workspace, dataset,
task distribution and candidate slots. "Save to recipe" writes the section into the workspace
recipe, so an exported recipe run with ``capyui run --stages push-argilla,pull-argilla`` does
the same as the buttons.

* Check connection: ``ArgillaQueue.status()`` in one line, with the dataset's counts and a
  link to it in Argilla's web UI.
* Push: a background job (the workspace's ``JobManager``, so the Run tab shows it too) pushing
  the selected conversations; a ``gr.Timer`` polls it while it runs.
* Pull now: the humans' submitted / discarded responses into the store's reviews.
* Live: a background pull every ``pull_interval_s`` (``start_background_pull``), so the Results
  tab always binarizes with the latest human work.

Every error (unreachable server, bad key, incompatible dataset, invalid settings) is one line.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
from pydantic import ValidationError

from capyui import render
from capyui.guard import current_actor
from pipelines.argilla_queue import (
    DEFAULT_PAIR_REASONS,
    STAGE_PUSH,
    ArgillaConfig,
    BackgroundPull,
)
from pipelines.pairwise import REASONS
from pipelines.recipe import RecipeError
from pipelines.service import ARGILLA_PUSH_JOB, ServiceError, WorkspaceService

SELECT_CHOICES = [
    ("All judged conversations", "all"),
    ("AI ties", "ties"),
    ("Low AI confidence", "low_confidence"),
    ("Judges disagree (a judge panel)", "judges_disagree"),
]
JOB_NAME = ARGILLA_PUSH_JOB
# issue 14a: what the dataset holds: every candidate rated, or the Arena's pairs (A / B)
MODE_CHOICES = [
    ("Ratings: every candidate of a conversation, 1-5", "ratings"),
    ("Pairs: two candidates, A / B / tie / both bad (the Arena)", "pairs"),
]


def _select_label(select: str | list[str]) -> str:
    """The push selection as the UI names it (a list of conversation ids: how many)."""
    if isinstance(select, str):
        return dict((v, k) for k, v in SELECT_CHOICES).get(select, select)
    return f"{len(select)} chosen conversation(s)"


# ---------------------------------------------------------------------------------------------
# settings <-> recipe
# ---------------------------------------------------------------------------------------------
def settings_of(ws: WorkspaceService) -> list[Any]:
    """The panel's inputs from the recipe's ``argilla:`` section (defaults when absent)."""
    c = ws.recipe.argilla or ArgillaConfig()
    select = c.select if isinstance(c.select, str) else "all"
    return [
        c.api_url or "",
        c.api_url_env,
        c.api_key_env,
        c.workspace,
        c.pairs_dataset_name if c.mode == "pairs" else c.dataset_name,
        c.min_submitted,
        c.max_candidates,
        select,
        c.pull_interval_s,
    ]


def pairs_settings_of(ws: WorkspaceService) -> list[Any]:
    """The panel's mode and pair selections from the recipe (issue 14a)."""
    c = ws.recipe.argilla or ArgillaConfig()
    return [c.mode, list(c.pair_reasons)]


def dataset_for_mode(ws: WorkspaceService, mode: str | None) -> str:
    """The dataset name the recipe gives the chosen mode (its own dataset per mode)."""
    c = ws.recipe.argilla or ArgillaConfig()
    return c.pairs_dataset_name if mode == "pairs" else c.dataset_name


def config_from(
    ws: WorkspaceService,
    url: str | None,
    url_env: str | None,
    key_env: str | None,
    workspace: str | None,
    dataset: str | None,
    min_submitted: float | None,
    max_candidates: float | None,
    select: str | None,
    interval: float | None,
    mode: str | None = None,
    reasons: list[str] | None = None,
) -> ArgillaConfig:
    """The recipe's section with the panel's values on top. Raises ValueError (one line).
    ``mode`` pairs: the Dataset box names the dataset of pairs, ``reasons`` its selections."""
    base = ws.recipe.argilla or ArgillaConfig()
    data = base.model_dump()
    mode = mode or base.mode
    data.update(
        {
            "api_url": (url or "").strip() or None,
            "api_url_env": (url_env or "").strip() or "ARGILLA_API_URL",
            "api_key_env": (key_env or "").strip(),
            "workspace": (workspace or "").strip(),
            "mode": mode,
            ("pairs_dataset_name" if mode == "pairs" else "dataset_name"): (dataset or "").strip(),
            "min_submitted": int(min_submitted) if min_submitted is not None else 1,
            "max_candidates": int(max_candidates) if max_candidates is not None else 4,
            "select": select or "all",
            "pull_interval_s": float(interval) if interval else base.pull_interval_s,
        }
    )
    if reasons is not None:
        if not reasons:
            raise ValueError("pick at least one kind of pair to push")
        data["pair_reasons"] = [r for r in REASONS if r in reasons] or list(DEFAULT_PAIR_REASONS)
    if data["api_url"] and not data["api_url"].startswith(("http://", "https://")):
        raise ValueError("API URL: must start with http:// or https://")
    try:
        return ArgillaConfig.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:2]:  # never the input value: it may be a pasted secret
            where = ".".join(str(p) for p in err["loc"]) or "argilla"
            parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("invalid Argilla settings: " + "; ".join(parts)) from None


def save_settings(ws: WorkspaceService, *settings: Any) -> str:
    try:
        cfg = config_from(ws, *settings)
    except ValueError as exc:
        return render.notice_html(str(exc), "error")

    def change(data: dict[str, Any]) -> None:
        data["argilla"] = cfg.model_dump(mode="json", exclude_none=True)

    try:
        ws.change_recipe(current_actor(), "manage_argilla", change)
    except RecipeError as exc:
        return render.notice_html(str(exc), "error")
    name = cfg.pairs_dataset_name if cfg.mode == "pairs" else cfg.dataset_name
    return render.notice_html(
        f"Argilla settings saved to the recipe ({cfg.mode} dataset '{name}' in workspace "
        f"'{cfg.workspace}', key from ${cfg.api_key_env}).",
        "ok",
    )


# ---------------------------------------------------------------------------------------------
# connection status
# ---------------------------------------------------------------------------------------------
def _link(url: str | None, text: str) -> str:
    if not url or not url.startswith(("http://", "https://")):
        return ""
    return (
        f' <a href="{render.esc(url)}" target="_blank" rel="noopener noreferrer" '
        f'id="cu-argilla-link">{render.esc(text)}</a>'
    )


def status_html(st: dict[str, Any]) -> str:
    if not st.get("ok"):
        return render.notice_html(st.get("error") or "not connected", "error")
    who = f" as {st.get('user')} ({st.get('role')})" if st.get("user") else ""
    head = f"Connected to {st['url']}{who}."
    if not st.get("dataset_exists"):
        return render.notice_html(
            f"{head} Dataset '{st['dataset']}' does not exist in workspace '{st['workspace']}'"
            " yet: Push creates it.",
            "ok",
        )
    line = (
        f"{head} Dataset '{st['dataset']}' in workspace '{st['workspace']}': "
        f"{st.get('records', 0)} records · {st.get('completed', 0)} completed · "
        f"{st.get('pending', 0)} pending."
    )
    return (
        f'<div class="cu-notice cu-ok">{render.esc(line)}'
        f"{_link(st.get('dataset_url'), 'Open in Argilla ↗')}</div>"
    )


def check(ws: WorkspaceService, *settings: Any) -> tuple[str, dict[str, Any]]:
    try:
        cfg = config_from(ws, *settings)
    except ValueError as exc:
        return render.notice_html(str(exc), "error"), {"ok": False, "error": str(exc)}
    st = ws.argilla_status(current_actor(), cfg)
    if not st.get("ok") and st.get("error") and "not an Argilla API" not in st["error"]:
        # a connection check says reachable / refused / status N, never the server's body
        import re

        st["error"] = re.sub(r"(\(HTTP \d{3}\)):.*$", r"\1", st["error"])
    return status_html(st), st


# ---------------------------------------------------------------------------------------------
# push (a background job)
# ---------------------------------------------------------------------------------------------
def start_push(ws: WorkspaceService, *settings: Any) -> str:
    try:
        cfg = config_from(ws, *settings)
    except ValueError as exc:
        return render.notice_html(str(exc), "error")
    try:
        ws.argilla_push(current_actor(), cfg)
    except ServiceError as exc:
        return render.notice_html(str(exc), "error")
    if cfg.mode == "pairs":
        kinds = ", ".join(REASONS[r].split(" (")[0] for r in cfg.pair_reasons)
        return render.notice_html(f"Pushing pairs ({kinds}) to '{cfg.pairs_dataset_name}'…", "info")
    return render.notice_html(
        f"Pushing ({_select_label(cfg.select)}) to '{cfg.dataset_name}'…",
        "info",
    )


def push_view(ws: WorkspaceService) -> tuple[str, dict[str, Any], bool]:
    """(html, summary dict, running) of the panel's last push."""
    handle = ws.argilla.push
    if handle is None:
        return "", {}, False
    snap = handle.snapshot()
    if handle.running or snap["status"] == "starting":
        p = snap["progress"].get(STAGE_PUSH, {})
        msg = (
            f"Pushing: {p.get('done', 0)}/{p.get('total', '?')} records"
            + (f" · {p['message']}" if p.get("message") else "")
            + (" · cancelling" if snap["status"] == "cancelling" else "")
        )
        return render.notice_html(msg, "info"), {"status": snap["status"]}, True
    result = handle.summary.results.get(STAGE_PUSH) if handle.summary else None
    if snap["status"] != "done" or not isinstance(result, dict) or "created" not in result:
        err = snap.get("error") or f"push {snap['status']}"
        return (
            render.notice_html(f"Push failed: {err}", "error"),
            {"status": snap["status"], "error": err},
            False,
        )
    return push_summary_html(result), {"status": "done", **result}, False


def push_summary_html(s: dict[str, Any]) -> str:
    kind = "warn" if s.get("failed") or s.get("cancelled") else "ok"
    line = (
        f"Pushed {s['pushed']} record(s) to '{s['dataset']}' in {s['elapsed_s']:g}s"
        + (" (cancelled)" if s.get("cancelled") else "")
        + "."
    )
    table = render.table_html(
        ["selected", "created", "updated", "unchanged", "locked", "failed"],
        [(s["selected"], s["created"], s["updated"], s["unchanged"], s["locked"], s["failed"])],
    )
    skipped = ", ".join(f"{k}: {v}" for k, v in (s.get("skipped") or {}).items())
    extra = render.notice_html(f"Not pushed: {skipped}", "info") if skipped else ""
    errors = "".join(render.notice_html(e, "error") for e in (s.get("errors") or [])[:3])
    return render.notice_html(line, kind) + table + extra + errors


# ---------------------------------------------------------------------------------------------
# pull, live pull
# ---------------------------------------------------------------------------------------------
def pull_summary_html(s: dict[str, Any], prefix: str = "Pulled") -> str:
    who = ", ".join(s.get("reviewers") or []) or "nobody yet"
    line = (
        f"{prefix} {s['records']} record(s) from '{s['dataset']}' in {s['elapsed_s']:g}s:"
        f" {s['written']} review(s) written to the workspace · reviewers: {who}."
    )
    table = render.table_html(
        [
            "submitted",
            "discarded",
            "drafts (ignored)",
            "written",
            "unchanged",
            "not in this workspace",
        ],
        [(s["submitted"], s["discarded"], s["drafts"], s["written"], s["unchanged"], s["unknown"])],
    )
    return render.notice_html(line, "ok") + table


def pull(ws: WorkspaceService, *settings: Any) -> tuple[str, dict[str, Any]]:
    try:
        cfg = config_from(ws, *settings)
    except ValueError as exc:
        return render.notice_html(str(exc), "error"), {"error": str(exc)}
    try:
        summary = ws.argilla_pull(current_actor(), cfg)
    except ServiceError as exc:
        return render.notice_html(str(exc), "error"), {"error": str(exc)}
    return pull_summary_html(summary), summary


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "—"


def live_view(ws: WorkspaceService) -> tuple[str, dict[str, Any], bool]:
    p: BackgroundPull | None = ws.argilla.puller
    if p is None or not p.running:
        return render.notice_html("Live pull is off.", "info"), {"running": False}, False
    info = {
        "running": True,
        "interval_s": p.interval_s,
        "pulls": p.pulls,
        "last_pull_at": p.last_pull_at,
        "last_error": p.last_error,
        "last_summary": p.last_summary.as_dict() if p.last_summary else None,
    }
    head = (
        f"Live pull on: every {p.interval_s:g}s from '{p.queue.dataset_name}' · "
        f"last pull {_clock(p.last_pull_at)} · {p.pulls} pull(s)."
    )
    if p.last_error:
        return (
            render.notice_html(head, "info")
            + render.notice_html(f"Last pull failed: {p.last_error}", "error"),
            info,
            True,
        )
    body = pull_summary_html(p.last_summary.as_dict(), "Last pull:") if p.last_summary else ""
    return render.notice_html(head, "ok") + body, info, True


def set_live(ws: WorkspaceService, on: bool, *settings: Any) -> tuple[str, dict[str, Any]]:
    if not on:
        ws.argilla_live(current_actor(), None)
        html, info, _ = live_view(ws)
        return html, info
    try:
        cfg = config_from(ws, *settings)
    except ValueError as exc:
        ws.argilla_live(current_actor(), None)
        return render.notice_html(str(exc), "error"), {"running": False, "error": str(exc)}
    puller = ws.argilla_live(current_actor(), cfg)
    deadline = time.monotonic() + 3  # show the first pull's outcome when it is quick
    while puller.pulls == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    html, info, _ = live_view(ws)
    return html, info


def poll(ws: WorkspaceService) -> tuple[str, dict[str, Any], str, dict[str, Any], Any]:
    push_html, push_info, pushing = push_view(ws)
    live_html, live_info, live = live_view(ws)
    return push_html, push_info, live_html, live_info, gr.Timer(active=pushing or live)


def reviews_line(ws: WorkspaceService) -> str:
    """For the Results tab: how much human work from Argilla is in the workspace."""
    totals = ws.argilla_review_totals(current_actor())
    n, convs, people, last = (
        totals["reviews"],
        totals["conversations"],
        totals["reviewers"],
        totals["last"],
    )
    p = ws.argilla.puller
    if not n and ws.recipe.argilla is None and p is None:
        return ""
    live = (
        f"live pull on, last {_clock(p.last_pull_at)}"
        if p is not None and p.running
        else "live pull off: Review tab → Argilla review queue"
    )
    return render.notice_html(
        f"Argilla reviews in the workspace: {n} on {convs} conversation(s) by {people} "
        f"reviewer(s), latest {_clock(last)} · {live}.",
        "info",
    )


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------
def build(ws: WorkspaceService, tab: gr.Tab, demo: gr.Blocks) -> None:
    """The panel; mounted once (in the Review tab): its events have API names."""
    s0 = settings_of(ws)
    m0, r0 = pairs_settings_of(ws)
    with gr.Accordion("Argilla review queue", open=False, elem_id="cu-argilla"):
        gr.Markdown(
            "Review in [Argilla](https://argilla.io) instead of (or besides) the built-in "
            "queue: push judged conversations as blind records with the AI ratings as "
            "suggestions, or the Arena's pairs (A / B / tie / both bad), and pull the humans' "
            "answers back. The API key is read on the server "
            "from the environment variable named below; it is never typed, shown or stored."
        )
        with gr.Row():
            url = gr.Textbox(
                s0[0],
                label="API URL (empty: from the env var)",
                placeholder="http://127.0.0.1:6900",
                scale=2,
                elem_id="cu-argilla-url",
            )
            url_env = gr.Textbox(s0[1], label="API URL env var", elem_id="cu-argilla-url-env")
            key_env = gr.Textbox(
                s0[2], label="API key env var (its NAME)", elem_id="cu-argilla-key-env"
            )
        with gr.Row():
            mode = gr.Radio(
                MODE_CHOICES,
                value=m0,
                label="Dataset kind (each kind has its own dataset)",
                elem_id="cu-argilla-mode",
                scale=2,
            )
            reasons = gr.CheckboxGroup(
                [(v, k) for k, v in REASONS.items()],
                value=r0,
                label="Pairs to push (the Arena's selections, in this order)",
                visible=m0 == "pairs",
                elem_id="cu-argilla-pair-reasons",
                scale=3,
            )
        with gr.Row():
            workspace = gr.Textbox(s0[3], label="Workspace", elem_id="cu-argilla-workspace")
            dataset = gr.Textbox(s0[4], label="Dataset", elem_id="cu-argilla-dataset")
            min_sub = gr.Number(
                s0[5],
                label="Reviews per record (min submitted)",
                precision=0,
                minimum=1,
                maximum=50,
                elem_id="cu-argilla-min-submitted",
            )
            max_cand = gr.Number(
                s0[6],
                label="Candidate slots (max candidates)",
                precision=0,
                minimum=2,
                maximum=8,
                visible=m0 != "pairs",
                elem_id="cu-argilla-max-candidates",
            )
        with gr.Row():
            check_btn = gr.Button("Check connection", elem_id="cu-argilla-check")
            save_btn = gr.Button("Save to recipe", elem_id="cu-argilla-save")
        status = gr.HTML(js_on_load=None, elem_id="cu-argilla-status")
        status_json = gr.JSON(visible=False)
        gr.Markdown("#### Push to Argilla")
        with gr.Row(equal_height=True):
            select = gr.Dropdown(
                SELECT_CHOICES,
                value=s0[7],
                label="Which conversations",
                elem_id="cu-argilla-select",
                visible=m0 != "pairs",
                scale=2,
            )
            push_btn = gr.Button("Push", variant="primary", elem_id="cu-argilla-push-btn")
        push_msg = gr.HTML(js_on_load=None)
        push_out = gr.HTML(js_on_load=None, elem_id="cu-argilla-push")
        push_json = gr.JSON(visible=False)
        gr.Markdown("#### Pull the reviews")
        with gr.Row(equal_height=True):
            pull_btn = gr.Button("Pull now", elem_id="cu-argilla-pull-btn")
            live = gr.Checkbox(
                False, label="Live: pull in the background", elem_id="cu-argilla-live"
            )
            interval = gr.Number(
                s0[8], label="every (seconds)", minimum=1, elem_id="cu-argilla-interval"
            )
        pull_out = gr.HTML(js_on_load=None, elem_id="cu-argilla-pull")
        pull_json = gr.JSON(visible=False)
        live_out = gr.HTML(js_on_load=None, elem_id="cu-argilla-live-status")
        live_json = gr.JSON(visible=False)
        save_out = gr.HTML(js_on_load=None, elem_id="cu-argilla-save-status")
        timer = gr.Timer(1.0, active=False)

    settings = [url, url_env, key_env, workspace, dataset, min_sub, max_cand, select, interval]
    # issue 14a: the dataset kind and the pairs' selections follow the settings (optional
    # trailing inputs: a caller that leaves them out gets the recipe's)
    settings = [*settings, mode, reasons]
    poll_outputs = [push_out, push_json, live_out, live_json, timer]

    def on_mode(m: str) -> tuple[Any, Any, Any, Any]:
        pairs = m == "pairs"
        return (
            gr.update(value=dataset_for_mode(ws, m)),
            gr.update(visible=pairs),
            gr.update(visible=not pairs),  # which conversations: the ratings records'
            gr.update(visible=not pairs),  # candidate slots: a pair has two
        )

    mode.input(on_mode, mode, [dataset, reasons, select, max_cand], show_progress="hidden")

    check_btn.click(
        lambda *a: check(ws, *a), settings, [status, status_json], api_name="argilla_check"
    )
    save_btn.click(lambda *a: save_settings(ws, *a), settings, save_out, api_name="argilla_save")
    push_btn.click(lambda *a: start_push(ws, *a), settings, push_msg, api_name="argilla_push").then(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden"
    )
    pull_btn.click(
        lambda *a: pull(ws, *a), settings, [pull_out, pull_json], api_name="argilla_pull"
    )
    live.input(
        lambda on, *a: set_live(ws, on, *a),
        [live, *settings],
        [live_out, live_json],
        api_name="argilla_live",
    ).then(lambda: poll(ws), None, poll_outputs, show_progress="hidden")
    timer.tick(
        lambda: poll(ws), None, poll_outputs, show_progress="hidden", api_visibility="private"
    )

    def argilla_status() -> dict[str, Any]:
        """The panel's push job and live pull, as data (for scripts and tests)."""
        _, push_info, pushing = push_view(ws)
        _, live_info, _ = live_view(ws)
        return {"push": push_info, "pushing": pushing, "live": live_info}

    def argilla_settings() -> list[Any]:
        """The panel's settings as read from the recipe's argilla section."""
        return settings_of(ws)

    gr.api(argilla_status, api_name="argilla_status")
    gr.api(argilla_settings, api_name="argilla_settings")

    def on_show() -> list[Any]:
        puller = ws.argilla.puller
        running = puller is not None and puller.running
        values = settings_of(ws)
        m, rs = pairs_settings_of(ws)
        values[6] = gr.update(value=values[6], visible=m != "pairs")
        values[7] = gr.update(value=values[7], visible=m != "pairs")
        pair_values = [m, gr.update(value=rs, visible=m == "pairs")]
        return [*values, *pair_values, running, *poll(ws)]

    # the recipe may have changed (Recipe tab import): show its section; keep job/live views
    tab.select(on_show, None, [*settings, live, *poll_outputs], show_progress="hidden")
    demo.load(
        on_show,
        None,
        [*settings, live, *poll_outputs],
        show_progress="hidden",
        api_visibility="private",
    )


def build_results_line(ws: WorkspaceService, tab: gr.Tab) -> None:
    """A status line in the Results tab: Argilla reviews in the store, live pull state."""
    line = gr.HTML(reviews_line(ws), js_on_load=None, elem_id="cu-results-argilla")
    tab.select(lambda: reviews_line(ws), None, line, show_progress="hidden")
