"""The Models tab configures a judge panel in Chromium: two judges picked from the owner's
endpoint registry, the aggregate, min judges and the panel id, saved into the workspace recipe
(``judges:`` + ``panel:``), shown again when the tab reopens; a bad min judges is a one-line
error that changes nothing, and the key's value never reaches the page or the recipe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest_ui import (
    ARTIFACTS,
    ROOT,
    AppServer,
    chromium,
    guarded_context,
    needs_chromium,
    scaled_ms,
)

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.slow, needs_chromium]

SECRET = "sk-panel-test-0123456789abcdefSECRET"
REGISTRY = """
- id: alpha-server
  base_url: http://127.0.0.1:9/v1
  api_key_env: PANEL_TEST_KEY
  models: [judge-a]
- id: beta-server
  base_url: http://127.0.0.1:10/v1
  models: [judge-b, judge-c]
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    ctx = guarded_context(browser)  # nothing leaves 127.0.0.1
    ctx.set_default_timeout(scaled_ms(15))
    pg = ctx.new_page()
    pg.remote_requests = ctx.remote_requests  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def _tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.locator(".tabitem:visible").first.wait_for()


def _pick(page: Any, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).click()


def _fill(page: Any, elem_id: str, text: str) -> None:
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(text)
    box.press("Tab")


def _workspace(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "pipelines" / "recipes" / "quickstart.yaml").read_text())
    data["source"]["path"] = str(ROOT / "pipelines" / "recipes" / "data" / "quickstart.jsonl")
    ws = tmp_path / "workspace"
    ws.mkdir()
    (ws / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return ws


def test_models_tab_configures_a_two_judge_panel(page: Any, tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    env = {"CAPYUI_ENDPOINTS": REGISTRY, "PANEL_TEST_KEY": SECRET}
    with AppServer(ws, env=env) as app:
        page.goto(app.url)
        _tab(page, "Models")
        panel = page.locator("#cu-panel")
        panel.get_by_text("One judge: 'smol-judge' is the recipe's judge").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "models-judge-panel-single.png"), full_page=True)

        # two judges from the registry; the first keeps the registry's key variable
        _pick(page, "cu-panel-endpoint", "alpha-server (http://127.0.0.1:9/v1; key PANEL_TEST_KEY)")
        page.locator("#cu-panel-model input").click()
        page.get_by_role("option", name="judge-a").click()
        _fill(page, "cu-panel-id", "ja")
        page.locator("#cu-panel-add").click()
        page.locator("#cu-panel-status").get_by_text("Added judge 'ja'").wait_for()
        _pick(page, "cu-panel-endpoint", "beta-server (http://127.0.0.1:10/v1)")
        _pick(page, "cu-panel-model", "judge-b")
        page.locator("#cu-panel-add").click()
        page.locator("#cu-panel-status").get_by_text("Added judge 'judge-b'").wait_for()
        # the embedded demo judge leaves the panel
        _pick(page, "cu-panel-rm", "smol-judge")
        page.locator("#cu-panel-remove").click()
        page.locator("#cu-panel-status").get_by_text("Removed judge 'smol-judge'").wait_for()
        rows = panel.locator("tbody tr")
        assert rows.count() == 2
        assert "PANEL_TEST_KEY (set)" in rows.nth(0).inner_text()

        page.locator("#cu-panel-agg").get_by_label("median").check()
        _fill(page, "cu-pid", "jury")
        summary = "the median of their ratings is the AI rating (stored as judge 'jury')"
        panel.get_by_text(summary).wait_for()  # the summary follows the settings
        # more judges required than the panel has: one line, nothing saved
        _fill(page, "cu-panel-min", "3")
        page.locator("#cu-panel-save").click()
        err = page.locator("#cu-panel-status .cu-error")
        err.wait_for()
        assert err.inner_text().strip() == "min judges is 3 but the panel has 2 judges"
        # another URL: its box shows (no key box: such a judge never gets a key)
        assert not page.locator("#cu-panel-url").is_visible()
        _pick(page, "cu-panel-endpoint", "Another OpenAI-compatible URL (no key)")
        page.locator("#cu-panel-url").wait_for(state="visible")
        page.wait_for_timeout(500)  # the option list's fade-out
        page.screenshot(path=str(ARTIFACTS / "models-judge-panel-error.png"), full_page=True)
        assert "judges:" not in (ws / "recipe.yaml").read_text()

        _fill(page, "cu-panel-min", "2")
        page.locator("#cu-panel-save").click()
        page.locator("#cu-panel-status .cu-ok").get_by_text("Saved the panel: 2 judges").wait_for()
        models = page.locator("#cu-models").inner_text()
        assert "panel judge" in models and "judge-b" in models
        # the panel's judges are in the model picker too (Test connection, Remove)
        page.get_by_label("Model", exact=True).click()
        assert page.get_by_role("option", name="panel:ja").count() == 1
        page.keyboard.press("Escape")
        page.locator("#cu-panel").scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "models-judge-panel.png"), full_page=True)

        saved = yaml.safe_load((ws / "recipe.yaml").read_text())
        assert "judge" not in saved
        assert [j["id"] for j in saved["judges"]] == ["ja", "judge-b"]
        ja, jb = saved["judges"]
        assert (ja["base_url"], ja["model"], ja["api_key_env"]) == (
            "http://127.0.0.1:9/v1",
            "judge-a",
            "PANEL_TEST_KEY",
        )
        assert (jb["base_url"], jb["model"]) == ("http://127.0.0.1:10/v1", "judge-b")
        assert "api_key_env" not in jb
        assert saved["panel"] == {"id": "jury", "aggregate": "median", "min_judges": 2}
        assert SECRET not in (ws / "recipe.yaml").read_text()
        assert SECRET not in page.content()

        # reopened, the tab shows the saved panel
        page.reload()
        _tab(page, "Models")
        page.locator("#cu-panel").get_by_text("Panel of 2 judges: the median").wait_for()
        assert page.locator("#cu-panel tbody tr").count() == 2
        assert page.locator("#cu-panel-agg").get_by_label("median").is_checked()
        assert page.locator("#cu-panel-min input").input_value() == "2"
        assert page.locator("#cu-pid input, #cu-pid textarea").first.input_value() == "jury"
        assert page.remote_requests == []
