"""The Arena as an Argilla dataset of pairs (issue 14a), against a real argilla-server 2.8.0
(``scripts/argilla-local``): push the informative pairs, reviewers answer with the argilla SDK
under their own API keys, pull, and the verdicts are pairwise reviews that binarization uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.argilla_pairs import ArgillaPairsQueue, queue_for, record_id
from pipelines.argilla_queue import ArgillaConfig, ArgillaQueue
from pipelines.binarize import binarize, collect
from pipelines.pairwise import ordered, pairs_from_judgment
from pipelines.store import Store
from tests.support.argilla_server import Server
from tests.test_binarize import add_row

pytestmark = [pytest.mark.server, pytest.mark.slow]

DATASET = "capyui-pairs-test"
REASONS = ["ai_tie", "top2"]


def _config(server: Server, **extra: Any) -> ArgillaConfig:
    return ArgillaConfig(
        api_url=server.url,
        mode="pairs",
        pairs_dataset_name=DATASET,
        pair_reasons=REASONS,
        min_submitted=2,
        **extra,
    )


def _store(path: Path) -> tuple[Store, dict[str, str]]:
    store = Store(path)
    rows = {
        "flip": {"gen-a": 5, "gen-b": 3},  # humans prefer the AI's runner-up
        "tie": {"gen-a": 4, "gen-b": 4},  # the AI cannot separate them
        "split": {"gen-a": 5, "gen-b": 1},  # humans disagree
        "bad": {"gen-a": 5, "gen-b": 2},  # both bad
        "skip": {"gen-a": 5, "gen-b": 2},  # discarded: a skip
        "three": {"gen-a": 5, "gen-b": 4.5, "gen-c": 1},  # three candidates: the close pair
    }
    cids = {name: add_row(store, f"Question {name}?", r) for name, r in rows.items()}  # type: ignore[arg-type]
    for i in range(6):  # unanswered ones
        cids[f"other{i}"] = add_row(store, f"Other question {i}?", {"gen-a": 5, "gen-b": 1 + i % 4})
    return store, cids


def _expected_pairs(store: Store) -> set[tuple[str, str, str]]:
    """(conversation, key_1, key_2) the Arena's selector picks, computed from the judgments."""
    out = set()
    for j in store.judgments():
        picked = pairs_from_judgment(j["candidate_keys"], j["ratings"])
        for reason in REASONS:
            if reason in picked:
                k1, k2, _ = picked[reason]
                out.add((j["conversation_id"], k1, k2))
    return out


def _reviewer(argilla: Server, name: str) -> Any:
    """An annotator of the workspace (made by the owner), with the argilla SDK client of their
    own API key (the SDK's User does not expose the key the server returns, so REST)."""
    import argilla as rg

    api_key, _ = argilla.add_annotator(name)
    return rg.Argilla(api_url=argilla.url, api_key=api_key)


def _queue(argilla: Server, client: Any) -> dict[str, dict[str, Any]]:
    """The reviewer's pending records by conversation id, read as the Argilla UI reads them
    (annotators may not list records through the SDK), with the owner's view of the hidden
    metadata (which candidate is A) for the test's own bookkeeping."""
    ds_id = client.datasets(name=DATASET, workspace="argilla").id
    with argilla.http(key=client.api_key) as h:
        r = h.post(f"/api/v1/me/datasets/{ds_id}/records/search", params={"limit": 100}, json={})
        assert r.status_code == 200, r.text
        mine = [item["record"] for item in r.json()["items"]]
    with argilla.http() as owner:
        full = owner.get(f"/api/v1/datasets/{ds_id}/records", params={"limit": 1000}).json()
    meta = {rec["id"]: rec["metadata"] for rec in full["items"]}
    for rec in mine:
        assert "key_a" not in (rec.get("metadata") or {})  # hidden from annotators
        rec["owner_metadata"] = meta[rec["id"]]
    return {rec["external_id"].split("|")[0]: rec for rec in mine}


def _answer(client: Any, record: dict[str, Any], verdict: str | None) -> None:
    """What the Argilla UI sends when a reviewer submits (or discards) a record, through the
    argilla SDK's API client under the reviewer's own key."""
    from argilla._models import UserResponseModel

    me = client.me
    if verdict is None:
        model = UserResponseModel(values={}, status="discarded", user_id=me.id)
    else:
        values = {"verdict": {"value": verdict}}
        model = UserResponseModel(values=values, status="submitted", user_id=me.id)
    client.api.records.create_record_response(record_id=record["id"], user_response=model)


