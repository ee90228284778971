"""Live token counters of a running job and the cost of earlier attempts (issue 14a), against
local servers that report usage (``tests/support/usage_server.py``,
``tests/support/scripted_judge.py``)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.cost import live_usage, spent, usage_report
from pipelines.recipe import parse_recipe
from pipelines.run import run_recipe
from pipelines.store import MIGRATIONS, Store
from pipelines.types import Progress
from tests.support.poll import wait_until
from tests.support.scripted_judge import ScriptedJudge
from tests.support.usage_server import UsageServer

pytestmark = pytest.mark.server

ROWS = 8
HELD = 3  # requests answered before the server holds the rest
MAX_TOKENS = 100
OUTPUT_PRICE = 10.0  # USD per million output tokens: one row costs $0.001
ROW_USD = MAX_TOKENS * OUTPUT_PRICE / 1_000_000
JUDGE_TOKENS = 64


def _source(tmp_path: Path, n: int = ROWS) -> Path:
    path = tmp_path / "convs.jsonl"
    with path.open("w") as f:
        for i in range(n):
            turn = {"input": f"Question number {i}?", "output": f"Original {i} [[score=4]]"}
            f.write(json.dumps({"conversation": [turn]}) + "\n")
    return path


def _recipe(tmp_path: Path, gen_url: str, judge_url: str | None = None, n: int = ROWS) -> Any:
    data: dict[str, Any] = {
        "name": "live-usage",
        "source": {"path": str(_source(tmp_path, n)), "format": "capybara"},
        "generators": [
            {
                "id": "paid",
                "backend": "openai",
                "base_url": gen_url,
                "model": "paid-model",
                "max_tokens": MAX_TOKENS,
                "concurrency": 1,
                "max_retries": 0,
            },
            {"id": "original", "backend": "original"},
        ],
        "prices": {"paid": {"input": 0, "output": OUTPUT_PRICE}},
    }
    if judge_url is not None:
        data["judge"] = {
            "id": "judge",
            "backend": "openai",
            "base_url": judge_url,
            "model": "judge-model",
            "max_tokens": JUDGE_TOKENS,
            "structured": False,
            "max_retries": 0,
        }
    return parse_recipe(data)


# -- item 2: live counters -----------------------------------------------------------------------
def test_live_usage_of_a_running_job(tmp_path: Path) -> None:
    srv = UsageServer(prompt_tokens=10, hold_after=HELD)
    url = srv.start()
    try:
        store = Store(tmp_path / "ws")
        recipe = _recipe(tmp_path, url)
        run_recipe(recipe, store, stages=["load"])
        # usage of an earlier job must not count as this job's
        store.record_usage("generate", "paid", "paid-model", "old", 1000, 1000)
        time.sleep(0.01)
        progress: dict[str, dict[str, Any]] = {}

        def on_progress(p: Progress) -> None:
            progress[p.stage] = p.as_dict()

        since = time.time()
        job = threading.Thread(
            target=run_recipe,
            args=(recipe, store),
            kwargs={"stages": ["generate"], "on_progress": on_progress},
        )
        job.start()
        try:
            # HELD requests answered, the next one held by the server: the job is mid-run
            wait_until(lambda: len(srv.bodies) > HELD, "the held request", 60)
            wait_until(
                lambda: progress.get("generate", {}).get("done", 0) >= HELD + ROWS,
                "the answered rows to be committed",
                60,
            )
            live = live_usage(store, recipe, since=since, progress=progress)
        finally:
            srv.release()
            job.join(120)
        (paid,) = [m for m in live.models if m.id == "paid"]
        assert paid.requests == HELD
        assert paid.prompt_tokens == HELD * 10 and paid.completion_tokens == HELD * MAX_TOKENS
        assert paid.usd == pytest.approx(HELD * ROW_USD)
        assert live.usd == pytest.approx(HELD * ROW_USD) and live.priced
        assert 0 < live.elapsed_s
        assert paid.tokens_per_s == pytest.approx(HELD * (10 + MAX_TOKENS) / live.elapsed_s)
        assert paid.completion_tokens_per_s == pytest.approx(HELD * MAX_TOKENS / live.elapsed_s)
        (gen,) = live.stages
        # 8 original answers + 3 paid ones of 16 rows: rows/s and an ETA for the other 5
        assert gen.stage == "generate" and gen.total == 2 * ROWS and gen.done == ROWS + HELD
        assert gen.rows_per_s > 0 and gen.eta_s is not None
        assert gen.eta_s == pytest.approx((2 * ROWS - gen.done) / gen.rows_per_s)
        # the workspace total counts the earlier job too (what a budget sees)
        assert live.workspace_tokens == 2000 + HELD * (10 + MAX_TOKENS)
        data = live.as_dict()
        assert data["usd"] == pytest.approx(HELD * ROW_USD) and data["models"][0]["id"] == "paid"

        after = live_usage(store, recipe, since=since, progress=progress)
        (paid,) = [m for m in after.models if m.id == "paid"]
        assert paid.requests == ROWS and paid.completion_tokens == ROWS * MAX_TOKENS
        assert after.stages[0].eta_s == 0.0  # nothing remains
        # a finished job is measured up to its last answer: its throughput does not decay
        done1 = live_usage(store, recipe, since=since, progress=progress, running=False)
        later = live_usage(
            store, recipe, since=since, progress=progress, running=False, now=time.time() + 100
        )
        assert done1.elapsed_s == later.elapsed_s <= after.elapsed_s
        assert later.models[0].tokens_per_s == done1.models[0].tokens_per_s > 0
        assert not later.running and later.as_dict()["running"] is False
        # the workspace total (cached part before the job + the job's) is what a budget counts
        assert (after.workspace_usd, after.workspace_tokens) == pytest.approx(spent(store, recipe))
    finally:
        srv.stop()


def test_live_usage_without_prices_or_progress(tmp_path: Path) -> None:
    store = Store(tmp_path / "ws")
    recipe = parse_recipe(
        {
            "name": "x",
            "source": {"path": str(_source(tmp_path, 1))},
            "generators": [{"id": "local", "backend": "embedded"}],
        }
    )
    t0 = time.time()
    live = live_usage(store, recipe, since=t0, now=t0 + 2)
    assert live.models == [] and live.stages == [] and not live.priced and live.usd == 0
    store.record_usage("generate", "local", "smol", "c1", 30, 20)
    live = live_usage(store, recipe, since=t0, now=time.time() + 1)
    (m,) = live.models
    assert m.usd is None and m.tokens == 50 and not live.priced
    assert live.as_dict()["usd"] is None


# -- item 3: what earlier attempts cost ----------------------------------------------------------
def test_earlier_judge_attempts_are_paid_for(tmp_path: Path) -> None:
    """A judge that answers garbage (3 tries per conversation: the judgment is stored without
    ratings), then a resumed run against a judge that answers: the cost is every request's."""
    gen = UsageServer(prompt_tokens=10)
    gen_url = gen.start()
    garbage = UsageServer(prompt_tokens=7)  # its answers are not judgments
    garbage_url = garbage.start()
    good = ScriptedJudge(style="text")
    good_url = good.start()
    try:
        store = Store(tmp_path / "ws")
        n = 3
        first = _recipe(tmp_path, gen_url, garbage_url, n)
        run_recipe(first, store, stages=["load", "generate", "judge"])
        assert len(garbage.bodies) == 3 * n  # every conversation tried 3 times
        assert {j["status"] for j in store.judgments()} <= {"failed", "partial"}
        second = _recipe(tmp_path, gen_url, good_url, n)
        summary = run_recipe(second, store, stages=["judge"])
        assert summary.status == "done", summary.as_dict()
        assert len(good.bodies) == n and {j["status"] for j in store.judgments()} == {"done"}

        # what the servers were paid for, from their own request logs
        paid_p = sum(7 for _ in garbage.bodies) + sum(1 for _ in good.bodies)
        paid_c = sum(int(b["max_tokens"]) for b in garbage.bodies) + 5 * len(good.bodies)
        (judge,) = [r for r in usage_report(store, second) if r["stage"] == "judge"]
        assert judge["prompt_tokens"] == paid_p and judge["completion_tokens"] == paid_c
        assert judge["requests"] == 4 * n and judge["rows"] == n
        # the stored judgments hold only the last run's usage: the rest were earlier attempts
        assert judge["earlier_tokens"] == paid_p + paid_c - n * (1 + 5)
        (g,) = [r for r in usage_report(store, second) if r["id"] == "paid"]
        assert g["completion_tokens"] == n * MAX_TOKENS and g["earlier_tokens"] == 0
    finally:
        for s in (gen, garbage, good):
            s.stop()


