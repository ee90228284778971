"""Benchmark: CapyUI's Argilla push and pull against a real local Argilla server.

How to run (from the repository root; needs redis-server, the server venv is created if
missing)::

    .venv/bin/python bench/bench_argilla.py                     # 1000 push, 10000 pull
    .venv/bin/python bench/bench_argilla.py --push 500 --pull 2000 --repeats 1

It starts its own server with ``scripts/argilla-local`` (temporary data dir, free ports) unless
``--url`` is given (then ARGILLA_API_KEY must be set), and stops it at the end.

What it measures, honestly:

1. *push*: the same N conversations (3 candidates, judged) are sent two ways, each into its own
   fresh dataset with identical settings, best of ``--repeats``; rounds alternate which side
   goes first and delete both datasets afterwards (the in-memory search engine gets slower
   as it holds more, which would otherwise penalise whichever side runs second):
   - baseline: the bare SDK call ``dataset.records.log(records, batch_size=256)`` with the
     ``rg.Record`` objects already built (building them is not timed);
   - CapyUI: ``ArgillaQueue.push(store, ...)`` end to end: checking the dataset's settings,
     reading the store, selecting, shuffling, building and hashing records, bulk upserts (the
     same ``PUT .../records/bulk`` the SDK's ``log`` sends, 256 a batch) and the push-state
     commits.
   Dataset creation is excluded from both. The ratio CapyUI / baseline is the goal (>= 0.9).
2. *re-push*: ``push`` again with nothing changed (what a resumed or repeated push costs).
3. *pull*: M records pushed with ``push``, then two annotators' submitted responses written
   server-side in bulk (not timed), then ``ArgillaQueue.pull(store)`` into an empty review
   table (timed: records/s and reviews/s), and a second pull with nothing new.

Results go to stdout (a table) and ``bench/results/bench_argilla.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.argilla_queue import ArgillaQueue, Selection  # noqa: E402
from pipelines.store import Store  # noqa: E402
from pipelines.types import Conversation, GenerationResult  # noqa: E402
from tests.support.argilla_server import local_argilla  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GENS = ["gen-a", "gen-b", "gen-c"]
WORDS = (
    "the capybara is a giant cavy rodent native to South America it lives in savannas and dense "
    "forests near bodies of water and is highly social explain why how what when compare write"
).split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build_store(path: Path, n: int, seed: int = 0) -> Store:
    rng = random.Random(seed)
    store = Store(path)
    convs = []
    for i in range(n):
        messages = []
        for t in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": f"#{i}.{t} " + _text(rng, 30)})
            messages.append({"role": "assistant", "content": _text(rng, 60)})
        messages.append({"role": "user", "content": f"#{i} last: " + _text(rng, 20)})
        convs.append(Conversation(messages=messages, source="bench"))
    store.add_conversations(convs)
    for c in convs:
        for g in GENS:
            store.put_candidate(
                c.conversation_id,
                g,
                0,
                GenerationResult(key=None, text=_text(rng, 120), model=f"model-{g}"),
            )
        store.put_judgment(
            c.conversation_id,
            "judge",
            model="judge-model",
            candidate_keys=[f"{g}/0" for g in GENS],
            ratings=[rng.randint(1, 5) for _ in GENS],
            rationales=[_text(rng, 25) for _ in GENS],
            order_shown=[0, 1, 2],
            seed=1,
            raw_output="{}",
            error=None,
        )
    return store


def sdk_records(queue: ArgillaQueue, store: Store) -> list[Any]:
    import argilla as rg

    items, _ = queue._plan(store, "judge", GENS, Selection("all"))  # noqa: SLF001
    return [
        rg.Record(
            id=i.conversation_id,
            fields=i.fields,
            metadata=i.metadata,
            suggestions=[rg.Suggestion(**s) for s in i.suggestions],
        )
        for i in items
    ]


def bench_push(url: str, n: int, repeats: int, tmp: Path) -> dict[str, Any]:
    store = build_store(tmp / "push-store", n)
    base_s: list[float] = []
    ours_s: list[float] = []
    repush_s: list[float] = []
    for rep in range(repeats):
        # alternate which goes first, and delete both datasets after the round, so that
        # neither side runs against a server holding more data than the other did
        sides = ["baseline", "capyui"] if rep % 2 == 0 else ["capyui", "baseline"]
        queues = []
        for side in sides:
            q = ArgillaQueue(
                url, dataset_name=f"bench-{side}-{rep}-{int(time.time())}", batch_size=256
            )
            q.ensure_dataset()
            queues.append(q)
            if side == "baseline":
                # the bare SDK log of the very same records
                dataset = q._sdk().datasets(name=q.dataset_name, workspace=q.workspace)  # noqa: SLF001
                records = sdk_records(q, store)
                t0 = time.perf_counter()
                dataset.records.log(records, batch_size=256)
                base_s.append(time.perf_counter() - t0)
            else:
                t0 = time.perf_counter()
                summary = q.push(store, "judge", GENS)
                ours_s.append(time.perf_counter() - t0)
                assert summary.created == n and summary.failed == 0, summary
                t0 = time.perf_counter()
                again = q.push(store, "judge", GENS)
                repush_s.append(time.perf_counter() - t0)
                assert again.unchanged == n, again
        for q in queues:
            q.delete_dataset()
        print(
            f"  push round {rep + 1} ({' first, '.join(sides)} second): baseline"
            f" {base_s[-1]:.2f} s, capyui {ours_s[-1]:.2f} s",
            file=sys.stderr,
        )
    b, o = min(base_s), min(ours_s)
    return {
        "records": n,
        "baseline_s": round(b, 3),
        "capyui_s": round(o, 3),
        "baseline_rps": round(n / b, 1),
        "capyui_rps": round(n / o, 1),
        "ratio": round(b / o, 3),
        "repush_unchanged_s": round(min(repush_s), 3),
        "all_baseline_s": [round(x, 3) for x in base_s],
        "all_capyui_s": [round(x, 3) for x in ours_s],
    }


def bench_pull(url: str, api_key: str, m: int, tmp: Path) -> dict[str, Any]:
    store = build_store(tmp / "pull-store", m, seed=1)
    q = ArgillaQueue(url, dataset_name=f"bench-pull-{int(time.time())}", batch_size=500)
    t0 = time.perf_counter()
    pushed = q.push(store, "judge", GENS)
    push_s = time.perf_counter() - t0
    assert pushed.created == m, pushed

    # two annotators' submitted responses, written server-side in bulk (setup, not timed)
    headers = {"X-Argilla-Api-Key": api_key}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as h:
        ws = next(
            w for w in h.get("/api/v1/me/workspaces").json()["items"] if w["name"] == "argilla"
        )
        users = []
        for name in (f"ann-a-{m}", f"ann-b-{m}"):
            u = h.post(
                "/api/v1/users",
                json={
                    "username": name,
                    "first_name": name,
                    "password": "bench-pass-123",
                    "role": "annotator",
                },
            )
            u.raise_for_status()
            h.post(f"/api/v1/workspaces/{ws['id']}/users", json={"user_id": u.json()["id"]})
            users.append(u.json()["id"])
        ds_id = q.status()["dataset_id"]
        rng = random.Random(2)
        ids = store.conversation_ids()
        t_setup = time.perf_counter()
        for start in range(0, len(ids), 500):
            items = [
                {
                    "external_id": cid,
                    "responses": [
                        {
                            "user_id": uid,
                            "status": "submitted",
                            "values": {
                                f"rating_{k}": {"value": rng.randint(1, 5)} for k in (1, 2, 3)
                            },
                        }
                        for uid in users
                    ],
                }
                for cid in ids[start : start + 500]
            ]
            r = h.put(f"/api/v1/datasets/{ds_id}/records/bulk", json={"items": items})
            r.raise_for_status()
        setup_s = time.perf_counter() - t_setup

    t0 = time.perf_counter()
    summary = q.pull(store)
    pull_s = time.perf_counter() - t0
    assert summary.submitted == 2 * m and summary.written == 2 * m, summary
    t0 = time.perf_counter()
    again = q.pull(store)
    repull_s = time.perf_counter() - t0
    assert again.written == 0 and again.unchanged == 2 * m, again
    return {
        "records": m,
        "reviews": summary.written,
        "push_s": round(push_s, 3),
        "push_rps": round(m / push_s, 1),
        "responses_setup_s": round(setup_s, 3),
        "pull_s": round(pull_s, 3),
        "pull_records_per_s": round(m / pull_s, 1),
        "pull_reviews_per_s": round(summary.written / pull_s, 1),
        "repull_unchanged_s": round(repull_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--push", type=int, default=1000, help="records for the push comparison")
    ap.add_argument("--pull", type=int, default=10000, help="records (x2 responses) to pull")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--url", help="an already running Argilla (ARGILLA_API_KEY must be set)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-argilla-") as tmp_s, ExitStack() as stack:
        tmp = Path(tmp_s)
        if args.url:
            url, api_key = args.url, os.environ["ARGILLA_API_KEY"]
        else:  # the tests' local server (scripts/argilla-local), stopped on exit
            t0 = time.perf_counter()
            server = stack.enter_context(local_argilla(tmp / "server"))
            print(f"  server ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            url, api_key = server.url, server.api_key
        push = bench_push(url, args.push, args.repeats, tmp)
        pull = bench_pull(url, api_key, args.pull, tmp) if args.pull else None

    rows = [
        (
            "push: bare dataset.records.log",
            push["records"],
            push["baseline_s"],
            push["baseline_rps"],
            "",
        ),
        (
            "push: ArgillaQueue.push",
            push["records"],
            push["capyui_s"],
            push["capyui_rps"],
            f"ratio {push['ratio']:.2f}",
        ),
        (
            "re-push, nothing changed",
            push["records"],
            push["repush_unchanged_s"],
            round(push["records"] / push["repush_unchanged_s"], 1),
            "all unchanged",
        ),
    ]
    if pull:
        rows += [
            ("push (pull setup)", pull["records"], pull["push_s"], pull["push_rps"], ""),
            (
                "pull: 2 responses per record",
                pull["records"],
                pull["pull_s"],
                pull["pull_records_per_s"],
                f"{pull['pull_reviews_per_s']} reviews/s",
            ),
            (
                "re-pull, nothing new",
                pull["records"],
                pull["repull_unchanged_s"],
                round(pull["records"] / pull["repull_unchanged_s"], 1),
                "0 written",
            ),
        ]
    print(f"{'what':34s} {'records':>8s} {'seconds':>9s} {'records/s':>10s}  note")
    for what, n, s, rps, note in rows:
        print(f"{what:34s} {n:8d} {s:9.2f} {rps:10.1f}  {note}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "push": push,
        "pull": pull,
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (RESULTS / "bench_argilla.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
