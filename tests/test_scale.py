"""Issue 13 (scale): review filters and progress as indexed SQL, judgment facts, streaming load,
streaming pipelines. Each test here fails on the code before issue 13."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pipelines import review
from pipelines.records import NeedsHuman
from pipelines.store import Store, rating_facts
from pipelines.types import Conversation, GenerationResult

FIXTURE = Path(__file__).parent / "fixtures" / "workspace-v0"


# -- the review queue before issue 13 (a Python scan), kept here as the reference ----------------
def _old_candidate_ids(store: Store, generator_ids: list[str] | None) -> list[str]:
    gens = set(generator_ids or [])
    done = {
        r["conversation_id"]
        for r in store.candidate_rows()
        if r["status"] == "done" and (not gens or r["generator_id"] in gens)
    }
    return [c for c in store.conversation_ids() if c in done]


def _old_ratings(store: Store, judge_id: str | None) -> dict[str, tuple[list[str], list[Any]]]:
    rows = [j for j in store.judgments(judge_id) if j["status"] != "failed"]
    rows.sort(key=lambda j: j["updated_at"])
    return {j["conversation_id"]: (j["candidate_keys"], j["ratings"]) for j in rows}


def _old_reviews(store: Store, reviewer: str | None = None) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in store.reviews():
        if reviewer and not (r["reviewer"] == reviewer and r["source"] == "ui"):
            continue
        out.setdefault(r["conversation_id"], []).append(r)
    return out


def _old_disagrees(keys: list[str], ai: list[Any], reviews: list[dict[str, Any]]) -> bool:
    by_key = {k: r for k, r in zip(keys, ai, strict=False) if r is not None}
    best = max(by_key.values(), default=None)
    for rv in reviews:
        for key, human in (rv.get("ratings") or {}).items():
            if human is not None and key in by_key and abs(float(human) - by_key[key]) >= 2:
                return True
        chosen = rv.get("chosen")
        if chosen in by_key and best is not None and by_key[chosen] < best:
            return True
    return False


def old_queue_ids(
    store: Store,
    filter: str,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    reviewer: str | None = None,
    low_threshold: float = 2,
) -> list[str]:
    ids = _old_candidate_ids(store, generator_ids)
    if filter == "all":
        return ids
    if filter == "unreviewed":
        done = _old_reviews(store, reviewer or None)
        return [c for c in ids if c not in done]
    judged = _old_ratings(store, judge_id)
    if filter == "low_ai":
        out = []
        for c in ids:
            if c in judged:
                rated = [r for r in judged[c][1] if r is not None]
                if not rated or max(rated) <= low_threshold:
                    out.append(c)
        return out
    if filter == "ai_tie":
        out = []
        for c in ids:
            if c in judged:
                rated = [r for r in judged[c][1] if r is not None]
                if len(rated) >= 2 and rated.count(max(rated)) >= 2:
                    out.append(c)
        return out
    if filter == "judges_disagree":  # issue 14: from the judges' own ratings, in Python
        if judge_id not in (None, "panel"):
            return []  # a single judge never disagrees with itself
        by_judge = {j: _old_ratings(store, j) for j in ("judge", "judge2")}
        out = []
        for c in ids:
            rows = [by_judge[j][c] for j in by_judge if c in by_judge[j]]
            if len(rows) == 2 and rows[0][0] == rows[1][0]:  # the same candidates
                (_, r1), (_, r2) = rows
                spread = max(
                    (abs(a - b) for a, b in zip(r1, r2, strict=True) if None not in (a, b)),
                    default=0,
                )
                bests = {_old_unique_best(r1), _old_unique_best(r2)} - {None}
                if spread >= 2 or len(bests) > 1:
                    out.append(c)
        return out
    if filter == "needs_human":  # issue 9: the one definition, records.NeedsHuman
        unsure = NeedsHuman()
        return [c for c in ids if unsure(judged[c][1] if c in judged else [], c in judged)]
    reviews = _old_reviews(store)
    return [
        c for c in ids if c in reviews and c in judged and _old_disagrees(*judged[c], reviews[c])
    ]


def _old_unique_best(ratings: list[Any]) -> int | None:
    rated = [(r, i) for i, r in enumerate(ratings) if r is not None]
    if not rated:
        return None
    top = max(r for r, _ in rated)
    best = [i for r, i in rated if r == top]
    return best[0] if len(best) == 1 else None


def old_progress(
    store: Store, generator_ids: list[str] | None, reviewer: str | None
) -> dict[str, int]:
    ids = set(_old_candidate_ids(store, generator_ids))
    everyone = _old_reviews(store)
    mine = _old_reviews(store, reviewer) if reviewer else {}
    return {
        "reviewable": len(ids),
        "reviewed": sum(1 for c in everyone if c in ids),
        "mine": sum(1 for c in mine if c in ids),
        "discarded": sum(
            1 for c, rs in everyone.items() if c in ids and any(r["discard"] for r in rs)
        ),
    }


def build_fixture_store(path: Path, seed: int, n: int = 120) -> Store:
    """Conversations with and without candidates, failed candidates, two judges, partial and
    failed judgments, ties, nulls, reviews by several reviewers from the UI and Argilla."""
    rng = random.Random(seed)
    store = Store(path)
    convs = [
        Conversation(messages=[{"role": "user", "content": f"q{seed}-{i}"}], source="t")
        for i in range(n)
    ]
    store.add_conversations(convs)
    gens = ["g1", "g2", "g3"]
    for c in convs:
        if rng.random() < 0.15:
            continue  # no candidates at all
        keys = []
        for g in gens:
            if rng.random() < 0.2:
                continue
            ok = rng.random() > 0.15
            res = GenerationResult(
                key=None, text="a" if ok else None, error=None if ok else "boom", model=g
            )
            store.put_candidate(c.conversation_id, g, 0, res)
            if ok:
                keys.append(f"{g}/0")
        for judge in ("judge", "judge2"):
            if not keys or rng.random() < 0.2:
                continue
            ratings = [rng.choice([None, 1, 2, 3, 3, 4, 5, 5, 2.5]) for _ in keys]
            status = rng.choice(["done", "done", "partial", "failed"])
            store.put_judgment(
                c.conversation_id,
                judge,
                model="m",
                candidate_keys=keys,
                ratings=ratings if status != "failed" else [None] * len(keys),
                rationales=[None] * len(keys),
                order_shown=list(range(len(keys))),
                seed=0,
                raw_output=None,
                error=None if status == "done" else "x",
                status=status,
            )
        for who, source in (("alice", "ui"), ("bob", "ui"), ("alice", "argilla")):
            if not keys or rng.random() < 0.6:
                continue
            store.put_review(
                c.conversation_id,
                who,
                source,
                ratings={k: rng.randint(1, 5) for k in keys if rng.random() < 0.7},
                chosen=rng.choice([*keys, None]),
                discard=rng.random() < 0.1,
            )
    # issue 14: the two judges as a panel (its aggregate and the judges' disagreement)
    from pipelines.config import JudgeConfig
    from pipelines.panel import PanelConfig, refresh_panel

    judges = [JudgeConfig(id=j, backend="embedded") for j in ("judge", "judge2")]
    refresh_panel(store, PanelConfig(), judges, [c.conversation_id for c in convs])
    return store


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_queue_filter_matches_the_python_scan(tmp_path: Path, seed: int) -> None:
    store = build_fixture_store(tmp_path / "ws", seed)
    variants: list[dict[str, Any]] = [
        {},
        {"generator_ids": ["g1", "g2"]},
        {"judge_id": "judge"},
        {"judge_id": "judge2", "reviewer": "alice"},
        {"reviewer": "bob", "low_threshold": 3},
        {"generator_ids": ["g3"], "judge_id": "judge", "reviewer": "alice"},
    ]
    nonempty = set()
    for kwargs in variants:
        for f in review.FILTERS:
            want = old_queue_ids(store, f, **kwargs)
            got = review.queue_ids(store, f, **kwargs)
            assert got == want, (f, kwargs)
            assert review.queue_count(store, f, **kwargs) == len(want), (f, kwargs)
            if want:
                nonempty.add(f)
                # paging: pages of 7 in a row, by offset and by keyset, give the same list
                paged, after = [], None
                while True:
                    page = review.queue_page(store, f, page_size=7, after=after, **kwargs)
                    if not page:
                        break
                    paged += page
                    after = page[-1]
                assert paged == want
                assert review.queue_ids(store, f, limit=5, offset=3, **kwargs) == want[3:8]
        gens, who = kwargs.get("generator_ids"), kwargs.get("reviewer")
        assert review.review_progress(store, generator_ids=gens, reviewer=who) == old_progress(
            store, gens, who
        )
    assert nonempty == set(review.FILTERS)  # the fixture exercises every filter


def test_progress_count_follows_new_candidates(tmp_path: Path) -> None:
    store = build_fixture_store(tmp_path / "ws", 5, n=30)
    before = review.review_progress(store)["reviewable"]
    conv = Conversation(messages=[{"role": "user", "content": "late"}])
    store.add_conversations([conv])
    store.put_candidate(conv.conversation_id, "g1", 0, GenerationResult(key=None, text="x"))
    assert review.review_progress(store)["reviewable"] == before + 1


@pytest.mark.parametrize("filter", list(review.FILTERS))
def test_queue_filters_use_indexes_not_a_scan_of_judgments(tmp_path: Path, filter: str) -> None:
    store = build_fixture_store(tmp_path / "ws", 7, n=40)
    for kwargs in ({"judge_id": "judge", "reviewer": "alice"}, {}):
        plan = store.explain_review_queue(filter, **kwargs)
        text = "\n".join(plan)
        for table in ("judgments", "candidates", "reviews"):
            assert f"SCAN {table}" not in text and "SCAN j " not in text, plan
        # judges_disagree walks its partial index: the disagreements only, not the judgments
        assert not any(
            (line.startswith("SCAN j") and "INDEX judgments_disagree" not in line)
            or line.startswith("SCAN d")
            for line in plan
        ), plan
        # the only tables walked are the conversation list in load order (paged), or for
        # disagreement the reviews (human work, not N) through an index
        scans = [line for line in plan if line.startswith("SCAN")]
        assert all(
            line.startswith("SCAN c")
            or "VIRTUAL" in line
            or (filter == "disagreement" and line.startswith("SCAN r0 USING COVERING INDEX"))
            or (filter == "judges_disagree" and "INDEX judgments_disagree" in line)
            for line in scans
        ), plan


def test_judgment_facts_are_written_and_backfilled(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    with sqlite3.connect(ws / "capyui.sqlite") as db:
        stored = db.execute("SELECT conversation_id, judge_id, ratings FROM judgments").fetchall()
    store = Store(ws)
    assert stored
    for cid, judge, ratings in stored:
        row = store.query(
            "SELECT ai_best, ai_second, ai_rated FROM judgments"
            " WHERE conversation_id = ? AND judge_id = ?",
            (cid, judge),
        )[0]
        assert tuple(row) == rating_facts(json.loads(ratings))
    assert rating_facts([3, None, 5, 5.0]) == (5.0, 5.0, 3)
    assert rating_facts([None]) == (None, None, 0)
    # written with each judgment
    store.put_judgment(
        stored[0][0],
        "other",
        model="m",
        candidate_keys=["a/0", "b/0"],
        ratings=[4, 2],
        rationales=[None, None],
        order_shown=[0, 1],
        seed=0,
        raw_output=None,
        error=None,
    )
    row = store.query("SELECT ai_best, ai_second, ai_rated FROM judgments WHERE judge_id='other'")
    assert tuple(row[0]) == (4.0, 2.0, 2)


# -- streaming load ---------------------------------------------------------------------------
def _write_jsonl(path: Path, n: int, dup_every: int = 0) -> None:
    with path.open("w") as f:
        for i in range(n):
            k = i - 1 if dup_every and i % dup_every == 0 and i else i
            conv = [
                {"input": f"question {k} " + "x" * 200, "output": "answer " + "y" * 200},
                {"input": f"follow-up {k}", "output": "ok"},
            ]
            f.write(json.dumps({"conversation": conv}) + "\n")


def _peak_load(tmp_path: Path, n: int, fmt: str) -> tuple[int, Any, Any]:
    import tracemalloc

    from pipelines.sources import load_source

    src = tmp_path / f"rows-{n}.jsonl"
    _write_jsonl(src, n)
    if fmt == "parquet":
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        table = pj.read_json(src)
        src = tmp_path / f"rows-{n}.parquet"
        pq.write_table(table, src)
        del table
    store = Store(tmp_path / f"ws-{fmt}-{n}")
    sink = store.conversation_sink()
    tracemalloc.start()
    result = load_source(str(src), sink=sink, chunk_size=500)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    store.close()
    return peak, result, sink


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_streaming_load_commits_in_chunks_in_flat_memory(tmp_path: Path, fmt: str) -> None:
    small_peak, small, small_sink = _peak_load(tmp_path, 3000, fmt)
    big_peak, big, big_sink = _peak_load(tmp_path, 12000, fmt)
    assert small.loaded == small_sink.added == 3000 and big.loaded == big_sink.added == 12000
    assert small.conversations == [] and big.conversations == []
    assert big_sink.chunks == 24  # committed 500 at a time as read
    # four times the rows, the same peak (the old load held every conversation: ~4x)
    assert big_peak < small_peak * 1.5, (small_peak, big_peak)
    assert Store(tmp_path / f"ws-{fmt}-12000").count_conversations() == 12000


def test_streaming_load_dedupes_across_chunks_and_honours_limit(tmp_path: Path) -> None:
    from pipelines.sources import load_source

    src = tmp_path / "dups.jsonl"
    _write_jsonl(src, 1000, dup_every=7)  # every 7th row repeats the row before it
    expected_dups = len([i for i in range(1, 1000) if i % 7 == 0])
    store = Store(tmp_path / "ws")
    sink = store.conversation_sink()
    result = load_source(str(src), sink=sink, chunk_size=3)  # a duplicate often spans chunks
    assert result.duplicates == expected_dups
    assert result.loaded == sink.added == store.count_conversations() == 1000 - expected_dups
    # the same summary as the in-memory load
    plain = load_source(str(src))
    assert plain.summary() == result.summary()
    # loading again: every row is already in the store, none is a duplicate of this load
    again = store.conversation_sink()
    result2 = load_source(str(src), sink=again, chunk_size=50)
    assert again.added == 0 and again.existing == result2.loaded == 1000 - expected_dups
    # limit counts kept conversations, even when a chunk's tail was a duplicate
    fresh = Store(tmp_path / "ws2")
    limited = load_source(str(src), sink=fresh.conversation_sink(), chunk_size=4, limit=20)
    assert limited.loaded == fresh.count_conversations() == 20
    assert load_source(str(src), limit=20).summary() == limited.summary()


# -- Results statistics in SQL ----------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 4])
def test_store_stats_match_compute_stats_over_collect(tmp_path: Path, seed: int) -> None:
    from pipelines.binarize import BinarizeOptions, binarize, collect
    from pipelines.stats import compute_stats, store_stats

    store = build_fixture_store(tmp_path / "ws", seed)
    for gens, judge in ((None, None), (["g1", "g2"], "judge"), (None, "judge2")):
        rows = collect(store, generator_ids=gens, judge_id=judge)
        pairs = binarize(rows, BinarizeOptions()).pairs
        want = compute_stats(rows, pairs, store.reviews())
        got = store_stats(store, generator_ids=gens, judge_id=judge, pairs=pairs)
        assert got["reviews"] == want["reviews"] and got["reviews"]["reviews"] > 0
        if judge is not None:  # every judgment of that judge (collect keeps those with candidates)
            assert got["judge_quality"] == want["judge_quality"]
        assert got["agreement"]["n"] == want["agreement"]["n"] > 0
        assert got["agreement"] == pytest.approx(want["agreement"])
        assert got["pairs"] == want["pairs"] and got["rating_source"] == want["rating_source"]
        assert [m["model"] for m in got["models"]] == [m["model"] for m in want["models"]]
        for g, w in zip(got["models"], want["models"], strict=True):
            assert g == pytest.approx(w), (gens, judge)


# -- streamed binarize + export ---------------------------------------------------------------
def _bulk_store(path: Path, n: int, seed: int = 3) -> Store:
    import time as _time

    rng = random.Random(seed)
    store = Store(path)
    convs = [
        Conversation(
            messages=[{"role": "user", "content": f"question {i} " + "w" * rng.randint(5, 200)}]
        )
        for i in range(n)
    ]
    store.add_conversations(convs)
    now = _time.time()
    cands, judgs = [], []
    for c in convs:
        keys = []
        for g in ("gen-a", "gen-b", "gen-c"):
            text = f"{g} says " + "z" * rng.randint(10, 300)
            cands.append((c.conversation_id, g, 0, "m-" + g, "{}", "done", text, 1, 1, 0.1,
                          "stop", None, 1, now))  # fmt: skip
            keys.append(f"{g}/0")
        ratings = [rng.choice([1, 2, 3, 4, 5, None]) for _ in keys]
        judgs.append((c.conversation_id, "judge", "jm", "done", json.dumps(keys),
                      json.dumps(ratings), json.dumps(["r"] * 3), json.dumps([0, 1, 2]), 0,
                      None, None, 1, now))  # fmt: skip
    store.import_candidates(cands)
    store.import_judgments(judgs)
    for c in rng.sample(convs, n // 10):
        store.put_review(c.conversation_id, "alice", "ui", ratings={"gen-a/0": 5, "gen-b/0": 1})
    return store


def _export_recipe(out: str, formats: list[str]) -> Any:
    """A recipe exporting into ``<workspace>/<out>/scale`` (exports stay in the workspace)."""
    from pipelines.recipe import Recipe

    return Recipe.model_validate(
        {
            "name": "scale",
            "source": {"path": "unused.jsonl"},
            "generators": [{"id": g, "backend": "original"} for g in ("gen-a", "gen-b", "gen-c")],
            "judge": {"id": "judge", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                      "model": "jm"},
            "export": {"formats": formats, "out": out},
        }
    )  # fmt: skip


def test_streamed_export_writes_the_same_files_as_the_in_memory_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    from pipelines import run

    monkeypatch.setattr(run, "EXPORT_CHUNK_ROWS", 97)  # many chunks, a ragged last one
    store = _bulk_store(tmp_path / "ws", 1000)
    fmts = ["parquet", "jsonl"]
    recipe = _export_recipe("export", fmts)
    binarized, summary = run.binarize_stage(recipe, store)
    old = run.export_stage(recipe, store, binarized).rename(tmp_path / "old")
    new, new_summary = run.export_stage_streamed(recipe, store)
    assert new_summary == summary and summary["pairs"] > 300
    stem = "data/train-00000-of-00001"
    assert pq.read_table(new / f"{stem}.parquet").equals(pq.read_table(old / f"{stem}.parquet"))
    assert pq.ParquetFile(new / f"{stem}.parquet").num_row_groups > 5  # written as decided
    assert (new / f"{stem}.jsonl").read_bytes() == (old / f"{stem}.jsonl").read_bytes()
    assert (new / "README.md").read_text() == (old / "README.md").read_text()
    # the recipe run takes the streamed path
    summary_run = run.run_recipe(
        _export_recipe("run", ["parquet"]), store, stages=["binarize", "export"]
    )
    assert summary_run.status == "done", summary_run.error
    assert summary_run.results["binarize"] == summary


def test_streamed_export_memory_is_flat_in_n(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracemalloc

    from pipelines import run

    monkeypatch.setattr(run, "EXPORT_CHUNK_ROWS", 250)
    peaks = []
    for n in (1000, 4000):
        store = _bulk_store(tmp_path / f"ws{n}", n)
        tracemalloc.start()
        _, summary = run.export_stage_streamed(_export_recipe(f"out{n}", ["parquet"]), store)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert summary["pairs"] > n // 3
    assert peaks[1] < peaks[0] * 1.5, peaks  # four times the conversations, the same peak


def test_conversation_ids_are_unchanged_by_the_fast_encoder() -> None:
    import hashlib

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pipelines.types import conversation_id_for

    def reference(messages: list[dict[str, str]]) -> str:
        canonical = json.dumps(
            [[m["role"], m["content"]] for m in messages],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]

    text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), text), max_size=4))
    def check(pairs: list[tuple[str, str]]) -> None:
        messages = [{"role": r, "content": c} for r, c in pairs]
        assert conversation_id_for(messages) == reference(messages)

    check()
    for special in ["\x00\x1f\x7f", "\u2028\u2029", '"\\/', "\b\f\n\r\t", "é漢🙂"]:
        messages = [{"role": "user", "content": special}]
        assert conversation_id_for(messages) == reference(messages)
    lone = [{"role": "user", "content": "\ud83d"}]  # as before: not encodable, same error
    with pytest.raises(UnicodeEncodeError):
        reference(lone)
    with pytest.raises(UnicodeEncodeError):
        conversation_id_for(lone)


def test_store_stats_are_reused_until_the_store_changes(tmp_path: Path) -> None:
    from pipelines.stats import store_stats

    store = build_fixture_store(tmp_path / "ws", 2, n=40)
    first = store_stats(store, judge_id="judge")
    calls = []
    real = store.rating_histogram
    store.rating_histogram = lambda *a: calls.append(a) or real(*a)  # type: ignore[method-assign]
    assert store_stats(store, judge_id="judge") == first and calls == []  # cached
    cid = store.conversation_ids()[0]
    store.put_review(cid, "zed", "ui", ratings={"g1/0": 1})
    store_stats(store, judge_id="judge")
    assert len(calls) == 1  # a review was written: recomputed