def test_a_retried_candidate_keeps_the_cost_of_its_first_attempt(tmp_path: Path) -> None:
    from pipelines.types import GenerationResult

    store = Store(tmp_path / "ws")
    # a first answer that was paid but failed a check downstream, then a retry that succeeds
    store.put_candidate("c1", "g", 0, GenerationResult(key=None, error="x", model="m"))
    store.record_usage("generate", "g", "m", "c1", 100, 50)  # paid, not kept
    store.put_candidate(
        "c1",
        "g",
        0,
        GenerationResult(key=None, text="ok", prompt_tokens=100, completion_tokens=40, model="m"),
    )
    store.put_candidate(  # a late failure never overwrites a done row, but it was paid
        "c1",
        "g",
        0,
        GenerationResult(key=None, error="y", prompt_tokens=100, completion_tokens=1, model="m"),
    )
    (row,) = store.token_usage()
    assert row["rows"] == 1 and row["requests"] == 3
    assert row["prompt_tokens"] == 300 and row["completion_tokens"] == 91
    assert row["earlier_tokens"] == 300 + 91 - 140


def test_migration_backfills_the_tokens_rows_hold(tmp_path: Path) -> None:
    """A workspace written before the attempts log: its rows' tokens are what was paid."""
    path = tmp_path / "old" / "capyui.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    n_old = next(i for i, m in enumerate(MIGRATIONS) if "token_attempts" in m)
    for script in MIGRATIONS[:n_old]:
        db.executescript(script)
    db.execute(f"PRAGMA user_version = {n_old}")
    db.execute(
        "INSERT INTO candidates (conversation_id, generator_id, sample_index, model, status,"
        " text, prompt_tokens, completion_tokens, updated_at) VALUES"
        " ('c1', 'g', 0, 'm', 'done', 'x', 11, 22, 1.0),"
        " ('c2', 'g', 0, 'm', 'done', 'y', 1, 2, 1.0),"
        " ('c3', 'g', 0, 'm', 'done', 'z', NULL, NULL, 1.0)"
    )
    db.execute(
        "INSERT INTO judgments (conversation_id, judge_id, model, status, candidate_keys,"
        " ratings, rationales, order_shown, updated_at, prompt_tokens, completion_tokens)"
        " VALUES ('c1', 'j', 'jm', 'done', '[]', '[]', '[]', '[]', 1.0, 300, 40)"
    )
    db.commit()
    db.close()
    store = Store(path.parent)
    usage = {(r["stage"], r["id"]): r for r in store.token_usage()}
    assert usage["generate", "g"]["prompt_tokens"] == 12
    assert usage["generate", "g"]["completion_tokens"] == 24
    assert usage["generate", "g"]["rows"] == 3 and usage["generate", "g"]["requests"] == 2
    assert usage["judge", "j"]["prompt_tokens"] == 300
    assert usage["judge", "j"]["earlier_tokens"] == 0


