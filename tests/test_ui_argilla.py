"""The Argilla panel of the app (Review tab) against a real Argilla server
(``tests/support/argilla_server.py``) and the real app (``python app.py`` in a subprocess),
driven over HTTP with gradio_client; one screenshot of the panel with Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from pipelines.store import Store
from tests.conftest_ui import (
    ARTIFACTS,
    AppServer,
    chromium,
    free_port,
    guarded_context,
    needs_chromium,
    recipe_client,
)
from tests.support.argilla_server import Server
from tests.test_argilla import build_store, store_recipe

gradio_client = pytest.importorskip("gradio_client")

pytestmark = [pytest.mark.server, pytest.mark.slow]

N = 6  # conversations: #0 and #5 are AI ties, #3 has a null AI rating
DATASET = "capyui-ui"
BAD_KEY = "argilla.apikey.not-a-real-key-000000"


@pytest.fixture(scope="module")
def app(argilla: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("ui-argilla")
    build_store(root / "workspace", n=N)
    env = {**argilla.exports, "CAPYUI_BAD_KEY": BAD_KEY}
    with AppServer(root / "workspace", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(app: AppServer) -> Any:
    return recipe_client(
        app, store_recipe("argilla-ui", {"dataset_name": DATASET, "min_submitted": 1})
    )


def _settings(client: Any, **change: Any) -> list[Any]:
    names = [
        "url",
        "url_env",
        "key_env",
        "workspace",
        "dataset",
        "min_submitted",
        "max_candidates",
        "select",
        "interval",
    ]
    values = dict(zip(names, client.predict(api_name="/argilla_settings"), strict=True))
    values.update(change)
    return [values[n] for n in names]


def _one_line_error(html: str, info: dict[str, Any], match: str) -> str:
    err = info["error"]
    assert "cu-error" in html and match in err, (html, err)
    assert "\n" not in err and "Traceback" not in html and BAD_KEY not in html
    return err


def _push(client: Any, select: str, **change: Any) -> dict[str, Any]:
    msg = client.predict(*_settings(client, select=select, **change), api_name="/argilla_push")
    assert "cu-error" not in msg, msg
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = client.predict(api_name="/argilla_status")
        if not st["pushing"]:
            return st["push"]
        time.sleep(0.3)
    pytest.fail("push did not finish within 60s")


def _records(argilla: Server, dataset_id: str) -> list[dict[str, Any]]:
    with argilla.http() as h:
        r = h.get(
            f"/api/v1/datasets/{dataset_id}/records",
            params={"include": ["responses"], "limit": 100},
        )
        r.raise_for_status()
        return r.json()["items"]


def _answer(argilla: Server, record: dict[str, Any], body: dict[str, Any]) -> None:
    """As the owner in the web UI: rate every response shown (or discard)."""
    if body.get("status") == "submitted":
        body = {
            **body,
            "values": {
                f"rating_{i}": {"value": 6 - i}
                for i in range(1, 5)
                if f"candidate_{i}" in record["fields"]
            },
        }
    with argilla.http() as h:
        r = h.post(f"/api/v1/records/{record['id']}/responses", json=body)
        assert r.status_code == 201, r.text


# ---------------------------------------------------------------------------------------------
def test_check_connection_from_recipe_settings(client: Any, argilla: Server) -> None:
    settings = _settings(client)
    assert settings[1:5] == ["ARGILLA_API_URL", "ARGILLA_API_KEY", "argilla", DATASET]
    html, info = client.predict(*settings, api_name="/argilla_check")
    assert info["ok"] and info["error"] is None, info
    assert info["url"] == argilla.url and not info["dataset_exists"]
    assert "Connected to" in html and "Push creates it" in html


def test_push_selection_then_all(client: Any, argilla: Server, app: AppServer) -> None:
    ties = _push(client, "ties")
    assert ties["status"] == "done", ties
    assert ties["selected"] == 2 and ties["created"] == 2
    assert ties["skipped"] == {"not_selected": N - 2}
    every = _push(client, "all")
    assert every["created"] == N - 2 and every["unchanged"] == 2 and every["failed"] == 0

    html, info = client.predict(*_settings(client), api_name="/argilla_check")
    assert info["ok"] and info["records"] == N and info["pending"] == N, info
    assert "cu-argilla-link" in html and f"/dataset/{info['dataset_id']}/" in html
    records = _records(argilla, info["dataset_id"])
    assert sorted(r["external_id"] for r in records) == sorted(
        Store(app.data_dir).conversation_ids()
    )


def test_pull_brings_a_submitted_response(client: Any, argilla: Server, app: AppServer) -> None:
    _, info = client.predict(*_settings(client), api_name="/argilla_check")
    record = _records(argilla, info["dataset_id"])[0]
    _answer(argilla, record, {"status": "submitted"})
    html, summary = client.predict(*_settings(client), api_name="/argilla_pull")
    assert summary["submitted"] == 1 and summary["written"] == 1, summary
    assert summary["reviewers"] == ["argilla"] and "1 review(s) written" in html
    reviews = [r for r in Store(app.data_dir).reviews() if r["source"] == "argilla"]
    assert len(reviews) == 1 and reviews[0]["conversation_id"] == record["external_id"]
    assert reviews[0]["reviewer"] == "argilla" and len(reviews[0]["ratings"]) >= 2
    again = client.predict(*_settings(client), api_name="/argilla_pull")[1]
    assert again["written"] == 0 and again["unchanged"] == 1


def test_live_pull_follows_new_work(client: Any, argilla: Server, app: AppServer) -> None:
    html, info = client.predict(True, *_settings(client, interval=1), api_name="/argilla_live")
    assert info["running"] and info["pulls"] >= 1 and info["last_error"] is None, info
    assert "Live pull on" in html
    _, st = client.predict(*_settings(client), api_name="/argilla_check")
    record = _records(argilla, st["dataset_id"])[1]
    _answer(argilla, record, {"status": "discarded"})
    store = Store(app.data_dir)
    deadline = time.monotonic() + 20
    while not any(r["discard"] for r in store.reviews(record["external_id"])):
        assert time.monotonic() < deadline, "the live pull did not bring the discard"
        time.sleep(0.3)
    live = client.predict(api_name="/argilla_status")["live"]
    assert live["running"] and live["last_summary"]["discarded"] == 1
    html, info = client.predict(False, *_settings(client), api_name="/argilla_live")
    assert not info["running"] and "off" in html


def test_save_writes_the_recipe_section(client: Any) -> None:
    out = client.predict(
        *_settings(client, select="low_confidence", min_submitted=2), api_name="/argilla_save"
    )
    assert "saved to the recipe" in out
    section = yaml.safe_load(client.predict(api_name="/recipe_export")[0])["argilla"]
    assert section["dataset_name"] == DATASET and section["select"] == "low_confidence"
    assert section["min_submitted"] == 2 and section["api_key_env"] == "ARGILLA_API_KEY"
    # a key pasted where the NAME belongs is refused, and never echoed
    out = client.predict(*_settings(client, key_env=BAD_KEY), api_name="/argilla_save")
    assert "cu-error" in out and "NAME of an environment variable" in out
    assert BAD_KEY not in out
    assert BAD_KEY not in client.predict(api_name="/recipe_export")[0]
    client.predict(*_settings(client, select="all", min_submitted=1), api_name="/argilla_save")


@pytest.mark.browser
@needs_chromium
def test_panel_screenshot(app: AppServer, client: Any) -> None:
    with chromium() as browser:
        page = guarded_context(browser).new_page()  # nothing leaves 127.0.0.1
        page.goto(app.url)
        page.get_by_role("tab", name="Review").click()
        page.get_by_text("Argilla review queue").click()
        page.locator("#cu-argilla-check").click()
        page.locator("#cu-argilla-status .cu-ok").wait_for(timeout=20000)
        page.locator("#cu-argilla-pull-btn").click()
        page.locator("#cu-argilla-pull .cu-table").wait_for(timeout=20000)
        assert "records" in page.locator("#cu-argilla-status").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.wait_for_timeout(300)
        page.locator("#cu-argilla").screenshot(path=str(ARTIFACTS / "argilla-panel.png"))


def test_errors_are_one_line(client: Any) -> None:
    bad = _settings(client, key_env="CAPYUI_BAD_KEY")
    _one_line_error(*client.predict(*bad, api_name="/argilla_check"), "rejected the API key")
    _one_line_error(*client.predict(*bad, api_name="/argilla_pull"), "rejected the API key")
    down = _settings(client, url=f"http://127.0.0.1:{free_port()}")
    _one_line_error(*client.predict(*down, api_name="/argilla_check"), "cannot reach Argilla")
    unset = _settings(client, key_env="CAPYUI_UNSET_KEY")
    _one_line_error(*client.predict(*unset, api_name="/argilla_check"), "is not set")
    # the dataset exists with 4 candidate slots: a push with 3 is refused, in one line
    failed = _push(client, "all", max_candidates=3)
    assert failed["status"] == "failed" and "incompatible settings" in failed["error"]
    assert "\n" not in failed["error"]
