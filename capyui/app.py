"""The CapyUI web app: one Gradio ``Blocks`` with a tab per step of the flow.

    Data ─▶ Models ─▶ Run ─▶ Review ─▶ Results      (Recipe: the whole configuration as YAML)

The app holds one ``Workspace`` per data folder, shared by every browser session: the store,
the current recipe and the background job manager. Tabs only call the engine (``pipelines``);
no stage logic lives here.
"""

from __future__ import annotations

import ipaddress
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

DEFAULT_RECIPE = "quickstart"


class Workspace:
    """Server-side state of one data folder: store, current recipe, jobs."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.store = Store(self.data_dir)
        self.jobs = JobManager(self.store)
        self._lock = threading.Lock()
        self._recipe: Recipe = self._saved_recipe() or load_recipe(DEFAULT_RECIPE)

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

    def set_recipe(self, recipe: Recipe) -> None:
        if recipe.base_dir is None:
            recipe.base_dir = self.base_dir
        with self._lock:
            self._recipe = recipe
            self._save(recipe)

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
            self._recipe = recipe
            self._save(recipe)
            return recipe

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


# Keyboard shortcuts of the Review tab (j/k next/previous, h/l or ←/→ move the focused
# candidate, 1-5 rate it, s submit). Ignored while typing in a text field.
SHORTCUTS_JS = r"""
<script>
(() => {
  if (window.__capyuiKeys) return;
  window.__capyuiKeys = true;
  let focus = 0;
  const slots = () => Array.from(document.querySelectorAll('#cu-review .cu-cand-slot'))
    .filter(el => el.offsetParent !== null);
  const show = () => {
    const all = slots();
    if (focus >= all.length) focus = 0;
    document.querySelectorAll('#cu-review .cu-cand-slot')
      .forEach(el => el.classList.remove('cu-focus'));
    if (all[focus]) all[focus].classList.add('cu-focus');
  };
  const click = id => { const b = document.getElementById(id); if (b) b.click(); };
  document.addEventListener('click', e => {
    const slot = e.target.closest && e.target.closest('#cu-review .cu-cand-slot');
    if (slot) { focus = Math.max(0, slots().indexOf(slot)); show(); }
  }, true);
  document.addEventListener('keydown', e => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
        (t.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(t.type)))) return;
    const review = document.getElementById('cu-review');
    if (!review || review.offsetParent === null) return;
    const k = e.key;
    if (k === 'j') { focus = 0; click('cu-next'); }
    else if (k === 'k') { focus = 0; click('cu-prev'); }
    else if (k === 's') { click('cu-submit'); }
    else if (k === 'l' || k === 'ArrowRight') {
      focus = Math.min(focus + 1, slots().length - 1); show();
    }
    else if (k === 'h' || k === 'ArrowLeft') { focus = Math.max(focus - 1, 0); show(); }
    else if ('12345'.includes(k) && k.length === 1) {
      const slot = slots()[focus];
      if (!slot) return;
      const input = slot.querySelectorAll('input[type=radio]')[Number(k) - 1];
      if (input) { input.click(); show(); }
    } else return;
    e.preventDefault();
  });
  new MutationObserver(() => {
    const r = document.getElementById('cu-review');
    if (r && !r.querySelector('.cu-focus')) show();
  }).observe(document.documentElement, {subtree: true, childList: true});
})();
</script>
"""


def build_app(store_dir: str | os.PathLike[str] | None = None) -> gr.Blocks:
    """The whole app for the workspace in ``store_dir`` (default: ``default_data_dir()``)."""
    from capyui.tabs import arena, data, models, recipe, results, review, run

    ws = get_workspace(store_dir)
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
        gr.HTML(render.notice_html(f"Workspace: {ws.data_dir.resolve()}", "info"), js_on_load=None)
        with gr.Tabs():
            with gr.Tab("Data", id="data") as t:
                data.build(ws, t)
            with gr.Tab("Models", id="models") as t:
                models.build(ws, t)
            with gr.Tab("Run", id="run") as t:
                run.build(ws, t, demo)
            with gr.Tab("Review", id="review") as t:
                review.build(ws, t, demo)
            with gr.Tab("Arena", id="arena") as t:  # pairwise review (issue 14)
                arena.build(ws, t, demo)
            with gr.Tab("Results", id="results") as t:
                results.build(ws, t)
            with gr.Tab("Recipe", id="recipe") as t:
                recipe.build(ws, t)
    demo.capyui_workspace = ws  # type: ignore[attr-defined]
    return demo


LAUNCH_STYLE = {"css": render.CSS, "head": SHORTCUTS_JS + ARENA_KEYS_JS}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_from_env() -> tuple[str, str] | None:
    """``CAPYUI_AUTH="user:password"`` -> (user, password); None when unset."""
    raw = os.environ.get("CAPYUI_AUTH", "").strip()
    if not raw:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise SystemExit("error: CAPYUI_AUTH must be 'user:password'")
    return user, password


def launch(
    host: str = "127.0.0.1", port: int = 7860, data_dir: str | os.PathLike[str] | None = None
) -> None:
    """Build and serve the app (blocking)."""
    from pipelines.secrets import configure_logging

    configure_logging()
    auth = auth_from_env()
    if auth is None and not os.environ.get("SPACE_ID") and not _is_loopback(host):
        print(
            f"WARNING: serving CapyUI on {host} without authentication: anyone who can reach "
            "this address can read and change the workspace. Set CAPYUI_AUTH=user:password "
            "or bind to 127.0.0.1.",
            file=sys.stderr,
            flush=True,
        )
    demo = build_app(data_dir)
    demo.queue(default_concurrency_limit=8)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        ssr_mode=False,
        show_error=True,
        **LAUNCH_STYLE,
    )
