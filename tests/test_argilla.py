"""The Argilla review queue against a real argilla-server 2.8.0 (redis + osmem-server), started
by ``scripts/argilla-local`` in a module-scoped fixture. Annotators answer through the same REST
API the Argilla web UI uses."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.argilla_queue import (
    ArgillaConfig,
    ArgillaQueue,
    ArgillaQueueError,
    Selection,
)
from pipelines.binarize import binarize, collect
from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult
from tests.support.argilla_server import (
    SCRIPT,
    Server,
    free_port,
)
from tests.support.cli import cli

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
GENS = ["gen-a", "gen-b", "gen-c"]
MODELS = {"gen-a": "model-A", "gen-b": "model-B", "gen-c": "model-C", "gen-d": "model-D"}
JUDGE = "judge"
JUDGE_MODEL = "judge-model-X"
N_CONV = 50


def _ratings_for(i: int) -> dict[str, int | None]:
    if i % 5 == 0:
        return {"gen-a": 4, "gen-b": 4, "gen-c": 2}  # an AI tie
    if i % 7 == 3:
        return {"gen-a": 2, "gen-b": 1, "gen-c": None}  # low rating, a null
    return {"gen-a": 5, "gen-b": 3, "gen-c": 1}


def build_store(path: Path, n: int = N_CONV) -> Store:
    """n judged conversations with 3 candidates, every 10th (i % 10 == 9) with only 2."""
    store = Store(path)
    convs = [
        Conversation(
            messages=[
                {"role": "system", "content": "Be concise."},
                {"role": "user", "content": f"Question {i}: what is {i} squared?"},
                {"role": "assistant", "content": f"Do you mean {i}*{i}?"},
                {"role": "user", "content": "Yes, and explain."},
            ],
            source="unit-test",
        )
        for i in range(n)
    ]
    store.add_conversations(convs)
    for i, c in enumerate(convs):
        gens = GENS[:2] if i % 10 == 9 else GENS
        for g in gens:
            store.put_candidate(
                c.conversation_id,
                g,
                0,
                GenerationResult(key=None, text=f"**{g}** says {i * i} for #{i}", model=MODELS[g]),
            )
        ratings = _ratings_for(i)
        store.put_judgment(
            c.conversation_id,
            JUDGE,
            model=JUDGE_MODEL,
            candidate_keys=[f"{g}/0" for g in gens],
            ratings=[ratings[g] for g in gens],
            rationales=[f"rationale for {g} on #{i}" for g in gens],
            order_shown=list(range(len(gens))),
            seed=1,
            raw_output="{}",
            error=None,
            status="done" if all(ratings[g] is not None for g in gens) else "partial",
        )
    return store


def store_recipe(name: str, argilla: dict[str, Any]) -> dict[str, Any]:
    """A recipe for ``build_store``'s workspace (its generators and judge) with the Argilla
    section ``argilla``; nothing in it runs (the tests only push and pull)."""
    return {
        "name": name,
        "source": {"path": "unused.jsonl"},
        "generators": [{"id": g, "backend": "original"} for g in GENS],
        "judge": {"id": JUDGE, "backend": "embedded"},
        "argilla": argilla,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def queue(argilla: Server) -> ArgillaQueue:
    return ArgillaQueue(argilla.url, dataset_name="capyui-test", min_submitted=2)


def _records(server: Server, dataset_id: str, include: str = "responses,suggestions") -> list:
    with server.http() as h:
        r = h.get(
            f"/api/v1/datasets/{dataset_id}/records",
            params={"include": include.split(","), "limit": 1000},
        )
        r.raise_for_status()
        return r.json()["items"]


def _dataset_id(queue: ArgillaQueue) -> str:
    st = queue.status()
    assert st["ok"], st["error"]
    return st["dataset_id"]


# ---------------------------------------------------------------------------------------------
def test_push_creates_blind_shuffled_records(argilla: Server, store: Store, queue: ArgillaQueue):
    seen: list[Any] = []
    summary = queue.push(store, JUDGE, GENS, on_progress=seen.append)
    assert summary.created == N_CONV and summary.failed == 0 and summary.unchanged == 0
    assert seen[-1].done == N_CONV and seen[-1].total == N_CONV and seen[-1].message == "finished"

    ds_id = _dataset_id(queue)
    records = _records(argilla, ds_id)
    assert len(records) == N_CONV
    by_cid = {c.conversation_id: c for c in store.conversations()}
    orders = set()
    for rec in records:
        cid = rec["external_id"]
        meta = rec["metadata"]
        cands = {c.key: c for c in store.candidates_for(cid)}
        judgment = store.judgment(cid, JUDGE)
        ai = dict(zip(judgment["candidate_keys"], judgment["ratings"], strict=True))
        slots = [meta.get(f"key_{i}") for i in range(1, 5)]
        assert sorted(k for k in slots if k) == sorted(cands)
        orders.add(tuple(k.split("/")[0] for k in slots if k))
        suggestions = {s["question_id"]: s for s in rec["suggestions"]}
        assert len(suggestions) == sum(1 for k in cands if ai[k] is not None)
        for i, key in enumerate(slots, 1):
            if key is None:
                assert f"candidate_{i}" not in rec["fields"]
                continue
            assert rec["fields"][f"candidate_{i}"] == cands[key].text
            assert f"rationale for {key.split('/')[0]}" in rec["fields"][f"rationale_{i}"]
            assert meta[f"model_{i}"] == cands[key].model
        assert rec["fields"]["conversation"] == by_cid[cid].messages
        assert meta["num_turns"] == 2 and meta["source"] == "unit-test"
    assert len(orders) > 3, "candidate order must be shuffled per record"

    # suggestions: the judge's rating on the right slot, agent = judge model
    rec = next(
        r
        for r in records
        if r["metadata"]["key_1"] == "gen-a/0"
        and r["metadata"]["ai_tie"] == "no"
        and r["metadata"]["ai_rating_best"] == 5
    )
    with argilla.http() as h:
        questions = {
            q["id"]: q["name"] for q in h.get(f"/api/v1/datasets/{ds_id}/questions").json()["items"]
        }
    sug = {questions[s["question_id"]]: s for s in rec["suggestions"]}
    assert sug["rating_1"]["value"] == 5 and sug["rating_1"]["agent"] == JUDGE_MODEL


def test_dataset_settings(argilla: Server, queue: ArgillaQueue):
    ds_id = _dataset_id(queue)
    with argilla.http() as h:
        ds = h.get(f"/api/v1/datasets/{ds_id}").json()
        fields = {f["name"]: f for f in h.get(f"/api/v1/datasets/{ds_id}/fields").json()["items"]}
        questions = {
            q["name"]: q for q in h.get(f"/api/v1/datasets/{ds_id}/questions").json()["items"]
        }
        meta = {
            m["name"]: m
            for m in h.get(f"/api/v1/me/datasets/{ds_id}/metadata-properties").json()["items"]
        }
    assert ds["distribution"] == {"strategy": "overlap", "min_submitted": 2}
    assert "Rate **every** response" in ds["guidelines"]
    assert fields["conversation"]["settings"]["type"] == "chat"
    assert fields["candidate_4"]["settings"] == {"type": "text", "use_markdown": True}
    assert [o["value"] for o in questions["rating_3"]["settings"]["options"]] == [1, 2, 3, 4, 5]
    assert questions["rating_1"]["required"] and not questions["rating_3"]["required"]
    assert questions["comment"]["settings"]["type"] == "text"
    assert not questions["comment"]["required"]
    for name in ("model_1", "key_1", "judge", "ai_rating_best"):
        assert meta[name]["visible_for_annotators"] is False, name
    assert meta["num_turns"]["visible_for_annotators"] is True


# -- annotators -------------------------------------------------------------------------------
@dataclass
class Annotator:
    username: str
    client: httpx.Client


def _make_annotator(argilla: Server, name: str, login: bool) -> Annotator:
    api_key, password = argilla.add_annotator(name)
    if login:  # as the web UI does: username + password for a bearer token
        r = httpx.post(f"{argilla.url}/api/v1/token", data={"username": name, "password": password})
        assert r.status_code == 201, r.text
        return Annotator(name, argilla.http(token=r.json()["access_token"]))
    return Annotator(name, argilla.http(key=api_key))


def _queue_records(a: Annotator, ds_id: str, status: str = "pending") -> list[dict]:
    r = a.client.post(
        f"/api/v1/me/datasets/{ds_id}/records/search",
        params={"include": ["responses", "suggestions"], "limit": 100},
        json={
            "filters": {
                "and": [
                    {
                        "type": "terms",
                        "scope": {"entity": "response", "property": "status"},
                        "values": [status],
                    }
                ]
            }
        },
    )
    assert r.status_code == 200, r.text
    return [item["record"] for item in r.json()["items"]]


def _respond(a: Annotator, record_id: str, body: dict) -> None:
    r = a.client.post(f"/api/v1/records/{record_id}/responses", json=body)
    assert r.status_code == 201, r.text


def _invert_ai(record: dict) -> dict:
    """Human ratings that reverse the AI's preference: worst-by-AI gets 5, best-by-AI gets 1."""
    meta = record["metadata"]
    values = {}
    for i in range(1, 5):
        text = record["fields"].get(f"candidate_{i}")
        if text is None:
            continue
        gen = text.split("**")[1]
        values[f"rating_{i}"] = {"value": {"gen-a": 1, "gen-b": 3, "gen-c": 5}[gen]}
    assert "key_1" not in meta and "model_1" not in meta, "model names leak to annotators"
    return values


