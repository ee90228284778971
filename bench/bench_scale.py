"""A million conversations on one machine: load, review, Results and export as N grows.

    .venv/bin/python bench/bench_scale.py --sizes 10000,100000 [--before /tmp/wt13-before]

Synthetic multi-turn conversations (~1.7 KB each, JSON Lines) generated here. For each size N,
each measurement runs in its own process (peak RSS is that process's ``ru_maxrss``):

* load: ``load_source`` into a fresh store (streamed through ``Store.conversation_sink`` where the
  code has it), beside a bare reader (``json.loads`` per line, counting rows) on the same file,
  and the floor of any loader into this store, in two parts: ``parse+id`` (orjson-parse each
  line, hash its prompt into the conversation id) and ``SQLite write`` (the same rows prebuilt
  outside the timer, inserted with the store's schema, pragmas and chunks, then checkpointed);
  their sum bounds the load's speed on one core, their max on two with perfect overlap;
* review: with two generators' candidates, a judgment per conversation and 2,000 reviews stored:
  opening the queue per filter (the full id list the Review tab asks for, and where the code has
  it the paged open: first page of 50 + count), next (``review_item``), submit-to-saved
  (``submit_review`` + the progress counts the tab recomputes), p50/p95;
* browser: the Review tab in Chromium against the real app on the same workspace (up to
  ``--browser-max``): queue open (the tab's first visit, at app start; then per filter, a
  second round, steady state), next, and submit-to-saved, p50/p95, printed beside the
  function timings;
* results: the Results statistics (collect + binarize + ``compute_stats``; and the SQL model
  statistics where the code has them), and the Results tab's Preview through the workspace
  service (the whole store binarized: time and peak RSS);
* export: binarize + export to Parquet through the recipe path (``run.binarize_stage`` +
  ``run.export_stage``), time and peak RSS.

The growth exponent between two sizes is log(t2/t1)/log(N2/N1): 1 is linear, 0 is flat.
``--before DIR`` runs the same measurements with DIR's ``pipelines`` (e.g. a checkout of main:
``git worktree add --detach /tmp/wt13-before main``) and prints both side by side.
Goals (issue 13): load and export peak RSS < 1 GB at 1M; queue open < 1 s and submit-to-saved
p95 < 300 ms at 1M for every filter; load >= 0.5x the bare reader's rows/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the model answer list python rice train lemon time clock reverse slice copy order minutes "
    "heat stock garlic pan water salt meeting station walk river mountain cloud energy garden "
    "paper window market silver engine bridge letter winter summer castle planet"
).split()
GENS = ["gen-a", "gen-b"]
LEGACY_MAX = 10**9  # above this N, skip measurements that hold every conversation in memory
JUDGE = "judge"


def make_data(path: Path, n: int) -> None:
    if path.exists():
        return
    rng = random.Random(n)
    tmp = path.with_suffix(".part")
    with tmp.open("w") as f:
        for i in range(n):
            turns = []
            for t in range(3):
                turns.append(
                    {
                        "input": f"#{i}.{t} " + " ".join(rng.choices(WORDS, k=45)),
                        "output": " ".join(rng.choices(WORDS, k=60)),
                    }
                )
            f.write(json.dumps({"conversation": turns}) + "\n")
    tmp.rename(path)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- children ------------------------------------------------------------------------------------
def child_bare(args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    n = 0
    with open(args.data, "rb") as f:
        for line in f:
            if line.strip():
                json.loads(line)
                n += 1
    return {"s": time.perf_counter() - t, "rows": n, "rss_mb": rss_mb()}


def child_floor(args: argparse.Namespace) -> dict[str, Any]:
    """The least any loader into this store does, measured in two parts on the same file:
    ``parse+id`` (orjson-parse each line and hash its prompt into the conversation id, nothing
    else) and ``write`` (SQLite alone: the same rows, prebuilt a chunk at a time outside the
    timer, inserted with the store's schema, pragmas and chunking, then checkpointed). Their
    sum bounds load speed on one core, their max on two cores with perfect overlap."""
    import sqlite3

    import orjson

    from pipelines.sources import LOAD_CHUNK_ROWS
    from pipelines.store import LOAD_WAL_PAGES, Store
    from pipelines.types import conversation_id_for

    ws = Path(args.ws)
    shutil.rmtree(ws, ignore_errors=True)
    Store(ws).close()  # the schema and pragmas of a new workspace
    db = sqlite3.connect(next(ws.glob("*.sqlite")), isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA main.cache_size = -65536")
    db.execute(f"PRAGMA wal_autocheckpoint = {LOAD_WAL_PAGES}")
    parse = write = 0.0
    chunk: list[tuple[Any, ...]] = []

    def flush() -> float:
        t = time.perf_counter()
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO conversations VALUES (?,?,?,?,?,?,?)", chunk)
        db.execute("COMMIT")
        chunk.clear()
        return time.perf_counter() - t

    with open(args.data, "rb") as f:
        for line in f:
            t = time.perf_counter()
            turns = orjson.loads(line)["conversation"]
            pairs = []
            for turn in turns:
                pairs += [
                    {"role": "user", "content": turn["input"]},
                    {"role": "assistant", "content": turn["output"]},
                ]
            cid = conversation_id_for(pairs[:-1])
            parse += time.perf_counter() - t
            row = (cid, "s", orjson.dumps(pairs[:-1]).decode(), pairs[-1]["content"], "{}", 3, 0)
            chunk.append(row)
            if len(chunk) >= LOAD_CHUNK_ROWS:
                write += flush()
    if chunk:
        write += flush()
    t = time.perf_counter()
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    write += time.perf_counter() - t
    db.close()
    return {"parse+id s": parse, "write s": write, "rss_mb": rss_mb()}


def child_load(args: argparse.Namespace) -> dict[str, Any]:
    import inspect

    from pipelines.sources import load_source
    from pipelines.store import Store

    ws = Path(args.ws)
    shutil.rmtree(ws, ignore_errors=True)
    t = time.perf_counter()
    store = Store(ws)
    if "sink" in inspect.signature(load_source).parameters:
        sink = store.conversation_sink()
        result = load_source(args.data, sink=sink)
        added = sink.added
    else:
        result = load_source(args.data)
        added, _ = store.add_conversations(result.conversations)
    secs = time.perf_counter() - t
    assert added == args.n, (added, args.n)
    return {"s": secs, "rows": added, "rss_mb": rss_mb()}


def child_populate(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.store import Store

    store = Store(args.ws)
    rng = random.Random(1)
    now = time.time()
    ids = store.conversation_ids()
    t = time.perf_counter()
    for lo in range(0, len(ids), 20000):
        cands, judgs = [], []
        for cid in ids[lo : lo + 20000]:
            keys = []
            for g in GENS:
                text = " ".join(rng.choices(WORDS, k=70))
                cands.append(
                    (cid, g, 0, "model-" + g, "{}", "done", text, 10, 90, 0.1, "stop", None, 1, now)
                )
                keys.append(f"{g}/0")
            ratings = [rng.choice([1, 2, 3, 3, 4, 4, 5, 5, None]) for _ in keys]
            judgs.append(
                (cid, JUDGE, "judge-model", "done", json.dumps(keys), json.dumps(ratings),
                 json.dumps(["why"] * len(keys)), json.dumps(list(range(len(keys)))), 0, None,
                 None, 1, now)
            )  # fmt: skip
        if hasattr(store, "import_candidates"):
            store.import_candidates(cands)
            store.import_judgments(judgs)
        else:  # the code before issue 13
            db = store._connection()
            db.execute("BEGIN")
            db.executemany("INSERT INTO candidates VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", cands)
            db.executemany("INSERT INTO judgments VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", judgs)
            db.execute("COMMIT")
    for cid in rng.sample(ids, min(2000, len(ids) // 2)):
        store.put_review(
            cid,
            rng.choice(["bench", "other"]),
            "ui",
            ratings={f"{g}/0": rng.randint(1, 5) for g in GENS},
            chosen=rng.choice([f"{g}/0" for g in GENS]),
            discard=rng.random() < 0.05,
        )
    return {"s": time.perf_counter() - t, "rss_mb": rss_mb()}


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(math.ceil(q * len(values))) - 1)]


def child_review(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines import review
    from pipelines.store import Store

    store = Store(args.ws)
    kw = {"generator_ids": GENS, "judge_id": JUDGE, "reviewer": "bench"}
    out: dict[str, Any] = {}
    for f in review.FILTERS:
        t = time.perf_counter()
        ids = review.queue_ids(store, f, **kw)
        full = time.perf_counter() - t
        out[f"queue {f} (full list)"] = full
        if hasattr(review, "queue_page"):
            t = time.perf_counter()
            page = review.queue_page(store, f, page_size=50, **kw)
            count = review.queue_count(store, f, **kw)
            out[f"queue {f} (page+count)"] = time.perf_counter() - t
            assert page == ids[:50] and count == len(ids), f
        out[f"n {f}"] = len(ids)
    unreviewed = review.queue_ids(store, "unreviewed", **kw)[: args.reps]
    nexts, submits = [], []
    for cid in unreviewed:
        t = time.perf_counter()
        item = review.review_item(store, cid, generator_ids=GENS, judge_id=JUDGE, reviewer="bench")
        nexts.append(time.perf_counter() - t)
        keys = [c.key for c in item.candidates]
        t = time.perf_counter()
        review.submit_review(
            store, cid, "bench", candidate_keys=keys, ratings={k: 3 for k in keys}, chosen=keys[0]
        )
        review.review_progress(store, generator_ids=GENS, reviewer="bench")
        submits.append(time.perf_counter() - t)
    out["next p50"], out["next p95"] = statistics.median(nexts), _p(nexts, 0.95)
    out["submit p50"], out["submit p95"] = statistics.median(submits), _p(submits, 0.95)
    out["rss_mb"] = rss_mb()
    return out


def child_results(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines import stats
    from pipelines.binarize import BinarizeOptions, binarize, collect
    from pipelines.store import Store

    store = Store(args.ws)
    out: dict[str, Any] = {}
    if hasattr(stats, "store_stats"):
        t = time.perf_counter()
        stats.store_stats(store, generator_ids=GENS, judge_id=JUDGE)
        out["results stats (SQL)"] = time.perf_counter() - t
    if args.n <= args.legacy_max:  # every conversation in memory: skipped at 1M (RSS)
        t = time.perf_counter()
        rows = collect(store, generator_ids=GENS, judge_id=JUDGE)
        result = binarize(rows, BinarizeOptions())
        stats.compute_stats(rows, result.pairs)
        out["results (collect+binarize+stats)"] = time.perf_counter() - t
    out["rss_mb"] = rss_mb()
    return out


def child_preview(args: argparse.Namespace) -> dict[str, Any]:
    """The Results tab's Preview: ``WorkspaceService.binarize_preview`` over the whole store
    (counts, first pairs, statistics with win rates), time and peak RSS."""
    import yaml

    from pipelines.service import CLI_ACTOR, WorkspaceService

    ws = Path(args.ws)
    recipe = {
        "name": "bench",
        "source": {"path": "conversations.jsonl"},
        "generators": [{"id": g, "backend": "original"} for g in GENS],
        "judge": {"id": JUDGE, "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                  "model": "judge-model"},
    }  # fmt: skip
    (ws / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    t = time.perf_counter()
    WorkspaceService(ws).binarize_preview(CLI_ACTOR, {})
    return {"s": time.perf_counter() - t, "rss_mb": rss_mb()}


def child_export(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines import run
    from pipelines.recipe import Recipe
    from pipelines.store import Store

    store = Store(args.ws)
    recipe = Recipe.model_validate(
        {
            "name": "bench",
            "source": {"path": args.data},
            "generators": [{"id": g, "backend": "original"} for g in GENS],
            "judge": {"id": JUDGE, "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                      "model": "judge-model"},
            "export": {"formats": ["parquet"], "out": str(Path(args.ws) / "export")},
        }
    )  # fmt: skip
    t = time.perf_counter()
    if hasattr(run, "export_stage_streamed"):  # streamed, chunk by chunk (issue 13)
        _, res = run.export_stage_streamed(recipe, store)
    else:
        binarized, res = run.binarize_stage(recipe, store)
        run.export_stage(recipe, store, binarized)
    return {"s": time.perf_counter() - t, "pairs": res["pairs"], "rss_mb": rss_mb()}


def child_browser(args: argparse.Namespace) -> dict[str, Any]:
    """The Review tab in Chromium against the real app (``python app.py``) on this workspace:
    opening the queue (tab first visit, then Load queue per filter), next, and
    submit-to-saved (click Submit until the status says Saved), p50/p95 of ``--reps``."""
    import yaml
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    sys.path.insert(0, str(ROOT))
    from bench._browser import browser_session

    ws = Path(args.ws)
    recipe = {
        "name": "bench",
        "source": {"path": str(Path(args.data).resolve())},
        "generators": [{"id": g, "backend": "original"} for g in GENS],
        "judge": {"id": JUDGE, "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                  "model": "judge-model"},
    }  # fmt: skip
    (ws / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    out: dict[str, Any] = {}
    header = "#cu-review-header"
    with browser_session(ws) as session:
        page = session.page(session.app.url)
        page.wait_for_selector("button[role=tab]", timeout=120_000)
        t = time.perf_counter()
        page.get_by_role("tab", name="Review").click()
        page.wait_for_function(
            "s => (document.querySelector(s)?.innerText || '').includes('Conversation 1 of')",
            arg=header,
            timeout=120_000,
        )
        out["browser queue open (tab)"] = time.perf_counter() - t
        page.locator("#cu-reviewer textarea, #cu-reviewer input").first.fill("bench-ui")
        from pipelines import review
        from pipelines.store import Store

        store = Store(ws)
        kw = {"generator_ids": GENS, "judge_id": JUDGE, "reviewer": "bench-ui"}
        # twice: the first round runs beside the app's start-up work (the Results tab's
        # background preview), the second is the steady state that is reported
        # every filter ("unreviewed", the tab's start, last: picking the shown one fires nothing)
        keys = [k for k in review.FILTERS if k != "unreviewed"] + ["unreviewed"]

        def cycle(i: int) -> tuple[float, float]:
            """Rate, submit until Saved, then Next until the header moves to item i + 2."""
            page.locator("#cu-rate-0 input").first.check()
            t = time.perf_counter()
            page.locator("#cu-submit").click()
            page.wait_for_function(
                "() => (document.querySelector('#cu-review-status')?.innerText || '')"
                ".includes('Saved')",
                timeout=60_000,
            )
            submit = time.perf_counter() - t
            t = time.perf_counter()
            page.locator("#cu-next").click()
            page.wait_for_function(
                "([s, k]) => (document.querySelector(s)?.innerText || '')"
                ".includes('Conversation ' + k + ' of')",
                arg=[header, i + 2],
                timeout=60_000,
            )
            return submit, time.perf_counter() - t

        # per filter: a few submit/next cycles in the steady-state round (the submit path is
        # the same in every queue; measured in each all the same)
        per_filter = max(3, args.reps // len(keys))
        nexts, submits = [], []
        for round_ in (1, 2):
            for key in keys:
                # what the header will say: the queue's first conversation and its size
                first = review.queue_page(store, key, page_size=1, **kw)
                count = review.queue_count(store, key, **kw)
                want = f"Conversation 1 of {count} · {first[0]}" if first else "No conversation"
                if not first and key == "unreviewed":
                    want = "All done"
                out[f"n {key} (browser)"] = count
                t = time.perf_counter()
                box = page.get_by_label("Queue", exact=True)
                for _ in range(3):  # a click while the list is opening can miss the option
                    box.click()
                    page.get_by_role("option", name=review.FILTERS[key], exact=True).click()
                    if box.input_value() == review.FILTERS[key]:
                        break
                try:
                    page.wait_for_function(
                        "([s, w]) => (document.querySelector(s)?.innerText || '').includes(w)",
                        arg=[header, want],
                        timeout=120_000,
                    )
                except PlaywrightTimeout:
                    shown = page.locator(header).inner_text()
                    msg = f"queue {key}: waited for {want!r}, the tab shows {shown!r}"
                    raise SystemExit(msg) from None
                first_round = " (first round)" if round_ == 1 else ""
                out[f"browser queue {key}{first_round}"] = time.perf_counter() - t
                if round_ == 1 or count < 2:
                    continue
                mine_n, mine_s = [], []
                for i in range(min(per_filter, count - 1)):
                    sub, nxt = cycle(i)
                    mine_s.append(sub)
                    mine_n.append(nxt)
                out[f"browser submit-to-saved max, {key}"] = max(mine_s)
                out[f"browser next max, {key}"] = max(mine_n)
                submits += mine_s
                nexts += mine_n
        out["browser next p50"], out["browser next p95"] = statistics.median(nexts), _p(nexts, 0.95)
        out["browser submit-to-saved p50"] = statistics.median(submits)
        out["browser submit-to-saved p95"] = _p(submits, 0.95)
    return out


CHILDREN = {
    "bare": child_bare,
    "floor": child_floor,
    "load": child_load,
    "populate": child_populate,
    "review": child_review,
    "results": child_results,
    "export": child_export,
    "preview": child_preview,
    "browser": child_browser,
}


def run_child(task: str, code: Path, n: int, data: Path, ws: Path, reps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", task, "--code", str(code), "--n", str(n),
           "--data", str(data), "--ws", str(ws), "--reps", str(reps),
           "--legacy-max", str(LEGACY_MAX)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{task} (n={n}, {code}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(code: Path, label: str, n: int, data: Path, work: Path, args: Any) -> dict[str, Any]:
    ws = work / f"ws-{label}-{n}"
    m: dict[str, Any] = {}
    parts = set(args.parts.split(","))
    # --reuse: a workspace an earlier --keep run loaded and populated (a 1M run split in parts)
    marker = ws / "bench-populated.json"
    reuse = args.reuse and not parts & {"load", "populate"}
    if reuse and marker.exists() and json.loads(marker.read_text()).get("n") == n:
        print(f"  [{label} n={n}] reusing {ws}", flush=True)
    else:  # load is always measured: the other parts need its store
        marker.unlink(missing_ok=True)
        load = run_child("load", code, n, data, ws, args.reps)
        m["load s"], m["load rows/s"], m["load peak RSS MB"] = (
            load["s"],
            load["rows"] / load["s"],
            load["rss_mb"],
        )
        print(f"  [{label} n={n}] load {load['s']:.1f}s {load['rss_mb']:.0f} MB", flush=True)
        if parts & {"populate", "review", "results", "export", "browser"}:
            pop = run_child("populate", code, n, data, ws, args.reps)
            print(f"  [{label} n={n}] populate {pop['s']:.1f}s", flush=True)
            marker.write_text(json.dumps({"n": n}))
    if "review" in parts:
        rev = run_child("review", code, n, data, ws, args.reps)
        m.update({k: v for k, v in rev.items() if k != "rss_mb"})
        print(f"  [{label} n={n}] review done", flush=True)
    if "browser" in parts and n <= args.browser_max and label == "ours":  # this checkout's app
        m.update(run_child("browser", code, n, data, ws, args.reps))
        print(f"  [{label} n={n}] browser done", flush=True)
    if n <= args.results_max and "results" in parts:
        res = run_child("results", code, n, data, ws, args.reps)
        m.update({k: v for k, v in res.items() if k != "rss_mb"})
        m["results peak RSS MB"] = res["rss_mb"]
        if (Path(code) / "pipelines" / "service.py").exists():
            pre = run_child("preview", code, n, data, ws, args.reps)
            m["Results Preview (whole store) s"] = pre["s"]
            m["Results Preview peak RSS MB"] = pre["rss_mb"]
    if n <= args.export_max and "export" in parts:
        exp = run_child("export", code, n, data, ws, args.reps)
        m["binarize+export s"], m["export peak RSS MB"] = exp["s"], exp["rss_mb"]
    if not args.keep:
        shutil.rmtree(ws, ignore_errors=True)
    return m


def growth(a: float | None, b: float | None, n1: int, n2: int) -> str:
    if not a or not b or a <= 0 or b <= 0:
        return ""
    return f"{math.log(b / a) / math.log(n2 / n1):.2f}"


def fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key.startswith("n ") or "rows/s" in key:
        return f"{v:,.0f}"
    if "MB" in key:
        return f"{v:,.0f}"
    if key.endswith(" s") or key == "s":
        return f"{v:.2f}"
    return f"{v * 1000:,.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--before", type=Path, help="a checkout of the code to compare against")
    ap.add_argument("--work", type=Path, default=Path("/tmp/capyui-bench-scale"))
    ap.add_argument("--reps", type=int, default=20, help="review next/submit repetitions")
    ap.add_argument("--export-max", type=int, default=10**9, help="skip export above this N")
    ap.add_argument("--results-max", type=int, default=10**9, help="skip results above this N")
    ap.add_argument("--keep", action="store_true", help="keep the workspaces")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="skip load and populate where a --keep run left that size's populated workspace "
        "(split a long run: --parts populate --keep, then --parts review --reuse --keep, ...)",
    )
    ap.add_argument(
        "--browser-max",
        type=int,
        default=100_000,
        help="measure the Review tab in Chromium up to this N (0: never)",
    )
    ap.add_argument(
        "--legacy-max",
        type=int,
        default=10**9,
        help="skip the in-memory Results path (collect+binarize+stats) above this N",
    )
    ap.add_argument("--sides", default="ours,before", help="which code to run: ours,before")
    ap.add_argument(
        "--parts",
        default="load,review,browser,results,export",
        help="which measurements to run: load,populate,review,browser,results,export (load "
        "and populate run first where a later part needs their store, unless --reuse finds it)",
    )
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ws", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(args.code))
        print(json.dumps(CHILDREN[args.child](args)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    global LEGACY_MAX
    LEGACY_MAX = args.legacy_max
    wanted = args.sides.split(",")
    sides = [("ours", ROOT)] if "ours" in wanted else []
    if args.before and "before" in wanted:
        sides.append(("before", args.before))
    results: dict[tuple[str, int], dict[str, Any]] = {}
    bare: dict[int, dict[str, Any]] = {}
    for n in sizes:
        data = args.work / f"conversations-{n}.jsonl"
        make_data(data, n)
        bare[n] = run_child("bare", ROOT, n, data, args.work, args.reps)
        floor = run_child("floor", ROOT, n, data, args.work / f"ws-floor-{n}", args.reps)
        shutil.rmtree(args.work / f"ws-floor-{n}", ignore_errors=True)
        bare[n]["floor parse+id s"] = floor["parse+id s"]
        bare[n]["floor write s"] = floor["write s"]
        print(f"n={n}: {data.stat().st_size / 1e6:.0f} MB, bare reader {bare[n]['s']:.1f}s")
        for label, code in sides:
            results[label, n] = measure(code, label, n, data, args.work, args)

    keys: list[str] = []
    for m in results.values():
        keys += [k for k in m if k not in keys]
    print(f"\nsizes: {', '.join(f'{n:,}' for n in sizes)} conversations (~1.7 KB each)\n")
    head = ["measure"]
    for n in sizes:
        head += [f"{label} {n:,}" for label, _ in sides]
    if len(sizes) > 1:
        head += [f"growth {label}" for label, _ in sides]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    rows = [("bare reader s", {n: bare[n]["s"] for n in sizes}, None)]
    rows += [("bare reader rows/s", {n: bare[n]["rows"] / bare[n]["s"] for n in sizes}, None)]
    rows += [("bare reader peak RSS MB", {n: bare[n]["rss_mb"] for n in sizes}, None)]
    rows += [("floor: parse+id s", {n: bare[n]["floor parse+id s"] for n in sizes}, None)]
    rows += [("floor: SQLite write s", {n: bare[n]["floor write s"] for n in sizes}, None)]
    for label, n_vals, _ in rows:
        cells = [label]
        for n in sizes:
            cells += [fmt(label, n_vals[n])] + [""] * (len(sides) - 1)
        if len(sizes) > 1:
            cells += [growth(n_vals[sizes[0]], n_vals[sizes[-1]], sizes[0], sizes[-1])]
            cells += [""] * (len(sides) - 1)
        print("| " + " | ".join(cells) + " |")
    for k in keys:
        cells = [k]
        for n in sizes:
            cells += [fmt(k, results[label, n].get(k)) for label, _ in sides]
        if len(sizes) > 1:
            cells += [
                growth(
                    results[label, sizes[0]].get(k),
                    results[label, sizes[-1]].get(k),
                    sizes[0],
                    sizes[-1],
                )
                for label, _ in sides
            ]
        print("| " + " | ".join(cells) + " |")
    print()
    for n in sizes:
        for label, _ in sides:
            r = results[label, n]
            if "load rows/s" not in r:
                continue
            ratio = r["load rows/s"] / (bare[n]["rows"] / bare[n]["s"])
            print(f"{label} n={n:,}: load speed / bare reader = {ratio:.2f}x (goal >= 0.5)")
    for n in sizes:
        b, p, w = bare[n]["s"], bare[n]["floor parse+id s"], bare[n]["floor write s"]
        print(
            f"floor n={n:,}: parse+id {p:.2f}s + SQLite write {w:.2f}s: the best any loader into"
            f" this store can do is {b / (p + w):.2f}x the bare reader on one core,"
            f" {b / max(p, w):.2f}x on two with perfect overlap"
        )


if __name__ == "__main__":
    main()
