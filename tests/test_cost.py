"""Tokens, cost and budgets (issue 14), against a local server that reports token usage."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import GeneratorConfig
from pipelines.cost import APPROX, MESSAGE_OVERHEAD, TokenCounter, dry_run, usage_report
from pipelines.recipe import RecipeError, parse_recipe
from pipelines.run import run_recipe
from pipelines.store import Store
from tests.support.usage_server import UsageServer

pytestmark = pytest.mark.server

ROWS = 8
MAX_TOKENS = 100
OUTPUT_PRICE = 10.0  # USD per million output tokens: one row costs exactly $0.001
ROW_USD = MAX_TOKENS * OUTPUT_PRICE / 1_000_000


@pytest.fixture
def server() -> Iterator[tuple[UsageServer, str]]:
    srv = UsageServer(prompt_tokens=10)
    url = srv.start()
    yield srv, url
    srv.stop()


def source(tmp_path: Path) -> Path:
    path = tmp_path / "convs.jsonl"
    with path.open("w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"conversation": [{"input": f"Question number {i}?"}]}) + "\n")
    return path


def recipe(tmp_path: Path, url: str, budget: dict[str, Any] | None) -> Any:
    data: dict[str, Any] = {
        "name": "budget-test",
        "source": {"path": str(source(tmp_path)), "format": "capybara"},
        "generators": [
            {
                "id": "paid",
                "backend": "openai",
                "base_url": url,
                "model": "paid-model",
                "max_tokens": MAX_TOKENS,
                "concurrency": 2,
                "max_retries": 0,
            }
        ],
        "prices": {"paid": {"input": 0, "output": OUTPUT_PRICE}},
    }
    if budget is not None:
        data["budget"] = budget
    return parse_recipe(data)


def done_rows(store: Store) -> int:
    return store.candidate_counts().get("paid", {}).get("done", 0)


def test_usd_budget_pauses_at_the_right_row_and_resumes_when_raised(
    tmp_path: Path, server: tuple[UsageServer, str]
) -> None:
    srv, url = server
    store = Store(tmp_path / "ws")
    stages = ["load", "generate"]
    # room for 3.5 rows: 3 are generated, the 4th is never sent
    summary = run_recipe(recipe(tmp_path, url, {"usd": 3.5 * ROW_USD}), store, stages=stages)
    assert summary.status == "paused", summary.as_dict()
    assert "raise budget" in (summary.error or "")
    assert done_rows(store) == 3 and len(srv.bodies) == 3
    assert store.jobs()[0]["status"] == "paused"
    # raised: resumes with what is missing, no duplicates, pauses again at row 6
    summary = run_recipe(recipe(tmp_path, url, {"usd": 6.5 * ROW_USD}), store, stages=stages)
    assert summary.status == "paused"
    assert done_rows(store) == 6 and len(srv.bodies) == 6
    # raised above the need: finishes
    summary = run_recipe(recipe(tmp_path, url, {"usd": 1.0}), store, stages=stages)
    assert summary.status == "done", summary.as_dict()
    assert done_rows(store) == ROWS and len(srv.bodies) == ROWS
    (row,) = [r for r in usage_report(store, recipe(tmp_path, url, None)) if r["id"] == "paid"]
    assert row["completion_tokens"] == ROWS * MAX_TOKENS
    assert row["prompt_tokens"] == ROWS * 10
    assert row["usd"] == pytest.approx(ROWS * ROW_USD)


def test_token_budget_never_exceeded(tmp_path: Path, server: tuple[UsageServer, str]) -> None:
    srv, url = server
    store = Store(tmp_path / "ws")
    per_row = 10 + MAX_TOKENS
    summary = run_recipe(recipe(tmp_path, url, {"tokens": 500}), store, stages=["load", "generate"])
    assert summary.status == "paused"
    used = done_rows(store) * per_row
    assert used <= 500 < used + per_row  # as many rows as fit, and not one more
    assert len(srv.bodies) == done_rows(store) == 4
    assert summary.results["budget"]["spent_tokens"] == used


def test_dry_run_projects_before_the_job_starts(
    tmp_path: Path, server: tuple[UsageServer, str]
) -> None:
    _, url = server
    store = Store(tmp_path / "ws")
    r = recipe(tmp_path, url, {"usd": 3.5 * ROW_USD})
    run_recipe(r, store, stages=["load"])
    proj = dry_run(r, store).as_dict()
    (gen,) = proj["rows"]
    assert gen["requests"] == ROWS and gen["completion_tokens"] == ROWS * MAX_TOKENS
    assert gen["tokens_by"] == APPROX and gen["completion_by"] == "max_tokens"
    expected_prompt = sum(
        math.ceil(len(f"Question number {i}?") / 4) + MESSAGE_OVERHEAD for i in range(ROWS)
    )
    assert gen["prompt_tokens"] == expected_prompt
    assert proj["projected_usd"] == pytest.approx(ROWS * ROW_USD)
    assert proj["spent_usd"] == 0 and proj["fits_budget"] is False
    # after part of the job, the projection covers only what is missing
    run_recipe(r, store, stages=["generate"])
    proj = dry_run(r, store).as_dict()
    assert proj["rows"][0]["requests"] == ROWS - 3
    assert proj["spent_usd"] == pytest.approx(3 * ROW_USD)
    assert proj["total_usd"] == pytest.approx(ROWS * ROW_USD)


def test_budget_and_prices_are_validated(tmp_path: Path) -> None:
    base = {
        "name": "x",
        "source": {"path": "x.jsonl"},
        "generators": [{"id": "g", "backend": "original"}],
    }
    with pytest.raises(RecipeError, match="budget"):
        parse_recipe({**base, "budget": {}})
    with pytest.raises(RecipeError, match="budget"):
        parse_recipe({**base, "budget": {"usd": -1}})
    with pytest.raises(RecipeError, match="prices"):
        parse_recipe({**base, "prices": {"g": {"input": 1}}})


def test_the_embedded_model_counts_with_its_own_tokenizer() -> None:
    pytest.importorskip("llama_cpp")
    counter = TokenCounter(GeneratorConfig(id="e", backend="embedded"))
    assert counter.exact and "GGUF" in counter.method
    n = counter.text("The quick brown fox jumps over the lazy dog.")
    assert 5 <= n <= 15
    assert TokenCounter(GeneratorConfig(id="o", backend="original")).method == APPROX


def test_card_states_tokens_and_cost_per_stage_and_model(
    tmp_path: Path, server: tuple[UsageServer, str]
) -> None:
    from pipelines.publish import render_card
    from pipelines.run import binarize_stage, card_context

    _, url = server
    store = Store(tmp_path / "ws")
    r = recipe(tmp_path, url, None)
    assert run_recipe(r, store, stages=["load", "generate"]).status == "done"
    store.put_judgment(  # a judgment with usage, from a judge without a price
        store.conversation_ids()[0],
        "local-judge",
        model="local-model",
        candidate_keys=["paid/0"],
        ratings=[4],
        rationales=[None],
        order_shown=[0],
        seed=1,
        raw_output=None,
        error=None,
    )
    # as the judge stage records it: the request's usage as it arrives, the row's at commit
    store.record_usage("judge", "local-judge", "local-model", store.conversation_ids()[0], 300, 50)
    store.set_judgment_usage(store.conversation_ids()[0], "local-judge", 300, 50)
    binarized, _ = binarize_stage(r, store)
    card = render_card(card_context(store, r, binarized), 0, [])
    section = card.split("### Tokens and cost", 1)[1].split("###", 1)[0]
    tokens = f"{ROWS * 10} | {ROWS * MAX_TOKENS}"
    row = f"| generate | paid-model (paid) | {ROWS} | {ROWS} | {tokens} | 0 |"
    assert row in section
    assert f"{ROWS * ROW_USD:.4f}" in section
    assert "| judge | local-model (local-judge) | 1 | 1 | 300 | 50 | 0 | no price |" in section


def test_cli_dry_run_and_paused_exit(tmp_path: Path, server: tuple[UsageServer, str]) -> None:
    import subprocess
    import sys

    import yaml

    srv, url = server
    r = recipe(tmp_path, url, {"usd": 3.5 * ROW_USD})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r.to_dict()))
    cmd = [sys.executable, "-m", "capyui.cli", "run", str(path), "--data-dir", str(tmp_path / "ws")]
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "paid-model (paid)" in out.stdout and f"{ROWS * ROW_USD:.4f}" in out.stdout
    assert "characters / 4" in out.stdout and "does NOT fit" in out.stdout
    assert srv.bodies == []  # a dry run sends nothing
    out = subprocess.run(
        [*cmd, "--stages", "load,generate"], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert out.returncode == 3 and "paused: paused by the budget" in out.stderr, out.stderr
    assert len(srv.bodies) == 3


def test_run_tab_cost_panel(tmp_path: Path, server: tuple[UsageServer, str]) -> None:
    from capyui import guard
    from capyui.tabs.cost import cost_html
    from pipelines.service import WorkspaceService
    from pipelines.workspace import Actor, Role

    _, url = server
    store = Store(tmp_path / "ws")
    r = recipe(tmp_path, url, {"usd": 3.5 * ROW_USD})
    run_recipe(r, store, stages=["load", "generate"])
    token = guard._actor.set(Actor("o", Role.OWNER))  # as in an owner's event
    try:
        html = cost_html(WorkspaceService(store.data_dir, recipe=r))
    finally:
        guard._actor.reset(token)
    assert "paid-model (paid)" in html and f"{3 * ROW_USD:.4f}" in html  # spent so far
    assert "does not fit" in html and "characters / 4" in html  # the projection of the rest


def test_budget_pauses_the_judge_without_failing_rows(
    tmp_path: Path, server: tuple[UsageServer, str]
) -> None:
    from tests.support.scripted_judge import ScriptedJudge

    _, url = server
    judge = ScriptedJudge(style="json")
    judge_url = judge.start()
    try:
        path = tmp_path / "convs.jsonl"
        with path.open("w") as f:
            for i in range(4):
                turn = {"input": f"Question {i}?", "output": f"Original [[score=4]] {i}"}
                f.write(json.dumps({"conversation": [turn]}) + "\n")
        data: dict[str, Any] = {
            "name": "judge-budget",
            "source": {"path": str(path), "format": "capybara"},
            "generators": [
                {"id": "paid", "backend": "openai", "base_url": url, "model": "paid-model",
                 "max_tokens": 20},
                {"id": "original", "backend": "original"},
            ],
            "judge": {"id": "judge", "backend": "openai", "base_url": judge_url,
                      "model": "judge-model", "max_tokens": 64},
        }  # fmt: skip
        store = Store(tmp_path / "ws")
        assert run_recipe(parse_recipe(data), store, stages=["load", "generate"]).status == "done"
        spent_tokens = 4 * (10 + 20)
        # room for the generations only: not one judge request fits
        tight = parse_recipe({**data, "budget": {"tokens": spent_tokens + 50}})
        summary = run_recipe(tight, store, stages=["judge"])
        assert summary.status == "paused", summary.as_dict()
        assert judge.bodies == [] and store.judgments() == []  # nothing sent, nothing failed
        roomy = parse_recipe({**data, "budget": {"tokens": 1_000_000}})
        done = run_recipe(roomy, store, stages=["judge"])
        assert done.status == "done", done.as_dict()
        rows = store.query("SELECT status, prompt_tokens, completion_tokens FROM judgments")
        # the paid answers carry no score marker: partial judgments, retried (more requests)
        assert len(rows) == 4 and all(r[0] in ("done", "partial") for r in rows)
        # every request reported 1 prompt and 5 completion tokens: summed per judgment
        assert all(r[1] >= 1 and r[2] == 5 * r[1] for r in rows)
        assert sum(r[1] for r in rows) == len(judge.bodies)
    finally:
        judge.stop()
