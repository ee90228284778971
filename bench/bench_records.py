"""Typed records (issue 9): what reading the store as records costs against bare rows.

    .venv/bin/python bench/bench_records.py [--sizes 2000,20000] [--repeats 5]

Builds a synthetic store per size (N conversations x 3 done candidates, one judgment each, a
review on every fifth conversation), then times, side by side, best of ``--repeats``:

* bare: the same SELECT on the raw connection, JSON columns decoded into plain dicts / tuples
  (what the store returned before the records);
* records: the store's read methods returning ``Judgment`` / ``Review`` / ``Candidate``;
* the Argilla push plan (``ArgillaQueue._plan``, all three bulk reads and the selection)
  against the bare reads it is made of.

Prints ms, the ratio records / bare, and growth from the smallest to the largest size.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.argilla_queue import ArgillaQueue, Selection  # noqa: E402
from pipelines.store import Store  # noqa: E402
from pipelines.types import Conversation  # noqa: E402

GENS = ["g1", "g2", "g3"]


def build(data_dir: Path, n: int) -> Store:
    rng = random.Random(0)
    store = Store(data_dir)
    convs = [
        Conversation(messages=[{"role": "user", "content": f"question {i} {rng.random()}"}])
        for i in range(n)
    ]
    store.add_conversations(convs)
    now = time.time()
    cands, judgments = [], []
    for c in convs:
        keys = [f"{g}/0" for g in GENS]
        for g in GENS:
            cands.append(
                (c.conversation_id, g, 0, "m-" + g, "{}", "done", "text " * 40)
                + (10, 40, 0.1, "stop", None, 1, now)
            )
        ratings = [rng.randint(1, 5) for _ in GENS]
        judgments.append(
            (c.conversation_id, "judge", "jm", "done", json.dumps(keys), json.dumps(ratings))
            + (json.dumps(["why"] * 3), json.dumps([0, 1, 2]), 0, None, None, 1, now)
        )
    store.import_candidates(cands)
    store.import_judgments(judgments)
    for c in convs[::5]:
        store.put_review(c.conversation_id, "ann", "ui", ratings={"g1/0": 4}, chosen="g1/0")
    return store


def bare_judgments(store: Store) -> list[dict[str, Any]]:
    out = []
    for r in store.query("SELECT * FROM judgments ORDER BY rowid"):
        d = dict(r)
        for k in ("candidate_keys", "ratings", "rationales", "order_shown"):
            d[k] = json.loads(d[k])
        out.append(d)
    return out


def bare_reviews(store: Store) -> list[dict[str, Any]]:
    out = []
    for r in store.query("SELECT * FROM reviews ORDER BY updated_at"):
        d = dict(r)
        d["ratings"] = json.loads(d["ratings"])
        d["discard"], d["accepted_ai"] = bool(d["discard"]), bool(d["accepted_ai"])
        out.append(d)
    return out


def bare_plan_reads(store: Store) -> int:
    n = 0
    for _ in store.query(
        "SELECT conversation_id, generator_id, sample_index, model, text FROM candidates"
        " WHERE status = 'done' AND text IS NOT NULL"
    ):
        n += 1
    for r in store.query(
        "SELECT conversation_id, judge_id, model, candidate_keys, ratings, rationales"
        " FROM judgments WHERE status IN ('done', 'partial') ORDER BY updated_at"
    ):
        json.loads(r[3]), json.loads(r[4]), json.loads(r[5])
    return n + len(store.conversations())


def cases_for(store: Store, queue: ArgillaQueue) -> dict[str, tuple[Callable[[], Any], ...]]:
    """read name -> (bare, records)."""
    return {
        "judgments": (lambda: bare_judgments(store), lambda: store.judgments()),
        "reviews": (lambda: bare_reviews(store), lambda: store.reviews()),
        "candidates": (
            lambda: list(
                store.query(
                    "SELECT conversation_id, generator_id, sample_index, model,"
                    " text FROM candidates WHERE status = 'done'"
                )
            ),
            lambda: list(store.done_candidate_texts()),
        ),
        "argilla plan": (
            lambda: bare_plan_reads(store),
            lambda: queue._plan(store, "judge", None, Selection.parse("all")),
        ),
    }


def best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: dict[str, list[tuple[float, float]]] = {}
    queue = ArgillaQueue("http://127.0.0.1:9", dataset_name="bench", max_candidates=4)
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = build(Path(tmp) / "ws", n)
            cases = cases_for(store, queue)
            for name, (bare, ours) in cases.items():
                rows.setdefault(name, []).append(
                    (best(bare, args.repeats), best(ours, args.repeats))
                )
            store.close()
    print(f"{'read':<14}" + "".join(f"{'n=' + str(n):>30}" for n in sizes) + f"{'growth':>16}")
    for name, results in rows.items():
        cells = "".join(f"{f'{b:.1f} / {o:.1f} ms x{o / b:.2f}':>30}" for b, o in results)
        growth = results[-1][1] / results[0][1] if results[0][1] else float("nan")
        print(f"{name:<14}{cells}{f'x{growth:.1f}':>16}")
    print("cells: bare / records, ratio records / bare; growth: records, largest / smallest size")


if __name__ == "__main__":
    main()
