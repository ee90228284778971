"""The Argilla panel in pairs mode (issue 14a), against a real Argilla server and the real app:
push the Arena's pairs, a reviewer answers through the argilla SDK, pull, and the verdicts are
the store's pairwise reviews. One Chromium screenshot of the panel in pairs mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from pipelines.store import Store
from tests.conftest_ui import ARTIFACTS, AppServer, chromium, needs_chromium, recipe_client
from tests.support.argilla_server import Server
from tests.test_argilla import build_store, store_recipe
from tests.test_argilla_pairs import _answer, _queue, _reviewer

gradio_client = pytest.importorskip("gradio_client")

pytestmark = [pytest.mark.server, pytest.mark.slow]

N = 6
DATASET = "capyui-pairs-test"  # the name tests.test_argilla_pairs' helpers read
NAMES = ["url", "url_env", "key_env", "workspace", "dataset", "min_submitted"]
NAMES += ["max_candidates", "select", "interval"]


@pytest.fixture(scope="module")
def app(argilla: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("ui-argilla-pairs")
    build_store(root / "workspace", n=N)
    with AppServer(root / "workspace", env=dict(argilla.exports)) as server:
        yield server


@pytest.fixture(scope="module")
def client(app: AppServer) -> Any:
    return recipe_client(
        app, store_recipe("argilla-ui-pairs", {"pairs_dataset_name": DATASET, "min_submitted": 1})
    )


def _settings(client: Any, mode: str, reasons: list[str], **change: Any) -> list[Any]:
    values = dict(zip(NAMES, client.predict(api_name="/argilla_settings"), strict=True))
    values.update(change)
    return [*(values[n] for n in NAMES), mode, reasons]


def test_push_and_pull_pairs_from_the_panel(client: Any, argilla: Server, app: AppServer) -> None:
    settings = _settings(client, "pairs", ["top2"], dataset=DATASET)
    msg = client.predict(*settings, api_name="/argilla_push")
    assert "cu-error" not in msg and "Pushing pairs" in msg, msg
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = client.predict(api_name="/argilla_status")
        if not st["pushing"]:
            break
        time.sleep(0.3)
    push = st["push"]
    assert push["status"] == "done" and push["created"] == N and push["failed"] == 0, push
    html, info = client.predict(*settings, api_name="/argilla_check")
    assert info["ok"] and info["dataset"] == DATASET and info["records"] == N, info

    # a reviewer answers two pairs: A on one, both bad on the other
    dana = _reviewer(argilla, "dana")
    queue = _queue(argilla, dana)
    (first, second) = list(queue.values())[:2]
    _answer(dana, first, "a")
    _answer(dana, second, "both_bad")
    html, summary = client.predict(*settings, api_name="/argilla_pull")
    assert "cu-error" not in html and summary["written"] == 2, summary
    store = Store(app.data_dir)
    reviews = {
        r["conversation_id"]: r for r in store.pairwise_reviews() if r["source"] == "argilla"
    }
    cid = first["external_id"].split("|")[0]
    assert reviews[cid]["winner"] == first["owner_metadata"]["key_a"]
    assert reviews[second["external_id"].split("|")[0]]["verdict"] == "both_bad"
    again = client.predict(*settings, api_name="/argilla_pull")[1]
    assert again["written"] == 0 and again["unchanged"] == 2
    # the ratings dataset is another one, untouched by the pairs
    _, ratings = client.predict(*_settings(client, "ratings", ["top2"]), api_name="/argilla_check")
    assert ratings["ok"] and not ratings["dataset_exists"]


def test_save_keeps_the_mode_in_the_recipe(client: Any) -> None:
    out = client.predict(
        *_settings(client, "pairs", ["ai_tie", "top2"], dataset=DATASET),
        api_name="/argilla_save",
    )
    assert "pairs dataset" in out, out
    section = yaml.safe_load(client.predict(api_name="/recipe_export")[0])["argilla"]
    assert section["mode"] == "pairs" and section["pair_reasons"] == ["ai_tie", "top2"]
    assert section["pairs_dataset_name"] == DATASET
    out = client.predict(*_settings(client, "pairs", []), api_name="/argilla_save")
    assert "cu-error" in out and "at least one" in out


@pytest.mark.browser
@needs_chromium
def test_panel_pairs_mode_screenshot(app: AppServer, client: Any) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(app.url)
        page.get_by_role("tab", name="Review").click()
        page.get_by_text("Argilla review queue").click()
        page.locator("#cu-argilla-mode").get_by_text("Pairs:").click()
        page.locator("#cu-argilla-pair-reasons").wait_for(state="visible", timeout=10000)
        dataset = page.locator("#cu-argilla-dataset textarea, #cu-argilla-dataset input").first
        assert dataset.input_value() == DATASET
        page.locator("#cu-argilla-check").click()
        page.locator("#cu-argilla-status .cu-ok").wait_for(timeout=20000)
        page.locator("#cu-argilla-pull-btn").click()
        page.locator("#cu-argilla-pull .cu-table").wait_for(timeout=20000)
        assert DATASET in page.locator("#cu-argilla-status").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.wait_for_timeout(300)
        page.locator("#cu-argilla").screenshot(path=str(ARTIFACTS / "argilla-pairs-panel.png"))