@pytest.fixture(scope="module")
def annotated(argilla: Server, store: Store, queue: ArgillaQueue) -> dict[str, Any]:
    """Two annotators work through the queue: 8 records submitted by both (ratings reversing
    the AI), one discarded by both, one discarded by one of them only."""
    ds_id = _dataset_id(queue)
    alice = _make_annotator(argilla, "alice", login=True)
    bob = _make_annotator(argilla, "bob", login=False)
    pending = _queue_records(alice, ds_id)
    assert len(pending) == N_CONV
    three = [
        r for r in pending if "candidate_3" in r["fields"] and r["metadata"]["n_candidates"] == 3
    ]
    rated, both_discard, split = three[:8], three[8], three[9]
    for a in (alice, bob):
        for rec in rated:
            values = _invert_ai(rec)
            values["comment"] = {"value": f"{a.username} reversed it"}
            _respond(a, rec["id"], {"values": values, "status": "submitted"})
        _respond(a, both_discard["id"], {"status": "discarded"})
    _respond(alice, split["id"], {"status": "discarded"})
    _respond(bob, split["id"], {"values": _invert_ai(split), "status": "submitted"})
    return {
        "ds_id": ds_id,
        "alice": alice,
        "bob": bob,
        "rated": [r["external_id"] for r in rated],
        "discarded": both_discard["external_id"],
        "split": split["external_id"],
    }


