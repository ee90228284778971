"""Issue 10 against the real app (``python app.py`` on 127.0.0.1, ``CAPYUI_AUTH`` users with
roles), driven with gradio_client and one flow in Chromium. Loopback servers record every
header they receive: no secret reaches them from a non-owner, ever.

Users: olga (owner), rita (reviewer), eve (signed in, no role); anonymous cannot even connect.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.store import Store
from pipelines.types import GenerationResult
from tests.conftest_ui import ARTIFACTS, AppServer, chromium, guarded_context, needs_chromium
from tests.test_security import BOMB, GSK, HF, SK, _hub_reply, received_bytes, serve

gradio_client = pytest.importorskip("gradio_client")

pytestmark = [pytest.mark.server, pytest.mark.slow]

USERS = {"olga": "pw-olga-1", "rita": "pw-rita-1", "eve": "pw-eve-1"}
ROLE = {"olga": 2, "rita": 1, "eve": 0}  # pipelines.workspace.Role


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    """A header-recording listener nobody registered, a registered one, and a Hub recorder on
    which the dataset ``olga/existing`` exists."""
    out: dict[str, Any] = {}
    stop = []
    for name, reply in (("listener", None), ("registered", None), ("hub", None)):
        if name == "hub":
            reply = _hub_reply(["README.md", "data/train-00000-of-00001.parquet"])
        url, handler, server = serve(reply)
        out[name] = (url, handler)
        stop.append(server)
    yield out
    for s in stop:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, Any]) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("security-app")
    apptmp = root / "apptmp"  # the workspace is outside the app's temp dir, as /data on a Space
    apptmp.mkdir()
    registry = [
        {
            "id": "registered",
            "base_url": servers["registered"][0] + "/v1",
            "api_key_env": "TEST_GROQ_KEY",
        }
    ]
    env = {
        "CAPYUI_AUTH": ",".join(f"{u}:{p}" for u, p in USERS.items()),
        "CAPYUI_OWNERS": "olga",
        "CAPYUI_REVIEWERS": "rita",
        "CAPYUI_ENDPOINTS": yaml.safe_dump(registry),
        "CAPYUI_MAX_UPLOAD_MB": "1",
        "HF_TOKEN": HF,
        "OPENAI_API_KEY": SK,
        "ARGILLA_API_KEY": "argilla.apikey." + "s" * 24,
        "TEST_GROQ_KEY": GSK,
        "HF_ENDPOINT": servers["hub"][0],
        "HF_HUB_OFFLINE": "0",
        "TMPDIR": str(apptmp),
        "GRADIO_TEMP_DIR": str(apptmp / "gradio"),
    }
    with AppServer(root / "workspace", env=env) as server:
        yield server


def client_for(app: AppServer, user: str) -> Any:
    return gradio_client.Client(app.url, auth=(user, USERS[user]), verbose=False)


@pytest.fixture(scope="module")
def clients(app: AppServer) -> dict[str, Any]:
    return {u: client_for(app, u) for u in USERS}


def _seed_candidates(app: AppServer, n: int = 2) -> list[str]:
    """Candidates for the first ``n`` stored conversations, for every generator of the recipe."""
    store = Store(app.data_dir)
    ids = store.conversation_ids(limit=n)
    for cid in ids:
        for gen in ("smol-precise", "smol-creative", "original"):
            store.put_candidate(
                cid, gen, 0, GenerationResult(key="k", text=f"{gen} says", model=gen)
            )
    store.close()
    return ids


def _refused(call: Any) -> str | None:
    """None when the call went through, else the error message."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - gradio_client's AppError and friends
        return str(exc)
    return None


def test_anonymous_cannot_connect(app: AppServer) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any refusal: the login page
        gradio_client.Client(app.url, verbose=False).predict(api_name="/job_status")


