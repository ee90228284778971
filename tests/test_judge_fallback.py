"""Issue 11: the judge request works on every OpenAI-compatible server (json_schema ->
json_object with only defined keys -> UltraFeedback's text format, each step only on a refusal,
remembered per endpoint and model, reported in the job), proven against a strict local stub;
a stage that failed on every row ends the job failed. Issue 10, item 6: hostile numbers from
the judge leave the stage finishing with nulls, and a resume does not fail again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.backends import openai_backend
from pipelines.config import JudgeConfig
from pipelines.judge import run_judging
from pipelines.recipe import load_recipe
from tests.support.cli import cli
from tests.support.scripted_judge import ScriptedJudge
from tests.support.strict_openai import StrictOpenAI
from tests.test_judge import seed_store

SCORES = {"a": 5, "b": 1, "c": 3}
SEED_JUDGE = "gpt-4-1106-preview"


@pytest.fixture(autouse=True)
def _forget_formats() -> None:
    openai_backend._FORMAT_MEMORY.clear()


def _store(data_dir: Path, n: int = 4):  # noqa: ANN202
    texts = {i: {g: f"answer {g} {i} [[score={s}]]" for g, s in SCORES.items()} for i in range(n)}
    return seed_store(data_dir, n, texts)


def _formats(server: StrictOpenAI) -> list[tuple[int, str]]:
    out = []
    for status, body in server.requests:
        fmt = body.get("response_format")
        kind = "text" if fmt is None else fmt["type"] + ("+schema" if "schema" in fmt else "")
        out.append((status, kind))
    return out


def test_seed_judge_shape_falls_back_to_json_object_and_remembers(data_dir: Path) -> None:
    store = _store(data_dir)
    server = StrictOpenAI({SEED_JUDGE}, no_json_schema={SEED_JUDGE})
    url = server.start()
    try:
        judge = JudgeConfig(
            id="j", backend="openai", base_url=url, model=SEED_JUDGE, structured=True, concurrency=1
        )
        progress = run_judging(store, judge, list(SCORES), store.conversations())
        assert progress.done == 4 and progress.failed == 0, progress.message
        for j in store.judgments("j"):
            assert j["ratings"] == [5, 1, 3] and j["status"] == "done"
        seen = _formats(server)
        # one refusal per step, then every request straight in the accepted format
        assert seen[:3] == [(400, "json_schema"), (400, "json_object+schema"), (200, "json_object")]
        assert seen[3:] == [(200, "json_object")] * 3
        assert "Unrecognized request argument supplied: response_format.schema" in str(
            progress.notes
        )
        assert any(
            "json_schema refused" in n and "using json_object+schema" in n for n in progress.notes
        )
        assert any(
            "using json_object" in n and n.endswith("using json_object") for n in progress.notes
        )
        # the prompt describes the JSON when the server cannot be given the schema
        last = server.requests[-1][1]
        assert (
            '{"ratings": [{"text": 1, "rating": [rating for text 1]'
            in last["messages"][-1]["content"]
        )
        # remembered per endpoint and model: a new job starts in the accepted format
        before = len(server.requests)
        store2 = _store(data_dir / "again")
        run_judging(store2, judge, list(SCORES), store2.conversations())
        assert {f for _, f in _formats(server)[before:]} == {"json_object"}
    finally:
        server.stop()


def test_no_json_mode_falls_back_to_the_text_format(data_dir: Path) -> None:
    store = _store(data_dir, 3)
    server = StrictOpenAI({"m"}, no_json_schema={"m"}, no_json_mode={"m"})
    url = server.start()
    try:
        judge = JudgeConfig(id="j", backend="openai", base_url=url, model="m", concurrency=1)
        progress = run_judging(store, judge, list(SCORES), store.conversations())
        assert progress.done == 3, progress.message
        assert all(j["ratings"] == [5, 1, 3] for j in store.judgments("j"))
        seen = _formats(server)
        assert [s for s, _ in seen[:3]] == [400, 400, 400] and seen[3] == (200, "text")
        assert {f for _, f in seen[4:]} == {"text"}
        prompt = server.requests[-1][1]["messages"][-1]["content"]
        assert "#### Output for Text 1\nRating: [Rating for text 1]" in prompt
        assert any(n.endswith("using text") for n in progress.notes)
    finally:
        server.stop()


def test_other_4xx_do_not_step_down(data_dir: Path) -> None:
    """An unknown model (404) is not a format refusal: no fallback, the rows fail with it."""
    store = _store(data_dir, 2)
    server = StrictOpenAI({"m"})
    url = server.start()
    try:
        judge = JudgeConfig(
            id="j", backend="openai", base_url=url, model="nope", max_retries=0, concurrency=1
        )
        progress = run_judging(store, judge, list(SCORES), store.conversations())
        assert progress.failed == 2 and progress.done == 0
        assert _formats(server) == [(404, "json_schema")] * 2
        assert not [n for n in progress.notes if "refused" in n]
        assert all("HTTP 404" in j["error"] for j in store.judgments("j"))
    finally:
        server.stop()


def test_seed_recipe_judges_in_the_text_format_like_the_seed(data_dir: Path) -> None:
    seed = load_recipe("capybara-dpo")
    assert seed.judge is not None and seed.judge.structured == "auto"
    assert seed.judge.template == "ultrafeedback"
    assert not seed.judge.uses_structured_output()  # gpt-4-1106-preview: no json_schema
    assert JudgeConfig(
        id="x",
        backend="openai",
        base_url="http://h/v1",
        model="gpt-4o-2024-08-06",
        structured="auto",
    ).uses_structured_output()
    store = _store(data_dir, 2)
    server = StrictOpenAI({SEED_JUDGE}, no_json_schema={SEED_JUDGE})
    url = server.start()
    try:
        judge = seed.judge.model_copy(update={"base_url": url, "api_key_env": None})
        progress = run_judging(store, judge, list(SCORES), store.conversations())
        assert progress.done == 2
        assert _formats(server) == [(200, "text")] * 2
        assert "Contains inaccuracies" in server.requests[0][1]["messages"][-1]["content"]
    finally:
        server.stop()


def test_hostile_numbers_finish_with_nulls_and_resume_does_not_fail(data_dir: Path) -> None:
    store = _store(data_dir, 3)
    server = ScriptedJudge("hostile")
    url = server.start()
    try:
        judge = JudgeConfig(id="h", backend="openai", base_url=url, model="m", concurrency=1)
        progress = run_judging(store, judge, list(SCORES), store.conversations(), max_attempts=3)
        assert progress.message == "finished" and progress.failed == 3
        judgments = store.judgments("h")
        assert len(judgments) == 3
        for j in judgments:
            assert j["status"] == "partial" and j["ratings"] == [None, None, None]
            assert "finite" in j["error"] or "huge" in j["error"]
        again = run_judging(store, judge, list(SCORES), store.conversations(), max_attempts=3)
        assert again.message == "finished" and again.failed == 3
        assert {j["attempts"] for j in store.judgments("h")} == {2}
    finally:
        server.stop()


def test_a_stage_that_failed_on_every_row_fails_the_job(tmp_path: Path) -> None:
    server = StrictOpenAI({SEED_JUDGE})
    url = server.start()
    try:
        rows = [
            {"source": "t", "conversation": [{"input": f"Question {i}?", "output": f"A{i}."}]}
            for i in range(3)
        ]
        (tmp_path / "convs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        recipe = {
            "name": "allfail",
            "source": {"path": str(tmp_path / "convs.jsonl")},
            "generators": [
                {"id": "orig", "backend": "original"},
                {"id": "orig2", "backend": "original"},
            ],
            "judge": {
                "id": "j",
                "backend": "openai",
                "base_url": url,
                "model": "retired-model",
                "max_retries": 0,
            },
        }
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(recipe))
        res = cli("run", str(path), "--data-dir", str(tmp_path / "ws"))
        assert res.returncode != 0, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        assert "judge: every one of the 3 rows failed" in res.stderr
        assert "HTTP 404" in res.stderr
        status = json.loads(cli("status", "--data-dir", str(tmp_path / "ws"), "--json").stdout)
        assert status["jobs"][0]["status"] == "failed"
    finally:
        server.stop()


def test_a_row_that_raises_is_recorded_failed_and_the_stage_goes_on(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong with one row's answer (here: the parser itself blows up on it),
    that row is recorded failed with the reason and every other row is judged."""
    import pipelines.judge as judge_module

    store = _store(data_dir, 4)
    real = judge_module.parse_judge_output
    server = ScriptedJudge("json")
    url = server.start()
    try:

        def parse(raw: str, n: int):  # noqa: ANN202
            # the third answer (concurrency 1: one row at a time) blows up the parser
            parse.calls += 1
            if parse.calls == 3:
                raise MemoryError("boom")
            return real(raw, n)

        parse.calls = 0
        monkeypatch.setattr(judge_module, "parse_judge_output", parse)
        judge = JudgeConfig(id="r", backend="openai", base_url=url, model="m", concurrency=1)
        progress = run_judging(store, judge, list(SCORES), store.conversations())
        assert progress.message == "finished"
        assert progress.done == 3 and progress.failed == 1
        failed = [j for j in store.judgments("r") if j["status"] == "failed"]
        assert len(failed) == 1 and "judge row failed: MemoryError" in failed[0]["error"]
        assert sum(j["status"] == "done" for j in store.judgments("r")) == 3
        # a resume retries only that row, and finishes it
        monkeypatch.setattr(judge_module, "parse_judge_output", real)
        again = run_judging(store, judge, list(SCORES), store.conversations())
        assert again.done == 4 and again.failed == 0
    finally:
        server.stop()
