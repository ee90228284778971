"""Models tab: the generators and the judge of the recipe. Add, edit, remove, test.

Keys are never typed here: a model references the *name* of an environment variable (or
Space secret) that holds its key (``api_key_env``); the tab only says whether it is set."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor
from capyui.tabs import judge_panel
from pipelines.config import options_of
from pipelines.recipe import RecipeError
from pipelines.service import WorkspaceService

PRESETS = {
    "embedded": "Embedded SmolLM2-135M (CPU, no key)",
    "openai": "OpenAI-compatible server (vLLM serve, TGI, llama.cpp, Ollama, OpenAI)",
    "vllm": "vLLM in-process (GPU machine)",
    "original": "Original answer from the dataset",
}
PRESET_DEFAULTS = {
    "embedded": {"model": "", "base_url": ""},
    "openai": {"model": "", "base_url": "http://127.0.0.1:8000/v1"},
    "vllm": {"model": "", "base_url": ""},
    "original": {"model": "", "base_url": ""},
}
JUDGE_NOTE = (
    "Note: the embedded SmolLM2-135M judge only demonstrates the flow. Its ratings carry little "
    "signal; for a real dataset point the judge at a strong model (OpenAI-compatible or vLLM)."
)


def _choices(ws: WorkspaceService) -> list[str]:
    r = ws.recipe
    out = [f"generator:{g.id}" for g in r.generators]
    if r.judge is not None:
        out.append(f"judge:{r.judge.id}")
    out.extend(f"panel:{j.id}" for j in r.judges or [])  # a panel's judges: test, remove
    return out


def _role_label(role: str) -> str:
    return "panel judge" if role == "panel" else role


def _config(ws: WorkspaceService, choice: str | None) -> Any:
    if not choice or ":" not in choice:
        return None
    role, mid = choice.split(":", 1)
    r = ws.recipe
    if role == "judge":
        return r.judge if r.judge is not None and r.judge.id == mid else None
    if role == "panel":
        return next((j for j in r.judges or [] if j.id == mid), None)
    return next((g for g in r.generators if g.id == mid), None)


def _shown_env_names() -> set[str]:
    """Env var names whose set / not set state the caller may see (issue 10)."""
    from pipelines.endpoints import EndpointError, load_registry, strict
    from pipelines.workspace import Role

    if current_actor().role < Role.OWNER:
        return set()
    try:
        registry = load_registry()
    except EndpointError:
        return set()
    if not strict(registry):
        return {k for k in os.environ if k.isupper()} | {"*"}
    return {e.api_key_env for e in registry if e.api_key_env}


def _key_env(cfg: Any) -> str | None:
    """The variable holding the model's key (only backends that send one have the field)."""
    return getattr(cfg, "api_key_env", None)


# the recipe's ``supports_n`` (issue 13): whether the server honours ``n``
N_CHOICES = {
    "auto": "auto (first answer tells)",
    "true": "yes: one request",
    "false": "no: one per sample",
}
N_SETTINGS: dict[str, bool | str] = {"auto": "auto", "true": True, "false": False}


def _n_shown(m: Any) -> str:
    """The models table's cell for ``supports_n``: only OpenAI-compatible endpoints have it."""
    value = getattr(m, "supports_n", None)
    if value is None:
        return "—"
    return "auto" if value == "auto" else ("yes" if value else "no")


def models_html(ws: WorkspaceService) -> str:
    r = ws.recipe
    shown = _shown_env_names()
    if "*" in shown:
        models: list[Any] = [*r.generators, *r.all_judges()]
        shown = {key for m in models if (key := _key_env(m))}
    rows = []
    items: list[tuple[str, Any]] = [("generator", g) for g in r.generators]
    if r.judge is not None:
        items.append(("judge", r.judge))
    items.extend(("panel judge", j) for j in r.judges or [])
    for role, m in items:
        key = "—"
        key_env = _key_env(m)
        if key_env:
            key = key_env
            if key_env in shown:  # set / not set: only owners, only registry variables
                key += f" ({'set' if os.environ.get(key_env) else 'NOT set'})"
        rows.append(
            (
                role,
                m.id,
                m.backend,
                m.display_name() or "—",
                ", ".join(m.urls) or "—",
                key,
                m.temperature,
                m.max_tokens,
                getattr(m, "samples", "") if role == "generator" else "",
                _n_shown(m),
            )
        )
    table = render.table_html(
        [
            "role",
            "id",
            "backend",
            "model",
            "base URL",
            "key (env var)",
            "temperature",
            "max tokens",
            "samples",
            "n in one request",
        ],
        rows,
    )
    notes = []
    if not r.has_judge():
        notes.append(render.notice_html("No judge: add one to rate the candidates.", "warn"))
    elif any(j.backend == "embedded" for j in r.all_judges()):
        notes.append(render.notice_html(JUDGE_NOTE, "warn"))
    return table + "".join(notes)


