"""Judge panels (issue 14, section 2): the cost of the panel's bookkeeping on large workspaces.

    .venv/bin/python bench/bench_panel.py [--sizes 10000,50000] [--judges 2]

Builds a synthetic store per size (N conversations x 3 candidates, each judged by every judge
of the panel with random 1-5 ratings, reverse-pass ratings kept), then measures, side by side:

* bare scan: one cursor over every judgment of the panel's judges, ``json.loads`` of its
  ratings: the least any report over the judgments can read (the baseline);
* ``refresh_panel``: writing every aggregate (mean) with its disagreement fact, then a second
  pass that finds them all up to date (what a resume costs);
* ``panel_report``: the per-judge biases and between-judge agreement (alpha, Spearman);
* the "judges disagree" review queue: first page of 50 + count, beside the "AI tie" queue.

Seconds, the ratio to the bare scan, and growth log(t2/t1)/log(N2/N1) between the sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.config import JudgeConfig  # noqa: E402
from pipelines.panel import PanelConfig, panel_report, refresh_panel  # noqa: E402
from pipelines.review import queue_count, queue_page  # noqa: E402
from pipelines.store import Store  # noqa: E402
from pipelines.types import Conversation  # noqa: E402

GENS = ("g1", "g2", "g3")


def build(data_dir: Path, n: int, judges: list[str]) -> tuple[Store, list[str]]:
    store = Store(data_dir)
    rng = random.Random(n)
    convs = [
        Conversation(messages=[{"role": "user", "content": f"question {i}"}], source="bench")
        for i in range(n)
    ]
    store.add_conversations(convs)
    ids = [c.conversation_id for c in convs]
    now = time.time()
    keys = [f"{g}/0" for g in GENS]
    cands = [
        (cid, g, 0, f"m-{g}", "{}", "done", f"answer {g}", 1, 1, 0.1, "stop", None, 1, now)
        for cid in ids
        for g in GENS
    ]
    store.import_candidates(cands)
    for jid in judges:
        rows = []
        for cid in ids:
            fwd = [rng.randint(1, 5) for _ in GENS]
            rev = [rng.randint(1, 5) for _ in GENS]
            ratings = [(a + b) / 2 for a, b in zip(fwd, rev, strict=True)]
            order = rng.sample(range(3), 3)
            rows.append(
                (
                    cid,
                    jid,
                    f"model-{jid}",
                    "done",
                    json.dumps(keys),
                    json.dumps(ratings),
                    json.dumps(["r"] * 3),
                    json.dumps(order),
                    0,
                    None,
                    None,
                    1,
                    now,
                )
            )
        store.import_judgments(rows)
        # the reverse pass's per-pass ratings (one UPDATE pass; the judge writes them inline)
        with store._conn() as db:
            db.execute(
                "UPDATE judgments SET pass_ratings = json_array(ratings, ratings)"
                " WHERE judge_id = ?",
                (jid,),
            )
    return store, ids


def timed(fn: object, *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start


def bare_scan(store: Store, judges: list[str]) -> int:
    marks = ",".join("?" * len(judges))
    n = 0
    for (ratings,) in store._connection().execute(
        f"SELECT ratings FROM judgments WHERE judge_id IN ({marks})"
        " ORDER BY conversation_id, judge_id",
        judges,
    ):
        n += len(json.loads(ratings))
    return n


def queue_open(store: Store, name: str, panel_id: str) -> None:
    queue_page(store, name, judge_id=panel_id)
    queue_count(store, name, judge_id=panel_id)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--judges", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    judge_ids = [f"j{k}" for k in range(args.judges)]
    judges = [JudgeConfig(id=j, backend="embedded") for j in judge_ids]
    panel = PanelConfig()
    results: dict[int, dict[str, float]] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store, ids = build(Path(tmp), n, judge_ids)
            r: dict[str, float] = {}
            r["bare scan"] = timed(bare_scan, store, judge_ids)
            r["refresh_panel (write every aggregate)"] = timed(
                refresh_panel, store, panel, judges, ids
            )
            r["refresh_panel (resume: all up to date)"] = timed(
                refresh_panel, store, panel, judges, ids
            )
            r["panel_report"] = timed(
                panel_report, store, judge_ids, panel_id=panel.id, aggregate_name="mean"
            )
            for name in ("judges_disagree", "ai_tie"):
                r[f"queue {name}: first page + count"] = timed(queue_open, store, name, panel.id)
            results[n] = r
            store.close()
    names = list(results[sizes[0]])
    head = " | ".join(f"{n:,} s | ÷ bare" for n in sizes)
    print(f"| measure ({args.judges} judges x 3 candidates) | {head} | growth |")
    print("|---" * (1 + 2 * len(sizes) + 1) + "|")
    for name in names:
        cells = []
        for n in sizes:
            t = results[n][name]
            cells.append(f"{t:.3f} | {t / results[n]['bare scan']:.2f}x")
        growth = ""
        if len(sizes) > 1:
            t1, t2 = results[sizes[0]][name], results[sizes[-1]][name]
            growth = f"{math.log(t2 / t1) / math.log(sizes[-1] / sizes[0]):.2f}"
        print(f"| {name} | {' | '.join(cells)} | {growth} |")


if __name__ == "__main__":
    main()
