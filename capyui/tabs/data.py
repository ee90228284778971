"""Data tab: load conversations (bundled sample, an uploaded file, or a Hub dataset), show the
detected format, the validation report and a chat preview of what was loaded."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor
from pipelines.recipe import RECIPES_DIR, RecipeError
from pipelines.service import Forbidden, WorkspaceService

SAMPLE = "Bundled sample"
UPLOAD = "Upload a file"
HUB = "Hub dataset"
SAMPLE_PATH = "data/quickstart.jsonl"
FORMATS = ["auto", "capybara", "messages", "sharegpt"]
PREVIEW = 8
HUB_ID = re.compile(r"^[A-Za-z0-9][\w\-]*(\.[\w\-]+)*/[\w\-]+(\.[\w\-]+)*$")


def _safe_name(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "upload"
    return base[-80:]


def _max_upload_bytes() -> int:
    from capyui.app import max_upload

    return int(max_upload().removesuffix("mb")) << 20


def store_upload(ws: WorkspaceService, upload: str) -> Path:
    """Copy an upload (a file Gradio received into its own cache) into the workspace, as data.

    The copy is named by a hash of its bytes, so the same file uploaded twice is one source."""
    import os
    import tempfile

    src = Path(upload).resolve()
    # only what Gradio received (its upload cache), never a path on the server (issue 10)
    roots = [Path(tempfile.gettempdir()).resolve()]
    if os.environ.get("GRADIO_TEMP_DIR"):
        roots.append(Path(os.environ["GRADIO_TEMP_DIR"]).resolve())
    if not any(src.is_relative_to(r) for r in roots) or not src.is_file():
        raise ValueError("the upload is not a file this server received")
    limit = _max_upload_bytes()
    if src.stat().st_size > limit:
        raise ValueError(f"the file is larger than the upload limit ({limit >> 20} MB)")
    dest_dir = ws.data_dir / "uploads"
    dest_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with src.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    dest = dest_dir / f"{digest.hexdigest()[:12]}-{_safe_name(src.name)}"
    if not dest.exists():
        with src.open("rb") as fin, dest.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
    return dest


def report_html(report: dict[str, Any]) -> str:
    rows = [
        ("Detected format", report.get("format") or "?"),
        ("Rows read", report.get("total_rows", 0)),
        ("Conversations loaded", report.get("loaded", 0)),
        ("New in the workspace", report.get("added", 0)),
        ("Already in the workspace", report.get("already_in_store", 0)),
        ("Duplicates in the source", report.get("duplicates", 0)),
        ("Rejected", sum((report.get("rejected") or {}).values())),
    ]
    out = [render.table_html(["", ""], rows)]
    rejected = report.get("rejected") or {}
    if rejected:
        examples = report.get("examples") or {}
        out.append("<h4>Rejected rows by reason</h4>")
        out.append(
            render.table_html(
                ["reason", "rows", "examples"],
                [(r, n, " | ".join(examples.get(r, []))) for r, n in rejected.items()],
            )
        )
    if report.get("truncated"):
        out.append(render.notice_html(f"Truncated: {report['truncated']}", "warn"))
    return "".join(out)


HUB_ID_HINT = (
    "A Hub dataset id is owner/name (letters, digits, '-', '_', '.'; at most 96 characters "
    "each), e.g. argilla/Capybara-Preferences"
)
MAX_SPLIT_CHARS = 100


def hub_id_error(hub_id: str, split: str) -> str | None:
    """Why ``hub_id`` / ``split`` cannot name a Hub dataset, checked locally (no network);
    None when they look valid. The id is never echoed in full (it may be 20,000 characters)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    shown = hub_id if len(hub_id) <= 60 else hub_id[:57] + "…"
    try:
        validate_repo_id(hub_id)
        # owner/name only, and never a local path (issue 10: the Hub box reads no file)
        if not HUB_ID.match(hub_id) or Path(hub_id).exists():
            raise HFValidationError(hub_id)
    except HFValidationError:
        return f"'{shown}' ({len(hub_id)} characters) is not a Hub dataset id"
    if len(split) > MAX_SPLIT_CHARS or not re.fullmatch(r"[\w.\-\[\]:%+]+", split):
        return f"'{split[:40]}' is not a split name (e.g. train, test, train[:100])"
    return None


def load_error_hint(message: str, kind: str) -> str:
    """What to do about a failed load, in one short sentence."""
    low = message.lower()
    if kind == HUB:
        if "not found" in low or "doesn't exist" in low or "404" in low:
            return "Check the id on huggingface.co (owner/name) and, for a private set, the token"
        if "split" in low:
            return "Pick one of the splits the dataset has"
        return "Check the id and the network, or upload the file instead"
    if kind == UPLOAD:
        return "Check the file's format (JSONL, JSON, Parquet or CSV) or pick it in Format"
    return "Try the bundled sample again, or report this"


