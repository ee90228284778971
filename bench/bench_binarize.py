"""Benchmark: CapyUI binarize + export vs distilabel 1.5.3 ``FormatChatGenerationDPO.process``.

How to run (from the repository root)::

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt  # once
    .venv/bin/python bench/bench_binarize.py                  # 100k rows, 4 candidates each
    .venv/bin/python bench/bench_binarize.py --rows 20000 --rounds 3

What it does, honestly:

1. generates N synthetic judged conversations (seeded: 1-3 user turns, 4 candidates from 4
   models, integer ratings 1-5, no nulls since distilabel cannot handle them) and writes them
   once to ``bench/results/input-<N>.jsonl``;
2. runs each half in its own subprocess on that same file, in the same run: CapyUI with the main
   venv's python, distilabel with ``.venv-bench``'s (distilabel's pins conflict with the main
   venv). Both are CPython from the same install; ``--distilabel-python`` / ``--ours-python``
   override them (pass the same interpreter for both to rule out interpreter differences);
3. each half loads the file into its own input objects (not timed), then times
   - *format*: CapyUI ``binarize`` (best-vs-worst, all rules applied; its output is a
     ``pyarrow.Table``, so this includes turning every kept string into Arrow) vs distilabel
     ``FormatChatGenerationDPO.process`` over the whole list in one call (its fastest use; its
     output is Python dicts);
   - *format + export*: plus writing Parquet: CapyUI ``export_local(result,
     formats=("parquet",))`` (Parquet + dataset card) vs the way distilabel writes its batches
     (``pa.Table.from_pylist`` + ``pq.write_table``);
   and the process's peak RSS (and the RSS after loading, before the timed work);
4. rounds alternate (CapyUI first, then distilabel first, ...) because the machine is shared;
   the table reports the median over rounds (min-max in the JSON).

JSONL is not in the comparison (distilabel writes Parquet); ``--jsonl`` additionally times
CapyUI's JSONL export alone.

It prints a table with rows/s of each half and the ratio (CapyUI / distilabel).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODELS = ["model-a-7b", "model-b-13b", "model-c-70b", "original"]
WORDS = (
    "the capybara is a giant cavy rodent native to South America it lives in savannas and dense "
    "forests near bodies of water and is highly social explain why how what when compare write"
).split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            messages = []
            for _ in range(rng.randint(0, 2)):
                messages.append({"role": "user", "content": _text(rng, rng.randint(8, 40))})
                messages.append({"role": "assistant", "content": _text(rng, rng.randint(30, 120))})
            messages.append({"role": "user", "content": _text(rng, rng.randint(8, 40))})
            row = {
                "conversation_id": f"c{i:08d}",
                "source": "synthetic",
                "messages": messages,
                "original_response": _text(rng, 60),
                "generation_models": MODELS,
                "generations": [_text(rng, rng.randint(30, 150)) for _ in MODELS],
                "ratings": [rng.randint(1, 5) for _ in MODELS],
                "rationales": [_text(rng, 12) for _ in MODELS],
                "judge_model": "judge-model",
            }
            f.write(json.dumps(row) + "\n")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- halves (run in subprocesses) ----------------------------------------------------------------
def half_capyui(
    path: Path, repeats: int, out_dir: Path, with_jsonl: bool = False
) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from pipelines.binarize import BinarizeOptions, JudgedConversation, binarize
    from pipelines.publish import CardContext, export_local
    from pipelines.records import CandidateRow
    from pipelines.types import Conversation

    raw = [json.loads(line) for line in path.open(encoding="utf-8")]

    def build() -> list[JudgedConversation]:
        return [
            JudgedConversation(
                conversation=Conversation(
                    messages=r["messages"],
                    source=r["source"],
                    original_response=r["original_response"],
                    conversation_id=r["conversation_id"],
                ),
                candidates=[
                    CandidateRow(f"g{k}/0", f"g{k}", m, t)
                    for k, (m, t) in enumerate(
                        zip(r["generation_models"], r["generations"], strict=True)
                    )
                ],
                ai_ratings=r["ratings"],
                rationales=r["rationales"],
                judge_model=r["judge_model"],
            )
            for r in raw
        ]

    baseline = _rss_mib()
    fmt, total, jsonl, pairs = [], [], [], 0
    for _ in range(repeats):
        rows = build()
        t0 = time.perf_counter()
        res = binarize(rows, BinarizeOptions(strategy="best-vs-worst"))
        t1 = time.perf_counter()
        card = CardContext(dataset_name="bench", dropped=res.dropped)
        export_local(res, out_dir, formats=("parquet",), card=card)
        t2 = time.perf_counter()
        fmt.append(t1 - t0)
        total.append(t2 - t0)
        pairs = res.num_pairs
        if with_jsonl:
            t3 = time.perf_counter()
            export_local(res, out_dir, formats=("jsonl",), card=card)
            jsonl.append(time.perf_counter() - t3)
        del rows, res
    return {
        "rows": len(raw),
        "pairs": pairs,
        "format_s": fmt,
        "total_s": total,
        "jsonl_s": jsonl,
        "baseline_mib": baseline,
        "peak_mib": _rss_mib(),
        "python": sys.version.split()[0],
    }


def half_distilabel(
    path: Path, repeats: int, out_dir: Path, with_jsonl: bool = False
) -> dict[str, Any]:
    import distilabel
    import pyarrow as pa
    import pyarrow.parquet as pq
    from distilabel.steps import FormatChatGenerationDPO

    raw = [json.loads(line) for line in path.open(encoding="utf-8")]

    def build() -> list[dict[str, Any]]:
        return [
            {
                "messages": r["messages"],
                "generations": r["generations"],
                "generation_models": r["generation_models"],
                "ratings": r["ratings"],
            }
            for r in raw
        ]

    step = FormatChatGenerationDPO()
    step.load()
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline = _rss_mib()
    fmt, total, pairs = [], [], 0
    for _ in range(repeats):
        rows = build()
        t0 = time.perf_counter()
        out = next(step.process(rows))
        t1 = time.perf_counter()
        pq.write_table(pa.Table.from_pylist(out), out_dir / "distilabel.parquet")
        t2 = time.perf_counter()
        fmt.append(t1 - t0)
        total.append(t2 - t0)
        pairs = len(out)
        del rows, out
    return {
        "rows": len(raw),
        "pairs": pairs,
        "format_s": fmt,
        "total_s": total,
        "baseline_mib": baseline,
        "peak_mib": _rss_mib(),
        "python": sys.version.split()[0],
        "distilabel": distilabel.__version__,
    }


# -- orchestration -------------------------------------------------------------------------------
def _run_half(python: str, half: str, path: Path, repeats: int, jsonl: bool) -> dict[str, Any]:
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--half",
        half,
        "--input",
        str(path),
        "--repeats",
        str(repeats),
    ] + (["--jsonl"] if jsonl else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        sys.exit(f"{half} half failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One half's rounds: every timing, the median, min and max."""
    out = dict(runs[-1])
    for key in ("format_s", "total_s", "jsonl_s", "peak_mib", "baseline_mib"):
        if key not in runs[0]:
            continue
        values = [v for r in runs for v in (r[key] if isinstance(r[key], list) else [r[key]])]
        if values:
            out[key] = statistics.median(values)
            out[key + "_all"] = values
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (median reported)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per half per round")
    ap.add_argument("--jsonl", action="store_true", help="also time CapyUI's JSONL export")
    ap.add_argument("--ours-python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--distilabel-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--half", choices=["capyui", "distilabel"], help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.half:
        out = RESULTS / f"out-{args.half}"
        fn = half_capyui if args.half == "capyui" else half_distilabel
        print(json.dumps(fn(args.input, args.repeats, out, args.jsonl)))
        return

    path = RESULTS / f"input-{args.rows}.jsonl"
    if not path.exists():
        t = time.perf_counter()
        generate(path, args.rows)
        print(
            f"generated {path} ({os.path.getsize(path) / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - t:.1f}s"
        )
    ours_runs: list[dict[str, Any]] = []
    theirs_runs: list[dict[str, Any]] = []
    for i in range(args.rounds):
        order = [
            ("capyui", args.ours_python, ours_runs),
            ("distilabel", args.distilabel_python, theirs_runs),
        ]
        for half, python, runs in order if i % 2 == 0 else order[::-1]:
            runs.append(_run_half(python, half, path, args.repeats, args.jsonl))
        print(
            f"round {i + 1}/{args.rounds}: CapyUI {ours_runs[-1]['total_s']}, distilabel "
            f"{theirs_runs[-1]['total_s']}",
            file=sys.stderr,
        )
    ours, theirs = _merge(ours_runs), _merge(theirs_runs)

    n = ours["rows"]
    print(
        f"\n{n} judged conversations, 4 candidates each; median of {args.rounds} alternating "
        f"rounds x {args.repeats}; python {ours['python']} (ours) / {theirs['python']} "
        f"(distilabel {theirs['distilabel']})\n"
    )
    header = f"| {'stage':<28} | {'CapyUI rows/s':>14} | {'distilabel rows/s':>18} | {'ratio':>6} |"
    print(header)
    print("|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|")
    for label, key in (
        ("format (binarize/process)", "format_s"),
        ("format + Parquet export", "total_s"),
    ):
        a, b = n / ours[key], n / theirs[key]
        print(f"| {label:<28} | {a:>14,.0f} | {b:>18,.0f} | {a / b:>5.2f}x |")
    mem_ours = f"{ours['peak_mib']:,.0f} ({ours['baseline_mib']:,.0f})"
    mem_theirs = f"{theirs['peak_mib']:,.0f} ({theirs['baseline_mib']:,.0f})"
    print(f"| {'peak RSS MiB (after load)':<28} | {mem_ours:>14} | {mem_theirs:>18} | {'':>6} |")
    if args.jsonl and "jsonl_s" in ours:
        print(f"\nCapyUI JSONL export alone (not compared): {n / ours['jsonl_s']:,.0f} rows/s")
    print(
        f"\npairs: CapyUI {ours['pairs']} (ties dropped), distilabel {theirs['pairs']} (keeps ties)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_binarize.json").write_text(
        json.dumps({"capyui": ours, "distilabel": theirs}, indent=2)
    )


if __name__ == "__main__":
    main()