def test_annotators_see_the_queue_and_submit(annotated: dict[str, Any]):
    alice = annotated["alice"]
    submitted = _queue_records(alice, annotated["ds_id"], "submitted")
    assert {r["external_id"] for r in submitted} == set(annotated["rated"])
    assert len(_queue_records(alice, annotated["ds_id"], "discarded")) == 2


def test_pull_maps_ratings_back_and_binarize_uses_them(
    argilla: Server, store: Store, queue: ArgillaQueue, annotated: dict[str, Any]
):
    summary = queue.pull(store)
    assert summary.submitted == 17 and summary.discarded == 3 and summary.unknown == 0
    assert summary.written == 20 and summary.reviewers == ["alice", "bob"]
    reviews = [r for r in store.reviews() if r["source"] == "argilla"]
    assert len(reviews) == 20
    for cid in annotated["rated"]:
        mine = [r for r in reviews if r["conversation_id"] == cid]
        assert {r["reviewer"] for r in mine} == {"alice", "bob"}
        for r in mine:
            # un-shuffled: the keys are candidate keys, the AI's best (gen-a) got 1 from humans
            assert r["ratings"] == {"gen-a/0": 1, "gen-b/0": 3, "gen-c/0": 5}
            assert r["comment"] == f"{r['reviewer']} reversed it" and not r["discard"]
    assert all(r["discard"] for r in reviews if r["conversation_id"] == annotated["discarded"])

    again = queue.pull(store)
    assert again.written == 0 and again.unchanged == 20

    result = binarize(collect(store, generator_ids=GENS, judge_id=JUDGE))
    pairs = {p["conversation_id"]: p for p in result.pairs}
    for cid in annotated["rated"]:
        p = pairs[cid]
        assert p["rating_source"] == "human"
        assert p["chosen_model"] == "model-C" and p["rejected_model"] == "model-A"
        assert p["rating_chosen"] == 5 and p["rating_rejected"] == 1
    assert annotated["discarded"] not in pairs and result.dropped["discarded"] == 1
    split = pairs[annotated["split"]]  # one discard of two reviews is not a majority
    assert split["chosen_model"] == "model-C" and split["rating_source"] == "human"


