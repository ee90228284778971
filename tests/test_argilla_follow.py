"""Argilla push following the judge (issue 13, "Argilla push can follow judging the same
way"): a run with generate, judge and push-argilla sends judged records to a real local Argilla
while it still judges; the final push-argilla stage sends only the rest; a dead Argilla never
stops the judging. Stub OpenAI servers on 127.0.0.1 (``tests/support``) generate and judge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelines.argilla_pairs import queue_for
from pipelines.recipe import parse_recipe
from pipelines.run import run_recipe
from pipelines.store import Store
from pipelines.types import Progress
from tests.support.argilla_server import Server, free_port
from tests.support.poll import wait_until
from tests.support.scripted_judge import ScriptedJudge
from tests.support.usage_server import UsageServer

pytestmark = [pytest.mark.server]

ROOT = Path(__file__).resolve().parent.parent

ROWS = 12
HELD = 4  # judge requests answered before the judge server holds the rest
WAIT_S = 120.0  # the held server's own limit (UsageServer waits 120 s for release)


class HeldJudge(ScriptedJudge):
    """The scripted judge, holding every request after the first ``hold_after`` until
    ``release``: the job caught mid-judging."""

    def __init__(self, hold_after: int) -> None:
        super().__init__()
        self.hold_after = hold_after
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def reply(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        if n > self.hold_after:
            self.gate.wait(WAIT_S)
        return super().reply(body, n)


def _score(i: int) -> int:
    return 3 if i % 3 == 0 else 5  # the stub generator always scores 3: every third ties


def _recipe(tmp_path: Path, gen_url: str, judge_url: str, argilla: dict[str, Any]) -> Any:
    return parse_recipe(_recipe_data(tmp_path, gen_url, judge_url, argilla))


def _recipe_data(
    tmp_path: Path, gen_url: str, judge_url: str, argilla: dict[str, Any]
) -> dict[str, Any]:
    path = tmp_path / "convs.jsonl"
    with path.open("w") as f:
        for i in range(ROWS):
            out = f"Original {i} [[score={_score(i)}]]"
            turn = {"input": f"Question number {i}?", "output": out}
            f.write(json.dumps({"conversation": [turn]}) + "\n")
    return {
        "name": "follow",
        "source": {"path": str(path), "format": "capybara"},
        "generators": [
            {
                "id": "stub",
                "backend": "openai",
                "base_url": gen_url,
                "model": "stub-model",
                "max_tokens": 16,
                "concurrency": 1,
                "max_retries": 0,
            },
            {"id": "original", "backend": "original"},
        ],
        "judge": {
            "id": "judge",
            "backend": "openai",
            "base_url": judge_url,
            "model": "judge-model",
            "max_tokens": 64,
            "structured": False,
            "max_retries": 0,
            "concurrency": 1,
        },
        "argilla": {"follow_every_s": 0.2, **argilla},
    }


def _wait(cond: Any, what: str) -> None:
    wait_until(cond, what, WAIT_S)


def _tie_ids(store: Store) -> set[str]:
    out = set()
    for conv in store.conversations():
        i = int(conv.messages[0]["content"].split()[-1].rstrip("?"))
        if _score(i) == 3:
            out.add(conv.conversation_id)
    return out


def _record_ids(server: Server, dataset_id: str) -> list[str]:
    with server.http() as h:
        r = h.get(f"/api/v1/datasets/{dataset_id}/records", params={"limit": 1000})
        r.raise_for_status()
        return [rec["external_id"] for rec in r.json()["items"]]


class Job:
    """``run_recipe`` in a thread, its progress events kept."""

    def __init__(self, recipe: Any, store: Store, stages: list[str]) -> None:
        self.events: list[Progress] = []
        self.summary: Any = None

        def run() -> None:
            self.summary = run_recipe(
                recipe, store, stages=stages, on_progress=lambda p: self.events.append(p)
            )

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(WAIT_S * 2)
        assert not self.thread.is_alive()
        return self.summary


@pytest.mark.slow
@pytest.mark.parametrize("pipelined", [True, False], ids=["generate+judge", "judge-alone"])
def test_records_reach_argilla_while_the_judge_runs(
    argilla: Server, tmp_path: Path, pipelined: bool
) -> None:
    """Mid-judging (the judge server holding its requests) the selection's judged records
    are already in Argilla; after the run the dataset holds exactly the selection (AI ties),
    each record once, and the final stage pushed only what the follower had not. Judging
    pipelined with the generation, or a judge stage of its own."""
    gen, judge = UsageServer(), HeldJudge(hold_after=HELD)
    gen_url, judge_url = gen.start(), judge.start()
    try:
        store = Store(tmp_path / "ws")
        name = f"capyui-follow-{'pipelined' if pipelined else 'judge'}"
        recipe = _recipe(tmp_path, gen_url, judge_url, {"dataset_name": name, "select": "ties"})
        run_recipe(recipe, store, stages=["load"] if pipelined else ["load", "generate"])
        ties = _tie_ids(store)
        assert len(ties) == ROWS // 3
        queue = queue_for(recipe.argilla)
        stages = ["generate", "judge", "push-argilla"] if pipelined else ["judge", "push-argilla"]
        job = Job(recipe, store, stages)
        released = False
        try:
            _wait(lambda: len(judge.bodies) > HELD, "the judge's held request")
            judged_then = store.count_judged("judge")
            assert judged_then <= HELD < ROWS

            def in_argilla() -> int:
                st = queue.status()
                return int(st.get("records") or 0) if st["ok"] else 0

            _wait(lambda: in_argilla() >= 1, "records in Argilla while the judge is held")
            # still mid-run: the judge has not finished, nothing of the final stage ran
            assert job.thread.is_alive() and store.count_judged("judge") < ROWS
            early = _record_ids(argilla, queue.status()["dataset_id"])
            judged = {
                j.conversation_id for j in store.usable_judgments("judge") if j.status == "done"
            }
            assert early and set(early) <= ties & judged  # the selection, honoured early too
            judge.release()
            released = True
            summary = job.join()
        finally:
            if not released:
                judge.release()
            job.join()
        assert summary.status == "done", summary.error
        assert summary.results["judge"]["done"] == ROWS
        final = summary.results["push-argilla"]
        followed = final["followed"]
        assert followed["error"] is None and followed["pushed"] >= len(early)
        # the final stage plans the whole selection and sends only the rest
        assert final["selected"] == len(ties)
        assert final["unchanged"] == followed["pushed"]
        assert final["created"] == len(ties) - followed["pushed"] and final["updated"] == 0
        ids = _record_ids(argilla, queue.status()["dataset_id"])
        assert sorted(ids) == sorted(ties)  # exactly the selection, no duplicates
        # a re-run sends nothing again
        again = run_recipe(recipe, store, stages=["push-argilla"])
        assert again.results["push-argilla"]["pushed"] == 0
        assert again.results["push-argilla"]["unchanged"] == len(ties)
        assert len(_record_ids(argilla, queue.status()["dataset_id"])) == len(ties)
    finally:
        gen.stop()
        judge.stop()


@pytest.mark.slow
def test_killed_mid_judging_resumes_without_duplicates(argilla: Server, tmp_path: Path) -> None:
    """`capyui run` SIGKILLed while the judge is held, after the follower pushed: the re-run
    judges the rest and pushes what is missing; Argilla holds the selection, each record once."""
    import yaml

    gen, judge = UsageServer(), HeldJudge(hold_after=HELD)
    gen_url, judge_url = gen.start(), judge.start()
    try:
        ws = tmp_path / "ws"
        data = _recipe_data(
            tmp_path, gen_url, judge_url, {"dataset_name": "capyui-follow-kill", "select": "all"}
        )
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(data))
        recipe = parse_recipe(data)
        store = Store(ws)
        run_recipe(recipe, store, stages=["load"])
        queue = queue_for(recipe.argilla)
        cli = [sys.executable, "-m", "capyui.cli", "run", str(path), "--data-dir", str(ws)]
        proc = subprocess.Popen(
            [*cli, "--stages", "generate,judge,push-argilla"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(lambda: len(judge.bodies) > HELD, "the judge's held request")
            _wait(
                lambda: int(queue.status().get("records") or 0) >= 1,
                "records in Argilla while the judge is held",
            )
            key = f"{queue.api_url}|{queue.status()['dataset_id']}"
            _wait(lambda: bool(store.argilla_push_state(key)), "the push state of those records")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(WAIT_S)
            judge.release()
        pushed = store.argilla_push_state(key)  # what the killed run recorded as sent
        assert 1 <= len(pushed) <= HELD and store.count_judged("judge") < ROWS
        summary = run_recipe(recipe, store, stages=["generate", "judge", "push-argilla"])
        assert summary.status == "done", summary.error
        assert store.count_judged("judge") == ROWS
        ids = _record_ids(argilla, queue.status()["dataset_id"])
        everyone = {c.conversation_id for c in store.conversations()}
        assert len(ids) == len(set(ids)) == ROWS and set(ids) == everyone
        final = summary.results["push-argilla"]
        assert final["selected"] == ROWS
        # every selected record accounted for once: what the killed run and this run's
        # follower sent is unchanged, the final stage creates only the rest
        assert final["failed"] == final["locked"] == final["updated"] == 0
        assert final["unchanged"] == len(pushed) + final["followed"]["pushed"]
        assert final["created"] == ROWS - final["unchanged"]
    finally:
        gen.stop()
        judge.stop()


@pytest.mark.slow
def test_pairs_mode_follows_the_judge(argilla: Server, tmp_path: Path) -> None:
    """argilla.mode: pairs: the Arena's pairs of the judged conversations go out as they are
    judged; the final dataset equals a one-shot push of the same store, no duplicates."""
    gen, judge = UsageServer(), HeldJudge(hold_after=HELD)
    gen_url, judge_url = gen.start(), judge.start()
    try:
        store = Store(tmp_path / "ws")
        conf = {"mode": "pairs", "pairs_dataset_name": "capyui-follow-pairs"}
        recipe = _recipe(tmp_path, gen_url, judge_url, conf)
        run_recipe(recipe, store, stages=["load"])
        queue = queue_for(recipe.argilla)
        job = Job(recipe, store, ["generate", "judge", "push-argilla"])
        try:
            _wait(lambda: len(judge.bodies) > HELD, "the judge's held request")
            _wait(
                lambda: int(queue.status().get("records") or 0) >= 1,
                "pairs in Argilla while the judge is held",
            )
            assert job.thread.is_alive() and store.count_judged("judge") < ROWS
        finally:
            judge.release()
        summary = job.join()
        assert summary.status == "done", summary.error
        final = summary.results["push-argilla"]
        assert final["followed"]["pushed"] >= 1
        assert final["unchanged"] == final["followed"]["pushed"]
        ids = _record_ids(argilla, queue.status()["dataset_id"])
        assert len(ids) == len(set(ids)) == final["selected"]
        # a one-shot push of the same store into a fresh dataset: the same records
        fresh = queue_for(
            recipe.argilla.model_copy(update={"pairs_dataset_name": "capyui-follow-pairs-2"})
        )
        try:
            once = fresh.push(store, "judge", ["stub", "original"])
        finally:
            fresh.close()
        assert once.selected == final["selected"] and once.created == once.selected
        assert sorted(_record_ids(argilla, fresh.status()["dataset_id"])) == sorted(ids)
    finally:
        gen.stop()
        judge.stop()


def test_argilla_down_never_stops_the_judging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens at the Argilla URL: the follower notes the error once and stops; the
    judging finishes every conversation; the final push-argilla stage fails as it always did."""
    monkeypatch.setenv("ARGILLA_API_KEY", "follow-test-key")
    gen, judge = UsageServer(), HeldJudge(hold_after=2)
    gen_url, judge_url = gen.start(), judge.start()
    try:
        store = Store(tmp_path / "ws")
        down = f"http://127.0.0.1:{free_port()}"
        recipe = _recipe(tmp_path, gen_url, judge_url, {"api_url": down, "max_retries": 0})
        run_recipe(recipe, store, stages=["load"])
        job = Job(recipe, store, ["generate", "judge", "push-argilla"])

        def noted() -> list[Progress]:
            return [p for p in list(job.events) if p.stage == "push-argilla" and p.notes]

        try:
            _wait(lambda: bool(noted()), "the follower's error note")
            assert job.thread.is_alive()  # the judge is still held: judging goes on
        finally:
            judge.release()
        summary = job.join()
        (note,) = {n for p in noted() for n in p.notes}  # one error, noted once
        assert "cannot reach Argilla" in note and "follow-test-key" not in note
        assert len([p for p in job.events if p.message.startswith("following stopped")]) == 1
        assert summary.results["judge"]["done"] == ROWS
        assert store.count_judged("judge") == ROWS
        assert summary.status == "failed" and "cannot reach Argilla" in (summary.error or "")
        assert "follow-test-key" not in json.dumps(summary.as_dict())
    finally:
        gen.stop()
        judge.stop()
