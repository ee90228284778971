"""The app's workspace keeps its recipe across restarts, secret-free and with a usable source."""

from __future__ import annotations

from pathlib import Path

from capyui.app import Workspace


def test_recipe_survives_restart_and_keeps_its_source(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert ws.recipe.name == "quickstart"
    ws.update_recipe(lambda r: r.update(name="my-run"))
    again = Workspace(tmp_path)
    assert again.recipe.name == "my-run"
    assert Path(again.recipe.source_path()).is_file()


def test_broken_saved_recipe_falls_back_to_quickstart(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    (tmp_path / "recipe.yaml").write_text("name: [broken\n")
    ws = Workspace(tmp_path)
    assert ws.recipe.name == "quickstart"
    assert "ignoring the saved recipe" in capsys.readouterr().err