def test_repush_updates_suggestions_keeps_responses(
    argilla: Server, store: Store, queue: ArgillaQueue, annotated: dict[str, Any]
):
    cid = annotated["rated"][0]
    # the judge re-rated one reviewed conversation
    store.put_judgment(
        cid,
        JUDGE,
        model=JUDGE_MODEL,
        candidate_keys=["gen-a/0", "gen-b/0", "gen-c/0"],
        ratings=[2, 2, 2],
        rationales=["new", "new", "new"],
        order_shown=[0, 1, 2],
        seed=1,
        raw_output="{}",
        error=None,
    )
    summary = queue.push(store, JUDGE, GENS)
    assert summary.updated == 1 and summary.created == 0
    assert summary.unchanged == N_CONV - 1 and summary.locked == 0

    records = _records(argilla, annotated["ds_id"])
    assert len(records) == N_CONV
    assert len({r["external_id"] for r in records}) == N_CONV
    rec = next(r for r in records if r["external_id"] == cid)
    assert {resp["status"] for resp in rec["responses"]} == {"submitted"}
    assert len(rec["responses"]) == 2
    assert {s["value"] for s in rec["suggestions"]} == {2}
    assert "new" in rec["fields"]["rationale_1"]
    total_responses = sum(len(r["responses"]) for r in records)
    assert total_responses == 20

    # a new candidate for a reviewed record would move the slots under the humans' answers:
    # that record is locked; an unreviewed one is updated
    untouched = next(
        c
        for c in store.conversation_ids()
        if c not in annotated["rated"]
        and c not in (annotated["discarded"], annotated["split"])
        and len(store.candidates_for(c)) == 2
    )
    for target in (annotated["rated"][1], untouched):
        store.put_candidate(
            target, "gen-d", 0, GenerationResult(key=None, text="**gen-d** late", model="model-D")
        )
    summary = queue.push(store, JUDGE, [*GENS, "gen-d"])
    assert summary.locked == 1 and summary.updated == 1
    rec = next(r for r in _records(argilla, annotated["ds_id"]) if r["external_id"] == untouched)
    assert sum(1 for i in range(1, 5) if f"candidate_{i}" in rec["fields"]) == 3
    # the pulled reviews of the locked record still map to the right candidates
    queue.pull(store)
    locked = [r for r in store.reviews(annotated["rated"][1]) if r["source"] == "argilla"]
    assert all(r["ratings"] == {"gen-a/0": 1, "gen-b/0": 3, "gen-c/0": 5} for r in locked)


