"""Generation against real backends: the llama.cpp OpenAI-compatible server (direct, behind a
fault-injecting proxy, and killed mid-run) and the embedded model in-process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.config import GeneratorConfig
from pipelines.generate import run_generation
from pipelines.store import Store
from pipelines.types import Conversation
from tests.conftest import ROOT
from tests.support.fault_proxy import FaultProxy

QUESTIONS = [
    "Name a fruit that is yellow.",
    "What is 2 + 2?",
    "Name a colour of the sky.",
    "Say a word that rhymes with cat.",
    "Name a farm animal.",
    "What is the opposite of hot?",
    "Name a planet.",
    "What do bees make?",
    "Name a musical instrument.",
    "What season comes after winter?",
]


def make_conversations(n: int) -> list[Conversation]:
    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        out.append(
            Conversation(
                messages=[
                    {"role": "user", "content": f"Hello! (conversation {i})"},
                    {"role": "assistant", "content": "Hi! How can I help?"},
                    {"role": "user", "content": q},
                ],
                original_response="An original answer.",
                source="test",
            )
        )
    return out


def _completion_latency(url: str) -> float:
    """Seconds one small chat completion takes on this machine now (the slower of two)."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="none", timeout=1800, max_retries=0)
    times = []
    for _ in range(2):
        t0 = time.monotonic()
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=8
        )
        times.append(time.monotonic() - t0)
    client.close()
    return max(times)


def openai_gen(url: str, **kw: object) -> GeneratorConfig:
    base = dict(
        id="llama",
        backend="openai",
        base_url=url,
        model="smollm2",
        max_tokens=12,
        temperature=0.0,
        concurrency=2,
        timeout_s=30,
        max_retries=0,
    )
    base.update(kw)
    return GeneratorConfig(**base)


@pytest.mark.server
def test_openai_backend_against_llama_server(llama_server: str, data_dir: Path) -> None:
    store = Store(data_dir)
    convs = make_conversations(3)
    store.add_conversations(convs)
    gens = [openai_gen(llama_server, samples=2), GeneratorConfig(id="original", backend="original")]
    seen = []
    progress = run_generation(store, gens, convs, on_progress=lambda p: seen.append(p.done))
    rows = store.candidate_rows()
    assert len(rows) == 3 * 2 + 3
    assert all(r["status"] == "done" for r in rows), [r["error"] for r in rows]
    llama_rows = [r for r in rows if r["generator_id"] == "llama"]
    assert all(r["text"] and r["completion_tokens"] > 0 for r in llama_rows)
    assert all(r["latency_s"] > 0 and r["finish_reason"] in ("stop", "length") for r in llama_rows)
    assert progress.done == 9 and progress.failed == 0 and progress.output_tokens > 0
    assert seen == sorted(seen) and seen[-1] == 9  # progress reported row by row
    # A second run finds nothing missing and sends nothing.
    again = run_generation(store, gens, convs)
    assert again.skipped == 9 and again.output_tokens == 0


