"""A judge panel's biases and agreement in the Results tab (issue 14, section 2), in Chromium:
the panel judged by two scripted judges with a known position bias, the section shows each
judge's numbers, and the Review tab offers the "Judges disagree" queue."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pipelines.run import run_recipe
from tests.conftest_ui import AppServer
from tests.support.panel_judges import ContentJudge, PositionalJudge
from tests.test_browser import _shot, _tab, browser, page  # noqa: F401 - fixtures
from tests.test_panel import N, recipe_for, seed

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian chromium"),
]


def test_results_tab_shows_the_judge_panel(data_dir: Path, page: Any) -> None:  # noqa: F811
    server_a, server_b = PositionalJudge(), ContentJudge()
    url_a, url_b = server_a.start(), server_b.start()
    try:
        store, _ = seed(data_dir)
        recipe = recipe_for(url_a, url_b)
        # playwright's sync API runs an event loop in this thread: judge in another one
        with ThreadPoolExecutor(1) as pool:
            summary = pool.submit(run_recipe, recipe, store, stages=["judge"]).result()
        assert summary.status == "done", summary.error
    finally:
        server_a.stop()
        server_b.stop()
    (data_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    store.close()
    with AppServer(data_dir) as app:
        page.goto(app.url)
        _tab(page, "Results")
        page.locator("#cu-preview").click()
        section = page.locator("#cu-judge-panel")
        section.wait_for(timeout=30000)
        text = section.inner_text()
        assert "Judge panel (mean of the judges" in text
        rows = section.locator("table").first.locator("tbody tr")
        assert rows.count() == 3  # a, b, and the aggregate
        a_row = rows.nth(0).inner_text()
        b_row = rows.nth(1).inner_text()
        # A's best changes every time the order is reversed, B's never
        assert f"100% of {N}" in a_row and f"0% of {N}" in b_row
        assert "Judges disagree on 3 conversation(s)" in text
        section.scroll_into_view_if_needed()
        _shot(page, "results-judge-panel")
        _tab(page, "Review")
        queue = page.get_by_label("Queue")
        assert queue.count() >= 1
        queue.first.click()
        assert page.get_by_role("option", name="Judges disagree").count() == 1
        _shot(page, "review-judges-disagree-option")