def test_selectors(tmp_path: Path):
    store = build_store(tmp_path)
    queue = ArgillaQueue("http://127.0.0.1:9", dataset_name="unused")  # _plan needs no server
    ties = Selection.parse("ties")
    low = Selection.parse("low_confidence", low_rating=3, min_margin=1)
    assert ties.accepts([4, 4, 2], True) and not ties.accepts([5, 3, 1], True)
    assert low.accepts([2, 1, None], True) and low.accepts([4, 4, 1], True)
    assert low.accepts([None, None], False) and not low.accepts([5, 3, 1], True)
    items, skipped = queue._plan(store, JUDGE, GENS, ties)
    assert len(items) == N_CONV // 5 and skipped["not_selected"] == N_CONV - N_CONV // 5
    items, _ = queue._plan(store, JUDGE, GENS, low)
    assert {i.conversation_id for i in items} >= {
        c for n, c in enumerate(store.conversation_ids()) if n % 7 == 3
    }
    some = store.conversation_ids()[:3]
    items, skipped = queue._plan(store, JUDGE, GENS, Selection.parse([*some, "nope"]))
    assert [i.conversation_id for i in items] == some and skipped["not_in_store"] == 1
    with pytest.raises(ArgillaQueueError, match="unknown selection"):
        Selection.parse("best")


def test_background_pull_sees_new_work(
    argilla: Server, store: Store, queue: ArgillaQueue, annotated: dict[str, Any]
):
    bob = annotated["bob"]
    target = _queue_records(bob, annotated["ds_id"])[0]
    pulled: list[Any] = []
    puller = queue.start_background_pull(store, interval_s=0.5, on_pull=pulled.append)
    try:
        deadline = time.monotonic() + 30
        while not pulled and time.monotonic() < deadline:
            time.sleep(0.1)
        _respond(bob, target["id"], {"status": "discarded"})
        puller.pull_now()
        while time.monotonic() < deadline:
            if any(
                r["reviewer"] == "bob" and r["discard"]
                for r in store.reviews(target["external_id"])
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"background pull did not bring bob's discard: {puller.last_error}")
    finally:
        puller.stop()
    assert not puller.running and puller.last_error is None and puller.pulls >= 2


# -- crash and resume -------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys, time
    from pipelines.argilla_queue import ArgillaQueue
    from pipelines.store import Store
    q = ArgillaQueue(sys.argv[1], dataset_name=sys.argv[2], batch_size=5)
    # a slow link: every batch takes a while, so the parent can kill us half-way
    q.push(Store(sys.argv[3]), "judge", None, on_progress=lambda p: time.sleep(0.4))
