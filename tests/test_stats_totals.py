"""Issue 13: the Results statistics' first call reads running totals (migration 7) that triggers
keep in step with every write, instead of joining every candidate to its judgment and reading
every rationale: the totals always equal the full scan, through inserts, re-generations,
re-judgments, status changes, deletes, bulk imports and the migration's backfill."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from pipelines.judge_quality import count_placeholders
from pipelines.stats import store_stats
from pipelines.store import MIGRATIONS, Store
from pipelines.types import Conversation, GenerationResult
from tests.test_scale import build_fixture_store

GENS = ["g1", "g2", "g3"]
RATIONALES = ["fine answer, accurate", "[rationale for text 1]", "...", None, "<rationale>"]


def _scan_placeholders(store: Store, judge_id: str | None) -> tuple[int, int]:
    total = with_any = 0
    for rationales in store.iter_judgment_rationales(judge_id):
        n = count_placeholders(r if isinstance(r, str) else None for r in rationales)
        total += n
        with_any += 1 if n else 0
    return total, with_any


def _check(store: Store) -> None:
    for judge in ("judge", "judge2", "nobody"):
        for gens in ([], ["g1", "g3"]):
            got = sorted(store._rating_histogram_totals(gens, judge), key=repr)
            want = sorted(store._rating_histogram_scan(gens, judge), key=repr)
            assert [r[:4] for r in got] == [r[:4] for r in want], (judge, gens)
            assert [r[4] for r in got] == pytest.approx([r[4] for r in want])
        assert store.placeholder_counts(judge) == _scan_placeholders(store, judge)
    assert store.placeholder_counts(None) == _scan_placeholders(store, None)


def _mutate(store: Store, rng: random.Random, steps: int) -> None:
    ids = store.conversation_ids()
    for _ in range(steps):
        cid = rng.choice(ids)
        op = rng.random()
        if op < 0.35:  # (re)generate a candidate: done, failed, another model
            ok = rng.random() > 0.25
            res = GenerationResult(
                key=None,
                text="t" if ok else None,
                error=None if ok else "boom",
                model=rng.choice(["m1", "m2"]),
            )
            store.put_candidate(cid, rng.choice(GENS), rng.choice([0, 1]), res)
        elif op < 0.8:  # (re)judge with the keys that exist now
            keys = [f"{c.generator_id}/{c.sample_index}" for c in store.candidates_for(cid)]
            if not keys:
                continue
            status = rng.choice(["done", "done", "partial", "failed"])
            store.put_judgment(
                cid,
                rng.choice(["judge", "judge2"]),
                model="m",
                candidate_keys=keys,
                ratings=[rng.choice([None, 1, 2, 3, 4, 5, 4.5]) for _ in keys],
                rationales=[rng.choice(RATIONALES) for _ in keys],
                order_shown=list(range(len(keys))),
                seed=0,
                raw_output=None,
                error=None if status == "done" else "x",
                status=status,
            )
        else:  # rows removed by hand (a curator's clean-up in SQL)
            db = store._connection()
            table = rng.choice(["candidates", "judgments"])
            db.execute(f"DELETE FROM {table} WHERE conversation_id = ?", (cid,))


@pytest.mark.parametrize("seed", [2, 7])
def test_running_totals_equal_the_full_scan_through_every_kind_of_write(
    tmp_path: Path, seed: int
) -> None:
    store = build_fixture_store(tmp_path / "ws", seed, n=60)
    _check(store)
    rng = random.Random(seed)
    for _ in range(4):
        _mutate(store, rng, 60)
        _check(store)
    # bulk imports (the benchmark's path) keep them too
    now = time.time()
    extra = [Conversation(messages=[{"role": "user", "content": f"bulk {i}"}]) for i in range(20)]
    store.add_conversations(extra)
    store.import_candidates(
        [
            (c.conversation_id, g, 0, "m3", "{}", "done", "x", 1, 1, 0.1, "stop", None, 1, now)
            for c in extra
            for g in ("g1", "g2")
        ]
    )
    store.import_judgments(
        [
            (
                c.conversation_id,
                "judge",
                "m",
                "done",
                json.dumps(["g1/0", "g2/0"]),
                json.dumps([i % 5 + 1, None]),
                json.dumps(["[rationale]", "ok then"]),
                json.dumps([0, 1]),
                0,
                None,
                None,
                1,
                now,
            )
            for i, c in enumerate(extra)
        ]  # fmt: skip
    )
    _check(store)


def test_migration_fills_the_totals_of_an_existing_workspace(tmp_path: Path) -> None:
    store = build_fixture_store(tmp_path / "ws", 3, n=80)
    _mutate(store, random.Random(3), 80)
    want = store_stats(store, generator_ids=None, judge_id="judge")
    db = store._connection()
    # back to the workspace as the code before the statistics-totals migration left it
    before = next(i for i, script in enumerate(MIGRATIONS) if "stats_candidates" in script)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        if name.startswith("stats_"):
            db.execute(f"DROP TRIGGER {name}")
    for table in ("stats_candidates", "stats_ratings", "stats_judges"):
        db.execute(f"DROP TABLE {table}")
    db.execute("ALTER TABLE judgments DROP COLUMN placeholders")
    db.execute(f"PRAGMA user_version = {before}")
    store.close()
    again = Store(tmp_path / "ws")
    assert again.schema_version() > before
    _check(again)  # counts the placeholders of the old rows once, then keeps them
    assert again.query("SELECT COUNT(*) FROM judgments WHERE placeholders IS NULL AND"
                       " status != 'failed'")[0][0] == 0  # fmt: skip
    got = store_stats(again, generator_ids=None, judge_id="judge")
    assert got["models"] == want["models"] and got["judge_quality"] == want["judge_quality"]


def test_first_statistics_call_reads_no_row_per_conversation(tmp_path: Path) -> None:
    """The histogram and the judge-quality counts come from the totals: no statement of the
    first call scans candidates, judgments' rationales or every judgment."""
    store = build_fixture_store(tmp_path / "ws", 5, n=40)
    store.placeholder_counts("judge")  # old rows counted once (none here: all known)
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    store_stats(store, generator_ids=["g1", "g2"], judge_id="judge")
    plan_rows = []
    db = store._connection()
    db.set_trace_callback(None)
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT") and "?" not in sql:
            plan_rows += [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)]
    joined = " | ".join(statements)
    assert "json_each(j.rationales)" not in joined and "SELECT rationales" not in joined
    assert "FROM candidates c LEFT JOIN judgments" not in joined  # the full-scan histogram
    assert "stats_ratings" in joined and "stats_judges" in joined
    assert not [p for p in plan_rows if p.startswith("SCAN candidates")]