@pytest.mark.server
def test_faults_every_row_done_or_failed_and_rerun_completes(
    llama_server: str, data_dir: Path
) -> None:
    # request n -> fault. Each row gets one SDK retry: a lone fault is absorbed (1: the 429 is
    # retried after its Retry-After; 9: a 500), two in a row fail the row (3-4, 5-6, 7-8).
    faults = {
        1: "429",
        3: "500",
        4: "500",
        5: "stall",
        6: "stall",
        7: "reset",
        8: "reset",
        9: "500",
    }
    # The request timeout comes from what this machine measures (one direct completion, the
    # same size as the test's), never a constant near the real latency; a stall outlasts it.
    timeout_s = max(10.0, 8 * _completion_latency(llama_server))
    proxy = FaultProxy(
        upstream=llama_server.rsplit("/v1", 1)[0],
        schedule=lambda n, path: faults.get(n),
        retry_after_s=1,
        stall_s=timeout_s * 1.5 + 2,
    )
    url = proxy.start() + "/v1"
    try:
        store = Store(data_dir)
        convs = make_conversations(8)
        store.add_conversations(convs)
        # one SDK retry per request: a single fault is absorbed, two in a row fail the row
        gen = openai_gen(url, timeout_s=timeout_s, max_retries=1, concurrency=1, max_tokens=8)
        started = time.monotonic()
        progress = run_generation(store, [gen], convs, max_attempts=3)
        # nothing hangs: at worst every request of the 8 rows waits out its timeout twice
        assert time.monotonic() - started < 2 * 8 * timeout_s + 60
        rows = store.candidate_rows("llama")
        assert len(rows) == 8
        assert progress.done + progress.failed == 8
        failed = [r for r in rows if r["status"] == "failed"]
        for r in rows:
            if r["status"] == "done":
                assert r["text"] and r["error"] is None
            else:
                assert r["error"]  # the reason is kept
        # 429 + Retry-After: the retry came at least retry_after_s later
        log = proxy.completions()
        by_n = {r.n: r for r in log}
        assert by_n[2].at - by_n[1].at >= 0.9
        errors = sorted(r["error"] for r in failed)
        assert len(failed) == 3, errors
        assert any("HTTP 500" in e for e in errors)
        assert any("Timeout" in e for e in errors)
        assert any("Connection" in e for e in errors)
        # a re-run with the faults gone completes exactly the failed rows
        faults.clear()
        before = len(proxy.completions())
        progress2 = run_generation(store, [gen], convs, max_attempts=3)
        assert progress2.skipped == 8 - len(failed)
        assert len(proxy.completions()) - before == len(failed)
        rows = store.candidate_rows("llama")
        assert len(rows) == 8 and all(r["status"] == "done" for r in rows)
        assert all(
            r["attempts"] == 2
            for r in rows
            if r["conversation_id"] in {f["conversation_id"] for f in failed}
        )
    finally:
        proxy.stop()


@pytest.mark.server
def test_failed_rows_give_up_after_max_attempts(llama_server: str, data_dir: Path) -> None:
    proxy = FaultProxy(upstream=llama_server.rsplit("/v1", 1)[0], schedule=lambda n, p: "500")
    url = proxy.start() + "/v1"
    try:
        store = Store(data_dir)
        convs = make_conversations(2)
        store.add_conversations(convs)
        gen = openai_gen(url, max_retries=0)
        for _ in range(3):
            run_generation(store, [gen], convs, max_attempts=2)
        # two runs tried each row; the third sent nothing
        assert len(proxy.completions()) == 4
        rows = store.candidate_rows("llama")
        assert all(r["status"] == "failed" and r["attempts"] == 2 for r in rows)
        assert all("HTTP 500" in r["error"] for r in rows)
    finally:
        proxy.stop()