def test_whoami_is_the_servers_identity(clients: dict[str, Any]) -> None:
    assert "Signed in as olga (owner)" in clients["olga"].predict(api_name="/whoami")
    assert "Signed in as rita (reviewer)" in clients["rita"].predict(api_name="/whoami")
    assert "without a role" in clients["eve"].predict(api_name="/whoami")


# Arguments for every named endpoint (the owner's calls must go through with them).
def _args(tmp: Path) -> dict[str, tuple[Any, ...]]:
    return {
        "whoami": (),
        "load_data": ("Bundled sample", "", "train", None, "auto", None),
        "model_form": ("generator:smol-precise",),
        "save_model": ("generator", "embedded", "extra", "", "", "", 0.5, 8, 1),
        "remove_model": ("generator:original",),
        "panel_add": ("mean", "panel", None, None, "", ""),
        "save_panel": ("mean", None, "panel"),
        "test_model": ("generator:original",),
        "start_job": (["load"], 1),
        "resume_job": (None, 0),
        "cancel_job": (),
        "job_status": (),
        "review_queue": ("all", "", True, True),
        "review_next": ("", True, True, *[None] * 6, None, None, False, ""),
        "review_prev": ("", True, True, *[None] * 6, None, None, False, ""),
        "review_submit": (
            "",
            True,
            True,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            False,
            "",
        ),
        "argilla_check": (
            "",
            "ARGILLA_API_URL",
            "ARGILLA_API_KEY",
            "argilla",
            "d",
            1,
            4,
            "all",
            60,
        ),
        "argilla_save": ("", "ARGILLA_API_URL", "ARGILLA_API_KEY", "argilla", "d", 1, 4, "all", 60),
        "argilla_push": ("", "ARGILLA_API_URL", "ARGILLA_API_KEY", "argilla", "d", 1, 4, "all", 60),
        "argilla_pull": ("", "ARGILLA_API_URL", "ARGILLA_API_KEY", "argilla", "d", 1, 4, "all", 60),
        "argilla_live": (
            False,
            "",
            "ARGILLA_API_URL",
            "ARGILLA_API_KEY",
            "argilla",
            "d",
            1,
            4,
            "all",
            60,
        ),
        "argilla_status": (),
        "argilla_settings": (),
        "binarize_preview": ("best-vs-worst", 0, 0, False, 0),
        "save_binarize": ("best-vs-worst", 0, 0, False, 0),
        "export": (["jsonl"], "capyui", "best-vs-worst", 0, 0, False, 0),
        "publish": ("olga/new-data", True, False),
        "recipe_export": (),
        "recipe_import": ((tmp / "recipe.yaml").read_text(),),
        "arena_start": ("", ["ai_tie", "random"], 2),
        **{
            f"arena_{v}": ("", ["ai_tie", "random"], 2)
            for v in ("a", "b", "tie", "both_bad", "skip")
        },
        "arena_rankings": (),
        "cost": (0,),
    }


