"""The Gradio adapter of the workspace service's authorization (issues 9, 10).

The decision is the engine's: every operation of ``pipelines.service.WorkspaceService`` checks
its caller's role for its action (``pipelines.workspace``), for the CLI and the app alike. This
module builds the caller (``Actor``) from the web request and maps a refusal to a Gradio error.

``protect(demo, policy)`` runs once, after every tab has registered its events: it wraps the
function of *every* event of the app with a check of ``pipelines.workspace.authorize`` for the
action that event performs. Nothing a tab forgets can slip through: an event with an explicit
``api_name`` that is not in ``API_ACTIONS`` stops the app from starting, and the events without
one (tab selects, timers, ``.then`` refreshes, inputs) are read-only views, refused silently
(nothing changes on the page) to those who may not look.

The identity is the server's: ``request.username`` (``CAPYUI_AUTH`` login) or the Hugging Face
OAuth profile in the signed session cookie; handlers read it with ``current_actor()``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import gradio as gr

from pipelines.workspace import ACTIONS, Actor, Forbidden, Policy, Role

# api_name -> action, for every event the app names (the public API of the app).
API_ACTIONS: dict[str, str] = {
    "whoami": "whoami",
    "load_data": "load_data",
    "save_model": "configure_models",
    "remove_model": "configure_models",
    "panel_add": "configure_models",
    "save_panel": "configure_models",
    "model_form": "view_config",
    "test_model": "test_connection",
    "start_job": "run_jobs",
    "resume_job": "run_jobs",
    "cancel_job": "run_jobs",
    "job_status": "view",
    "review_queue": "view",
    "review_next": "view",
    "review_prev": "view",
    "review_submit": "review",
    "argilla_check": "manage_argilla",
    "argilla_save": "manage_argilla",
    "argilla_push": "manage_argilla",
    "argilla_pull": "manage_argilla",
    "argilla_live": "manage_argilla",
    "argilla_status": "view",
    "argilla_settings": "view_config",
    "binarize_preview": "view",
    "save_binarize": "binarize_options",
    "export": "export",
    "publish": "publish",
    "recipe_export": "edit_recipe",
    "recipe_import": "edit_recipe",
    "read_upload": "edit_recipe",
    # the Arena (pairwise review, issue 14): a verdict is a review; the pair queue a view
    "arena_start": "view",
    "arena_a": "review",
    "arena_b": "review",
    "arena_tie": "review",
    "arena_both_bad": "review",
    "arena_skip": "review",
    "arena_rankings": "view",
    # tokens and cost: spending so far and the dry-run projection of the recipe
    "cost": "view_config",
}
# Unnamed events whose function shows owner-only settings: "module:qualname" -> action.
FN_ACTIONS: dict[str, str] = {
    "capyui.tabs.argilla:build.<locals>.on_show": "view_config",
}
DEFAULT_ACTION = "view"

_actor: ContextVar[Actor | None] = ContextVar("capyui_actor", default=None)
_policy: dict[str, Policy] = {}


def current_actor() -> Actor:
    """The actor of the event being handled (the local owner outside any event, e.g. tests)."""
    actor = _actor.get()
    if actor is not None:
        return actor
    policy = _policy.get("app")
    return policy.actor(None) if policy is not None else Actor("local", Role.OWNER, "local")


def reviewer_identity(typed: str | None = None) -> str:
    """Who a review is by: the signed-in identity of the event, never a typed name; only the
    one local user of an app without sign-in (who owns the workspace anyway) names themself."""
    actor = current_actor()
    if actor.via == "local":
        return (typed or "").strip()[:100]
    return actor.name or ""


def current_policy() -> Policy | None:
    return _policy.get("app")


def username_of(request: Any) -> tuple[str | None, str]:
    """(user name, how) from the server side of a request: password login, else OAuth."""
    if request is None:
        return None, "web"
    name = getattr(request, "username", None)
    if name:
        return str(name), "web"
    try:
        session = request.session
    except Exception:  # noqa: BLE001 - no SessionMiddleware: nobody signed in with OAuth
        return None, "web"
    info = session.get("oauth_info") if session is not None else None
    if not info:
        return None, "web"
    expires = info.get("expires_at")
    if expires is not None and expires < time.time():
        return None, "web"
    user = (info.get("userinfo") or {}).get("preferred_username")
    return (str(user), "oauth") if user else (None, "web")


def actor_for(request: Any, policy: Policy) -> Actor:
    name, via = username_of(request)
    return policy.actor(name, via)


def _request() -> Any:
    from gradio.context import LocalContext

    return LocalContext.request.get(None)


def action_of(block_fn: Any) -> tuple[str, bool]:
    """(action, explicit) of one registered event."""
    name = getattr(block_fn, "api_name", None)
    if isinstance(name, str) and name in API_ACTIONS:
        return API_ACTIONS[name], True
    fn = getattr(block_fn, "fn", None)
    key = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if key in FN_ACTIONS:
        return FN_ACTIONS[key], False
    return DEFAULT_ACTION, False


def _skip(n_outputs: int) -> Any:
    if n_outputs == 0:
        return None
    if n_outputs == 1:
        return gr.skip()
    return tuple(gr.skip() for _ in range(n_outputs))


def _guarded(fn: Callable[..., Any], action: str, policy: Policy, silent: bool, n: int) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        actor = actor_for(_request(), policy)
        try:
            policy.authorize(actor, action)
        except Forbidden as exc:
            if silent:
                return _skip(n)
            raise gr.Error(str(exc), print_exception=False) from None
        token = _actor.set(actor)
        try:
            return fn(*args, **kwargs)
        except Forbidden as exc:  # the service's own check (pipelines.service) said no
            if silent:
                return _skip(n)
            raise gr.Error(str(exc), print_exception=False) from None
        finally:
            _actor.reset(token)

    wrapper.capyui_action = action  # type: ignore[attr-defined]
    return wrapper


def events(demo: gr.Blocks) -> list[Any]:
    fns = demo.fns
    return list(fns.values() if isinstance(fns, dict) else fns)


def protect(demo: gr.Blocks, policy: Policy) -> dict[str, str]:
    """Wrap every event of ``demo`` with its authorization check; {api_name: action}."""
    _policy["app"] = policy
    table: dict[str, str] = {}
    for bf in events(demo):
        if bf.fn is None or getattr(bf.fn, "capyui_action", None):
            continue
        action, explicit = action_of(bf)
        if action not in ACTIONS:
            raise RuntimeError(f"event {bf.api_name}: unknown action {action}")
        name = bf.api_name
        if not explicit and isinstance(name, str) and not _auto_name(name, bf.fn):
            raise RuntimeError(
                f"event api_name={name!r} has no action in capyui.guard.API_ACTIONS: "
                "every named endpoint must declare who may call it"
            )
        bf.fn = _guarded(bf.fn, action, policy, silent=not explicit, n=len(bf.outputs))
        table[str(name)] = action
    return table


def _auto_name(name: str, fn: Callable[..., Any]) -> bool:
    """Whether ``name`` is the one Gradio derived from the function (no explicit api_name)."""
    base = getattr(fn, "__name__", "")
    base = "lambda" if base == "<lambda>" else base
    return name == base or (name.startswith(base + "_") and name[len(base) + 1 :].isdigit())


def whoami_text() -> str:
    actor = current_actor()
    if actor.name is None:
        return "Not signed in: sign in to use CapyUI." + (
            " (Read-only demo: you can look around.)"
            if (p := current_policy()) is not None and p.demo
            else ""
        )
    if actor.via == "local":
        return "Local use (owner): nobody else can reach this address."
    if actor.role == Role.ANONYMOUS:
        return f"Signed in as {actor.name}, without a role: ask the owner for access."
    return f"Signed in as {actor.name} ({actor.role.label})."


def blank_initial_values(demo: gr.Blocks) -> int:
    """Empty the values the page is built with (tables, the recipe, job history...), which
    Gradio serves in the page config to anyone who can open the page. Each view fills in from
    its own guarded event (tab select, page load) for those allowed to look. Returns how many
    components were emptied."""
    n = 0
    for block in demo.blocks.values():
        if isinstance(block, (gr.HTML, gr.Code, gr.Textbox)) and block.value:
            block.value = ""
            n += 1
        elif isinstance(block, gr.JSON) and block.value:
            block.value = None
            n += 1
    return n