def save_model(
    ws: WorkspaceService,
    role: str,
    backend: str,
    mid: str,
    model: str,
    base_url: str,
    key_env: str,
    temperature: float | None,
    max_tokens: float | None,
    samples: float | None,
    supports_n: str | None = "auto",
) -> tuple[str, str, Any]:
    mid = (mid or "").strip()
    if not mid:
        return models_html(ws), render.notice_html("Give the model an id.", "error"), gr.update()
    key_env = (key_env or "").strip()
    fields: dict[str, Any] = {
        "id": mid,
        "backend": backend,
        "model": (model or "").strip(),
    }
    if (base_url or "").strip():
        from pipelines.endpoints import EndpointError, check_urls

        try:
            check_urls([base_url.strip()])
        except EndpointError as exc:
            return models_html(ws), render.notice_html(str(exc), "error"), gr.update()
        fields["base_url"] = base_url.strip()
    if key_env:
        fields["api_key_env"] = key_env
    if temperature is not None:
        fields["temperature"] = float(temperature)
    if max_tokens:
        fields["max_tokens"] = int(max_tokens)
    if role == "generator" and samples:
        fields["samples"] = int(samples)
    declared = N_SETTINGS.get(supports_n or "auto", "auto")
    if backend == "openai" and declared != "auto":
        fields["supports_n"] = declared

    def merge(old: dict[str, Any] | None) -> dict[str, Any]:
        base = dict(old or {})
        if old and old.get("backend") != backend:  # keep what the new backend accepts
            allowed = options_of(backend)
            base = {k: v for k, v in base.items() if k in allowed}
        base.update(fields)
        if "base_url" not in fields:
            base.pop("base_url", None)
        if not key_env:
            base.pop("api_key_env", None)
        if "supports_n" not in fields:
            base.pop("supports_n", None)  # auto, the default
        return base

    def change(data: dict[str, Any]) -> None:
        if role == "judge":
            data["judge"] = merge(data.get("judge"))
            return
        gens = data["generators"]
        for i, g in enumerate(gens):
            if g["id"] == mid:
                gens[i] = merge(g)
                return
        gens.append(merge(None))

    return _apply(ws, change, f"Saved {role} '{mid}'.", f"{role}:{mid}")


def _apply(
    ws: WorkspaceService, change: Callable[[dict[str, Any]], None], done: str, selected: str | None
) -> tuple[str, str, Any]:
    """Change the workspace recipe; (models table, notice, model picker update)."""
    try:
        ws.change_recipe(current_actor(), "configure_models", change)
    except RecipeError as exc:
        return models_html(ws), render.notice_html(str(exc), "error"), gr.update()
    return (
        models_html(ws),
        render.notice_html(done, "ok"),
        gr.update(choices=_choices(ws), value=selected),
    )


def remove_model(ws: WorkspaceService, choice: str | None) -> tuple[str, str, Any]:
    cfg = _config(ws, choice)
    if cfg is None:
        return models_html(ws), render.notice_html("Pick a model to remove.", "error"), gr.update()
    role = choice.split(":", 1)[0]  # type: ignore[union-attr]

    def change(data: dict[str, Any]) -> None:
        if role == "judge":
            data.pop("judge", None)
        elif role == "panel":
            data["judges"] = [j for j in data.get("judges") or [] if j["id"] != cfg.id]
            if not data["judges"]:
                data.pop("judges")
        else:
            data["generators"] = [g for g in data["generators"] if g["id"] != cfg.id]

    return _apply(ws, change, f"Removed {_role_label(role)} '{cfg.id}'.", None)


