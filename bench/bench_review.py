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
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.store import Store  # noqa: E402
from pipelines.types import Conversation  # noqa: E402
from tests.conftest_ui import CHROMIUM_ARGS, AppServer, free_port  # noqa: E402

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
    db = store._connection()
    db.execute("BEGIN")
    db.executemany("INSERT INTO candidates VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", cand_rows)
    db.executemany(
        "INSERT INTO judgments (conversation_id, judge_id, model, status, candidate_keys,"
        " ratings, rationales, order_shown, seed, raw_output, error, attempts, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        judg_rows,
    )
    db.execute("COMMIT")
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


BARE_APP = textwrap.dedent("""
    import sys, gradio as gr
    n = {"i": 0}
    def step():
        n["i"] += 1
        return f"Step {n['i']}"
    with gr.Blocks() as demo:
        md = gr.Markdown("Step 0", elem_id="bare-md")
        btn = gr.Button("Next", elem_id="bare-btn")
        btn.click(step, None, md)
    demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), ssr_mode=False)
""")

MEASURE_JS = """
async ([buttonId, watchId, n]) => {
  const times = [];
  for (let i = 0; i < n; i++) {
    const el = document.getElementById(watchId);
    const before = el.innerText;
    const t = performance.now();
    document.getElementById(buttonId).click();
    await new Promise((resolve, reject) => {
      const limit = setTimeout(() => reject(new Error('no update in 10s')), 10000);
      const check = () => {
        if (document.getElementById(watchId).innerText !== before) {
          clearTimeout(limit); resolve();
        } else requestAnimationFrame(check);
      };
      check();
    });
    times.push(performance.now() - t);
    await new Promise(r => setTimeout(r, 30));
  }
  return times;
}
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def first_load(browser: object, url: str, selector: str) -> float:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
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

    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="capyui-bench-"))
    build_s = build_store(tmp / "workspace", args.conversations, args.candidates)
    print(
        f"store: {args.conversations} conversations x {args.candidates} candidates, judged "
        f"({build_s:.1f}s to build)"
    )
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_APP, str(bare_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, list[float]] = {}
    try:
        with AppServer(tmp / "workspace") as app:
            Client(app.url, verbose=False).predict(bench_recipe(), api_name="/recipe_import")
            bare_url = f"http://127.0.0.1:{bare_port}/"
            for _ in range(150):
                try:
                    Client(bare_url, verbose=False)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.2)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
                )
                results["first load: bare"] = [
                    first_load(browser, bare_url, "#bare-btn") for _ in range(args.loads)
                ]
                results["first load: app"] = [
                    first_load(browser, app.url, "#cu-load") for _ in range(args.loads)
                ]

                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(bare_url)
                page.locator("#bare-btn").wait_for()
                results["round-trip: bare"] = page.evaluate(
                    MEASURE_JS, ["bare-btn", "bare-md", args.steps]
                )

                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(app.url)
                page.get_by_role("tab", name="Review").click()
                page.locator("#cu-reviewer textarea").fill("bench")
                page.wait_for_timeout(1000)  # the tab's own first queue load
                t0 = time.perf_counter()
                page.locator("#cu-load-queue").click()  # unreviewed: all of them here
                page.locator("#cu-review-header").get_by_text(f"of {args.conversations}").wait_for(
                    timeout=60000
                )
                results["review: load queue"] = [(time.perf_counter() - t0) * 1000]
                page.wait_for_timeout(500)
                results["review: next"] = page.evaluate(
                    MEASURE_JS, ["cu-next", "cu-review-header", args.steps]
                )
                results["review: previous"] = page.evaluate(
                    MEASURE_JS, ["cu-prev", "cu-review-header", args.steps]
                )
                browser.close()
    finally:
        bare.terminate()
        bare.wait(10)

    base = {"first load": results["first load: bare"], "round-trip": results["round-trip: bare"]}
    print(
        f"\n{'measure':<22}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'x bare p50':>12}{'x bare p95':>12}"
    )
    for name, vals in results.items():
        ref = base["first load"] if name.startswith("first load") else base["round-trip"]
        print(
            f"{name:<22}{len(vals):>4}{statistics.median(vals):>10.0f}{pct(vals, 0.95):>10.0f}"
            f"{statistics.median(vals) / statistics.median(ref):>12.2f}"
            f"{pct(vals, 0.95) / pct(ref, 0.95):>12.2f}"
        )
    worst = max(pct(results["review: next"], 0.95), pct(results["review: previous"], 0.95))
    print(
        f"\nreview next/previous p95 = {worst:.0f} ms (goal < 300 ms): "
        f"{'OK' if worst < 300 else 'OVER'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
