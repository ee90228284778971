"""Pipelined generate -> judge against the stages one after the other (issue 13).

    .venv/bin/python bench/bench_pipeline.py [--conversations 8] [--max-tokens 48]

Two llama.cpp servers (llama-cpp-python, SmolLM2 GGUF) on separate cores: one serves two
generators (temperature 0.7 and 1.0), the other the judge. Measured on fresh stores:
generation alone, judging alone (on a copy of the generated store), and the pipelined run
(``run_recipe`` with stages generate,judge). Goal: pipelined wall time <= 1.15 x the longer of
the two alone (run one after the other it is their sum).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.prompts import bench_conversations  # noqa: E402
from pipelines.recipe import Recipe  # noqa: E402
from pipelines.run import run_recipe  # noqa: E402
from pipelines.store import Store  # noqa: E402
from tests.conftest import free_port, wait_http  # noqa: E402
from tests.support.llama_server import start_llama, stop  # noqa: E402


def recipe(gen_url: str, judge_url: str, max_tokens: int) -> Recipe:
    gens = [
        {"id": f"t{i}", "backend": "openai", "base_url": gen_url, "model": "smollm2",
         "temperature": t, "max_tokens": max_tokens, "seed": 3, "concurrency": 1,
         "max_retries": 0, "timeout_s": 600}
        for i, t in enumerate([0.7, 1.0])
    ]  # fmt: skip
    judge = {"id": "j", "backend": "openai", "base_url": judge_url, "model": "smollm2",
             "max_tokens": 160, "concurrency": 1, "max_retries": 0, "timeout_s": 600,
             "max_rationale_chars": 60}  # fmt: skip
    return Recipe.model_validate(
        {"name": "pipe", "source": {"path": "unused.jsonl"}, "generators": gens, "judge": judge}
    )


def timed(r: Recipe, store: Store, stages: list[str]) -> float:
    t = time.perf_counter()
    summary = run_recipe(r, store, stages=stages)
    assert summary.status == "done", summary.error
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cores = os.cpu_count() or 2
    ports = [free_port(), free_port()]
    servers = [
        start_llama(ports[0], tmp / "gen.log", threads=1, cpu=0),
        start_llama(ports[1], tmp / "judge.log", threads=1, cpu=1 % cores),
    ]
    try:
        urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
        for url, s in zip(urls, servers, strict=True):
            wait_http(f"{url}/models", 120, s)
        r = recipe(urls[0], urls[1], args.max_tokens)
        convs = bench_conversations(args.conversations, tag="pipe")

        def fresh(name: str) -> Store:
            store = Store(tmp / name)
            store.add_conversations(convs)
            return store

        warm = fresh("warm")
        store_warm = bench_conversations(1, tag="warm")
        warm.add_conversations(store_warm)
        timed(r, warm, ["generate", "judge"])  # load the models, warm the caches

        gen_store = fresh("gen")
        gen_alone = timed(r, gen_store, ["generate"])
        gen_store.close()
        shutil.copytree(tmp / "gen", tmp / "judge-only")
        judge_alone = timed(r, Store(tmp / "judge-only"), ["judge"])
        piped = timed(r, fresh("piped"), ["generate", "judge"])
    finally:
        for s in servers:
            stop(s)
    longer = max(gen_alone, judge_alone)
    print(
        f"\n{args.conversations} conversations x 2 generators ({args.max_tokens} max tokens) "
        "on one llama.cpp server, the judge on another (one core each)\n"
    )
    print("| run | wall s |")
    print("|---|---|")
    print(f"| generation alone | {gen_alone:.1f} |")
    print(f"| judging alone | {judge_alone:.1f} |")
    print(f"| one after the other (sum) | {gen_alone + judge_alone:.1f} |")
    print(f"| pipelined | {piped:.1f} |")
    print(f"\npipelined / longer alone = {piped / longer:.2f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