def test_connection(ws: WorkspaceService, choice: str | None) -> str:
    from pipelines.backends import make_backend, short_error

    cfg = _config(ws, choice)
    if cfg is None:
        return render.notice_html("Pick a model to test.", "error")

    async def check() -> str:
        backend = make_backend(cfg)
        try:
            return await backend.check()
        finally:
            await backend.aclose()

    try:
        asyncio.run(check())
        return render.notice_html(f"{cfg.id}: reachable, the model answered.", "ok")
    except Exception as exc:  # noqa: BLE001 - BackendError and transport errors, one line
        where = ", ".join(cfg.urls) or cfg.backend
        problem = short_error(exc)
        return render.error_html(
            f"{cfg.id} at {where}: {connection_verdict(problem)}", connection_hint(problem)
        )


def connection_hint(problem: str) -> str:
    """What to check for a failed connection test, from the error's text."""
    low = problem.lower()
    if "401" in low or "403" in low or "auth" in low or "api key" in low or "api_key" in low:
        return "Check the key: the env var named in the model must hold a valid key"
    if "404" in low or "not found" in low or "does not exist" in low:
        return "Check the model name the server serves and that the base URL ends in /v1"
    if "timeout" in low or "timed out" in low:
        return "The server answered too slowly: check its load, or raise the timeout"
    if "connect" in low or "refused" in low or "resolve" in low or "unreachable" in low:
        return (
            "Is the server running and reachable from the app's machine? Check host, port "
            "and that the base URL ends in /v1"
        )
    return "Check the base URL, the model name and the server's log"


def confirm_remove(ws: WorkspaceService, choice: str | None) -> tuple[Any, str, str]:
    """First step of Remove: (confirm row update, question html, error html)."""
    cfg = _config(ws, choice)
    if cfg is None:
        return gr.update(visible=False), "", render.notice_html("Pick a model to remove.", "error")
    role = choice.split(":", 1)[0]  # type: ignore[union-attr]
    what = (
        "the candidates already generated stay in the workspace"
        if role == "generator"
        else "its judgments stay in the workspace"
    )
    return (
        gr.update(visible=True),
        render.notice_html(
            f"Remove {_role_label(role)} '{cfg.id}' from the recipe? ({what})", "warn"
        ),
        "",
    )


def connection_verdict(error: str) -> str:
    """reachable / refused / status N: never the server's response body (issue 10)."""
    import re

    low = error.lower()
    if "registry" in low or "is not set" in low or "not allowed" in low:
        return error.removeprefix("BackendError: ")  # our own reasons, never a server's text
    status = re.search(r"(?:Error code|HTTP|status)[: ]+(\d{3})\b", error)
    if status:
        return f"reachable, but it answered with status {status.group(1)}"
    if "timed out" in low or "timeout" in low:
        return "no answer in time (timed out)"
    if "connect" in low or "refused" in low or "resolve" in low or "unreachable" in low:
        return "refused or unreachable"
    return "failed (the server's answer was not a valid completion)"


def load_form(ws: WorkspaceService, choice: str | None) -> list[Any]:
    cfg = _config(ws, choice)
    if cfg is None:
        return [gr.update()] * 10
    role = choice.split(":", 1)[0]  # type: ignore[union-attr]
    if role == "panel":  # a panel's judge is edited in the Judge panel section
        return [gr.update()] * 9
    return [
        role,
        cfg.backend,
        cfg.id,
        cfg.model,
        getattr(cfg, "base_url", None) or "",
        _key_env(cfg) or "",
        cfg.temperature,
        cfg.max_tokens,
        getattr(cfg, "samples", 1),
        str(getattr(cfg, "supports_n", "auto")).lower(),
    ]


