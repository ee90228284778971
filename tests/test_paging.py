"""Issue 13: generate and judge read the selected conversations from the store a page at a time
(keyset paging), with the same rows, the same resume (only what is missing) and the same
pipelining as when every conversation was held at once (scripted servers on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines import generate, judge, run
from pipelines.recipe import Recipe
from pipelines.run import run_recipe, selected_conversations
from pipelines.store import Store
from pipelines.types import Progress
from tests.support.scripted_generator import ScriptedGenerator
from tests.test_pipeline import _recipe_dict, _write_data, convs


def test_selected_conversations_pages_in_load_order_up_to_the_limit(tmp_path: Path) -> None:
    store = Store(tmp_path / "ws")
    cs = convs(12)
    store.add_conversations(cs)
    want = [c.conversation_id for c in store.conversations()]
    pages = list(selected_conversations(store, None, page_rows=5))
    assert [len(p) for p, _ in pages] == [5, 5, 2]
    assert [last for _, last in pages] == [False, False, True]
    assert [c.conversation_id for p, _ in pages for c in p] == want
    limited = list(selected_conversations(store, 7, page_rows=5))
    assert [len(p) for p, _ in limited] == [5, 2] and limited[-1][1]
    assert [c.conversation_id for p, _ in limited for c in p] == want[:7]
    assert list(selected_conversations(store, 0, page_rows=5)) == []
    assert [len(p) for p, _ in selected_conversations(store, 10, page_rows=5)] == [5, 5]


@pytest.fixture
def servers() -> Any:
    generator, judge_server = ScriptedGenerator(), ScriptedGenerator()
    urls = generator.start(), judge_server.start()
    yield generator, judge_server, urls
    generator.stop()
    judge_server.stop()


def _spy_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many conversations each generation / judging call was handed."""
    sizes: list[int] = []
    real_gen = generate.plan_generation
    real_judge = judge.plan_judging

    def plan_gen(store: Store, gens: Any, conversations: Any, *a: Any, **k: Any) -> Any:
        sizes.append(len(conversations))
        return real_gen(store, gens, conversations, *a, **k)

    def plan_judge(store: Store, j: Any, ids: Any, conversations: Any, *a: Any, **k: Any) -> Any:
        sizes.append(len(conversations))
        return real_judge(store, j, ids, conversations, *a, **k)

    monkeypatch.setattr(generate, "plan_generation", plan_gen)
    monkeypatch.setattr(judge, "plan_judging", plan_judge)
    return sizes


@pytest.mark.parametrize("pipelined", [True, False])
def test_stages_run_page_by_page_and_resume_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: Any, pipelined: bool
) -> None:
    generator, judge_server, (gen_url, judge_url) = servers
    monkeypatch.setattr(run, "PAGE_ROWS", 5)
    sizes = _spy_sizes(monkeypatch)
    recipe = Recipe.model_validate(_recipe_dict(_write_data(tmp_path, 12), gen_url, judge_url))
    store = Store(tmp_path / "ws")
    run_recipe(recipe, store, stages=["load"])
    seen: list[Progress] = []
    stages = [["generate", "judge"]] if pipelined else [["generate"], ["judge"]]
    # a first run over the first 7 conversations only (a limit spanning two pages)
    for st in stages:
        first = run_recipe(recipe, store, stages=st, limit=7)
        assert first.status == "done", first.error
    assert len(store.candidate_rows()) == 14 and len(store.judgments("j")) == 7
    assert max(sizes) <= 5  # never more than a page at once (the old code: all 7, then all 12)
    sent = (len(generator.generations()), len(judge_server.judgments()))
    assert sent == (14, 7)
    # the whole set: only the 5 missing conversations are generated and judged
    results: dict[str, Any] = {}
    for st in stages:
        summary = run_recipe(recipe, store, stages=st, on_progress=seen.append)
        assert summary.status == "done", summary.error
        results.update(summary.results)
    assert len(generator.generations()) - sent[0] == 10
    assert len(judge_server.judgments()) - sent[1] == 5
    assert results["generate"]["done"] == 24 and results["generate"]["skipped"] == 14
    assert results["generate"]["total"] == 24 and results["judge"]["total"] == 12
    assert results["judge"]["done"] == 12 and results["judge"]["skipped"] == 7
    assert len(store.candidate_rows()) == 24 and len(store.judgments("j")) == 12
    assert all(j["status"] == "done" for j in store.judgments("j"))
    # progress adds up over the pages: done never goes back, one "finished" per stage
    for stage in ("generate", "judge"):
        mine = [p for p in seen if p.stage == stage]
        dones = [p.done for p in mine]
        assert dones == sorted(dones) and dones[-1] == (24 if stage == "generate" else 12)
        assert [p.message for p in mine].count("finished") == 1
        assert mine[-1].message == "finished"
    # and a third run has nothing to send
    before = (len(generator.generations()), len(judge_server.judgments()))
    for st in stages:
        assert run_recipe(recipe, store, stages=st).status == "done"
    assert (len(generator.generations()), len(judge_server.judgments())) == before


def test_an_endpoint_that_ignores_n_is_remembered_across_runs_and_pages(tmp_path: Path) -> None:
    """The n capability is learnt once per endpoint (a backend capability, issue 13): after a
    llama.cpp-like server answered one choice to an ``n`` request, later runs (and later pages
    of a paged stage) send it one request per sample without asking with ``n`` again; a server
    that honours ``n`` keeps getting one request per conversation."""
    from pipelines.config import GeneratorConfig
    from pipelines.generate import run_generation

    for honour in (False, True):
        server = ScriptedGenerator(honour_n=honour)
        url = server.start()
        try:
            store = Store(tmp_path / f"ws-{honour}")
            cs = convs(6)
            store.add_conversations(cs)
            gen = GeneratorConfig(
                id="g", backend="openai", base_url=url, model="m", samples=3,
                concurrency=1, max_retries=0,
            )  # fmt: skip
            assert run_generation(store, [gen], cs[:2]).done == 6
            first = list(server.generations())
            assert run_generation(store, [gen], cs[2:]).done == 12
            later = server.generations()[len(first) :]
            if honour:
                assert len(first) == 2 and len(later) == 4
                assert all(r.body.get("n") == 3 for r in first + later)
            else:
                assert len(first) == 6 and sum(1 for r in first if r.body.get("n")) == 1
                assert len(later) == 12 and not [r for r in later if r.body.get("n")]
            assert len(store.candidate_rows()) == 18
        finally:
            server.stop()
