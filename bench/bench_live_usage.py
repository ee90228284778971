"""Costs of the token accounting of issue 14a, side by side with a bare baseline.

* the Run tab's live counters (``cost.live_usage``, polled every second while a job runs) at N
  attempts already in the workspace, against a bare ``spent()`` (a GROUP BY over every attempt,
  what a poll would cost without the per-job cache);
* writing a candidate with its usage (``Store.put_candidate``: the row and its attempt, one
  transaction) against the bare upsert of the row alone (the statement before issue 14a).

    .venv/bin/python bench/bench_live_usage.py --sizes 100000,1000000

Prints one table: times, ratios and growth (log(t2/t1)/log(N2/N1)) between the sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.cost import live_usage, spent  # noqa: E402
from pipelines.recipe import parse_recipe  # noqa: E402
from pipelines.store import Store  # noqa: E402
from pipelines.types import GenerationResult  # noqa: E402

WRITES = 2000


def _recipe(tmp: Path) -> object:
    src = tmp / "x.jsonl"
    src.write_text(json.dumps({"conversation": [{"input": "q"}]}) + "\n")
    return parse_recipe(
        {
            "name": "bench",
            "source": {"path": str(src)},
            "generators": [{"id": "gen", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                            "model": "m"}],
            "prices": {"gen": {"input": 1.0, "output": 2.0}},
        }
    )  # fmt: skip


def _p50(f: object, n: int = 7) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


BARE_UPSERT = """
INSERT INTO candidates (conversation_id, generator_id, sample_index, model, params, status, text,
    prompt_tokens, completion_tokens, latency_s, finish_reason, error, attempts, updated_at)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1,?)
ON CONFLICT (conversation_id, generator_id, sample_index) DO UPDATE SET
    status=excluded.status, text=excluded.text, prompt_tokens=excluded.prompt_tokens,
    completion_tokens=excluded.completion_tokens, attempts=candidates.attempts + 1,
    updated_at=excluded.updated_at WHERE candidates.status != 'done'
"""


def measure(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = Store(tmp / "ws")
        recipe = _recipe(tmp)
        old = time.time() - 3600
        rows = (
            (f"c{i}", "gen", 0, "m", "{}", "done", "x", 10, 20, 0.1, "stop", None, 1, old)
            for i in range(n)
        )
        store.import_candidates(rows)
        since = time.time()
        for i in range(1000):  # the running job's first thousand rows
            store.put_candidate(
                f"j{i}",
                "gen",
                0,
                GenerationResult(key=None, text="y", prompt_tokens=10, completion_tokens=20,
                                 model="m"),
            )  # fmt: skip
        progress = {"generate": {"done": 1000, "total": 2000, "elapsed_s": 10.0}}
        live_usage(store, recipe, since=since, progress=progress)  # the job's first poll
        poll = _p50(lambda: live_usage(store, recipe, since=since, progress=progress))
        bare_poll = _p50(lambda: spent(store, recipe), 3)

        res = GenerationResult(
            key=None, text="z", prompt_tokens=10, completion_tokens=20, model="m"
        )
        t = time.perf_counter()
        for i in range(WRITES):
            store.put_candidate(f"w{i}", "gen", 0, res)
        ours_w = (time.perf_counter() - t) / WRITES
        db = sqlite3.connect(tmp / "bare.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(
            "CREATE TABLE candidates (conversation_id TEXT, generator_id TEXT, sample_index INT,"
            " model TEXT, params TEXT, status TEXT, text TEXT, prompt_tokens INT,"
            " completion_tokens INT, latency_s REAL, finish_reason TEXT, error TEXT,"
            " attempts INT, updated_at REAL,"
            " PRIMARY KEY (conversation_id, generator_id, sample_index));"
        )
        t = time.perf_counter()
        for i in range(WRITES):
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                BARE_UPSERT,
                (f"w{i}", "gen", 0, "m", "{}", "done", "z", 10, 20, 0.1, "stop", None, time.time()),
            )
            db.execute("COMMIT")
        bare_w = (time.perf_counter() - t) / WRITES
        db.close()
        store.close()
    return {"poll_ms": poll * 1e3, "bare_poll_ms": bare_poll * 1e3, "write_us": ours_w * 1e6,
            "bare_write_us": bare_w * 1e6}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    sizes = [int(s) for s in ap.parse_args().sizes.split(",")]
    results = {n: measure(n) for n in sizes}
    print("| measure | " + " | ".join(f"{n:,}" for n in sizes) + " | growth |")
    print("|---|" + "---|" * (len(sizes) + 1))

    def line(name: str, key: str, unit: str) -> None:
        vals = [results[n][key] for n in sizes]
        g = ""
        if len(sizes) > 1 and vals[0] > 0:
            g = f"{math.log(vals[-1] / vals[0]) / math.log(sizes[-1] / sizes[0]):.2f}"
        print(f"| {name} | " + " | ".join(f"{v:,.2f} {unit}" for v in vals) + f" | {g} |")

    line("live counters poll (live_usage), p50", "poll_ms", "ms")
    line("bare spent() (GROUP BY every attempt)", "bare_poll_ms", "ms")

    def ratio(a: str, b: str) -> str:
        return " | ".join(f"{results[n][a] / results[n][b]:.3f}x" for n in sizes)

    print(f"| poll ratio ours / bare | {ratio('poll_ms', 'bare_poll_ms')} | |")
    line("put_candidate with its attempt", "write_us", "µs")
    line("bare upsert of the row alone", "bare_write_us", "µs")
    print(f"| write ratio ours / bare | {ratio('write_us', 'bare_write_us')} | |")


if __name__ == "__main__":
    main()
