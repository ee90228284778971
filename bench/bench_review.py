"""Review tab latency on a large workspace, measured in a real browser.

    .venv/bin/python bench/bench_review.py [--conversations 10000] [--candidates 4] [--steps 40]

Builds a synthetic store (N conversations x K candidates, each judged), serves the CapyUI app
on it and, side by side, a bare Gradio page (one Markdown + one button round-trip). In
Chromium it measures the first page load and the Review tab's next / previous latency (click
to the header showing the new conversation), and prints a table of p50 / p95 with the ratio
to the bare page. Goal: Review next/previous p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._browser import (  # noqa: E402
    BARE_BUTTON_APP,
    VIEWPORT,
    against,
    browser_session,
    click_timings,
    pct,
)
from pipelines.store import Store  # noqa: E402
from pipelines.types import Conversation  # noqa: E402

WORDS = (
    "the model answer list python rice train lemon time clock reverse slice copy order "
    "minutes heat stock garlic pan water salt meeting station walk"
).split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def build_store(data_dir: Path, n: int, k: int) -> float:
    t0 = time.perf_counter()
    rng = random.Random(0)
    store = Store(data_dir)
    convs = []
    for i in range(n):
        msgs = [
            {"role": "user", "content": f"#{i} " + _text(rng, 25)},
            {"role": "assistant", "content": _text(rng, 60)},
            {"role": "user", "content": _text(rng, 20)},
        ]
        convs.append(Conversation(messages=msgs, source="bench", original_response=_text(rng, 40)))
    store.add_conversations(convs)
    gens = [f"gen-{j}" for j in range(k)]
    now = time.time()
    cand_rows, judg_rows = [], []
    for c in convs:
        keys, ratings = [], []
        for g in gens:
            cand_rows.append(
                (
                    c.conversation_id,
                    g,
                    0,
                    "bench-model-" + g,
                    "{}",
                    "done",
                    _text(rng, 120),
                    10,
                    120,
                    0.1,
                    "stop",
                    None,
                    1,
                    now,
                )
            )
            keys.append(f"{g}/0")
            ratings.append(rng.randint(1, 5))
        judg_rows.append(
            (
                c.conversation_id,
                "smol-judge",
                "bench-judge",
                "done",
                json.dumps(keys),
                json.dumps(ratings),
                json.dumps([_text(rng, 15)] * k),
                json.dumps(list(range(k))),
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


def bench_recipe() -> str:
    import yaml

    data = yaml.safe_load((ROOT / "pipelines/recipes/quickstart.yaml").read_text())
    data["name"] = "bench"
    data["generators"] = [{"id": "gen-0", "backend": "embedded"}] + [
        {"id": f"gen-{j}", "backend": "embedded"} for j in range(1, 4)
    ]
    return yaml.safe_dump(data)


def first_load(browser: object, url: str, selector: str) -> float:
    ctx = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page = ctx.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    page.locator(selector).first.wait_for(timeout=60000)
    dt = (time.perf_counter() - t0) * 1000
    ctx.close()
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=10000)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--loads", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="capyui-bench-"))
    build_s = build_store(tmp / "workspace", args.conversations, args.candidates)
    print(
        f"store: {args.conversations} conversations x {args.candidates} candidates, judged "
        f"({build_s:.1f}s to build)"
    )
    results: dict[str, list[float]] = {}
    with browser_session(
        tmp / "workspace", bare_app=BARE_BUTTON_APP, recipe_yaml=bench_recipe()
    ) as s:
        assert s.bare_url is not None
        results["first load: bare"] = [
            first_load(s.browser, s.bare_url, "#bare-btn") for _ in range(args.loads)
        ]
        results["first load: app"] = [
            first_load(s.browser, s.app.url, "#cu-load") for _ in range(args.loads)
        ]

        page = s.page(s.bare_url)
        page.locator("#bare-btn").wait_for()
        results["round-trip: bare"] = click_timings(page, "bare-btn", "bare-md", args.steps)

        page = s.page(s.app.url)
        page.get_by_role("tab", name="Review").click()
        # (the reviewer is the signed-in identity: here the local owner, "local")
        page.wait_for_timeout(1000)  # the tab's own first queue load
        t0 = time.perf_counter()
        page.locator("#cu-load-queue").click()  # unreviewed: all of them here
        page.locator("#cu-review-header").get_by_text(f"of {args.conversations}").wait_for(
            timeout=60000
        )
        results["review: load queue"] = [(time.perf_counter() - t0) * 1000]
        page.wait_for_timeout(500)
        results["review: next"] = click_timings(page, "cu-next", "cu-review-header", args.steps)
        results["review: previous"] = click_timings(page, "cu-prev", "cu-review-header", args.steps)

    base = {"first load": results["first load: bare"], "round-trip": results["round-trip: bare"]}
    print(
        f"\n{'measure':<22}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'x bare p50':>12}{'x bare p95':>12}"
    )
    for name, vals in results.items():
        ref = base["first load"] if name.startswith("first load") else base["round-trip"]
        p50, p95, x50, x95 = against(vals, ref)
        print(f"{name:<22}{len(vals):>4}{p50:>10.0f}{p95:>10.0f}{x50:>12.2f}{x95:>12.2f}")
    worst = max(pct(results["review: next"], 0.95), pct(results["review: previous"], 0.95))
    print(
        f"\nreview next/previous p95 = {worst:.0f} ms (goal < 300 ms): "
        f"{'OK' if worst < 300 else 'OVER'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