""")


def test_push_killed_midway_resumes(argilla: Server, tmp_path: Path):
    store = build_store(tmp_path / "crash")
    name = "capyui-crash"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, argilla.url, name, str(store.data_dir)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    db = sqlite3.connect(store.path, timeout=30)
    landed = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                landed = db.execute("SELECT COUNT(*) FROM argilla_push").fetchone()[0]
            except sqlite3.OperationalError:  # table not created yet
                landed = 0
            if landed >= 10:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"push ended before the kill: {out[-2000:]}"
    assert 10 <= landed < N_CONV

    queue = ArgillaQueue(argilla.url, dataset_name=name, batch_size=5)
    before = len(_records(argilla, _dataset_id(queue), include="responses"))
    assert landed <= before < N_CONV
    summary = queue.push(store, JUDGE, None)
    in_state = db.execute("SELECT COUNT(*) FROM argilla_push").fetchone()[0]
    db.close()
    assert summary.unchanged >= landed and summary.pushed == N_CONV - summary.unchanged
    assert summary.failed == 0 and in_state == N_CONV
    records = _records(argilla, _dataset_id(queue), include="responses")
    assert sorted(r["external_id"] for r in records) == sorted(store.conversation_ids())
    assert queue.push(store, JUDGE, None).unchanged == N_CONV


# -- errors -----------------------------------------------------------------------------------
def _one_line_error(fn: Any, match: str) -> str:
    with pytest.raises(ArgillaQueueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and match in msg, msg
    return msg


def test_clear_errors(argilla: Server, store: Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CAPYUI_BAD_KEY", "argilla.apikey.not-a-real-key-000000")
    bad = ArgillaQueue(argilla.url, api_key_env="CAPYUI_BAD_KEY", dataset_name="capyui-test")
    msg = _one_line_error(lambda: bad.push(store, JUDGE, GENS), "rejected the API key")
    assert "not-a-real-key" not in msg
    assert bad.status()["ok"] is False and "rejected" in bad.status()["error"]

    down = ArgillaQueue(
        f"http://127.0.0.1:{free_port()}", dataset_name="capyui-test", max_retries=0
    )
    _one_line_error(lambda: down.pull(store), "cannot reach Argilla")
    _one_line_error(lambda: down.push(store, JUDGE, GENS), "cannot reach Argilla")

    monkeypatch.delenv("CAPYUI_UNSET_KEY", raising=False)
    unset = ArgillaQueue(argilla.url, api_key_env="CAPYUI_UNSET_KEY")
    _one_line_error(lambda: unset.pull(store), "CAPYUI_UNSET_KEY is not set")

    other = ArgillaQueue(argilla.url, dataset_name="capyui-test", max_candidates=3)
    _one_line_error(lambda: other.push(store, JUDGE, GENS), "incompatible settings")

    nows = ArgillaQueue(argilla.url, workspace="nope", dataset_name="capyui-test")
    _one_line_error(lambda: nows.pull(store), "workspace 'nope' not found")

    with pytest.raises(ValueError, match="NAME of an environment variable"):
        ArgillaConfig(api_key_env="argilla.apikey.secret")


def test_secrets_stay_out_of_the_store(argilla: Server, store: Store):
    assert argilla.api_key.encode() not in store.path.read_bytes()
    wal = store.path.with_name(store.path.name + "-wal")
    if wal.exists():
        assert argilla.api_key.encode() not in wal.read_bytes()


def test_launcher_status_and_idempotent_start(argilla: Server, store: Store):
    run = [sys.executable, str(SCRIPT)]
    st = subprocess.run([*run, "status"], env=argilla.env, capture_output=True, text=True)
    assert st.returncode == 0 and "ready" in st.stdout
    again = subprocess.run(
        [*run, "start"], env=argilla.env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "already running" in again.stderr
    assert f"export ARGILLA_API_KEY={argilla.api_key}" in again.stdout
    creds = json.loads((argilla.data_dir / "credentials.json").read_text())
    assert creds["api_key"] == argilla.api_key
    assert oct((argilla.data_dir / "credentials.json").stat().st_mode & 0o777) == "0o600"


def test_restart_reindexes_and_keeps_the_work(
    argilla: Server, store: Store, queue: ArgillaQueue, annotated: dict[str, Any]
):
    """osmem keeps nothing: a restart rebuilds the search index from the database, so the
    annotators' queues and the responses are all still there."""
    run = [sys.executable, str(SCRIPT)]
    stop = subprocess.run(
        [*run, "stop"], env=argilla.env, capture_output=True, text=True, timeout=120
    )
    assert stop.returncode == 0
    down = subprocess.run([*run, "status"], env=argilla.env, capture_output=True, text=True)
    assert down.returncode == 3 and "not ready" in down.stdout
    start = subprocess.run(
        [*run, "start"], env=argilla.env, capture_output=True, text=True, timeout=300
    )
    assert start.returncode == 0, start.stderr
    alice = annotated["alice"]  # her web-UI token survives the restart
    submitted = _queue_records(alice, annotated["ds_id"], "submitted")
    assert {r["external_id"] for r in submitted} == set(annotated["rated"])
    assert len(_queue_records(alice, annotated["ds_id"])) > 0
    assert queue.pull(store).written == 0