def test_each_role_calls_every_endpoint_and_only_allowed_ones_succeed(
    app: AppServer, clients: dict[str, Any], servers: dict[str, Any], tmp_path: Path
) -> None:
    from capyui.guard import API_ACTIONS
    from pipelines.workspace import ACTIONS

    listener_url, listener = servers["listener"]
    (tmp_path / "recipe.yaml").write_text(clients["olga"].predict(api_name="/recipe_export")[0])
    args = _args(tmp_path)
    api = clients["olga"].view_api(print_info=False, return_format="dict")
    endpoints = {k.lstrip("/"): v for k, v in api["named_endpoints"].items()}
    named = set(endpoints) & set(API_ACTIONS)
    # every endpoint named by the app declares its action, and this test calls all of them
    assert named - {"read_upload"} <= set(args), named - set(args)
    # the others are Gradio's names for tab selects, refreshes and inputs: read-only views,
    # which show nothing to someone who may not look
    auto = set(endpoints) - named
    assert all(re.fullmatch(r"(lambda|go|on_\w+|load_queue|who_am_i)(_\d+)?", n) for n in auto)
    for name in sorted(auto):
        params = endpoints[name]["parameters"]
        out = clients["eve"].predict(*[None] * len(params), api_name=f"/{name}")
        text = json.dumps(out, default=str)
        for leak in ("quickstart", "smol", "Conversation", "cu-table", "ARGILLA"):
            assert leak not in text, (name, text[:300])
    matrix: dict[str, dict[str, str]] = {}
    for user in ("eve", "rita", "olga"):  # non-owners first: their calls must change nothing
        for name in sorted(named & set(args)):
            action = API_ACTIONS[name]
            err = _refused(lambda n=name, u=user: clients[u].predict(*args[n], api_name=f"/{n}"))
            refused = err is not None and ("needs the" in err or "Sign in" in err)
            allowed = ROLE[user] >= ACTIONS[action]
            matrix.setdefault(name, {})[user] = "refused" if refused else "ok"
            assert refused != allowed, (user, name, err)
        if user != "olga":
            assert listener.seen == []
    (ARTIFACTS).mkdir(exist_ok=True)
    (ARTIFACTS / "security-matrix.json").write_text(json.dumps(matrix, indent=1))
    clients["olga"].predict(api_name="/cancel_job")
    clients["olga"].predict(args["recipe_import"][0], api_name="/recipe_import")  # as it was
    assert listener_url  # (the listener is aimed at in the next test)


def test_no_secret_reaches_an_unregistered_server(
    app: AppServer, clients: dict[str, Any], servers: dict[str, Any]
) -> None:
    """Repro 1: a visitor aimed base_url + api_key_env (HF_TOKEN, ...) at their own server and
    pressed Test connection / Check connection."""
    listener_url, listener = servers["listener"]
    reg_url, registered = servers["registered"]
    for user in ("eve", "rita"):
        c = clients[user]
        for key in ("HF_TOKEN", "OPENAI_API_KEY", "TEST_GROQ_KEY"):
            for call in (
                lambda k=key, c=c: c.predict(
                    "generator",
                    "openai",
                    "x",
                    "m",
                    listener_url + "/v1",
                    k,
                    0.5,
                    8,
                    1,
                    api_name="/save_model",
                ),
                lambda c=c: c.predict("generator:smol-precise", api_name="/test_model"),
                lambda k=key, c=c: c.predict(
                    listener_url,
                    "ARGILLA_API_URL",
                    k,
                    "argilla",
                    "d",
                    1,
                    4,
                    "all",
                    60,
                    api_name="/argilla_check",
                ),
            ):
                assert "needs the owner role" in (_refused(call) or "")
    assert listener.seen == []
    # even the owner cannot send a key to a URL the registry does not list for it
    olga = clients["olga"]
    out = olga.predict(
        "generator",
        "openai",
        "x",
        "m",
        listener_url + "/v1",
        "HF_TOKEN",
        0.5,
        8,
        1,
        api_name="/save_model",
    )
    assert "Saved generator" in out[1]
    assert "HF_TOKEN (" not in out[0]  # set / not set: only for registry variables
    status = olga.predict("generator:x", api_name="/test_model")
    assert "registered" in status
    olga.predict(
        listener_url,
        "ARGILLA_API_URL",
        "HF_TOKEN",
        "argilla",
        "d",
        1,
        4,
        "all",
        60,
        api_name="/argilla_check",
    )
    blob = received_bytes(listener)
    for secret in (HF, SK, GSK, b"argilla.apikey"):
        assert (secret if isinstance(secret, bytes) else secret.encode()) not in blob
    # a registered endpoint gets its key; its error body (echoing the headers) is not shown
    out = olga.predict(
        "generator",
        "openai",
        "reg",
        "m",
        reg_url + "/v1",
        "TEST_GROQ_KEY",
        0.5,
        8,
        1,
        api_name="/save_model",
    )
    assert "TEST_GROQ_KEY (set)" in out[0]
    status = olga.predict("generator:reg", api_name="/test_model")
    assert GSK.encode() in received_bytes(registered)
    assert "status 500" in status and "Bearer" not in status and GSK not in status
    olga.predict("generator:x", api_name="/remove_model")
    olga.predict("generator:reg", api_name="/remove_model")


