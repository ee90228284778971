"""Issue 13: cache-aware generation order, ``n`` for samples, pipelined generate -> judge, and a
SIGKILL of a pipelined run (scripted OpenAI-compatible servers on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import GeneratorConfig
from pipelines.generate import run_generation
from pipelines.recipe import Recipe
from pipelines.run import run_recipe
from pipelines.store import Store
from pipelines.types import Conversation
from tests.conftest import ROOT
from tests.support.scripted_generator import ScriptedGenerator


def convs(n: int) -> list[Conversation]:
    return [
        Conversation(
            messages=[
                {"role": "user", "content": f"Tell me about topic {i}."},
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": f"More on topic {i}, please."},
            ],
            source="t",
        )
        for i in range(n)
    ]


def gen(id: str, url: str, **kw: Any) -> GeneratorConfig:
    return GeneratorConfig(id=id, backend="openai", base_url=url, model="m", max_retries=0, **kw)


def test_requests_of_one_conversation_go_back_to_back(tmp_path: Path) -> None:
    server = ScriptedGenerator(delay_s=0.02)
    url = server.start()
    try:
        store = Store(tmp_path / "ws")
        cs = convs(8)
        store.add_conversations(cs)
        gens = [
            gen("warm", url, temperature=0.7, samples=2, seed=1, concurrency=1),
            gen("hot", url, temperature=1.0, concurrency=1),
        ]
        p = run_generation(store, gens, cs)
        assert p.done == 8 * 3 and p.failed == 0
        order = [r.last_user for r in sorted(server.log, key=lambda r: r.arrived)]
        assert len(order) == 24
        for c in cs:
            pos = [i for i, u in enumerate(order) if u == c.messages[-1]["content"]]
            # its three requests (two samples of one model, one of the other) arrive together:
            # at most one request of a neighbouring conversation in between
            assert max(pos) - min(pos) <= 3, (c.messages[-1]["content"], pos)
    finally:
        server.stop()


def _rows(store: Store) -> list[dict[str, Any]]:
    keep = ("conversation_id", "generator_id", "sample_index", "model", "params", "status")
    keep += ("prompt_tokens", "completion_tokens", "finish_reason", "error", "attempts")
    return sorted(
        ({k: r[k] for k in keep} for r in store.candidate_rows()),
        key=lambda r: (r["conversation_id"], r["generator_id"], r["sample_index"]),
    )


def test_samples_use_n_where_the_server_honours_it_with_the_same_rows(tmp_path: Path) -> None:
    cs = convs(5)
    stored = {}
    for honour in (True, False):
        server = ScriptedGenerator(honour_n=honour)
        url = server.start()
        try:
            store = Store(tmp_path / f"ws-{honour}")
            store.add_conversations(cs)
            p = run_generation(store, [gen("g", url, samples=3, concurrency=1)], cs)
            assert p.done == 15 and p.failed == 0
            sent = server.generations()
            if honour:
                # one request per conversation, asking for 3 choices; the server prefilled once
                assert len(sent) == 5 and all(r.body.get("n") == 3 for r in sent)
                texts = {r["text"] for r in store.candidate_rows()}
                assert len(texts) == 15  # three distinct samples each
            else:
                # llama.cpp ignores n: the first answer tells, the rest go one by one
                assert len(sent) == 5 + 2 * 1 + 4 * 2
                assert sum(1 for r in sent if r.body.get("n") == 3) == 1
            stored[honour] = _rows(store)
        finally:
            server.stop()
    assert stored[True] == stored[False]
    assert len(stored[True]) == 15


def _recipe_dict(data: Path, gen_url: str, judge_url: str, conc: int = 2) -> dict[str, Any]:
    return {
        "name": "pipe",
        "source": {"path": str(data)},
        "generators": [
            {"id": "a", "backend": "openai", "base_url": gen_url, "model": "m",
             "concurrency": conc, "max_retries": 0, "temperature": 0.7},
            {"id": "b", "backend": "openai", "base_url": gen_url, "model": "m",
             "concurrency": conc, "max_retries": 0, "temperature": 1.0},
        ],
        "judge": {"id": "j", "backend": "openai", "base_url": judge_url, "model": "m",
                  "structured": False, "max_retries": 0, "concurrency": 2},
    }  # fmt: skip


def _write_data(tmp: Path, n: int) -> Path:
    data = tmp / "convs.jsonl"
    with data.open("w") as f:
        for c in convs(n):
            f.write(json.dumps({"messages": c.messages}) + "\n")
    return data


def test_judge_starts_while_generation_goes_on(tmp_path: Path) -> None:
    generator, judge = ScriptedGenerator(delay_s=0.03), ScriptedGenerator()
    gen_url, judge_url = generator.start(), judge.start()
    try:
        recipe = Recipe.model_validate(_recipe_dict(_write_data(tmp_path, 12), gen_url, judge_url))
        store = Store(tmp_path / "ws")
        summary = run_recipe(recipe, store, stages=["load", "generate", "judge"])
        assert summary.status == "done", summary.error
        assert summary.results["generate"]["done"] == 24
        assert summary.results["judge"]["done"] == 12
        assert len(store.judgments("j")) == 12
        assert all(j["status"] == "done" for j in store.judgments("j"))
        last_generation = max(r.arrived for r in generator.log)
        first_judgment = min(r.arrived for r in judge.log)
        assert first_judgment < last_generation  # judging overlapped generation
        # a conversation is judged only after both of its candidates were stored
        for j in judge.log:
            prompt = j.body["messages"][-1]["content"]
            assert prompt.count("[[score=4]]") == 2
        # a re-run has nothing to do
        before = (len(generator.log), len(judge.log))
        again = run_recipe(recipe, store, stages=["generate", "judge"])
        assert again.status == "done" and (len(generator.log), len(judge.log)) == before
    finally:
        generator.stop()
        judge.stop()


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_of_a_pipelined_run_then_resume_makes_exactly_the_missing_requests(
    tmp_path: Path,
) -> None:
    n = 30
    generator, judge = ScriptedGenerator(delay_s=0.05), ScriptedGenerator(delay_s=0.05)
    gen_url, judge_url = generator.start(), judge.start()
    try:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(
            yaml.safe_dump(_recipe_dict(_write_data(tmp_path, n), gen_url, judge_url, conc=1))
        )
        data_dir = tmp_path / "ws"
        cmd = [sys.executable, "-m", "capyui.cli", "run", str(recipe), "--data-dir",
               str(data_dir), "--stages", "load,generate,judge"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        db = data_dir / "capyui.sqlite"
        judged_sql = "SELECT COUNT(*) FROM judgments WHERE status = 'done'"
        done_sql = "SELECT COUNT(*) FROM candidates WHERE status = 'done'"
        deadline = time.monotonic() + 120
        while _count(db, judged_sql) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_at_kill, judged_at_kill = _count(db, done_sql), _count(db, judged_sql)
        assert judged_at_kill >= 3 and done_at_kill < 2 * n, "the kill must land part-way"
        sent = (len(generator.generations()), len(judge.judgments()))

        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert len(generator.generations()) - sent[0] == 2 * n - done_at_kill
        assert len(judge.judgments()) - sent[1] == n - judged_at_kill
        assert _count(db, done_sql) == 2 * n and _count(db, judged_sql) == n
        assert _count(db, "SELECT COUNT(*) FROM candidates") == 2 * n  # no duplicates
    finally:
        generator.stop()
        judge.stop()
