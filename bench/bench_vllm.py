"""The `vllm` backend's overhead: CapyUI's generation job on the in-process vLLM engine against a
bare ``LLM.chat`` call on the same engine, prompts and sampling params, in the same run.

    bash scripts/vllm-cpu-env      # once: .venv-vllm + the converted model
    .venv-vllm/bin/python bench/bench_vllm.py [--prompts 16] [--max-tokens 64] [--rounds 3]
                                              [--chunk-size 256] [--model DIR]

"ours" is the full job (plan, backend with its chunked ``LLM.chat`` calls in a worker thread,
commit every row to SQLite, progress). Greedy decoding, so both produce the same tokens; a
warm-up pass of each first (engine warm-up, prefix cache filled for both alike); then rounds
alternate (bare, ours / ours, bare, ...) and the table reports the median output tokens/s and
the median of the per-round ratios. On a busy machine single runs vary a lot, so the job's own
overhead is also measured directly: its wall time minus the time spent inside ``LLM.chat``.
Goal: ratio >= 0.95. On a GPU machine, pass --model (a hub id or directory) and drop the CPU
settings (they are only defaults).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--model", default=str(ROOT / ".cache" / "smollm2-hf"))
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_vllm.json")
    args = ap.parse_args()

    from pipelines.backends.vllm_backend import VLLMBackend, free_engines, load_engine
    from pipelines.config import GeneratorConfig
    from pipelines.generate import run_generation
    from pipelines.store import Store

    gen = GeneratorConfig(
        id="bench",
        backend="vllm",
        model=args.model,
        engine={
            "dtype": args.dtype,
            "max_model_len": 2048,
            "seed": 0,
            "chunk_size": args.chunk_size,
        },
        temperature=0.0,
        max_tokens=args.max_tokens,
    )
    convs = conversations(args.prompts)
    t0 = time.perf_counter()
    llm = load_engine(gen)  # the backend's cached engine: both sides use this one
    load_s = time.perf_counter() - t0
    print(f"engine loaded in {load_s:.1f}s", flush=True)

    from vllm import SamplingParams

    def bare() -> float:
        params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=args.max_tokens)
        start = time.perf_counter()
        outs = llm.chat([c.messages for c in convs], params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        return sum(len(o.outputs[0].token_ids) for o in outs) / elapsed

    in_chat: list[float] = []
    real_chat = VLLMBackend._chat

    def timed_chat(self, llm_, reqs):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return real_chat(self, llm_, reqs)
        finally:
            in_chat.append(time.perf_counter() - t)

    VLLMBackend._chat = timed_chat  # type: ignore[method-assign]
    overheads: list[float] = []

    def ours() -> float:
        in_chat.clear()
        with tempfile.TemporaryDirectory() as d:
            store = Store(d)
            store.add_conversations(convs)
            start = time.perf_counter()
            p = run_generation(store, [gen], convs)
            elapsed = time.perf_counter() - start
            store.close()
        assert p.failed == 0, p.message
        overheads.append(elapsed - sum(in_chat))
        return p.output_tokens / elapsed

    bare(), ours()  # warm-up
    overheads.clear()
    b, o = [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            b.append(bare())
            o.append(ours())
        else:
            o.append(ours())
            b.append(bare())
        print(
            f"round {r + 1}: bare {b[-1]:.1f} tok/s, ours {o[-1]:.1f} tok/s, "
            f"ratio {o[-1] / b[-1]:.2f}, job overhead outside LLM.chat {overheads[-1]:.3f}s",
            flush=True,
        )
    free_engines()

    mb, mo = statistics.median(b), statistics.median(o)
    ratio = statistics.median(y / x for x, y in zip(b, o, strict=True))
    overhead = statistics.median(overheads)
    run_s = args.prompts * args.max_tokens / mo
    print()
    print(
        f"{args.prompts} prompts x {args.max_tokens} max tokens, greedy, chunk_size "
        f"{args.chunk_size}, median of {args.rounds} (vLLM CPU build, {os.cpu_count()} cores)"
    )
    print(f"| {'path':<40} | {'output tok/s':>12} | {'ratio':>6} |")
    print(f"|{'-' * 42}|{'-' * 14}|{'-' * 8}|")
    print(f"| {'bare LLM.chat':<40} | {mb:>12.1f} | {1.0:>5.2f}x |")
    print(f"| {'CapyUI job, vllm backend':<40} | {mo:>12.1f} | {ratio:>5.2f}x |")
    print(
        f"ratio of medians {mo / mb:.2f}x; job overhead outside LLM.chat: median "
        f"{overhead * 1000:.0f} ms per job (~{overhead / run_s:.1%} of a run); "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print(f"goal: ratio >= 0.95 -> {'ok' if ratio >= 0.95 else 'BELOW GOAL'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "prompts": args.prompts,
                "max_tokens": args.max_tokens,
                "chunk_size": args.chunk_size,
                "load_s": load_s,
                "rounds": {"bare": b, "ours": o},
                "median_tok_s": {"bare": mb, "ours": mo},
                "ratio": ratio,
                "ratio_of_medians": mo / mb,
                "job_overhead_s": overheads,
                "load_avg": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max((os.cpu_count() or 2) - 1, 0)}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
