"""Issue 9, "one of each": the typed records the store returns, the one seeded shuffle (the
same orders as the three copies it replaces, so stored judgments and pushed Argilla records
stay valid), the one "needs a human" definition (Python and the review queue's SQL agree),
the one error formatter and the Argilla queue's one retry policy (tenacity)."""

from __future__ import annotations

import gc
import hashlib
import random
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.argilla_queue import ArgillaQueue, ArgillaQueueError, Selection
from pipelines.errors import error_line
from pipelines.records import (
    REVIEW_SOURCE_ARGILLA,
    REVIEW_SOURCE_UI,
    Candidate,
    Judgment,
    NeedsHuman,
    Review,
    gc_paused,
    review_display_order,
    seeded_order,
    shown_order,
)
from pipelines.review import FILTERS, display_order, queue_count, queue_ids, review_item
from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult


# -- the orders the three copies produced before issue 9 (copied verbatim) -------------------
def legacy_judge_order(conversation_id: str, n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{conversation_id}").shuffle(order)
    return order


def legacy_review_order(conversation_id: str, n: int) -> list[int]:
    seed = int(hashlib.sha256(f"review:{conversation_id}".encode()).hexdigest()[:12], 16)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def legacy_argilla_slots(conversation_id: str, keys: list[str], seed: int) -> list[str]:
    slot_keys = sorted(keys)
    random.Random(f"{seed}:{conversation_id}").shuffle(slot_keys)
    return slot_keys


def test_one_shuffle_gives_the_orders_stored_data_was_made_with() -> None:
    rng = random.Random(7)
    for i in range(400):
        cid = hashlib.sha256(str(i).encode()).hexdigest()[:24]
        n = rng.randint(0, 8)
        seed = rng.choice([0, 42, 1234, -5])
        assert shown_order(cid, n, seed) == legacy_judge_order(cid, n, seed)
        assert review_display_order(cid, n) == legacy_review_order(cid, n)
        assert display_order(cid, n) == legacy_review_order(cid, n)
        keys = [f"gen-{rng.randint(0, 99)}/{j}" for j in range(n)]
        slots = [sorted(keys)[k] for k in shown_order(cid, n, seed)]
        assert slots == legacy_argilla_slots(cid, keys, seed)
    assert sorted(seeded_order(6, "x")) == list(range(6))


def test_argilla_records_keep_their_slots(tmp_path: Path) -> None:
    """A pushed record's slot -> candidate mapping is what the legacy shuffle gave."""
    store = _store(tmp_path, [[5, 1], [3, 3, 2]])
    queue = ArgillaQueue("http://127.0.0.1:9", dataset_name="x", max_candidates=4)
    items, _ = queue._plan(store, "judge", None, Selection.parse("all"))
    assert items
    for item in items:
        keys = [c.key for c in store.candidates_for(item.conversation_id)]
        assert item.slot_keys == legacy_argilla_slots(item.conversation_id, keys, 42)


# -- records ------------------------------------------------------------------------------------
def _store(tmp_path: Path, ratings: list[list[float | None] | None]) -> Store:
    """One conversation per entry: as many candidates as ratings (3 when None: not judged)."""
    store = Store(tmp_path / "ws")
    convs = [
        Conversation(messages=[{"role": "user", "content": f"question {i}"}])
        for i in range(len(ratings))
    ]
    store.add_conversations(convs)
    for conv, rs in zip(convs, ratings, strict=True):
        cid = conv.conversation_id
        keys = [f"g{j}/0" for j in range(len(rs) if rs is not None else 3)]
        for key in keys:
            gen = key.split("/")[0]
            store.put_candidate(cid, gen, 0, GenerationResult(key=None, text=f"{gen} says"))
        if rs is not None:
            store.put_judgment(
                cid,
                "judge",
                model="jm",
                candidate_keys=keys,
                ratings=rs,
                rationales=[f"why {k}" for k in keys],
                order_shown=shown_order(cid, len(keys), 42),
                seed=42,
                raw_output=None,
                error=None if all(r is not None for r in rs) else "a null",
                status="done" if all(r is not None for r in rs) else "partial",
            )
    return store


def test_store_reads_are_typed_records(tmp_path: Path) -> None:
    store = _store(tmp_path, [[5, 2, None]])
    cid = store.conversation_ids()[0]
    j = store.judgment(cid, "judge")
    assert isinstance(j, Judgment)
    assert j.candidate_keys == ["g0/0", "g1/0", "g2/0"] and j.ratings == [5, 2, None]
    assert j.rating_of() == {"g0/0": 5, "g1/0": 2, "g2/0": None}
    assert j.status == "partial" and j.usable
    # columns added by migrations the record does not name are kept, not dropped
    assert "ai_best" in j.extra and j["ai_best"] == 5
    # read by name, as callers written for the dict rows do
    assert j["ratings"] == j.ratings and j.get("nope", 1) == 1 and dict(j)["model"] == "jm"
    with pytest.raises(KeyError):
        j["nope"]
    cands = store.candidates_for(cid)
    assert all(isinstance(c, Candidate) for c in cands) and cands[0].key == "g0/0"
    assert [c.key for c in store.done_candidate_texts()] == ["g0/0", "g1/0", "g2/0"]
    assert [u.conversation_id for u in store.usable_judgments("judge")] == [cid]
    store.put_review(cid, "ann", REVIEW_SOURCE_UI, ratings={"g0/0": 4}, chosen="g0/0")
    (review,) = store.reviews(cid)
    assert isinstance(review, Review)
    assert (review.reviewer, review.source, review.ratings, review.chosen) == (
        "ann",
        "ui",
        {"g0/0": 4},
        "g0/0",
    )
    assert review.discard is False and review["accepted_ai"] is False
    item = review_item(store, cid, judge_id="judge", reviewer="ann")
    assert item is not None and item.my_review == review
    by_key = {c.key: c for c in item.candidates}
    assert by_key["g1/0"].ai_rating == 2 and by_key["g1/0"].rationale == "why g1/0"
    assert isinstance(by_key["g1/0"], Candidate)


def test_bulk_readers_build_the_records_by_name_would(tmp_path: Path) -> None:
    """The bulk reads build records by column position (``Judgment.reader``,
    ``Review.reader``): the same record as reading each row by name, extra columns kept, and
    by name again where the query lacks a field."""
    store = _store(tmp_path, [[5, 2, None], [3, 3, 1]])
    for cid in store.conversation_ids():
        store.put_review(cid, "ann", REVIEW_SOURCE_UI, ratings={"g0/0": 4}, discard=True)
    for record_type, table in ((Judgment, "judgments"), (Review, "reviews")):
        rows = store.query(f"SELECT * FROM {table} ORDER BY rowid")
        columns = list(rows[0].keys())
        make = record_type.reader(columns)  # type: ignore[attr-defined]
        for row in rows:
            by_name = record_type.from_row(dict(row))  # type: ignore[attr-defined]
            assert make(tuple(row)) == by_name
        # a column order of its own and a column the record does not name
        shuffled = list(reversed(columns)) + ["later_column"]
        make = record_type.reader(shuffled)  # type: ignore[attr-defined]
        got = make(tuple(rows[0][c] for c in reversed(columns)) + ("x",))
        assert got == record_type.from_row({**dict(rows[0]), "later_column": "x"})  # type: ignore[attr-defined]
        assert got.extra["later_column"] == "x"
        # a query without every field: read by name, defaults where absent
        partial = record_type.reader(["conversation_id", columns[1]])  # type: ignore[attr-defined]
        assert partial((rows[0][0], rows[0][1])).conversation_id == rows[0][0]
    (review,) = store.reviews(store.conversation_ids()[0])
    assert review.discard is True and review.accepted_ai is False and review.extra == {}
    assert store.judgments() == [store.judgment(c, "judge") for c in store.conversation_ids()]


def test_put_reviews_writes_what_put_review_writes(tmp_path: Path) -> None:
    """The Argilla pull's bulk write: the same rows as one ``put_review`` each, upserted."""
    store = _store(tmp_path, [[5, 2, None], [3, 3, 1]])
    a, b = store.conversation_ids()
    store.put_review(a, "ann", REVIEW_SOURCE_ARGILLA, ratings={"g0/0": 1}, comment="old")
    written = store.put_reviews(
        [
            Review(a, "ann", REVIEW_SOURCE_ARGILLA, ratings={"g0/0": 5}, chosen="g0/0"),
            Review(b, "bob", REVIEW_SOURCE_ARGILLA, discard=True, accepted_ai=True),
        ]
    )
    assert written == 2
    got = {(r.conversation_id, r.reviewer): r for r in store.reviews()}
    assert len(got) == 2  # ann's review replaced, not duplicated
    ann, bob = got[(a, "ann")], got[(b, "bob")]
    assert (ann.ratings, ann.chosen, ann.comment, ann.discard) == ({"g0/0": 5}, "g0/0", None, False)
    assert (bob.ratings, bob.discard, bob.accepted_ai) == ({}, True, True)
    assert ann.updated_at > 0 and bob.updated_at > 0
    assert store.put_reviews([]) == 0


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the outer one turns it back on
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError
    assert gc.isenabled()


def test_review_sources_are_named_once() -> None:
    from pipelines import argilla_queue, review

    assert review.REVIEW_SOURCE == REVIEW_SOURCE_UI == "ui"
    assert argilla_queue.REVIEW_SOURCE == REVIEW_SOURCE_ARGILLA == "argilla"


# -- needs a human ------------------------------------------------------------------------------
def test_needs_human_definition() -> None:
    rule = NeedsHuman()
    assert (rule.low_rating, rule.min_margin) == (3.0, 1.0)
    assert rule([5, 2], judged=False)  # no usable judgment
    assert rule([5, None, 2])  # an unreadable rating
    assert rule([5])  # one rating: nothing to compare
    assert rule([3, 1])  # even the best is poor
    assert rule([5, 4.5])  # the top two too close
    assert rule([4, 4, 1])  # a tie at the top
    assert not rule([5, 3])
    assert not rule([4, 2, 1])


def test_review_queue_and_argilla_select_the_same_conversations(tmp_path: Path) -> None:
    rng = random.Random(3)
    cases: list[list[float | None] | None] = [None]
    for _ in range(60):
        n = rng.randint(2, 4)
        cases.append([rng.choice([1, 2, 3, 3.5, 4, 4.5, 5, None]) for _ in range(n)])
    store = _store(tmp_path, cases)
    ids = store.conversation_ids()
    rule = NeedsHuman()
    want = [cid for cid, rs in zip(ids, cases, strict=True) if rule(rs or [], rs is not None)]
    assert 0 < len(want) < len(ids)
    assert "needs_human" in FILTERS
    assert queue_ids(store, "needs_human", judge_id="judge") == want
    assert queue_ids(store, "needs_human") == want  # the latest usable judgment
    assert queue_count(store, "needs_human", judge_id="judge") == len(want)
    queue = ArgillaQueue("http://127.0.0.1:9", dataset_name="x", max_candidates=4)
    items, skipped = queue._plan(store, "judge", None, Selection.parse("low_confidence"))
    assert [i.conversation_id for i in items] == want
    assert skipped["not_selected"] == len(ids) - len(want)


# -- one error formatter ------------------------------------------------------------------------
def test_error_line() -> None:
    token = "hf_" + "a" * 30
    exc = RuntimeError(f"first line\n  second   line with {token}")
    assert error_line(exc) == "first line second line with ***"
    assert error_line(exc, with_type=True).startswith("RuntimeError: first line")
    assert error_line(ValueError()) == "ValueError"
    assert error_line("x" * 500, limit=10) == "x" * 10
    assert error_line("key is s3cr3tvalue here", secret="s3cr3tvalue") == "key is *** here"
    from pipelines.backends import short_error

    assert short_error(KeyError("k")) == "KeyError: 'k'"
    assert "\n" not in short_error(sqlite3.OperationalError("a\nb"))


# -- one retry policy ---------------------------------------------------------------------------
def _queue_with(handler: Any, monkeypatch: pytest.MonkeyPatch, retries: int) -> ArgillaQueue:
    monkeypatch.setenv("CAPYUI_TEST_ARGILLA_KEY", "argilla.apikey.test")
    queue = ArgillaQueue(
        "http://127.0.0.1:9",
        api_key_env="CAPYUI_TEST_ARGILLA_KEY",
        dataset_name="x",
        max_retries=retries,
    )
    monkeypatch.setattr(queue, "_api_key", lambda: "k")
    queue._http = httpx.Client(
        base_url=queue.api_url, transport=httpx.MockTransport(handler), follow_redirects=False
    )
    return queue


def test_transient_failures_are_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ReadError("reset", request=request)
        if len(calls) == 2:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"username": "me"})

    queue = _queue_with(flaky, monkeypatch, retries=2)
    assert queue.whoami() == {"username": "me"} and len(calls) == 3

    calls.clear()

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(500, json={"detail": "broken"})

    queue = _queue_with(down, monkeypatch, retries=1)
    with pytest.raises(ArgillaQueueError, match=r"failed \(HTTP 500\): broken"):
        queue.whoami()
    assert len(calls) == 2  # one try and one retry

    calls.clear()

    def refused(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    queue = _queue_with(refused, monkeypatch, retries=3)
    with pytest.raises(ArgillaQueueError, match="cannot reach Argilla"):
        queue.whoami()
    assert len(calls) == 1  # nothing listens: no retry


# -- the stage table ----------------------------------------------------------------------------
def test_stage_table_runs_export_with_its_dependency_said_and_typed_results(
    tmp_path: Path,
) -> None:
    from pipelines import recipe as recipe_mod
    from pipelines.recipe import parse_recipe
    from pipelines.run import STAGES, BinarizeSummary, ExportResult, run_recipe
    from pipelines.types import Progress

    assert tuple(STAGES) == recipe_mod.STAGES
    assert STAGES["export"].needs and STAGES["publish"].needs
    store = _store(tmp_path, [[5, 1, 3], [2, 4, 4]])
    recipe = parse_recipe(
        {
            "name": "stages",
            "source": {"path": "unused.jsonl"},
            "generators": [{"id": g, "backend": "original"} for g in ("g0", "g1", "g2")],
            "judge": {"id": "judge", "backend": "embedded"},
        }
    )
    events: list[Progress] = []
    summary = run_recipe(recipe, store, stages=["binarize", "export"], on_progress=events.append)
    assert summary.status == "done", summary.error
    said = [(e.stage, e.message) for e in events]
    assert ("export", "computing binarized pairs for export") in said
    export = summary.outcomes["export"]
    binarized = summary.outcomes["binarize"]
    assert isinstance(export, ExportResult) and isinstance(binarized, BinarizeSummary)
    assert binarized.pairs == export.pairs == 2
    # the CLI's JSON is what it was
    out = summary.as_dict()
    assert set(out) == {
        "job_id",
        "status",
        "error",
        "stages",
        "results",
        "export_dir",
        "published",
    }
    assert out["results"]["binarize"] == {"pairs": 2, "dropped": binarized.dropped}
    assert out["results"]["export"]["out"] == out["export_dir"] == str(export.out)
    assert set(out["results"]["export"]) == {"out", "pairs", "profile", "filters"}
    # binarize alone keeps its pairs to itself and says nothing about an export
    events.clear()
    alone = run_recipe(recipe, store, stages=["binarize"], on_progress=events.append)
    assert alone.as_dict()["results"]["binarize"]["pairs"] == 2 and not events
    # an unknown stage is a one-line failure, not a silent no-op
    bad = run_recipe(recipe, store, stages=["binarise"])
    assert bad.status == "failed" and "unknown stage(s): binarise" in (bad.error or "")


def test_pair_is_a_binarize_row(tmp_path: Path) -> None:
    """``records.Pair`` names the columns binarize writes (a renamed column fails here)."""
    from pipelines.binarize import arrow_schema, binarize, collect
    from pipelines.records import Pair

    store = _store(tmp_path, [[5, 1, 3]])
    (row,) = binarize(collect(store, judge_id="judge")).pairs
    pair = Pair.from_row(row)
    named = [n for n in Pair._names() if n != "extra"]
    assert set(named) <= set(arrow_schema().names)
    assert (pair.rating_source, pair.judge_model) == ("ai", "jm")
    assert (pair.rating_chosen, pair.rating_rejected) == (5, 1)
    assert pair.chosen[-1]["content"] == "g0 says" and pair.rejected[-1]["content"] == "g1 says"
    assert pair.prompt == pair.chosen[:-1] and pair.as_dict() == row
