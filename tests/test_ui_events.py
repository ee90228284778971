"""The app's event handlers, driven over HTTP with gradio_client against the real app
(``python app.py`` in a subprocess, embedded model, temporary workspace)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.recipe import parse_recipe_yaml
from pipelines.store import Store
from tests.conftest_ui import AppServer, small_recipe_yaml, write_jsonl

gradio_client = pytest.importorskip("gradio_client")

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("ui-events")
    with AppServer(root / "workspace") as server:
        yield server


@pytest.fixture(scope="module")
def client(app: AppServer) -> Any:
    return gradio_client.Client(app.url, verbose=False)


def _json_output(result: tuple[Any, ...], key: str) -> dict[str, Any]:
    return next(r for r in result if isinstance(r, dict) and key in r)


def test_load_sample_reports_counts(client: Any, app: AppServer) -> None:
    out = client.predict("Bundled sample", "", "train", None, "auto", None, api_name="/load_data")
    report = out[2]
    assert report["format"] == "capybara"
    assert report["loaded"] == report["total_rows"] == 21
    assert report["rejected"] == {}
    assert "Detected format" in out[0] and "capybara" in out[0]
    assert out[1].count('class="cu-chat"') == 8  # preview of the first conversations
    assert Store(app.data_dir).count_conversations() == 21


def test_upload_reports_rejections_per_reason(client: Any, app: AppServer, tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "Hi there, uploaded row"}]}
    bad_role = {"messages": [{"role": "robot", "content": "beep"}]}
    no_user = {"messages": [{"role": "assistant", "content": "only me"}]}
    path = write_jsonl(tmp_path / "mixed.jsonl", [good, "{not json", bad_role, no_user])
    out = client.predict(
        "Upload a file",
        "",
        "train",
        gradio_client.handle_file(str(path)),
        "auto",
        None,
        api_name="/load_data",
    )
    report = out[2]
    assert report["format"] == "messages"
    assert report["loaded"] == 1 and report["total_rows"] == 4
    assert report["rejected"] == {"malformed_json": 1, "unknown_role": 1, "no_user_turn": 1}
    assert "unknown_role" in out[0] and "malformed_json" in out[0]
    # the upload was copied into the workspace as data; the recipe now points at that copy
    copies = list((app.data_dir / "uploads").glob("*-mixed.jsonl"))
    assert len(copies) == 1 and copies[0].read_bytes() == path.read_bytes()
    text = client.predict(api_name="/recipe_export")[0]
    assert yaml.safe_load(text)["source"]["path"] == str(copies[0])


def test_hub_dataset_error_is_one_line(client: Any) -> None:
    out = client.predict("Hub dataset", "", "train", None, "auto", None, api_name="/load_data")
    assert "Hub dataset id" in out[0]


def test_recipe_round_trip_and_one_line_error(client: Any) -> None:
    text = small_recipe_yaml()
    status, error = client.predict(text, api_name="/recipe_import")
    assert error == "" and "ui-test" in status
    exported = client.predict(api_name="/recipe_export")[0]
    assert parse_recipe_yaml(exported).to_dict() == parse_recipe_yaml(text).to_dict()
    # export -> import -> export is a fixed point
    assert client.predict(exported, api_name="/recipe_import")[1] == ""
    assert client.predict(api_name="/recipe_export")[0] == exported
    # the export is also written as a downloadable file
    path = client.predict(api_name="/recipe_export")[1]
    assert Path(path).read_text().rstrip("\n") == exported.rstrip("\n")

    status, error = client.predict(
        "name: x\nsource: {path: a.jsonl}\nbogus: 1\n", api_name="/recipe_import"
    )
    assert error and "\n" not in error
    assert "bogus" in error and "cu-error" in status
    status, error = client.predict("name: [unclosed", api_name="/recipe_import")
    assert "not valid YAML" in error and "\n" not in error
    # a failed import leaves the recipe as it was
    assert yaml.safe_load(client.predict(api_name="/recipe_export")[0])["name"] == "ui-test"


def test_models_tab_keeps_keys_out(client: Any) -> None:
    out = client.predict(
        "generator",
        "openai",
        "remote",
        "my-model",
        "http://127.0.0.1:9/v1",
        "sk-live-abcdefghijklmnopqrstuvwxyz",
        0.5,
        32,
        1,
        api_name="/save_model",
    )
    assert "api_key_env is the NAME" in out[1]
    out = client.predict(
        "generator",
        "openai",
        "remote",
        "my-model",
        "http://127.0.0.1:9/v1",
        "MY_TEST_KEY",
        0.5,
        32,
        1,
        api_name="/save_model",
    )
    assert "Saved generator" in out[1] and "MY_TEST_KEY (NOT set)" in out[0]
    status = client.predict("generator:remote", api_name="/test_model")
    assert "cu-error" in status and "remote" in status
    out = client.predict("generator:remote", api_name="/remove_model")
    assert "Removed generator" in out[1] and "my-model" not in out[0]


def test_generation_job_with_limit(client: Any, app: AppServer) -> None:
    client.predict(small_recipe_yaml(), api_name="/recipe_import")
    client.predict("Bundled sample", "", "train", None, "auto", None, api_name="/load_data")
    client.predict(["generate"], 2, api_name="/start_job")
    deadline = time.monotonic() + 240
    snap: dict[str, Any] = {}
    while time.monotonic() < deadline:
        snap = _json_output(client.predict(api_name="/job_status"), "status")
        if snap["status"] not in ("running", "starting", "cancelling"):
            break
        time.sleep(1)
    assert snap["status"] == "done", snap
    gen = snap["progress"]["generate"]
    assert gen["total"] == 6 and gen["done"] == 6 and gen["failed"] == 0  # 2 convs x 3 gens
    rows = Store(app.data_dir).candidate_rows()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"done"}
    # a second start while idle is fine and does nothing new (resumable by design)
    client.predict(["generate"], 2, api_name="/start_job")
    for _ in range(120):
        snap = _json_output(client.predict(api_name="/job_status"), "status")
        if snap["status"] == "done":
            break
        time.sleep(0.5)
    assert snap["progress"]["generate"]["skipped"] == 6


def test_interrupted_job_is_listed_and_resumed(client: Any, app: AppServer) -> None:
    store = Store(app.data_dir)
    job_id = store.start_job("ui:generate", {})
    # as if the app had died mid-job: the recorded process is gone (pids never reach 2**23)
    store.query("UPDATE jobs SET pid = ? WHERE job_id = ?", (2**23 + 7, job_id))
    out = client.predict(api_name="/job_status")
    assert job_id in out[3] and "interrupted" in out[3]
    offered = out[4]["value"] if isinstance(out[4], dict) else out[4]
    assert offered == job_id  # offered for resuming
    client.predict(job_id, 2, api_name="/resume_job")
    for _ in range(240):
        snap = _json_output(client.predict(api_name="/job_status"), "status")
        if snap["status"] not in ("running", "starting", "cancelling"):
            break
        time.sleep(0.5)
    assert snap["name"] == "ui-resume" and snap["status"] == "done", snap
    assert snap["stages"] == ["generate"]
    assert snap["progress"]["generate"]["skipped"] == 6  # nothing redone


def test_review_submit_lands_in_store(client: Any, app: AppServer) -> None:
    out = client.predict("all", "alice", True, True, api_name="/review_queue")
    header = out[1]
    assert "Conversation 1 of 2" in header
    # blind: no model name on the cards before submitting
    cards = " ".join(str(x) for x in out[3:15:2])
    assert cards.count('class="cu-cand"') == 3 and 'class="cu-model"' not in cards
    ratings = ["5", "2", "3", None, None, None]
    out = client.predict(
        "alice", True, True, *ratings, "A", "B", False, "nice one", api_name="/review_submit"
    )
    assert "Saved" in out[-1]
    store = Store(app.data_dir)
    reviews = store.reviews()
    assert len(reviews) == 1
    r = reviews[0]
    assert r["reviewer"] == "alice" and r["source"] == "ui" and r["comment"] == "nice one"
    assert sorted(r["ratings"].values()) == [2, 3, 5]
    assert r["chosen"] != r["rejected"] and r["chosen"] in r["ratings"]
    assert r["ratings"][r["chosen"]] == 5 and r["ratings"][r["rejected"]] == 2
    # after submitting, the models are revealed
    revealed = " ".join(str(x) for x in out[3:15:2])
    assert revealed.count('class="cu-model"') == 3 and "SmolLM2" in revealed
    # same candidate as chosen and rejected is refused with one line, nothing stored
    out = client.predict(
        "alice", True, True, *ratings, "A", "A", False, "", api_name="/review_submit"
    )
    assert "must be different" in out[-1]
    assert store.reviews()[0]["comment"] == "nice one"
    # the unreviewed queue no longer holds it; next/prev move through the queue
    out = client.predict("unreviewed", "alice", True, True, api_name="/review_queue")
    assert "Conversation 1 of 1" in out[1]
    out = client.predict("all", "alice", True, True, api_name="/review_queue")
    nxt = client.predict("alice", True, True, api_name="/review_next")
    assert "Conversation 2 of 2" in nxt[0]
    prv = client.predict("alice", True, True, api_name="/review_prev")
    assert "Conversation 1 of 2" in prv[0] and "you reviewed this" in prv[0]


def test_binarize_preview_counts(client: Any) -> None:
    out = client.predict("best-vs-worst", 0, 0, False, 0, api_name="/binarize_preview")
    summary = out[2]
    assert summary["rows_in"] == 22  # 21 sample conversations + 1 uploaded
    # only the human-reviewed conversation has a pick; nothing is judged yet
    assert summary["pairs"] == 1 and summary["human_rows"] == 1
    assert summary["dropped"]["no_judgment"] == 1  # the other generated conversation
    assert summary["dropped"]["too_few_candidates"] == 20
    assert "cu-table" in out[0] and "rating source human" in out[1]
    out = client.predict("best-vs-worst", 0, 0, False, 1, api_name="/binarize_preview")
    assert out[2]["dropped"]["too_many_turns"] >= 1


def test_export_with_a_profile_and_filters(client: Any, app: AppServer) -> None:
    """Results tab: the profile selector picks the columns; thresholds are export filters."""
    import pyarrow.parquet as pq

    out = client.predict(
        ["parquet"], "capybara-dpo", "best-vs-worst", 0, 4, False, 0, api_name="/export"
    )
    assert "Exported" in out[1], out[1]
    recipe = yaml.safe_load(client.predict(api_name="/recipe_export")[0])
    assert recipe["export"]["profile"] == "capybara-dpo"
    assert recipe["export"]["filters"] == {"min_chosen_rating": 4}
    assert "min_chosen_rating" not in recipe.get("binarize", {})
    parquet = next(p for p in out[2] if p.endswith(".parquet"))
    table = pq.read_table(parquet)
    assert table.column_names[:3] == ["source", "conversation", "original_response"]
    assert "new_generations" in table.column_names and table.num_rows == 1
    card = Path(next(p for p in out[2] if p.endswith("README.md"))).read_text()
    assert "Export profile **capybara-dpo**" in card and "| min\\_chosen\\_rating | 4 | 0 |" in card


def test_password_auth_from_env(tmp_path: Path) -> None:
    with AppServer(tmp_path / "ws", env={"CAPYUI_AUTH": "curator:s3cret-pass"}) as server:
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do: not logged in
            gradio_client.Client(server.url, verbose=False).predict(api_name="/recipe_export")
        authed = gradio_client.Client(server.url, auth=("curator", "s3cret-pass"), verbose=False)
        assert "name: quickstart" in authed.predict(api_name="/recipe_export")[0]
        assert "WARNING" not in server.log.read_text()


def test_public_bind_without_auth_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    import capyui.app as capp

    calls: list[dict[str, Any]] = []

    class FakeDemo:
        def queue(self, **kw: Any) -> FakeDemo:
            return self

        def launch(self, **kw: Any) -> None:
            calls.append(kw)

    monkeypatch.setattr(capp, "build_app", lambda data_dir=None: FakeDemo())
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("CAPYUI_AUTH", raising=False)
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        capp.launch(host="0.0.0.0", port=1)
    assert "without authentication" in err.getvalue() and calls[-1]["auth"] is None
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        capp.launch(host="127.0.0.1", port=1)
    assert err.getvalue() == ""
    monkeypatch.setenv("CAPYUI_AUTH", "a:b")
    with contextlib.redirect_stderr(err):
        capp.launch(host="0.0.0.0", port=1)
    assert err.getvalue() == "" and calls[-1]["auth"] == ("a", "b")
