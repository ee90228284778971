"""The judge stage: constrained output from the real embedded model through the real llama.cpp
server always parses; shuffled candidate order maps back exactly; resume and re-judging."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipelines.config import JudgeConfig
from pipelines.judge import run_judging, shown_order
from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult
from tests.support.fault_proxy import FaultProxy
from tests.support.scripted_judge import ScriptedJudge

ANSWERS = {
    "g1": "Paris is the capital of France.",
    "g2": "The capital of France is Paris, on the Seine.",
    "g3": "I think it is Lyon.",
    "original": "Paris.",
}


def seed_store(data_dir: Path, n: int, texts: dict[int, dict[str, str]] | None = None) -> Store:
    store = Store(data_dir)
    for i in range(n):
        conv = Conversation(
            messages=[
                {"role": "system", "content": "You are concise."},
                {"role": "user", "content": f"Hi, I have a geography question ({i})."},
                {"role": "assistant", "content": "Sure, ask away."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            source="t",
        )
        store.add_conversations([conv])
        for gen, text in (texts or {}).get(i, ANSWERS).items():
            store.put_candidate(
                conv.conversation_id, gen, 0, GenerationResult(key=None, text=text, model=gen)
            )
    return store


@pytest.mark.server
def test_constrained_judge_on_real_llama_server_always_parses(
    llama_server: str, data_dir: Path
) -> None:
    store = seed_store(data_dir, 4)
    judge = JudgeConfig(
        id="smol",
        backend="openai",
        base_url=llama_server,
        model="smollm2",
        max_tokens=400,
        max_rationale_chars=80,
        timeout_s=1800,  # the calibration call below: bounded, never near the real latency
        max_retries=0,
    )
    convs = store.conversations()
    # The request timeout comes from what this machine measures: the first judgment (it counts)
    # is timed, the others get many times that, so a CPU saturated by other work slows the
    # test down instead of failing it.
    started = time.monotonic()
    first = run_judging(store, judge, list(ANSWERS), convs[:1])
    assert first.done == 1 and first.failed == 0, first.message
    judge.timeout_s = max(120.0, 8 * (time.monotonic() - started))
    progress = run_judging(store, judge, list(ANSWERS), convs)
    assert progress.done == 4 and progress.failed == 0, progress.message
    assert progress.skipped == 1
    for j in store.judgments("smol"):
        assert j["status"] == "done" and j["error"] is None
        assert j["candidate_keys"] == ["g1/0", "g2/0", "g3/0", "original/0"]
        assert all(isinstance(r, int) and 1 <= r <= 5 for r in j["ratings"])
        assert all(isinstance(t, str) for t in j["rationales"])
        assert sorted(j["order_shown"]) == [0, 1, 2, 3]
        assert j["order_shown"] == shown_order(j["conversation_id"], 4, judge.shuffle_seed)
        assert j["raw_output"].lstrip().startswith("{")
        assert j["attempts"] == 1  # parsed on the first try, every time


@pytest.mark.parametrize("style", ["text", "json", "preamble"])
def test_shuffled_order_maps_back_to_the_right_candidates(data_dir: Path, style: str) -> None:
    scores = {"a": 5, "b": 1, "c": 3, "d": 4}
    texts = {i: {g: f"answer {g} {i} [[score={s}]]" for g, s in scores.items()} for i in range(6)}
    store = seed_store(data_dir, 6, texts)
    server = ScriptedJudge(style)
    url = server.start()
    try:
        judge = JudgeConfig(
            id="scripted", backend="openai", base_url=url, model="m", structured=style == "json"
        )
        progress = run_judging(store, judge, list(scores), store.conversations())
        assert progress.done == 6
        orders = set()
        for j in store.judgments("scripted"):
            assert j["candidate_keys"] == ["a/0", "b/0", "c/0", "d/0"]
            assert j["ratings"] == [5, 1, 3, 4]
            assert j["rationales"][0].startswith("scored 5")
            orders.add(tuple(j["order_shown"]))
        assert len(orders) > 1  # the order really was shuffled per conversation
        # what the judge saw at each position is the candidate order_shown points at
        for j in store.judgments("scripted"):
            conv = store.conversation(j["conversation_id"])
            i = conv.messages[1]["content"].rsplit("(", 1)[1].rstrip(").")
            body = next(b for b in server.bodies if f"geography question ({i})" in str(b))
            shown = body["messages"][-1]["content"].rsplit("Texts:", 1)[-1]
            for pos, idx in enumerate(j["order_shown"]):
                assert f"<text {pos + 1}> answer {'abcd'[idx]} {i} " in shown
    finally:
        server.stop()


def test_unreadable_rating_is_null_with_reason_and_retried_on_rerun(data_dir: Path) -> None:
    texts = {0: {"a": "x [[score=4]]", "b": "y (no score)"}}
    store = seed_store(data_dir, 1, texts)
    server = ScriptedJudge("text")
    url = server.start()
    try:
        judge = JudgeConfig(id="s", backend="openai", base_url=url, model="m", structured=False)
        progress = run_judging(store, judge, ["a", "b"], store.conversations(), max_attempts=2)
        assert progress.failed == 1 and len(server.bodies) == 3  # first try + 2 parse retries
        j = store.judgments("s")[0]
        assert j["status"] == "partial" and j["ratings"] == [4, None]
        assert "Text" in j["error"] and "(b/0)" in j["error"]
        run_judging(store, judge, ["a", "b"], store.conversations(), max_attempts=2)
        assert store.judgments("s")[0]["attempts"] == 2
        before = len(server.bodies)
        run_judging(store, judge, ["a", "b"], store.conversations(), max_attempts=2)
        assert len(server.bodies) == before  # gave up after max_attempts
    finally:
        server.stop()


def test_resume_skips_done_and_rejudges_when_candidates_change(data_dir: Path) -> None:
    texts = {i: {"a": "x [[score=2]]", "b": "y [[score=5]]"} for i in range(3)}
    store = seed_store(data_dir, 3, texts)
    server = ScriptedJudge("json")
    url = server.start()
    try:
        judge = JudgeConfig(id="s", backend="openai", base_url=url, model="m")
        run_judging(store, judge, ["a", "b"], store.conversations())
        assert len(server.bodies) == 3
        again = run_judging(store, judge, ["a", "b"], store.conversations())
        assert again.skipped == 3 and len(server.bodies) == 3
        # a new generator adds a candidate to one conversation: only that one is re-judged
        cid = store.conversations()[0].conversation_id
        store.put_candidate(cid, "c", 0, GenerationResult(key=None, text="z [[score=3]]"))
        third = run_judging(store, judge, ["a", "b", "c"], store.conversations())
        assert len(server.bodies) == 4 and third.skipped == 2
        j = store.judgment(cid, "s")
        assert j["candidate_keys"] == ["a/0", "b/0", "c/0"] and j["ratings"] == [2, 5, 3]
    finally:
        server.stop()


def test_reverse_pass_averages_two_orders(data_dir: Path) -> None:
    texts = {0: {"a": "x [[score=2]]", "b": "y [[score=5]]", "c": "z [[score=3]]"}}
    store = seed_store(data_dir, 1, texts)
    server = ScriptedJudge("text")
    url = server.start()
    try:
        judge = JudgeConfig(
            id="s", backend="openai", base_url=url, model="m", structured=False, reverse_pass=True
        )
        run_judging(store, judge, ["a", "b", "c"], store.conversations())
        assert len(server.bodies) == 2
        first = server.bodies[0]["messages"][-1]["content"].rsplit("Texts:", 1)[-1]
        second = server.bodies[1]["messages"][-1]["content"].rsplit("Texts:", 1)[-1]
        order = [first.index(f"[[score={s}]]") for s in (2, 5, 3)]
        reverse = [second.index(f"[[score={s}]]") for s in (2, 5, 3)]
        # the second pass showed the candidates in the opposite order
        assert sorted(range(3), key=order.__getitem__) == sorted(
            range(3), key=reverse.__getitem__, reverse=True
        )
        assert store.judgments("s")[0]["ratings"] == [2, 5, 3]
    finally:
        server.stop()


@pytest.mark.server
def test_judge_backend_failure_is_recorded_and_retried(llama_server: str, data_dir: Path) -> None:
    store = seed_store(data_dir, 2)
    proxy = FaultProxy(upstream=llama_server.rsplit("/v1", 1)[0], schedule=lambda n, p: "500")
    url = proxy.start() + "/v1"
    try:
        judge = JudgeConfig(id="j", backend="openai", base_url=url, model="smollm2", max_retries=0)
        progress = run_judging(store, judge, list(ANSWERS), store.conversations())
        assert progress.failed == 2
        assert all(
            j["status"] == "failed" and "HTTP 500" in j["error"] for j in store.judgments("j")
        )
        assert len(proxy.completions()) == 2  # a backend error is not retried in a loop
    finally:
        proxy.stop()