def test_reviewer_impersonation_and_stale_tabs(app: AppServer, clients: dict[str, Any]) -> None:
    clients["olga"].predict(
        "Bundled sample", "", "train", None, "auto", None, api_name="/load_data"
    )
    _seed_candidates(app)
    rita = clients["rita"]
    out = rita.predict("all", "olga", True, True, api_name="/review_queue")
    assert "Conversation 1 of 2" in out[1]
    # a second tab of the same reviewer reviews the same conversation first
    other_tab = client_for(app, "rita")
    other_tab.predict("all", "olga", True, True, api_name="/review_queue")
    saved = other_tab.predict(
        "olga",
        True,
        True,
        "5",
        "1",
        "3",
        None,
        None,
        None,
        "A",
        "B",
        False,
        "newer",
        api_name="/review_submit",
    )
    assert "Saved" in str(saved[-2]) or "Saved" in str(saved)
    stale = rita.predict(
        "olga",
        True,
        True,
        "1",
        "5",
        "3",
        None,
        None,
        None,
        "B",
        "A",
        False,
        "older",
        api_name="/review_submit",
    )
    assert "changed since you opened it" in str(stale)
    reviews = Store(app.data_dir).reviews()
    # the text box said "olga": the review is rita's, and the newer one was kept
    assert [(r["reviewer"], r["comment"]) for r in reviews] == [("rita", "newer")]


def test_publish_refused_to_visitors_and_overwrite_needs_confirmation(
    app: AppServer, clients: dict[str, Any], servers: dict[str, Any]
) -> None:
    hub_url, hub = servers["hub"]
    hub.seen.clear()  # (the owner's calls of the endpoint matrix)
    for user in ("eve", "rita"):
        err = _refused(
            lambda u=user: clients[u].predict("olga/existing", False, True, api_name="/publish")
        )
        assert err is not None and "needs the owner role" in err
    assert hub.seen == []  # the owner's token was never used for a visitor
    olga = clients["olga"]
    files, status, _ = olga.predict(
        ["jsonl"], "capyui", "best-vs-worst", 0, 0, False, 0, api_name="/export"
    )
    assert "Exported" in status
    # the download works although the workspace is outside Gradio's temp dir (as /data is)
    got = sorted(Path(f).name for f in files)
    assert got == ["README.md", "train-00000-of-00001.jsonl"]
    card = next(Path(f) for f in files if f.endswith("README.md")).read_text()
    assert card == next((app.data_dir / "export").rglob("README.md")).read_text()
    out = olga.predict("olga/existing", True, False, api_name="/publish")
    assert "already exists" in out and "data/train-00000-of-00001.parquet" in out
    assert [r["path"].split("?")[0] for r in hub.seen] == ["/api/datasets/olga/existing"]


def test_paths_and_bombs_from_the_app(app: AppServer, clients: dict[str, Any]) -> None:
    """Repros 5 and 7 through the app: the Hub box read local files; a 423-byte recipe froze
    the app."""
    olga = clients["olga"]
    for hub_id in ("pipelines/recipes/data/quickstart.jsonl", "../../etc/passwd", "/etc/hostname"):
        out = olga.predict(
            "Hub dataset", hub_id, "train", None, "auto", None, api_name="/load_data"
        )
        assert "is not a Hub dataset id" in out[0] and "owner/name" in out[0]
    before = olga.predict(api_name="/recipe_export")[0]
    bad = yaml.safe_load(before)
    bad["source"] = {"path": "/etc/hostname"}
    status, err = olga.predict(yaml.safe_dump(bad), api_name="/recipe_import")
    assert "source.path" in err
    bad["source"] = {"path": "x.jsonl"}
    bad["export"] = {"out": "/tmp/elsewhere"}
    status, err = olga.predict(yaml.safe_dump(bad), api_name="/recipe_import")
    assert "export.out" in err
    t = time.monotonic()
    status, err = olga.predict(BOMB, api_name="/recipe_import")
    took = time.monotonic() - t
    t = time.monotonic()
    olga.predict(api_name="/job_status")
    base = time.monotonic() - t
    assert "refused" in err and took < 10 * base + 1.0, (took, base)
    assert olga.predict(api_name="/recipe_export")[0] == before