def _write_recipe(tmp: Path, url: str, n: int) -> Path:
    data = tmp / "convs.jsonl"
    with open(data, "w") as f:
        for c in make_conversations(n):
            f.write(
                json.dumps(
                    {
                        "messages": c.messages
                        + [{"role": "assistant", "content": "An original answer."}]
                    }
                )
                + "\n"
            )
    recipe = {
        "name": "resume-test",
        "source": {"path": str(data)},
        "generators": [
            {
                "id": "llama",
                "backend": "openai",
                "base_url": url,
                "model": "smollm2",
                "max_tokens": 24,
                "temperature": 0.0,
                "concurrency": 2,
                "max_retries": 0,
            },
            {"id": "original", "backend": "original"},
        ],
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _done(db: Path, generator: str = "llama") -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(
            "SELECT COUNT(*) FROM candidates WHERE generator_id=? AND status='done'", (generator,)
        ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


@pytest.mark.server
@pytest.mark.slow
def test_sigkill_mid_run_then_resume_does_only_missing(
    llama_server: str, tmp_path: Path, data_dir: Path
) -> None:
    n = 10
    proxy = FaultProxy(upstream=llama_server.rsplit("/v1", 1)[0])
    url = proxy.start() + "/v1"
    try:
        recipe = _write_recipe(tmp_path, url, n)
        cmd = [sys.executable, "-m", "capyui.cli", "run", str(recipe), "--data-dir", str(data_dir)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        db = data_dir / "capyui.sqlite"
        deadline = time.monotonic() + 120
        while _done(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_at_kill = _done(db)
        assert 3 <= done_at_kill < n, "the kill must land part-way"
        sent_first = len(proxy.completions())

        # the killed job shows as interrupted
        assert Store(data_dir).jobs()[0]["status"] == "interrupted"

        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        sent_second = len(proxy.completions()) - sent_first
        assert sent_second == n - done_at_kill  # only what was missing
        con = sqlite3.connect(db)
        rows = con.execute(
            "SELECT generator_id, conversation_id, sample_index, COUNT(*) FROM candidates"
            " GROUP BY 1, 2, 3"
        ).fetchall()
        con.close()
        assert len(rows) == 2 * n  # llama + original for each conversation
        assert all(r[3] == 1 for r in rows)
        assert _done(db) == n and _done(db, "original") == n
    finally:
        proxy.stop()


def test_embedded_backend_in_process(data_dir: Path) -> None:
    store = Store(data_dir)
    convs = make_conversations(2)
    store.add_conversations(convs)
    gen = GeneratorConfig(id="smol", backend="embedded", max_tokens=16, temperature=0.0, seed=3)
    progress = run_generation(store, [gen], convs)
    rows = store.candidate_rows("smol")
    assert progress.done == 2 and len(rows) == 2
    assert all(r["status"] == "done" and r["text"].strip() for r in rows)
    assert all(r["model"] == "SmolLM2-135M-Instruct" for r in rows)
    assert all(0 < r["completion_tokens"] <= 16 for r in rows)


def test_embedded_context_overflow_is_a_row_error_not_a_crash(data_dir: Path) -> None:
    store = Store(data_dir)
    long = Conversation(messages=[{"role": "user", "content": "word " * 5000}], source="t")
    ok = make_conversations(1)[0]
    store.add_conversations([long, ok])
    gen = GeneratorConfig(id="smol", backend="embedded", max_tokens=8, n_ctx=1024)
    progress = run_generation(store, [gen], [long, ok])
    assert progress.done == 1 and progress.failed == 1
    rows = {r["conversation_id"]: r for r in store.candidate_rows("smol")}
    assert rows[long.conversation_id]["error"].startswith("context_length_exceeded")
    assert rows[ok.conversation_id]["status"] == "done"


@pytest.mark.server
def test_samples_on_llama_server_go_one_request_per_sample(
    llama_server: str, data_dir: Path
) -> None:
    """llama.cpp's server does not honour ``n`` (issue 13): the first multi-sample request tells
    (one choice back), the rest of that conversation's samples and every later conversation's
    go one request per sample; every sample index is stored once, all done."""
    proxy = FaultProxy(upstream=llama_server.rsplit("/v1", 1)[0])
    url = proxy.start() + "/v1"
    try:
        store = Store(data_dir)
        convs = make_conversations(2)
        store.add_conversations(convs)
        gen = openai_gen(url, samples=3, concurrency=1, max_tokens=8)
        p = run_generation(store, [gen], convs)
        assert p.done == 6 and p.failed == 0
        rows = store.candidate_rows()
        assert sorted((r["conversation_id"], r["sample_index"]) for r in rows) == sorted(
            (c.conversation_id, i) for c in convs for i in range(3)
        )
        assert all(r["status"] == "done" and r["text"] for r in rows)
        chat = [r for r in proxy.log if r.path.endswith("/chat/completions")]
        assert len(chat) == 6  # 1 with n (one choice back) + 2, then 3: one per sample
    finally:
        proxy.stop()