@pytest.fixture(scope="module")
def pushed(argilla: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store, cids = _store(tmp_path_factory.mktemp("store"))
    queue = queue_for(_config(argilla))
    assert isinstance(queue, ArgillaPairsQueue)
    summary = queue.push(store, "judge", ["gen-a", "gen-b", "gen-c"])
    return {"store": store, "cids": cids, "queue": queue, "summary": summary}


def test_push_one_blind_record_per_informative_pair(argilla: Server, pushed: dict[str, Any]):
    store, queue, summary = pushed["store"], pushed["queue"], pushed["summary"]
    expected = _expected_pairs(store)
    assert summary.created == len(expected) and summary.failed == 0, summary.as_dict()
    st = queue.status()
    assert st["ok"] and st["dataset"] == DATASET and st["records"] == len(expected)
    with argilla.http() as h:
        ds_id = st["dataset_id"]
        records = h.get(
            f"/api/v1/datasets/{ds_id}/records", params={"limit": 1000, "include": ["responses"]}
        ).json()["items"]
        questions = {
            q["name"]: q for q in h.get(f"/api/v1/datasets/{ds_id}/questions").json()["items"]
        }
        meta = {
            m["name"]: m
            for m in h.get(f"/api/v1/me/datasets/{ds_id}/metadata-properties").json()["items"]
        }
    assert questions["verdict"]["settings"]["type"] == "label_selection"
    assert [o["value"] for o in questions["verdict"]["settings"]["options"]] == [
        "a",
        "b",
        "tie",
        "both_bad",
    ]
    for hidden in ("key_a", "key_b", "model_a", "model_b", "ai_rating_a", "conversation_id"):
        assert meta[hidden]["visible_for_annotators"] is False, hidden
    assert meta["reason"]["visible_for_annotators"] is True
    got = set()
    sides = set()
    for rec in records:
        m = rec["metadata"]
        cid, key_a, key_b = m["conversation_id"], m["key_a"], m["key_b"]
        k1, k2 = ordered(key_a, key_b)
        assert rec["external_id"] == record_id(cid, k1, k2)
        got.add((cid, k1, k2))
        sides.add(key_a)
        texts = store.candidate_texts(cid, (key_a, key_b))
        assert rec["fields"]["response_a"] == texts[key_a].text
        assert rec["fields"]["response_b"] == texts[key_b].text
        assert m["model_a"] == texts[key_a].model and m["reason"] in REASONS
        # blind: no model name in what annotators see
        shown = " ".join(str(v) for v in rec["fields"].values())
        assert "model-" not in shown
    assert got == expected
    assert {"gen-a/0", "gen-b/0"} <= sides  # sides are random: either candidate is shown as A
    # an AI tie is both the tie pair and the top-2 pair: one record, named by the first reason
    tie = [r for r in records if r["metadata"]["conversation_id"] == pushed["cids"]["tie"]]
    assert len(tie) == 1 and tie[0]["metadata"]["reason"] == "ai_tie"

    again = queue.push(store, "judge", ["gen-a", "gen-b", "gen-c"])
    assert again.unchanged == len(expected) and again.created == again.updated == 0


def test_reviewers_answer_with_the_sdk_and_pull_makes_pairwise_reviews(
    argilla: Server, pushed: dict[str, Any]
):
    store, cids, queue = pushed["store"], pushed["cids"], pushed["queue"]
    alice, bob = _reviewer(argilla, "alice"), _reviewer(argilla, "bob")
    by_cid = _queue(argilla, alice)

    def side_of(cid: str, key: str) -> str:
        return "a" if by_cid[cid]["owner_metadata"]["key_a"] == key else "b"

    def other(side: str) -> str:
        return "b" if side == "a" else "a"

    # both prefer the AI's runner-up (gen-b); AI tie resolved for gen-a by alice
    for who in (alice, bob):
        _answer(who, by_cid[cids["flip"]], side_of(cids["flip"], "gen-b/0"))
    _answer(alice, by_cid[cids["tie"]], side_of(cids["tie"], "gen-a/0"))
    _answer(alice, by_cid[cids["split"]], "a")
    _answer(bob, by_cid[cids["split"]], "b")
    _answer(alice, by_cid[cids["bad"]], "both_bad")
    _answer(alice, by_cid[cids["skip"]], None)  # discarded
    _answer(bob, by_cid[cids["three"]], "tie")

    summary = queue.pull(store)
    assert summary.submitted == 7 and summary.discarded == 1 and summary.written == 8
    assert summary.reviewers == ["alice", "bob"] and summary.unknown == 0
    reviews = [r for r in store.pairwise_reviews() if r["source"] == "argilla"]
    assert len(reviews) == 8
    flip = [r for r in reviews if r["conversation_id"] == cids["flip"]]
    assert {r["reviewer"] for r in flip} == {"alice", "bob"}
    assert {r["winner"] for r in flip} == {"gen-b/0"}  # A / B mapped back to candidate keys
    assert all(r["left_key"] == by_cid[cids["flip"]]["owner_metadata"]["key_a"] for r in flip)
    (skip,) = [r for r in reviews if r["conversation_id"] == cids["skip"]]
    assert skip["verdict"] == "skip" and skip["winner"] is None

    # idempotent: a re-pull writes nothing and duplicates nothing
    again = queue.pull(store)
    assert again.written == 0 and again.unchanged == 8
    assert len([r for r in store.pairwise_reviews() if r["source"] == "argilla"]) == 8

    # binarization uses them exactly like Arena verdicts
    result = binarize(collect(store))
    pairs = {p["conversation_id"]: p for p in result.pairs}
    assert (pairs[cids["flip"]]["chosen_model"], pairs[cids["flip"]]["rating_source"]) == (
        "model-B",
        "human",
    )
    assert pairs[cids["tie"]]["chosen_model"] == "model-A"
    assert pairs[cids["tie"]]["rating_source"] == "human"
    for dropped in ("split", "bad"):
        assert cids[dropped] not in pairs
    assert result.dropped["human_pairwise_tie"] >= 2
    assert pairs[cids["skip"]]["rating_source"] == "ai"  # a skip changes nothing
    assert pairs[cids["other0"]]["rating_source"] == "ai"

    # and the Results ranking: 7 human comparisons (tie and both bad are draws; a skip is none)
    from pipelines.pairwise import rankings, verdicts_per_model

    human = rankings(store, boot=20)["human"]
    assert human.comparisons == 7 and human.rows[0]["model"] == "gen-b"
    per_model = {v["generator"]: v for v in verdicts_per_model(store)}
    # gen-b: both flips and one side of the split; gen-a: the AI tie and the other side
    assert (per_model["gen-b"]["wins"], per_model["gen-a"]["wins"]) == (3, 2)
    assert per_model["gen-a"]["skips"] == per_model["gen-b"]["skips"] == 1


def test_a_changed_verdict_replaces_the_old_one(argilla: Server, pushed: dict[str, Any]):
    store, cids, queue = pushed["store"], pushed["cids"], pushed["queue"]
    carol = _reviewer(argilla, "carol")
    target = cids["other1"]
    rec = _queue(argilla, carol)[target]
    _answer(carol, rec, "a")
    assert queue.pull(store).written == 1
    with argilla.http(key=carol.api_key) as h:  # carol changes her mind in the UI
        got = h.get(f"/api/v1/records/{rec['id']}", params={"include": ["responses"]})
        (mine,) = got.json()["responses"]
        changed = h.put(
            f"/api/v1/responses/{mine['id']}",
            json={"values": {"verdict": {"value": "b"}}, "status": "submitted"},
        )
        assert changed.status_code == 200, changed.text
    summary = queue.pull(store)
    assert summary.written == 1
    (review,) = [
        r
        for r in store.pairwise_reviews(target)
        if r["source"] == "argilla" and r["reviewer"] == "carol"
    ]
    assert review["verdict"] == "b" and review["winner"] == rec["owner_metadata"]["key_b"]


def test_ratings_and_pairs_datasets_live_side_by_side(argilla: Server, pushed: dict[str, Any]):
    ratings = queue_for(_config(argilla).model_copy(update={"mode": "ratings"}))
    assert type(ratings) is ArgillaQueue and ratings.dataset_name == "capyui-review"
    assert queue_for(_config(argilla)).dataset_name == DATASET


def test_cli_push_and_pull_stages_in_pairs_mode(argilla: Server, tmp_path: Path) -> None:
    """`capyui run RECIPE --stages push-argilla,pull-argilla` with `argilla.mode: pairs` pushes
    the pairs dataset and pulls its verdicts into the pairwise reviews, headless."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    store, cids = _store(tmp_path / "ws")
    recipe = {
        "name": "argilla-cli-pairs",
        "source": {"path": "unused.jsonl"},
        "generators": [{"id": g, "backend": "original"} for g in ("gen-a", "gen-b", "gen-c")],
        "judge": {"id": "judge", "backend": "embedded"},
        "argilla": {"mode": "pairs", "pairs_dataset_name": "capyui-cli-pairs"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))

    def run(stages: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "capyui.cli", "run", str(path), "--data-dir",
             str(store.data_dir), "--stages", stages, "--json"],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.splitlines()[-1])["results"]

    pushed = run("push-argilla")["push-argilla"]
    # default selections (the Arena's four): every conversation has a random pair too
    assert pushed["pushed"] >= len(cids) and pushed["failed"] == 0
    eve = _reviewer(argilla, "eve")
    ds_id = eve.datasets(name="capyui-cli-pairs", workspace="argilla").id
    with argilla.http(key=eve.api_key) as h:
        r = h.post(f"/api/v1/me/datasets/{ds_id}/records/search", params={"limit": 1}, json={})
        (rec,) = [item["record"] for item in r.json()["items"]]
    _answer(eve, rec, "tie")
    pulled = run("pull-argilla")["pull-argilla"]
    assert pulled["written"] == 1 and pulled["reviewers"] == ["eve"]
    (review,) = [r for r in store.pairwise_reviews() if r["source"] == "argilla"]
    assert review["reviewer"] == "eve" and review["verdict"] == "tie"
    assert rec["external_id"] == f"{review['conversation_id']}|{review['key_1']}|{review['key_2']}"
