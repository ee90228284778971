"""Scale-out through replicas: one `openai` generator over two llama.cpp servers (``base_urls``)
against the same generator over one.

    .venv/bin/python bench/bench_replicas.py [--prompts 24] [--max-tokens 48] [--rounds 3]

Each server (the embedded GGUF) runs with one thread (``--n_threads 1 --n_threads_batch 1``)
pinned to its own core (``taskset -c 0`` / ``taskset -c 1``), so two replicas have twice the
compute of one. The job is the full generation job (plan, backend, commit to SQLite); greedy
decoding. Rounds alternate (one, two, one, two, ...) to spread machine noise; the table
reports the median output tokens/s of each and the median of the per-round ratios (each round
pairs runs taken seconds apart, so a busy machine's drifting load cancels out better than in
the ratio of medians). Goal: ratio >= 1.8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.prompts import bench_conversations as conversations  # noqa: E402
from pipelines.config import GeneratorConfig  # noqa: E402
from pipelines.generate import run_generation  # noqa: E402
from pipelines.store import Store  # noqa: E402
from tests.conftest import free_port, wait_http  # noqa: E402
from tests.support.llama_server import start_llama, stop  # noqa: E402


def run_job(urls: list[str], n: int, max_tokens: int, tag: str) -> tuple[float, int, int]:
    """(output tokens/s, rows done, rows failed) of one generation job."""
    gen = GeneratorConfig(
        id="bench",
        backend="openai",
        base_urls=urls,
        model="smollm2",
        max_tokens=max_tokens,
        temperature=0.0,
        concurrency=1,  # per replica: a llama.cpp server serialises requests
        timeout_s=300,
        max_retries=0,
    )
    convs = conversations(n, tag)
    with tempfile.TemporaryDirectory() as d:
        store = Store(d)
        store.add_conversations(convs)
        start = time.perf_counter()
        p = run_generation(store, [gen], convs)
        elapsed = time.perf_counter() - start
        store.close()
    return p.output_tokens / elapsed, p.done, p.failed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_replicas.json")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs two cores")

    logdir = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    procs, urls = [], []
    try:
        for i, cpu in enumerate(cores[:2]):
            port = free_port()
            procs.append(start_llama(port, logdir / f"llama-{i}.log", threads=1, cpu=cpu))
            urls.append(f"http://127.0.0.1:{port}/v1")
        for url, proc in zip(urls, procs, strict=True):
            wait_http(f"{url}/models", 90, proc)
        run_job(urls, 2, 8, "warmup")  # load both models' weights into the page cache
        one, two = [], []
        for r in range(args.rounds):
            tps, done, failed = run_job(urls[:1], args.prompts, args.max_tokens, f"one{r}")
            assert failed == 0, "a row failed on one replica"
            one.append(tps)
            tps, done, failed = run_job(urls, args.prompts, args.max_tokens, f"two{r}")
            assert failed == 0, "a row failed on two replicas"
            two.append(tps)
            print(
                f"round {r + 1}: one {one[-1]:.1f} tok/s, two {two[-1]:.1f} tok/s, "
                f"ratio {two[-1] / one[-1]:.2f}",
                flush=True,
            )
    finally:
        for proc in procs:
            stop(proc)

    m1, m2 = statistics.median(one), statistics.median(two)
    ratio = statistics.median(b / a for a, b in zip(one, two, strict=True))
    rows = [
        ("1 replica (taskset -c 0, 1 thread)", m1, 1.0),
        ("2 replicas (cores 0 and 1, 1 thread each)", m2, ratio),
    ]
    print()
    print(f"{args.prompts} prompts x {args.max_tokens} max tokens, greedy, median of {args.rounds}")
    print(f"| {'setup':<44} | {'output tok/s':>12} | {'ratio':>6} |")
    print(f"|{'-' * 46}|{'-' * 14}|{'-' * 8}|")
    for name, tps, ratio in rows:
        print(f"| {name:<44} | {tps:>12.1f} | {ratio:>5.2f}x |")
    print(f"ratio of medians: {m2 / m1:.2f}x; load average now: {os.getloadavg()[0]:.1f}")
    verdict = "ok" if ratio >= 1.8 else "BELOW GOAL"
    print(f"goal: ratio >= 1.8 -> {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "prompts": args.prompts,
                "max_tokens": args.max_tokens,
                "rounds": {"one": one, "two": two},
                "median_tok_s": {"one": m1, "two": m2},
                "ratio": ratio,
                "ratio_of_medians": m2 / m1,
                "load_avg": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
