"""The workspace service (issue 9): one API for the CLI and every tab, each operation checking
its caller's role; typed results; paged review and SQL results reads (issue 13)."""

from __future__ import annotations

import json
import random
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.service import (
    QUEUE_PAGE,
    BinarizePreview,
    QueuePage,
    ServiceError,
    WorkspaceService,
)
from pipelines.store import Store
from pipelines.types import Conversation
from pipelines.workspace import Actor, Forbidden, Policy, Role

OWNER = Actor("olga", Role.OWNER)
REVIEWER = Actor("rita", Role.REVIEWER)
NOBODY = Actor(None, Role.ANONYMOUS)
GENS = ("gen-a", "gen-b")


def _populate(path: Path, n: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    store = Store(path)
    convs = [
        Conversation(messages=[{"role": "user", "content": f"question {i} {rng.random()}"}])
        for i in range(n)
    ]
    store.add_conversations(convs)
    now = time.time()
    cands, judgs = [], []
    for c in convs:
        keys = []
        for g in GENS:
            cands.append((c.conversation_id, g, 0, "m-" + g, "{}", "done", f"{g} answer", 1, 1,
                          0.1, "stop", None, 1, now))  # fmt: skip
            keys.append(f"{g}/0")
        ratings = [rng.choice([1, 2, 3, 4, 5]) for _ in keys]
        judgs.append((c.conversation_id, "judge", "jm", "done", json.dumps(keys),
                      json.dumps(ratings), json.dumps(["r"] * 2), json.dumps([0, 1]), 0,
                      None, None, 1, now))  # fmt: skip
    store.import_candidates(cands)
    store.import_judgments(judgs)
    recipe = {
        "name": "svc",
        "source": {"path": str(path / "none.jsonl")},
        "generators": [{"id": g, "backend": "original"} for g in GENS],
        "judge": {"id": "judge", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                  "model": "jm"},
        "export": {"formats": ["jsonl"], "out": "export"},
    }  # fmt: skip
    (path / "recipe.yaml").write_text(yaml.safe_dump(recipe))


@pytest.fixture
def svc(tmp_path: Path) -> WorkspaceService:
    _populate(tmp_path, 3 * QUEUE_PAGE + 7)
    return WorkspaceService(tmp_path, Policy(frozenset({"olga"}), frozenset({"rita"})))


def test_every_operation_checks_the_callers_role(svc: WorkspaceService) -> None:
    """The CLI and any front end get the app's authorization: the service refuses by itself."""
    owner_only = [
        lambda a: svc.export(a, ["jsonl"]),
        lambda a: svc.publish(a, "x/y", private=True, user_token="hf_x"),
        lambda a: svc.save_binarize_options(a, {"strategy": "all-pairs"}),
        lambda a: svc.start_job(a, ["generate"]),
        lambda a: svc.cancel_job(a),
        lambda a: svc.load_file(a, "nothing.jsonl"),
        lambda a: svc.argilla_pull(a, None),
        lambda a: svc.argilla_live(a, None),
    ]
    for op in owner_only:
        for actor in (REVIEWER, NOBODY):
            with pytest.raises(Forbidden, match="owner role"):
                op(actor)
    cid = svc.review_queue(REVIEWER, "all", "rita").ids[0]
    with pytest.raises(Forbidden):
        svc.review_queue(NOBODY, "all", None)
    with pytest.raises(Forbidden):
        svc.results_overview(NOBODY)
    with pytest.raises(Forbidden):
        svc.submit_review(NOBODY, cid, "x", candidate_keys=["gen-a/0"], ratings={"gen-a/0": 3},
                          chosen=None, rejected=None, discard=False, comment=None,
                          expected_version=None)  # fmt: skip
    assert svc.store.reviews() == []
    demo = WorkspaceService(svc.data_dir, Policy(frozenset(), frozenset(), demo=True))
    assert demo.review_queue(NOBODY, "all", None).total == 3 * QUEUE_PAGE + 7  # demo: look
    with pytest.raises(Forbidden):
        demo.submit_review(NOBODY, cid, "x", candidate_keys=["gen-a/0"], ratings={"gen-a/0": 3},
                           chosen=None, rejected=None, discard=False, comment=None,
                           expected_version=None)  # fmt: skip


def test_review_queue_is_read_a_page_at_a_time(
    svc: WorkspaceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the queue and moving through it read pages (keyset), never the whole id list."""
    limits: list[Any] = []
    real = Store.review_queue

    def spy(self: Store, *args: Any, **kw: Any) -> list[str]:
        limits.append(kw.get("limit"))
        return real(self, *args, **kw)

    monkeypatch.setattr(Store, "review_queue", spy)
    n = 3 * QUEUE_PAGE + 7
    page = svc.review_queue(REVIEWER, "all", "rita")
    assert isinstance(page, QueuePage) and len(page.ids) == QUEUE_PAGE and page.total == n
    assert not page.complete
    seen = list(page.ids)
    while not page.complete:
        page = svc.review_more(REVIEWER, page)
    assert page.ids[:QUEUE_PAGE] == seen and len(page.ids) == len(set(page.ids)) == n
    assert limits and all(limit == QUEUE_PAGE for limit in limits)
    monkeypatch.setattr(Store, "review_queue", real)
    assert page.ids == svc.store.review_queue("all", generator_ids=list(GENS), judge_id="judge")
    # unreviewed: the count follows the reviews (an aggregate), the page what is left
    item = svc.review_item(REVIEWER, page.ids[0], "rita")
    keys = [c.key for c in item.candidates]
    svc.submit_review(REVIEWER, page.ids[0], "rita", candidate_keys=keys,
                      ratings={keys[0]: 5, keys[1]: 1}, chosen=None, rejected=None,
                      discard=False, comment=None, expected_version=None)  # fmt: skip
    left = svc.review_queue(REVIEWER, "unreviewed", "rita")
    assert left.total == n - 1 and page.ids[0] not in left.ids
    with pytest.raises(ServiceError, match="unknown filter"):
        svc.review_queue(REVIEWER, "bogus", "rita")


def test_submit_errors_are_one_line_service_errors(svc: WorkspaceService) -> None:
    cid = svc.review_queue(REVIEWER, "all", "rita").ids[0]
    keys = [c.key for c in svc.review_item(REVIEWER, cid, "rita").candidates]
    with pytest.raises(ServiceError, match="must be different"):
        svc.submit_review(REVIEWER, cid, "rita", candidate_keys=keys, ratings={},
                          chosen=keys[0], rejected=keys[0], discard=False, comment=None,
                          expected_version=None)  # fmt: skip
    version = svc.review_version(REVIEWER, cid, "rita")
    done = svc.submit_review(REVIEWER, cid, "rita", candidate_keys=keys, ratings={keys[0]: 4},
                             chosen=None, rejected=None, discard=False, comment=" ok ",
                             expected_version=version)  # fmt: skip
    assert done.ratings == {keys[0]: 4} and done.comment == "ok" and not done.accepted_ai
    with pytest.raises(ServiceError, match="changed since you opened it"):
        svc.submit_review(REVIEWER, cid, "rita", candidate_keys=keys, ratings={keys[0]: 2},
                          chosen=None, rejected=None, discard=False, comment=None,
                          expected_version=version)  # fmt: skip


def test_results_first_look_reads_aggregates_and_one_page(
    svc: WorkspaceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Results tab's first look: SQL statistics and the pairs of the first conversations;
    the whole-store binarize runs only for the Preview, a chunk of conversations at a time."""
    import importlib

    import pipelines.binarize as binarize
    import pipelines.service as service

    collect_module = importlib.import_module("pipelines.binarize.collect")

    collected: list[Any] = []
    real = binarize.collect

    def spy(store: Any, **kw: Any) -> Any:
        collected.append(kw.get("conversation_ids"))
        return real(store, **kw)

    monkeypatch.setattr(binarize, "collect", spy)
    monkeypatch.setattr(collect_module, "collect", spy)
    monkeypatch.setattr(service, "PREVIEW_CHUNK_ROWS", 40)
    overview = svc.results_overview(REVIEWER)
    assert overview.reviewable == 3 * QUEUE_PAGE + 7 and overview.not_generated == 0
    assert {m["model"] for m in overview.stats["models"]} == {"m-gen-a", "m-gen-b"}
    assert overview.generator_of == {"m-gen-a": "gen-a", "m-gen-b": "gen-b"}
    sample = svc.sample_pairs(REVIEWER, {}, rows=20, limit=5)
    assert 0 < len(sample) <= 5
    assert collected and all(ids is not None and len(ids) <= 20 for ids in collected)
    collected.clear()
    preview = svc.binarize_preview(REVIEWER, {"strategy": "all-pairs"})
    assert isinstance(preview, BinarizePreview)
    # the whole store, 40 conversations at a time, each once
    assert all(ids is not None and len(ids) <= 40 for ids in collected)
    assert sum(len(ids) for ids in collected) == len({i for ids in collected for i in ids})
    assert sum(len(ids) for ids in collected) == 3 * QUEUE_PAGE + 7
    assert preview.summary["rows_in"] == 3 * QUEUE_PAGE + 7 and len(preview.pairs) <= 5
    assert svc.cached_preview(REVIEWER, {"strategy": "all-pairs"}) is preview
    assert svc.binarize_preview(REVIEWER, {"strategy": "all-pairs"}) is preview  # reused
    assert svc.cached_preview(REVIEWER, {"strategy": "best-vs-worst"}) is None


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_the_chunked_preview_equals_binarizing_the_whole_store_at_once(
    svc: WorkspaceService, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Old code binarized every conversation in one list (670 MB at 20k conversations, so a
    million did not fit in memory); the chunked preview must give the very same answer."""
    import pipelines.service as service
    from pipelines.binarize import binarize, collect
    from pipelines.stats import store_stats

    svc.store.add_conversations([Conversation(messages=[{"role": "user", "content": "new"}])])
    monkeypatch.setattr(service, "PREVIEW_CHUNK_ROWS", chunk)
    changes = {"strategy": "all-pairs"}
    preview = svc.binarize_preview(OWNER, changes)

    options = svc.binarize_options(changes)
    rows = collect(svc.store, generator_ids=list(GENS), judge_id="judge")
    generated = [r for r in rows if r.candidates]
    whole = binarize(generated, options)
    labels = whole.table.select(["chosen_model", "rejected_model", "rating_source"]).to_pylist()
    assert preview.summary == {**whole.summary(), "not_generated": 1}
    assert preview.num_pairs == whole.num_pairs > 0
    assert preview.pairs == whole.table.slice(0, service.PREVIEW_PAIRS).to_pylist()
    expected = store_stats(svc.store, generator_ids=list(GENS), judge_id="judge", pairs=labels)
    assert preview.stats == expected


def test_invalid_options_and_strategies_come_from_the_engine(svc: WorkspaceService) -> None:
    """No copy of the strategy names in the UI; a refused option is a typed error, and an
    export with it writes nothing (before: detected by a CSS class in rendered HTML)."""
    from pipelines.binarize import BinarizeOptions

    names = typing.get_args(BinarizeOptions.model_fields["strategy"].annotation)
    assert svc.strategies() == list(names)
    with pytest.raises(ServiceError, match="Invalid options"):
        svc.binarize_preview(OWNER, {"strategy": "bogus"})
    with pytest.raises(ServiceError, match="Invalid options"):
        svc.export(OWNER, ["jsonl"], {"strategy": "best-vs-worst", "min_margin": -1})
    assert not (svc.data_dir / "export").exists()
    made = svc.export(OWNER, ["jsonl"], {"strategy": "best-vs-worst"})
    assert made.pairs > 0 and (made.out_dir / "README.md") in made.files
    assert any(p.name.startswith("train-") for p in made.files)
    with pytest.raises(ServiceError, match="at least one format"):
        svc.export(OWNER, [])


def test_tabs_hold_no_engine_logic_or_module_state() -> None:
    import capyui.tabs.argilla as argilla_tab
    import capyui.tabs.results as results_tab

    src = Path(results_tab.__file__).read_text()
    assert "cu-error" not in src and "best-vs-random-lower" not in src
    assert "binarize_stage" not in src and "push_to_hub" not in src
    for mod in (argilla_tab, results_tab):
        state = [
            k
            for k, v in vars(mod).items()
            if k.startswith("_") and isinstance(v, (dict, set, list)) and not k.startswith("__")
        ]
        assert state == [], (mod.__name__, state)
    for path in Path(results_tab.__file__).parent.glob("*.py"):
        assert "ws: Any" not in path.read_text(), path
