"""Generation overhead: CapyUI's generation job against bare clients on the same prompts.

    .venv/bin/python bench/bench_generate.py [--prompts 16] [--max-tokens 48] [--rounds 3]

1. openai backend: the full job (plan, backend, commit every row to SQLite, progress) against a
   bare asyncio ``openai`` client saturating the same llama.cpp server (started here on
   127.0.0.1 with the embedded GGUF) with the same prompts and params. Goal: ratio >= 0.95.
2. embedded backend: the full job against a bare llama-cpp-python ``create_chat_completion``
   loop with the same model settings, each side in its own process. Goal: ratio >= 0.95.

Rounds alternate (bare, ours, bare, ours, ...) to spread machine noise evenly; the table
reports the median output tokens/s of each and their ratio. Greedy decoding, so both sides
produce the same tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.prompts import bench_conversations as conversations  # noqa: E402
from pipelines.backends.embedded import load_llama  # noqa: E402
from pipelines.config import GeneratorConfig  # noqa: E402
from pipelines.generate import run_generation  # noqa: E402
from pipelines.store import Store  # noqa: E402
from pipelines.types import Conversation  # noqa: E402
from tests.conftest import free_port, wait_http  # noqa: E402
from tests.support.llama_server import start_llama, stop  # noqa: E402


async def bare_openai(url: str, convs: list[Conversation], max_tokens: int, conc: int) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
    sem = asyncio.Semaphore(conc)

    async def one(c: Conversation) -> int:
        async with sem:
            r = await client.chat.completions.create(
                model="smollm2",
                messages=c.messages,
                temperature=0.0,
                top_p=1.0,
                max_tokens=max_tokens,
            )
            return r.usage.completion_tokens

    toks = await asyncio.gather(*(one(c) for c in convs))
    await client.close()
    return sum(toks)


def ours(cfg: GeneratorConfig, convs: list[Conversation]) -> int:
    with tempfile.TemporaryDirectory() as d:
        store = Store(d)
        store.add_conversations(convs)
        p = run_generation(store, [cfg], convs)
        assert p.failed == 0, p.message
        return p.output_tokens


def bare_embedded(convs: list[Conversation], max_tokens: int) -> int:
    llama = load_llama(4096, None)
    total = 0
    for c in convs:
        out = llama.create_chat_completion(
            messages=c.messages, temperature=0.0, top_p=1.0, max_tokens=max_tokens
        )
        total += out["usage"]["completion_tokens"]
    return total


def timed(fn) -> tuple[float, int]:  # noqa: ANN001
    t = time.perf_counter()
    toks = fn()
    return time.perf_counter() - t, toks


def compare(name: str, bare, mine, rounds: int) -> tuple[str, float, float, float]:  # noqa: ANN001
    bare_rates, our_rates = [], []
    for _ in range(rounds):
        s, t = timed(bare)
        bare_rates.append(t / s)
        s, t = timed(mine)
        our_rates.append(t / s)
    b, o = statistics.median(bare_rates), statistics.median(our_rates)
    return name, b, o, o / b


def embedded_side(which: str, convs: list[Conversation], max_tokens: int) -> float:
    """Output tokens/s of one side of the embedded comparison, after one warm-up pass."""
    cfg = GeneratorConfig(id="smol", backend="embedded", temperature=0.0, max_tokens=max_tokens)
    if which == "bare":
        bare_embedded(convs[:1], 4)
        secs, toks = timed(lambda: bare_embedded(convs, max_tokens))
    else:
        ours(cfg, convs[:1])
        secs, toks = timed(lambda: ours(cfg, convs))
    return toks / secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--side", choices=["bare", "ours"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    convs = conversations(args.prompts)
    if args.side:
        print(embedded_side(args.side, convs, args.max_tokens))
        return
    rows = []

    port = free_port()
    logdir = Path(tempfile.mkdtemp())
    server = start_llama(port, logdir / "llama.log", threads=os.cpu_count() or 2, n_ctx=4096)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_http(f"{url}/models", 60, server)
        cfg = GeneratorConfig(
            id="llama",
            backend="openai",
            base_url=url,
            model="smollm2",
            temperature=0.0,
            max_tokens=args.max_tokens,
            concurrency=4,
            max_retries=0,
            timeout_s=600,
        )
        asyncio.run(bare_openai(url, convs[:2], 4, 1))
        rows.append(
            compare(
                "openai backend (llama.cpp server)",
                lambda: asyncio.run(bare_openai(url, convs, args.max_tokens, 4)),
                lambda: ours(cfg, convs),
                args.rounds,
            )
        )
    finally:
        stop(server)

    # In-process llama.cpp keeps an OpenMP thread team per calling thread: interleaving the
    # bare loop (main thread) and the job (its llama thread) in one process makes each pay for
    # the other's spinning team. So each side runs in its own process, alternating.
    def side(which: str) -> float:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                which,
                "--prompts",
                str(args.prompts),
                "--max-tokens",
                str(args.max_tokens),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.strip().splitlines()[-1])

    bare_rates, our_rates = [], []
    for _ in range(args.rounds):
        bare_rates.append(side("bare"))
        our_rates.append(side("ours"))
    b, o = statistics.median(bare_rates), statistics.median(our_rates)
    rows.append(("embedded backend (in-process llama.cpp)", b, o, o / b))

    print(
        f"\n{args.prompts} prompts x {args.max_tokens} max new tokens, greedy, "
        f"median of {args.rounds} alternating rounds\n"
    )
    print(f"| {'path':<42} | {'bare tok/s':>10} | {'capyui tok/s':>12} | {'ratio':>6} |")
    print(f"|{'-' * 44}|{'-' * 12}|{'-' * 14}|{'-' * 8}|")
    for name, b, o, r in rows:
        print(f"| {name:<42} | {b:>10.1f} | {o:>12.1f} | {r:>6.3f} |")
    print("\ngoal: ratio >= 0.95 (the job adds nothing measurable over a bare client)")


if __name__ == "__main__":
    main()
