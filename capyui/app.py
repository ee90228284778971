"""The CapyUI web app: one Gradio ``Blocks`` with a tab per step of the flow.

    Data ─▶ Models ─▶ Run ─▶ Review ─▶ Results      (Recipe: the whole configuration as YAML)

The app holds one ``WorkspaceService`` (``pipelines.service``) per data folder, shared by every
browser session: the store, the current recipe, the background job manager and every operation
on them, each checking the caller's role. Tabs hold layout and wiring only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import gradio as gr

from capyui import render
from capyui.tabs.arena import ARENA_KEYS_JS
from pipelines.service import DEFAULT_RECIPE, WorkspaceService, get_service
from pipelines.workspace import Policy, auth_users, is_loopback

__all__ = ["DEFAULT_RECIPE", "Workspace", "build_app", "get_workspace", "launch"]


# The workspace (store, recipe, jobs) and its operations live in the engine's service; the app
# and the CLI are front ends over it (issue 9). ``Workspace`` is its old name.
Workspace = WorkspaceService


def get_workspace(
    data_dir: str | os.PathLike[str] | None = None, policy: Policy | None = None
) -> WorkspaceService:
    return get_service(data_dir, policy)


STATIC_DIR = Path(__file__).resolve().parent / "static"


def shortcuts_js() -> str:
    """The Review tab's keyboard shortcuts (``static/review_keys.js``) as a ``<head>`` script."""
    return "<script>\n" + (STATIC_DIR / "review_keys.js").read_text("utf-8") + "</script>\n"


SHORTCUTS_JS = shortcuts_js()


def default_host() -> str:
    return os.environ.get("GRADIO_SERVER_NAME") or (
        "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"
    )


def build_app(
    store_dir: str | os.PathLike[str] | None = None, policy: Policy | None = None
) -> gr.Blocks:
    """The whole app for the workspace in ``store_dir`` (default: ``default_data_dir()``).

    Every event is authorized on the server (``capyui.guard.protect``) with ``policy`` (default:
    roles from the environment, for the address in ``GRADIO_SERVER_NAME``)."""
    from capyui import guard
    from capyui.tabs import arena, data, models, recipe, results, review, run

    policy = policy or Policy.from_env(default_host())
    ws = get_workspace(store_dir, policy)
    on_space = bool(os.environ.get("SPACE_ID"))
    with gr.Blocks(title="CapyUI", analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown(
                "## CapyUI — multi-turn preference datasets\n"
                "Load conversations, generate candidates, let a judge rate them, review, "
                "binarize into chosen/rejected pairs and publish."
            )
            if on_space:
                gr.LoginButton(scale=0)
        warning = ws.storage_warning()
        if warning:
            gr.HTML(
                render.notice_html(warning, "warn"), elem_id="cu-storage-warning", js_on_load=None
            )
        who = gr.HTML(js_on_load=None, elem_id="cu-whoami")
        gr.HTML(render.notice_html(f"Workspace: {ws.data_dir.resolve()}", "info"), js_on_load=None)
        # the reviewer's name as this browser remembers it (read at page load, so outside tabs)
        reviewer_memory = gr.BrowserState("", storage_key=review.REVIEWER_KEY)
        with gr.Tabs():
            with gr.Tab("Data", id="data") as t:
                data.build(ws, t)
            with gr.Tab("Models", id="models") as t:
                models.build(ws, t)
            with gr.Tab("Run", id="run") as t:
                run.build(ws, t, demo)
            with gr.Tab("Review", id="review") as t:
                review.build(ws, t, demo, remembered=reviewer_memory)
            with gr.Tab("Arena", id="arena") as t:  # pairwise review (issue 14)
                arena.build(ws, t, demo)
            with gr.Tab("Results", id="results") as t:
                results.build(ws, t)
            with gr.Tab("Recipe", id="recipe") as t:
                recipe.build(ws, t)
        demo.load(
            lambda: render.notice_html(guard.whoami_text(), "info"),
            None,
            who,
            api_name="whoami",
            show_progress="hidden",
        )
    demo.capyui_workspace = ws
    demo.capyui_actions = guard.protect(demo, policy)
    if not policy.local_owner:  # the page itself is public: nothing of the workspace in it
        guard.blank_initial_values(demo)
    return demo


LAUNCH_STYLE: dict[str, Any] = {"css": render.CSS, "head": SHORTCUTS_JS + ARENA_KEYS_JS}


def _is_loopback(host: str) -> bool:
    return is_loopback(host)


def auth_from_env() -> list[tuple[str, str]] | None:
    """``CAPYUI_AUTH="user:password[,user2:password2]"`` -> [(user, password)]; None if unset."""
    raw = os.environ.get("CAPYUI_AUTH", "").strip()
    if not raw:
        return None
    try:
        return auth_users(raw)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def max_upload() -> str:
    """Largest upload Gradio accepts (``CAPYUI_MAX_UPLOAD_MB``, default 200)."""
    raw = os.environ.get("CAPYUI_MAX_UPLOAD_MB", "").strip()
    try:
        mb = max(1, int(raw)) if raw else 200
    except ValueError:
        mb = 200
    return f"{mb}mb"


def launch(
    host: str = "127.0.0.1", port: int = 7860, data_dir: str | os.PathLike[str] | None = None
) -> None:
    """Build and serve the app (blocking)."""
    from pipelines.secrets import configure_logging

    configure_logging()
    auth = auth_from_env()
    policy = Policy.from_env(host)
    if auth is None and not os.environ.get("SPACE_ID") and not _is_loopback(host):
        print(
            f"WARNING: serving CapyUI on {host} without authentication: visitors are anonymous "
            "and can do nothing (set CAPYUI_DEMO=1 to let them look). Set "
            "CAPYUI_AUTH=user:password (and CAPYUI_OWNERS / CAPYUI_REVIEWERS) or bind to "
            "127.0.0.1.",
            file=sys.stderr,
            flush=True,
        )
    if os.environ.get("SPACE_ID") and not policy.owners:
        print(
            "WARNING: no owner on this Space: set CAPYUI_OWNERS (or SPACE_AUTHOR_NAME) so "
            "someone can configure it.",
            file=sys.stderr,
            flush=True,
        )
    demo = build_app(data_dir, policy=policy)
    demo.queue(default_concurrency_limit=8)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        ssr_mode=False,
        show_error=True,
        max_file_size=max_upload(),
        **LAUNCH_STYLE,
    )