def test_a_job_cancelled_between_the_reverse_passes_keeps_what_the_first_pass_cost(
    tmp_path: Path,
) -> None:
    """With ``reverse_pass`` a judgment needs two answers; a job stopped after the first one
    commits nothing for that conversation, and the resumed job asks both again. The first
    answer was paid: it counts."""
    cancel = threading.Event()

    class StopAfterFirst(ScriptedJudge):
        def answer(self, prompt: str) -> str:
            cancel.set()  # the job is cancelled while this answer is on its way
            return super().answer(prompt)

    gen = UsageServer(prompt_tokens=10)
    gen_url = gen.start()
    judge = StopAfterFirst(style="text")
    judge_url = judge.start()
    try:
        store = Store(tmp_path / "ws")
        recipe = _recipe(tmp_path, gen_url, judge_url, n=1)
        recipe.judge.reverse_pass = True
        recipe.judge.concurrency = 1
        run_recipe(recipe, store, stages=["load", "generate"])
        first = run_recipe(recipe, store, stages=["judge"], cancel=cancel)
        assert first.status == "cancelled" and store.judgments() == []
        answered_before = len(judge.bodies)
        assert answered_before >= 1
        (judge_row,) = [r for r in store.token_usage() if r["stage"] == "judge"]
        assert judge_row["requests"] >= 1 and judge_row["rows"] == 0  # paid, nothing stored
        cancel.clear()
        judge.answer = ScriptedJudge.answer.__get__(judge)  # type: ignore[method-assign]
        second = run_recipe(recipe, store, stages=["judge"])
        assert second.status == "done" and [j["status"] for j in store.judgments()] == ["done"]
        (judge_row,) = [r for r in store.token_usage() if r["stage"] == "judge"]
        # both passes of the resumed job plus what reached the first job (a request cut off in
        # flight never returned its usage: it cannot be counted)
        assert judge_row["requests"] >= 3 and judge_row["rows"] == 1
        assert judge_row["prompt_tokens"] == judge_row["requests"] * 1
        assert judge_row["completion_tokens"] == judge_row["requests"] * 5
        assert judge_row["earlier_tokens"] == (judge_row["requests"] - 2) * 6
        assert judge_row["requests"] <= len(judge.bodies)
    finally:
        gen.stop()
        judge.stop()