def test_cli_push_and_pull_stages(argilla: Server, tmp_path: Path) -> None:
    """`capyui run RECIPE --stages push-argilla,pull-argilla` drives the same queue headless;
    the key comes from the environment and never lands in the recipe snapshot or the store."""
    import yaml

    ws = tmp_path / "ws"
    build_store(ws, n=6)
    recipe = store_recipe("argilla-cli", {"dataset_name": "capyui-cli", "select": "all"})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    stages = "push-argilla,pull-argilla"
    out = cli("run", str(path), "--data-dir", str(ws), "--stages", stages, "--json", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["status"] == "done"
    assert summary["results"]["push-argilla"]["pushed"] == 6
    assert summary["results"]["pull-argilla"]["records"] == 6
    db = (ws / "capyui.sqlite").read_bytes()
    assert argilla.api_key.encode() not in db
    # a recipe without the section: a one-line error, exit 1, no traceback
    del recipe["argilla"]
    path.write_text(yaml.safe_dump(recipe))
    bad = cli("run", str(path), "--data-dir", str(ws), "--stages", "push-argilla", timeout=120)
    assert bad.returncode == 1 and "needs an 'argilla:' section" in bad.stderr
    assert "Traceback" not in bad.stderr


# -- issue 11: preference picks and "accepted AI" --------------------------------------------
def test_picks_and_accepted_ai_are_pulled_back(argilla: Server, tmp_path: Path) -> None:
    """Reviewers pick the best / worst response in Argilla and pull brings them back as the
    built-in tab's chosen / rejected; a submission that keeps every AI suggestion untouched
    is recorded as accepted AI; the guidelines carry the one rating scale."""
    from pipelines.rating_scale import rating_scale

    store = build_store(tmp_path / "s", n=6)
    q = ArgillaQueue(argilla.url, dataset_name="capyui-picks", min_submitted=1)
    q.push(store, JUDGE, GENS)
    ds_id = _dataset_id(q)
    with argilla.http() as h:
        ds = h.get(f"/api/v1/datasets/{ds_id}").json()
        questions = h.get(f"/api/v1/datasets/{ds_id}/questions").json()["items"]
    names = {q_["id"]: q_["name"] for q_ in questions}
    by_name = {q_["name"]: q_ for q_ in questions}
    for pick in ("best", "worst"):
        assert by_name[pick]["settings"]["type"] == "label_selection"
        assert [o["value"] for o in by_name[pick]["settings"]["options"]] == ["1", "2", "3", "4"]
    for level in rating_scale():  # the judge's scale, word for word
        assert f"| {level.value} | {level.name} | {level.description} |" in ds["guidelines"]
    assert "Low Quality" in by_name["rating_1"]["title"]

    dana = _make_annotator(argilla, "dana-picks", login=False)
    pending = [r for r in _queue_records(dana, ds_id) if "candidate_3" in r["fields"]]

    def fully_suggested(rec: dict) -> bool:  # the AI rated every candidate (one has a null)
        return {names[s["question_id"]] for s in rec["suggestions"]} >= {
            f"rating_{i}" for i in range(1, 4)
        }

    # the search's order is the server's: pick by content, not by position
    keep = next(r for r in pending if fully_suggested(r))
    picked = next(r for r in pending if r["id"] != keep["id"])

    def slot_of(rec: dict, gen: str) -> str:
        return next(
            str(i)
            for i in range(1, 5)
            if (rec["fields"].get(f"candidate_{i}") or "").startswith(f"**{gen}**")
        )

    untouched = {names[s["question_id"]]: {"value": s["value"]} for s in keep["suggestions"]}
    assert untouched  # the AI's ratings were pre-filled
    _respond(dana, keep["id"], {"values": untouched, "status": "submitted"})
    values = _invert_ai(picked)
    values["best"] = {"value": slot_of(picked, "gen-b")}
    values["worst"] = {"value": slot_of(picked, "gen-c")}
    _respond(dana, picked["id"], {"values": values, "status": "submitted"})

    summary = q.pull(store)
    assert summary.written == 2
    reviews = {r["conversation_id"]: r for r in store.reviews() if r["source"] == "argilla"}
    assert reviews[keep["external_id"]]["accepted_ai"] is True
    mine = reviews[picked["external_id"]]
    assert mine["accepted_ai"] is False
    assert (mine["chosen"], mine["rejected"]) == ("gen-b/0", "gen-c/0")
    assert q.pull(store).unchanged == 2  # picks and accepted_ai compare as unchanged

    pairs = {
        p["conversation_id"]: p
        for p in binarize(collect(store, generator_ids=GENS, judge_id=JUDGE)).pairs
    }
    pair = pairs[picked["external_id"]]
    # the pick beats the ratings (gen-c was rated 5 by the human, gen-b 3)
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-B", "model-C")
    assert pair["rating_source"] == "human"
