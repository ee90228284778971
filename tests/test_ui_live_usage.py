"""The Run tab's live token counters (issue 14a), driven over HTTP against the real app with a
job caught mid-run: a local server that reports usage answers 3 requests and holds the rest.
A Chromium screenshot of the Run tab is kept in test-artifacts/run-live-usage.png."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest_ui import ARTIFACTS, CHROMIUM, AppServer, chromium
from tests.support.usage_server import UsageServer

gradio_client = pytest.importorskip("gradio_client")

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROWS = 8
HELD = 3
MAX_TOKENS = 100
ROW_USD = MAX_TOKENS * 10.0 / 1_000_000


@pytest.fixture(scope="module")
def usage() -> Iterator[tuple[UsageServer, str]]:
    srv = UsageServer(prompt_tokens=10, hold_after=HELD)
    url = srv.start()
    yield srv, url
    srv.release()
    srv.stop()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("ui-live")
    with AppServer(root / "workspace") as server:
        yield server


def _snap(client: Any) -> tuple[str, dict[str, Any]]:
    out = client.predict(api_name="/job_status")
    return html.unescape(out[0]), out[1]


def test_run_tab_shows_tokens_throughput_eta_and_cost_live(
    app: AppServer, usage: tuple[UsageServer, str]
) -> None:
    srv, url = usage
    app.data_dir.mkdir(parents=True, exist_ok=True)
    data = app.data_dir / "convs.jsonl"
    with data.open("w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"conversation": [{"input": f"Question number {i}?"}]}) + "\n")
    recipe = {
        "name": "live",
        "source": {"path": str(data), "format": "capybara"},
        "generators": [
            {
                "id": "paid",
                "backend": "openai",
                "base_url": url,
                "model": "paid-model",
                "max_tokens": MAX_TOKENS,
                "concurrency": 1,
                "max_retries": 0,
            }
        ],
        "prices": {"paid": {"input": 0, "output": 10.0}},
    }
    client = gradio_client.Client(app.url, verbose=False)
    status, _ = client.predict(yaml.safe_dump(recipe), api_name="/recipe_import")
    assert "cu-error" not in status, status
    client.predict(["load", "generate"], 0, api_name="/start_job")

    deadline = time.monotonic() + 120
    page_html, snap = _snap(client)
    while time.monotonic() < deadline:
        page_html, snap = _snap(client)
        models = (snap.get("usage") or {}).get("models") or []
        if models and models[0]["requests"] == HELD and len(srv.bodies) > HELD:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"no live usage of {HELD} requests: {snap}")
    assert snap["status"] == "running"
    (paid,) = snap["usage"]["models"]
    assert paid["id"] == "paid" and paid["prompt_tokens"] == HELD * 10
    assert paid["completion_tokens"] == HELD * MAX_TOKENS and paid["tokens_per_s"] > 0
    assert snap["usage"]["usd"] == pytest.approx(HELD * ROW_USD)
    (gen,) = [s for s in snap["usage"]["stages"] if s["stage"] == "generate"]
    assert gen["done"] == HELD and gen["total"] == ROWS and gen["rows_per_s"] > 0
    assert gen["eta_s"] is not None and gen["eta_s"] > 0
    # what the page shows, in the progress area
    assert 'id="cu-live-usage"' in page_html and "paid-model (paid)" in page_html
    assert f"${HELD * ROW_USD:.4f}" in page_html and "tok/s" in page_html
    assert f"generate: {HELD}/{ROWS} rows" in page_html and "ETA" in page_html

    if CHROMIUM.exists():  # what a curator sees, while the job is held
        with chromium() as b:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app.url)
            page.get_by_role("tab", name="Run").click()
            page.locator("#cu-live-usage").wait_for(timeout=30000)
            page.wait_for_timeout(1500)  # a few timer ticks
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "run-live-usage.png"), full_page=True)
            text = page.locator("#cu-live-usage").inner_text()
        assert "paid-model (paid)" in text and "tok/s" in text

    srv.release()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        page_html, snap = _snap(client)
        if snap["status"] not in ("running", "starting", "cancelling"):
            break
        time.sleep(0.3)
    assert snap["status"] == "done", snap
    (paid,) = snap["usage"]["models"]
    assert paid["requests"] == ROWS and snap["usage"]["usd"] == pytest.approx(ROWS * ROW_USD)
    assert f"${ROWS * ROW_USD:.4f}" in page_html