def build(ws: WorkspaceService, tab: gr.Tab) -> None:
    table = gr.HTML(models_html(ws), js_on_load=None, elem_id="cu-models")
    with gr.Row():
        pick = gr.Dropdown(_choices(ws), label="Model", value=None, scale=2)
        test_btn = gr.Button("Test connection", scale=1)
        remove_btn = gr.Button("Remove…", variant="stop", scale=1, elem_id="cu-remove")
    with gr.Row(visible=False, elem_classes=["cu-confirm"]) as confirm_row:
        question = gr.HTML(js_on_load=None, elem_id="cu-remove-question")
        yes_btn = gr.Button("Yes, remove", variant="stop", scale=0, elem_id="cu-remove-yes")
        keep_btn = gr.Button("Keep it", scale=0, elem_id="cu-remove-keep")
    status = gr.HTML(js_on_load=None, elem_id="cu-models-status")
    gr.Markdown("#### Add or edit a model (saving an existing id updates it)")
    with gr.Row():
        role = gr.Radio(["generator", "judge"], value="generator", label="Role")
        backend = gr.Dropdown(
            [(v, k) for k, v in PRESETS.items()], value="openai", label="Backend preset"
        )
        mid = gr.Textbox(label="Id", placeholder="e.g. llama-70b")
    with gr.Row():
        model = gr.Textbox(label="Model name (served name, Hub id or path)")
        base_url = gr.Textbox(
            label="Base URL (OpenAI-compatible)", value=PRESET_DEFAULTS["openai"]["base_url"]
        )
        key_env = gr.Textbox(
            label="API key: NAME of the env var / Space secret (never the key)",
            placeholder="OPENAI_API_KEY",
        )
    with gr.Row():
        temperature = gr.Number(label="Temperature", value=0.7)
        max_tokens = gr.Number(label="Max tokens", value=512, precision=0)
        samples = gr.Number(label="Samples per conversation (generators)", value=1, precision=0)
        supports_n = gr.Dropdown(
            [(label, key) for key, label in N_CHOICES.items()],
            value="auto",
            label="Samples in one request with n (OpenAI-compatible)",
        )
        save_btn = gr.Button("Save model", variant="primary")

    def on_preset(b: str) -> tuple[Any, Any]:
        return gr.update(value=PRESET_DEFAULTS.get(b, {}).get("base_url", "")), gr.update(
            interactive=b in ("openai", "vllm")
        )

    backend.input(on_preset, backend, [base_url, model], queue=False, show_progress="hidden")
    form = [
        role,
        backend,
        mid,
        model,
        base_url,
        key_env,
        temperature,
        max_tokens,
        samples,
        supports_n,
    ]
    pick.input(
        lambda c: load_form(ws, c),
        pick,
        form,
        queue=False,
        show_progress="hidden",
        api_name="model_form",
    )
    saved_model = save_btn.click(
        lambda *a: save_model(ws, *a), form, [table, status, pick], api_name="save_model"
    )
    # Remove asks first (Yes / Keep it); the model only goes on "Yes, remove"
    remove_btn.click(
        lambda c: confirm_remove(ws, c),
        pick,
        [confirm_row, question, status],
        queue=False,
        show_progress="hidden",
    )
    keep_btn.click(
        lambda: (gr.update(visible=False), render.notice_html("Nothing removed.", "info")),
        None,
        [confirm_row, status],
        queue=False,
        show_progress="hidden",
    )
    removed_model = yes_btn.click(
        lambda c: (*remove_model(ws, c), gr.update(visible=False)),
        pick,
        [table, status, pick, confirm_row],
        api_name="remove_model",
    )
    pick.input(lambda: gr.update(visible=False), None, confirm_row, queue=False)
    test_btn.click(
        lambda c: test_connection(ws, c), pick, status, api_name="test_model", concurrency_limit=2
    )
    tab.select(
        lambda: (models_html(ws), gr.update(choices=_choices(ws))),
        None,
        [table, pick],
        queue=False,
        show_progress="hidden",
    )
    # the judge panel (several judges, their aggregate): its own section below the form
    refresh_panel, panel_outputs = judge_panel.build(ws, tab, table, pick)
    for saved in (saved_model, removed_model):  # the recipe's judges may have changed
        saved.then(refresh_panel, None, panel_outputs, queue=False, show_progress="hidden")
