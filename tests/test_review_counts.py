"""Issue 13: the AI review queues' counts (low AI, AI ties, AI unsure, judges disagree) are kept
until a candidate or a judgment is written (a submitted review does not recount them: at 1M the
"AI unsure" count alone is seconds), always equal to the Python scan, and warmed in the
background by the service."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pipelines import review
from pipelines.recipe import parse_recipe
from pipelines.service import WorkspaceService
from pipelines.store import AI_FILTERS
from pipelines.types import Conversation, GenerationResult
from tests.test_scale import build_fixture_store, old_queue_ids

VARIANTS: list[dict[str, Any]] = [
    {},
    {"judge_id": "judge"},
    {"generator_ids": ["g1", "g2"], "judge_id": "judge2"},
    {"judge_id": "judge", "low_threshold": 3},
]


def _judged_service(tmp_path: Path) -> WorkspaceService:
    """A service over the fixture store (40 conversations, three generators, judged by
    "judge") with a recipe naming those models."""
    recipe = parse_recipe(
        {
            "name": "r",
            "source": {"path": "a.jsonl"},
            "generators": [{"id": g, "backend": "original"} for g in ("g1", "g2", "g3")],
            "judge": {"id": "judge", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                      "model": "m"},
        }
    )  # fmt: skip
    build_fixture_store(tmp_path / "ws", 6, n=40)
    return WorkspaceService(tmp_path / "ws", recipe=recipe)


def test_ai_queue_counts_are_kept_until_a_candidate_or_judgment_is_written(
    tmp_path: Path,
) -> None:
    store = build_fixture_store(tmp_path / "ws", 4, n=80)
    calls: list[str] = []
    real = store._review_queue_count

    def counting(filter: str, *args: Any) -> int:
        calls.append(filter)
        return real(filter, *args)

    store._review_queue_count = counting  # type: ignore[method-assign]

    def check(expect_counted: bool) -> None:
        for kwargs in VARIANTS:
            for f in sorted(AI_FILTERS):
                calls.clear()
                got = review.queue_count(store, f, **kwargs)
                assert got == len(old_queue_ids(store, f, **kwargs)), (f, kwargs)
                assert calls == ([f] if expect_counted else []), (f, kwargs)
                # asked again with nothing written: the kept count
                calls.clear()
                assert review.queue_count(store, f, **kwargs) == got and calls == []

    check(expect_counted=True)
    cid = store.conversation_ids()[0]
    store.put_review(cid, "zed", "ui", ratings={"g1/0": 1}, chosen="g1/0")
    check(expect_counted=False)  # a review changes none of them
    # a judgment rewritten in place (same row, new ratings): counted again
    judged = next(j for j in store.judgments("judge") if j["status"] == "done")
    keys = judged["candidate_keys"]
    store.put_judgment(
        judged["conversation_id"],
        "judge",
        model="m",
        candidate_keys=keys,
        ratings=[1] * len(keys),
        rationales=[None] * len(keys),
        order_shown=list(range(len(keys))),
        seed=0,
        raw_output=None,
        error=None,
        status="done",
    )
    check(expect_counted=True)
    # a new conversation with a candidate (no judgment: "AI unsure" grows)
    conv = Conversation(messages=[{"role": "user", "content": "late arrival"}])
    store.add_conversations([conv])
    store.put_candidate(conv.conversation_id, "g1", 0, GenerationResult(key=None, text="x"))
    check(expect_counted=True)


def test_the_service_warms_the_ai_queue_counts(tmp_path: Path) -> None:
    service = _judged_service(tmp_path)
    gens, judge = service.model_ids()
    kw: dict[str, Any] = {"generator_ids": gens, "judge_id": judge}
    assert all(service.store.cached_queue_count(f, **kw) is None for f in AI_FILTERS)
    service.warm_review_counts()
    for t in threading.enumerate():
        if t.name == "capyui-review-counts":
            t.join(timeout=60)
    assert gens == ["g1", "g2", "g3"] and judge == "judge"
    for f in AI_FILTERS:
        cached = service.store.cached_queue_count(f, **kw)
        assert cached == len(old_queue_ids(service.store, f, **kw)), f
    assert service.store.cached_queue_count("low_ai", **kw)  # the fixture has some


def test_results_preview_is_warmed_only_up_to_its_size_limit(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from pipelines import service as service_module

    build_fixture_store(tmp_path / "ws", 7, n=30)
    recipe = parse_recipe(
        {
            "name": "r",
            "source": {"path": "a.jsonl"},
            "generators": [{"id": g, "backend": "original"} for g in ("g1", "g2", "g3")],
        }
    )
    reviewable = review.review_progress(
        WorkspaceService(tmp_path / "ws", recipe=recipe).store, generator_ids=["g1", "g2", "g3"]
    )["reviewable"]
    assert reviewable > 2
    for limit, warmed in ((reviewable - 1, False), (reviewable, True)):
        monkeypatch.setattr(service_module, "WARM_PREVIEW_MAX", limit)
        service = WorkspaceService(tmp_path / "ws", recipe=recipe)
        service.warm_preview()
        for t in threading.enumerate():
            if t.name == "capyui-results-warm":
                t.join(timeout=60)
        assert (service._preview_cache is not None) == warmed, limit


def test_a_finished_job_recounts_the_ai_queues_in_the_background(tmp_path: Path) -> None:
    """A job's generations and judgments make the kept counts stale; old code recounted only
    at app start, after a recipe change or when a queue opened, so the first open after a
    judge job counted synchronously (~4 s for "AI unsure" at 1M)."""
    service = _judged_service(tmp_path)
    service.on_job_finish(service.warm_review_counts)
    gens, judge = service.model_ids()
    kw: dict[str, Any] = {"generator_ids": gens, "judge_id": judge}
    # a conversation the fixture never generated for: the job answers it with its own answer
    service.store.add_conversations(
        [Conversation(messages=[{"role": "user", "content": "new"}], original_response="a")]
    )
    assert all(service.store.cached_queue_count(f, **kw) is None for f in AI_FILTERS)
    service.jobs.start(service.recipe, ["generate"], name="gen")
    handle = service.jobs.wait(600)
    assert handle is not None and handle.summary is not None and handle.error is None
    for t in threading.enumerate():
        if t.name == "capyui-review-counts":
            t.join(timeout=600)
    for f in AI_FILTERS:
        assert service.store.cached_queue_count(f, **kw) is not None, f
