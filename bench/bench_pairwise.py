"""Pairwise (arena) review: next-pair latency on large workspaces (issue 14).

    .venv/bin/python bench/bench_pairwise.py [--sizes 10000,100000] [--steps 300] [--browser]

Builds a synthetic store per size (N conversations x 3 candidates, each judged with random
1-5 ratings, so about half the conversations land in the "AI can't separate them" queue),
queues the pairs once (``refresh_pairs``), then measures, side by side:

* bare: the least a pair view must read, three bare primary-key SELECTs (the conversation and
  its two candidates) — the baseline;
* ``next_pair``: the queue lookup (indexed) plus those reads;
* keystroke: what one verdict key costs on the server, the Arena tab's handler
  (``arena.answer``: store the verdict, pick the next pair, render it);

p50 / p95 in ms, the ratio to bare, and growth from the smallest to the largest size.
``--browser`` also serves the app on the largest store and measures, in Chromium, a verdict
click to the next pair on screen against a bare Gradio button round-trip.
Goal: next pair < 300 ms p95 at 100k conversations.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._browser import (  # noqa: E402
    BARE_BUTTON_APP,
    against,
    browser_session,
    click_timings,
    pct,
)
from pipelines.pairwise import next_pair, refresh_pairs  # noqa: E402
from pipelines.store import Store  # noqa: E402
from pipelines.types import Conversation  # noqa: E402

GENS = ["smol-precise", "smol-creative", "original"]  # the default recipe's generators
JUDGE = "smol-judge"
WORDS = (
    "the model answer list python rice train lemon time clock reverse slice copy order "
    "minutes heat stock garlic pan water salt meeting station walk"
).split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n)).capitalize() + "."


def build_store(data_dir: Path, n: int) -> float:
    t0 = time.perf_counter()
    rng = random.Random(0)
    store = Store(data_dir)
    convs = [
        Conversation(
            messages=[
                {"role": "user", "content": f"#{i} " + _text(rng, 25)},
                {"role": "assistant", "content": _text(rng, 40)},
                {"role": "user", "content": _text(rng, 20)},
            ],
            source="bench",
            original_response=_text(rng, 30),
        )
        for i in range(n)
    ]
    store.add_conversations(convs)
    now = time.time()
    cand_rows, judg_rows = [], []
    for c in convs:
        for g in GENS:
            cand_rows.append(
                (c.conversation_id, g, 0, f"model-{g}", "{}", "done", _text(rng, 80), 10, 80,
                 0.1, "stop", None, 1, now)
            )  # fmt: skip
        judg_rows.append(
            (
                c.conversation_id,
                JUDGE,
                "bench-judge",
                "done",
                json.dumps([f"{g}/0" for g in GENS]),
                json.dumps([rng.randint(1, 5) for _ in GENS]),
                json.dumps(["why"] * len(GENS)),
                json.dumps(list(range(len(GENS)))),
                0,
                None,
                None,
                1,
                now,
            )
        )
    store.import_candidates(cand_rows)
    store.import_judgments(judg_rows)
    store.close()
    return time.perf_counter() - t0


def measure_functions(data_dir: Path, steps: int) -> dict[str, list[float]]:
    from capyui.tabs.arena import answer, view
    from pipelines.service import WorkspaceService

    ws = WorkspaceService(data_dir)  # the tab's service (quickstart recipe unless one is saved)
    store = ws.store
    ids = [r[0] for r in store.query("SELECT conversation_id FROM conversations LIMIT 2000")]
    rng = random.Random(1)
    out: dict[str, list[float]] = {"bare PK selects": [], "next_pair": [], "keystroke": []}
    for _ in range(steps):
        cid = rng.choice(ids)
        t = time.perf_counter()
        store.query("SELECT * FROM conversations WHERE conversation_id = ?", (cid,))
        for g in GENS[:2]:
            store.query(
                "SELECT * FROM candidates WHERE conversation_id = ? AND generator_id = ?"
                " AND sample_index = 0",
                (cid, g),
            )
        out["bare PK selects"].append((time.perf_counter() - t) * 1000)
    for _ in range(steps):
        t = time.perf_counter()
        item = next_pair(store, "bench-a", reasons=["ai_tie", "top2"])
        out["next_pair"].append((time.perf_counter() - t) * 1000)
        assert item is not None
    reasons = ["ai_tie", "top2"]
    state = view(ws, "bench-b", reasons, 3)[0]
    keys = ["a", "b", "tie", "both_bad", "skip"]
    for i in range(steps):
        t = time.perf_counter()
        res = answer(ws, state, "bench-b", reasons, 3, keys[i % len(keys)])
        out["keystroke"].append((time.perf_counter() - t) * 1000)
        state = res[1]
        assert state, "queue ran dry"
    store.close()
    return out


def measure_browser(data_dir: Path, steps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with browser_session(data_dir, bare_app=BARE_BUTTON_APP) as s:
        assert s.bare_url is not None
        page = s.page(s.bare_url)
        page.locator("#bare-btn").wait_for()
        out["browser: bare round-trip"] = click_timings(page, "bare-btn", "bare-md", steps)
        page = s.page(s.app.url)
        page.get_by_role("tab", name="Arena").click()
        page.locator("#cu-arena-reviewer textarea, #cu-arena-reviewer input").first.fill(
            "bench-browser"
        )
        page.locator("#cu-arena-start").click()
        page.locator("#cu-arena-header").get_by_text("conversation").wait_for(timeout=120000)
        page.wait_for_timeout(500)
        out["browser: verdict -> next pair"] = click_timings(
            page, "cu-arena-a", "cu-arena-header", steps
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--browser-steps", type=int, default=40)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="capyui-bench-pairwise-"))
    table: dict[int, dict[str, list[float]]] = {}
    for n in sizes:
        d = tmp / f"ws-{n}"
        build_s = build_store(d, n)
        store = Store(d)
        t = time.perf_counter()
        rep = refresh_pairs(store, judge_id=JUDGE, generator_ids=GENS)
        refresh_s = time.perf_counter() - t
        t = time.perf_counter()
        again = refresh_pairs(store, judge_id=JUDGE, generator_ids=GENS)
        again_s = time.perf_counter() - t
        store.close()
        print(
            f"{n} conversations x {len(GENS)} candidates: built in {build_s:.1f}s; queued "
            f"{dict(rep.pairs)} in {refresh_s:.1f}s (refresh with nothing new: "
            f"{again_s * 1000:.0f} ms, {sum(again.pairs.values())} pairs)"
        )
        table[n] = measure_functions(d, args.steps)
    print(
        f"\n{'measure':<32}{'size':>8}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'x bare p50':>12}{'x bare p95':>12}"
    )
    for n, res in table.items():
        base = res["bare PK selects"]
        for name, vals in res.items():
            p50, p95, x50, x95 = against(vals, base)
            print(f"{name:<32}{n:>8}{len(vals):>5}{p50:>9.2f}{p95:>9.2f}{x50:>12.1f}{x95:>12.1f}")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\ngrowth p50 from {lo} to {hi} conversations ({hi / lo:.0f}x the data):")
        for name in table[lo]:
            a = statistics.median(table[lo][name])
            b = statistics.median(table[hi][name])
            print(f"  {name:<30}{b / a:>6.2f}x")
    worst = pct(table[sizes[-1]]["keystroke"], 0.95)
    if args.browser:
        res = measure_browser(tmp / f"ws-{sizes[-1]}", args.browser_steps)
        base = res["browser: bare round-trip"]
        print(f"\n{'browser, ' + str(sizes[-1]) + ' conversations':<36}{'n':>5}{'p50 ms':>9}"
              f"{'p95 ms':>9}{'x bare p50':>12}{'x bare p95':>12}")  # fmt: skip
        for name, vals in res.items():
            p50, p95, x50, x95 = against(vals, base)
            print(f"{name:<36}{len(vals):>5}{p50:>9.0f}{p95:>9.0f}{x50:>12.2f}{x95:>12.2f}")
        worst = pct(res["browser: verdict -> next pair"], 0.95)
    print(
        f"\nnext pair p95 at {sizes[-1]} conversations = {worst:.0f} ms (goal < 300 ms): "
        f"{'OK' if worst < 300 else 'OVER'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
