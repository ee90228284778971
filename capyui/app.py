"""The CapyUI web app: one Gradio ``Blocks`` with a tab per step of the flow.

    Data ─▶ Models ─▶ Run ─▶ Review ─▶ Results      (Recipe: the whole configuration as YAML)

The app holds one ``Workspace`` per data folder, shared by every browser session: the store,
the current recipe and the background job manager. Tabs only call the engine (``pipelines``);
no stage logic lives here.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from capyui import render
from capyui.tabs.arena import ARENA_KEYS_JS
from pipelines.jobs import JobManager
from pipelines.recipe import RECIPES_DIR, Recipe, RecipeError, load_recipe, parse_recipe
from pipelines.store import Store, default_data_dir
from pipelines.workspace import Policy, auth_users, is_loopback

DEFAULT_RECIPE = "quickstart"


class Workspace:
    """Server-side state of one data folder: store, current recipe, jobs."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.store = Store(self.data_dir)
        self.jobs = JobManager(self.store)
        self._lock = threading.Lock()
        self._recipe: Recipe = self._saved_recipe() or load_recipe(DEFAULT_RECIPE)
        self._listeners: list[Callable[[], None]] = []

    def on_recipe_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (cheap; start a thread for real work) after every recipe change."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    @property
    def recipe_path(self) -> Path:
        """The workspace's current recipe survives restarts (secret-free, like any recipe)."""
        return self.data_dir / "recipe.yaml"

    def _saved_recipe(self) -> Recipe | None:
        if not self.recipe_path.is_file():
            return None
        try:
            recipe = load_recipe(self.recipe_path)
        except RecipeError as exc:
            print(f"warning: ignoring the saved recipe: {exc}", file=sys.stderr)
            return None
        return recipe

    def _save(self, recipe: Recipe) -> None:
        """Write the recipe with its source file path made absolute (it is read back from the
        data folder, not from where the recipe first came from)."""
        data = recipe.to_dict()
        if recipe.source.path:
            data["source"]["path"] = str(Path(recipe.source_path()).resolve())
        tmp = self.recipe_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), "utf-8")
        tmp.replace(self.recipe_path)

    @property
    def recipe(self) -> Recipe:
        with self._lock:
            return self._recipe

    def check_paths(self, recipe: Recipe) -> None:
        """A recipe of the app reads files only from the workspace or the bundled recipes,
        checked after resolving symlinks (issue 10). RecipeError otherwise."""
        if not recipe.source.path:
            return
        try:
            target = Path(recipe.source_path()).resolve()
        except (OSError, RuntimeError):
            raise RecipeError("source.path: cannot be resolved") from None
        roots = [self.data_dir.resolve(), RECIPES_DIR.resolve()]
        if not any(target.is_relative_to(r) for r in roots):
            raise RecipeError(
                "source.path: only files in the workspace (upload them in the Data tab) or "
                "the bundled samples can be read"
            )

    def set_recipe(self, recipe: Recipe) -> None:
        if recipe.base_dir is None:
            recipe.base_dir = self.base_dir
        self.check_paths(recipe)
        with self._lock:
            self._recipe = recipe
            self._save(recipe)
        self._changed()

    @property
    def base_dir(self) -> str:
        """Where relative source paths of an imported recipe resolve (the bundled recipes)."""
        return self._recipe.base_dir or str(RECIPES_DIR)

    def update_recipe(self, change: Callable[[dict[str, Any]], None]) -> Recipe:
        """Apply ``change`` to the recipe as a dict and validate (raises RecipeError)."""
        with self._lock:
            data = self._recipe.model_dump(mode="json", exclude_none=True)
            change(data)
            recipe = parse_recipe(data, name="recipe", base_dir=self._recipe.base_dir)
            self.check_paths(recipe)
            self._recipe = recipe
            self._save(recipe)
        self._changed()
        return recipe

    def candidate_recipe(self, change: Callable[[dict[str, Any]], None]) -> Recipe:
        """The recipe ``change`` would give, validated but NOT made current (raises
        RecipeError). Use ``set_recipe`` once whatever depends on it has worked (a load)."""
        with self._lock:
            data = self._recipe.model_dump(mode="json", exclude_none=True)
            base_dir = self._recipe.base_dir
        change(data)
        return parse_recipe(data, name="recipe", base_dir=base_dir)

    def storage_warning(self) -> str | None:
        """A warning when running on a Space whose data would not survive a restart."""
        if not os.environ.get("SPACE_ID"):
            return None
        try:
            resolved = self.data_dir.resolve()
        except OSError:
            resolved = self.data_dir
        if Path("/data").is_dir() and str(resolved).startswith("/data"):
            return None
        return (
            "This Space has no persistent storage: everything in the workspace (loaded data, "
            "candidates, judgments, reviews) is lost when the Space restarts. Enable persistent "
            "storage in the Space settings, and export or publish your results often."
        )


_workspaces: dict[str, Workspace] = {}
_workspaces_lock = threading.Lock()


def get_workspace(data_dir: str | os.PathLike[str] | None = None) -> Workspace:
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    key = str(path.resolve())
    with _workspaces_lock:
        if key not in _workspaces:
            _workspaces[key] = Workspace(path)
        return _workspaces[key]


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

    ws = get_workspace(store_dir)
    policy = policy or Policy.from_env(default_host())
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