def preview_html(ws: WorkspaceService, source_name: str) -> str:
    convs, total = ws.source_preview(current_actor(), source_name, PREVIEW)
    head = (
        f'<div class="cu-muted" id="cu-preview-count">Showing {len(convs)} of {total} '
        f"conversation(s) from {render.esc(source_name)}"
        + (" (the first ones, in load order)" if total > len(convs) else "")
        + "</div>"
    )
    items = []
    for c in convs:
        msgs = list(c.messages)
        if c.original_response:
            msgs.append({"role": "assistant", "content": c.original_response})
        items.append((f"{c.conversation_id} · {c.num_turns} user turn(s)", msgs))
    return head + render.chats_html(items)


def workspace_summary(ws: WorkspaceService) -> str:
    n = ws.conversation_count(current_actor())
    src = ws.recipe.source
    return render.notice_html(
        f"The workspace holds {n} conversation(s). Recipe source: {src.location} "
        f"(format {src.format}{', limit ' + str(src.limit) if src.limit else ''}).",
        "info",
    )


def load_data(
    ws: WorkspaceService,
    kind: str,
    hub_id: str,
    split: str,
    upload: str | None,
    fmt: str,
    limit: float | None,
) -> tuple[str, str, dict[str, Any], str]:
    fmt = fmt if fmt in FORMATS else "auto"
    n = int(limit) if limit else None
    if n is not None and n < 1:
        n = None
    if kind == UPLOAD:
        if not upload:
            return render.notice_html("Choose a file to upload first.", "error"), "", {}, ""
        try:
            source: dict[str, Any] = {"path": str(store_upload(ws, upload))}
        except (ValueError, OSError) as exc:
            return render.notice_html(str(exc), "error"), "", {}, ""
        base_dir = ws.base_dir
    elif kind == HUB:
        hub_id = (hub_id or "").strip()
        if not hub_id:
            return render.error_html("No Hub dataset id given", HUB_ID_HINT), "", {}, ""
        split = (split or "train").strip() or "train"
        problem = hub_id_error(hub_id, split)
        if problem:  # checked here, before any network call; the recipe is left alone
            return render.error_html(problem, HUB_ID_HINT), "", {}, workspace_summary(ws)
        source = {"dataset": hub_id, "split": split}
        base_dir = ws.base_dir
    else:
        source = {"path": SAMPLE_PATH}
        base_dir = str(RECIPES_DIR)
    source["format"] = fmt
    if n is not None:
        source["limit"] = n

    # The recipe's source changes only once the load has worked: a failed load leaves the
    # recipe (and the next Run) as they were.
    try:
        recipe, report = ws.load_into_recipe(current_actor(), source, base_dir, n)
    except Forbidden:
        raise
    except RecipeError as exc:
        return render.error_html(str(exc)), "", {}, workspace_summary(ws)
    except Exception as exc:  # noqa: BLE001 - SourceError and friends: one line to the user
        msg = render.one_line(str(exc)) or type(exc).__name__
        return (
            render.error_html(f"Load failed: {msg}", load_error_hint(msg, kind)),
            "",
            {},
            workspace_summary(ws),
        )
    name = recipe.source.dataset or Path(recipe.source.path or "").name
    return report_html(report), preview_html(ws, name), report, workspace_summary(ws)


def build(ws: WorkspaceService, tab: gr.Tab) -> None:
    gr.Markdown(
        "Load multi-turn conversations. Formats: Capybara (`conversation: [{input, output}]`), "
        "OpenAI/TRL `messages`, ShareGPT `conversations`. The last user turn is the prompt; "
        "the dataset's own last answer is kept as the `original` candidate."
    )
    with gr.Row():
        with gr.Column(scale=2):
            kind = gr.Radio([SAMPLE, UPLOAD, HUB], value=SAMPLE, label="Source")
            upload = gr.File(
                label="File (.jsonl, .json, .parquet, .csv)",
                file_types=[".jsonl", ".json", ".parquet", ".csv"],
                type="filepath",
                visible=False,
            )
            with gr.Row(visible=False) as hub_row:
                hub_id = gr.Textbox(
                    label="Hub dataset id",
                    placeholder="argilla/Capybara-Preferences",
                    max_lines=1,
                    elem_id="cu-hub-id",
                )
                split = gr.Textbox(label="Split", value="train", max_lines=1)
        with gr.Column(scale=1):
            fmt = gr.Dropdown(FORMATS, value="auto", label="Format (auto-detected unless set)")
            limit = gr.Number(label="Limit (rows; 0 = all)", precision=0, value=0)
            load_btn = gr.Button("Load", variant="primary", elem_id="cu-load")
    summary = gr.HTML(workspace_summary(ws), js_on_load=None)
    report = gr.HTML(js_on_load=None, elem_id="cu-load-report")
    report_json = gr.JSON(visible=False)
    gr.Markdown("### Preview")
    preview = gr.HTML(js_on_load=None, elem_id="cu-data-preview")

    def on_kind(k: str) -> tuple[Any, Any]:
        return gr.update(visible=k == UPLOAD), gr.update(visible=k == HUB)

    kind.change(on_kind, kind, [upload, hub_row], show_progress="hidden", queue=False)
    load_btn.click(
        lambda *a: load_data(ws, *a),
        [kind, hub_id, split, upload, fmt, limit],
        [report, preview, report_json, summary],
        api_name="load_data",
        concurrency_limit=1,
    )
    tab.select(lambda: workspace_summary(ws), None, summary, show_progress="hidden", queue=False)
