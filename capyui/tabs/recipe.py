"""Recipe tab: the whole configuration as the YAML file ``capyui run`` takes.

Export shows (and offers as a download) the current recipe; import validates an edited or
uploaded YAML and makes it the workspace's recipe. Errors are one line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor
from pipelines.recipe import RecipeError, parse_recipe_yaml
from pipelines.service import WorkspaceService

MAX_RECIPE_BYTES = 1 << 20


def export_recipe(ws: WorkspaceService) -> tuple[str, Any, str]:
    recipe = ws.recipe
    text = recipe.to_yaml()
    out_dir = ws.data_dir / "recipes"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", recipe.name).strip("._") or "recipe"
    path = out_dir / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    from capyui.tabs.results import downloadable  # a temp copy Gradio may serve (issue 10)

    return (
        text,
        gr.update(value=downloadable([str(path)])[0], visible=True),
        render.notice_html(f"Recipe '{recipe.name}' exported: download it below.", "ok"),
    )


def import_recipe(ws: WorkspaceService, text: str) -> tuple[str, str]:
    """Validate ``text`` and make it the workspace recipe; (status html, one-line error)."""
    if len((text or "").encode("utf-8")) > MAX_RECIPE_BYTES:
        err = "recipe: larger than 1 MiB"
        return render.notice_html(err, "error"), err
    try:
        recipe = parse_recipe_yaml(text or "", name="recipe", base_dir=ws.base_dir)
        ws.replace_recipe(current_actor(), recipe)  # (refuses a source outside the workspace)
    except RecipeError as exc:
        return render.error_html(str(exc), "Fix the YAML above and save again"), str(exc)
    return render.notice_html(
        f"Recipe '{recipe.name}' saved: {len(recipe.generators)} generator(s), judge "
        f"{', '.join(j.id for j in recipe.all_judges()) or 'none'}.",
        "ok",
    ), ""


def read_upload(upload: str | None) -> Any:
    if not upload:
        return gr.update()
    data = Path(upload).read_bytes()[: MAX_RECIPE_BYTES + 1]
    return data.decode("utf-8", errors="replace")


def build(ws: WorkspaceService, tab: gr.Tab) -> None:
    gr.Markdown(
        "The same YAML runs headless: `capyui run recipe.yaml`. Keys are never part of a recipe:"
        " models name the environment variable that holds theirs (`api_key_env`)."
    )
    code = gr.Code(
        ws.recipe.to_yaml(),
        language="yaml",
        label="recipe.yaml",
        interactive=True,
        elem_id="cu-recipe-code",
        max_lines=40,
    )
    with gr.Row():
        import_btn = gr.Button("Save recipe", variant="primary", elem_id="cu-recipe-import")
        export_btn = gr.Button("Export as file", elem_id="cu-recipe-export")
    status = gr.HTML(js_on_load=None, elem_id="cu-recipe-status")
    error = gr.Textbox(visible=False)
    with gr.Row():
        # shown once there is something to download (no empty box beside the button)
        download = gr.File(
            label="Recipe file", interactive=False, visible=False, elem_id="cu-recipe-file"
        )
        upload = gr.File(
            label="Upload a recipe (.yaml)", file_types=[".yaml", ".yml"], type="filepath"
        )
    export_btn.click(
        lambda: export_recipe(ws), None, [code, download, status], api_name="recipe_export"
    )
    import_btn.click(
        lambda t: import_recipe(ws, t), code, [status, error], api_name="recipe_import"
    )
    upload.upload(read_upload, upload, code, api_visibility="private")
    tab.select(lambda: ws.recipe.to_yaml(), None, code, show_progress="hidden")
