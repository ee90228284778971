"""``n`` for samples: requests and prefilled prompt tokens, one request with ``n`` vs one request
per sample, against a stub OpenAI-compatible server that honours ``n`` (as vLLM and OpenAI do)
and one that ignores it (as llama.cpp does), with the stored rows compared.

    .venv/bin/python bench/bench_n.py [--conversations 40] [--samples 4] [--delay 0.02]

"per-sample" is the same job with ``n`` turned off (``run_generation_async(use_n=False)``), i.e.
what CapyUI sent before; the stub counts one prefill per request (prompt tokens as whitespace
words of every message). Goal (issue 13): with ``n`` the server prefills each prompt once, not
once per sample, and the stored rows are the same. On the vLLM CPU build (``requirements-
vllm.txt``; ``bench/bench_vllm.py``) the same comparison runs against a real engine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.prompts import bench_conversations  # noqa: E402
from pipelines.config import GeneratorConfig  # noqa: E402
from pipelines.generate import run_generation_async  # noqa: E402
from pipelines.store import Store  # noqa: E402
from tests.support.scripted_generator import ScriptedGenerator  # noqa: E402


def rows(store: Store) -> list[tuple[Any, ...]]:
    return sorted(
        (r["conversation_id"], r["generator_id"], r["sample_index"], r["status"])
        for r in store.candidate_rows()
    )


def one(honour: bool, use_n: bool, args: argparse.Namespace) -> dict[str, Any]:
    server = ScriptedGenerator(honour_n=honour, delay_s=args.delay)
    url = server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp)
            convs = bench_conversations(args.conversations)
            store.add_conversations(convs)
            gen = GeneratorConfig(
                id="g", backend="openai", base_url=url, model="m", samples=args.samples,
                concurrency=4, max_retries=0, temperature=0.8,
            )  # fmt: skip
            t = time.perf_counter()
            p = asyncio.run(run_generation_async(store, [gen], convs, use_n=use_n))
            wall = time.perf_counter() - t
            assert p.failed == 0 and p.done == args.conversations * args.samples
            return {
                "requests": len(server.generations()),
                "prefill": server.prefill_tokens(),
                "wall": wall,
                "rows": rows(store),
            }
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=40)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--delay", type=float, default=0.02, help="stub latency per request (s)")
    args = ap.parse_args()
    print(f"{args.conversations} conversations x {args.samples} samples, stub OpenAI server")
    print("| server | mode | requests | prefilled prompt tokens | wall s |")
    print("|---|---|---|---|---|")
    results = {}
    for honour in (True, False):
        for use_n in (True, False):
            r = results[honour, use_n] = one(honour, use_n, args)
            server = "honours n (vLLM/OpenAI)" if honour else "ignores n (llama.cpp)"
            mode = "n" if use_n else "per-sample"
            print(f"| {server} | {mode} | {r['requests']} | {r['prefill']:,} | {r['wall']:.2f} |")
    same = all(r["rows"] == results[True, False]["rows"] for r in results.values())
    ratio = results[True, True]["prefill"] / results[True, False]["prefill"]
    print(f"\nprefill with n / per-sample (server honouring n): {ratio:.2f}")
    print(f"stored rows identical in every mode: {same}")


if __name__ == "__main__":
    main()