def test_upload_size_is_capped(app: AppServer, clients: dict[str, Any], tmp_path: Path) -> None:
    """Verified: without a cap Gradio accepts any upload; the app sets CAPYUI_MAX_UPLOAD_MB."""
    big = tmp_path / "big.jsonl"
    row = json.dumps({"messages": [{"role": "user", "content": "x" * 1000}]}) + "\n"
    big.write_text(row * 1200)  # ~1.2 MB
    err = _refused(
        lambda: clients["olga"].predict(
            "Upload a file",
            "",
            "train",
            gradio_client.handle_file(str(big)),
            "auto",
            None,
            api_name="/load_data",
        )
    )
    assert err is not None and re.search(r"(?i)size|large|413", err), err


def test_a_restarted_app_offers_the_job_for_resume(app: AppServer, clients: dict[str, Any]) -> None:
    """Repro 8: a job recorded with the app's own pid (a container restart reuses it) showed
    'running' forever."""
    store = Store(app.data_dir)
    job = store.start_job("ui:generate", {})
    assert app.proc is not None
    store.query(
        "UPDATE jobs SET pid = ?, proc = ? WHERE job_id = ?",
        (app.proc.pid, f"previous-boot:{app.proc.pid}:1", job),
    )
    store.close()
    out = clients["olga"].predict(api_name="/job_status")
    assert job in out[3] and "interrupted" in out[3]
    offered = out[4]["value"] if isinstance(out[4], dict) else out[4]
    assert offered == job


def test_no_secret_in_any_byte_the_app_wrote(app: AppServer, clients: dict[str, Any]) -> None:
    """After every action above (the owner's included): no key in the store (SQLite and WAL),
    job rows, recipes, exports, cards or the app's log."""
    olga = clients["olga"]
    olga.predict(["load"], 1, api_name="/start_job")
    for _ in range(100):
        if "running" not in str(olga.predict(api_name="/job_status")[0]):
            break
        time.sleep(0.2)
    written = [p for p in app.data_dir.rglob("*") if p.is_file()] + [app.log]
    assert any(p.name.startswith("capyui.sqlite") for p in written)
    assert any(p.suffix == ".md" for p in written)  # the card of the export above
    blob = b"".join(p.read_bytes() for p in written)
    for secret in (HF, SK, GSK, "argilla.apikey." + "s" * 24):
        assert secret.encode() not in blob, secret


@pytest.mark.browser
@needs_chromium
def test_reviewer_in_chromium(app: AppServer) -> None:
    with chromium() as b:
        context = guarded_context(b)  # nothing leaves 127.0.0.1
        page = context.new_page()
        page.goto(app.url)
        page.get_by_label("username").fill("rita")
        page.get_by_label("password").fill(USERS["rita"])
        page.get_by_role("button", name="Login").click()
        page.locator("#cu-whoami").get_by_text("Signed in as rita (reviewer)").wait_for(
            timeout=30000
        )
        page.locator("#cu-load").click()  # an owner's action: refused on the server
        page.get_by_text(re.compile("may not load data")).first.wait_for(timeout=15000)
        page.get_by_role("tab", name="Review").click()
        box = page.locator("#cu-reviewer textarea, #cu-reviewer input").first
        box.wait_for()
        page.wait_for_timeout(800)
        assert box.input_value() == "rita" and not box.is_editable()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "security-reviewer.png"), full_page=True)
        assert context.remote_requests == []
    assert os.environ.get("SPACE_ID") is None
