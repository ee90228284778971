"""Engine behaviour behind the Review / Run / Results polish of issue 12 (no server).

* a review must say something; picks default from the ratings; accepting the AI's suggestion
  untouched is recorded (``accepted_ai``) and counted apart in the stats;
* placeholder rationales (the template's ``[rationale for text 2]``) are detected and counted
  as judge failures;
* progress has a real ETA (none before the first row, never "0 s" while work remains), a live
  rate, and a job remembers the limit it ran with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.binarize import JudgedConversation
from pipelines.judge_quality import placeholder_rationale
from pipelines.records import CandidateRow
from pipelines.review import ReviewError, default_picks, submit_review
from pipelines.stats import compute_stats, review_counts
from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult, Progress

KEYS = ["a/0", "b/0", "c/0"]


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "ws")
    conv = Conversation(messages=[{"role": "user", "content": "Why is the sky blue?"}])
    s.add_conversations([conv])
    for key in KEYS:
        gen = key.split("/")[0]
        s.put_candidate(conv.conversation_id, gen, 0, GenerationResult(key=None, text=f"{gen}!"))
    s.put_judgment(
        conv.conversation_id,
        "judge",
        model="j",
        candidate_keys=KEYS,
        ratings=[4, 2, 5],
        rationales=["fine", "[rationale for text 2]", "best"],
        order_shown=[0, 1, 2],
        seed=0,
        raw_output=None,
        error=None,
    )
    s.cid = conv.conversation_id  # type: ignore[attr-defined]
    return s


def test_empty_review_is_refused_and_nothing_stored(store: Store) -> None:
    with pytest.raises(ReviewError, match="rate at least one candidate"):
        submit_review(store, store.cid, "bob", candidate_keys=KEYS, ratings={}, comment="hm")
    with pytest.raises(ReviewError, match="rate at least one candidate"):
        submit_review(store, store.cid, "bob", candidate_keys=KEYS, ratings={"a/0": None})
    assert store.reviews() == []
    # any one of a rating, a pick or a discard is a review
    submit_review(store, store.cid, "bob", candidate_keys=KEYS, discard=True)
    submit_review(store, store.cid, "eve", candidate_keys=KEYS, chosen="b/0")
    submit_review(store, store.cid, "ann", candidate_keys=KEYS, ratings={"c/0": 3})
    assert len(store.reviews()) == 3


def test_picks_default_from_ratings(store: Store) -> None:
    out = submit_review(
        store, store.cid, "bob", candidate_keys=KEYS, ratings={"a/0": 5, "b/0": 1, "c/0": 3}
    )
    assert (out["chosen"], out["rejected"]) == ("a/0", "b/0")
    stored = store.reviews()[0]
    assert (stored["chosen"], stored["rejected"]) == ("a/0", "b/0")
    # an explicit pick wins; a tie at the top implies no chosen
    out = submit_review(
        store,
        store.cid,
        "bob",
        candidate_keys=KEYS,
        ratings={"a/0": 5, "b/0": 1, "c/0": 3},
        chosen="c/0",
    )
    assert (out["chosen"], out["rejected"]) == ("c/0", "b/0")
    assert default_picks({"a/0": 4, "b/0": 4, "c/0": 1}) == (None, "c/0")
    assert default_picks({"a/0": 4}) == (None, None)


def test_accepting_the_ai_suggestion_is_recorded_and_counted_apart(store: Store) -> None:
    ai = {"a/0": 4, "b/0": 2, "c/0": 5}
    out = submit_review(store, store.cid, "bob", candidate_keys=KEYS, ratings=ai, judge_id="judge")
    assert out["accepted_ai"] is True
    assert (out["chosen"], out["rejected"]) == ("c/0", "b/0")
    # one rating changed: a human judgment
    own = {**ai, "a/0": 3}
    out = submit_review(store, store.cid, "eve", candidate_keys=KEYS, ratings=own, judge_id="judge")
    assert out["accepted_ai"] is False
    # the AI's ratings but a different pick: a human judgment too
    out = submit_review(
        store, store.cid, "ann", candidate_keys=KEYS, ratings=ai, chosen="a/0", judge_id="judge"
    )
    assert out["accepted_ai"] is False
    by = {r["reviewer"]: r["accepted_ai"] for r in store.reviews()}
    assert by == {"bob": True, "eve": False, "ann": False}
    counts = review_counts(store.reviews())
    assert counts == {"reviews": 3, "human_judged": 2, "accepted_ai": 1, "discarded": 0}
    stats = compute_stats([], [], store.reviews())
    assert stats["reviews"]["accepted_ai"] == 1 and stats["reviews"]["human_judged"] == 2


@pytest.mark.parametrize(
    "text",
    [
        "[rationale for text 2]",
        "[Rationale for the rating in short sentences, at most 20 characters]",
        "rationale for text 1",
        "<rationale>",
        "...",
        "N/A",
        "[Text 3]",
    ],
)
def test_placeholder_rationales_are_detected(text: str) -> None:
    assert placeholder_rationale(text)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "Accurate and concise.",
        "Text 2 is better because it explains each step.",
        "Gives the rating scale but no reason for text 1 being wrong about Rayleigh scattering",
    ],
)
def test_real_rationales_are_not_flagged(text: str | None) -> None:
    assert not placeholder_rationale(text)


def test_placeholder_rationales_count_as_judge_failures() -> None:
    conv = Conversation(messages=[{"role": "user", "content": "q"}])
    rows = [
        JudgedConversation(
            conversation=conv,
            candidates=[CandidateRow(k, k[0], k[0], "t") for k in KEYS],
            ai_ratings=[4, 2, 5],
            rationales=["fine", "[rationale for text 2]", "[rationale for text 3]"],
        ),
        JudgedConversation(
            conversation=conv,
            candidates=[CandidateRow(k, k[0], k[0], "t") for k in KEYS[:2]],
            ai_ratings=[4, 2],
            rationales=["fine", "good enough"],
        ),
    ]
    quality = compute_stats(rows)["judge_quality"]
    assert quality == {"placeholder_rationales": 2, "judgments_with_placeholders": 1}


def test_eta_is_unknown_before_the_first_row_and_never_zero_while_work_remains() -> None:
    p = Progress(stage="judge", done=0, total=2, elapsed_s=160.0)
    assert p.eta_s is None and p.eta_at(160.0) is None and p.rate_per_min(160.0) == 0.0
    p.done = 1
    assert p.eta_at(60.0) == pytest.approx(60.0)
    assert p.rate_per_min(60.0) == pytest.approx(1.0)
    # the live clock keeps running while the next request is in flight: the ETA grows
    assert p.eta_at(120.0) > p.eta_at(60.0)
    # rows already done before this run do not make the rate look faster
    resumed = Progress(stage="generate", done=4, skipped=4, total=6, elapsed_s=10.0)
    assert resumed.eta_at(10.0) is None
    assert Progress(stage="g", done=6, total=6, elapsed_s=1).eta_at(1.0) == 0.0


def test_a_job_remembers_its_limit(tmp_path: Path) -> None:
    s = Store(tmp_path / "ws")
    job = s.start_job("ui:generate,judge", {}, limit=3)
    other = s.start_job("ui:generate", {})
    by = {j["job_id"]: j for j in s.jobs()}
    assert by[job]["run_limit"] == 3 and by[other]["run_limit"] is None


def _export_recipe(name: str) -> Any:
    """A recipe over the ``store`` fixture's generators and judge (nothing in it generates)."""
    from pipelines.recipe import parse_recipe

    return parse_recipe(
        {
            "name": name,
            "source": {"path": "unused.jsonl"},
            "generators": [{"id": g, "backend": "original"} for g in ("a", "b", "c")],
            "judge": {"id": "judge", "backend": "embedded"},
        }
    )


def test_the_card_counts_accepted_ai_apart_from_human_judgments(store: Store) -> None:
    from pipelines.run import run_recipe

    ai = {"a/0": 4, "b/0": 2, "c/0": 5}
    submit_review(store, store.cid, "bob", candidate_keys=KEYS, ratings=ai, judge_id="judge")
    submit_review(store, store.cid, "eve", candidate_keys=KEYS, ratings={**ai, "a/0": 1})
    recipe = _export_recipe("card")
    summary = run_recipe(recipe, store, stages=["binarize", "export"])
    assert summary.status == "done", summary.error
    card = (Path(summary.export_dir) / "README.md").read_text()
    assert "2 human reviews, of which 1 accepted the AI judge's suggested ratings" in card
    assert "| judge failures: placeholder rationales | 1 |" in card


def test_placeholder_rationales_are_not_exported_as_judgments(store: Store) -> None:
    """Issue 12, item 8: the template's placeholder is no rationale: both binarize paths (the
    columnar one, and the reference one that reviewed rows take) export it as null."""
    import json

    import pyarrow.parquet as pq

    from pipelines.binarize import BinarizeOptions, binarize, collect

    rows = collect(store, judge_id="judge")
    columnar = binarize(rows, BinarizeOptions()).table.column("rationales").to_pylist()
    assert columnar == [["fine", None, "best"]]
    submit_review(store, store.cid, "bob", candidate_keys=KEYS, ratings={"a/0": 3})
    rows = collect(store, judge_id="judge")
    reviewed = binarize(rows, BinarizeOptions()).table.column("rationales").to_pylist()
    assert reviewed == [["fine", None, "best"]]
    # and the recipe's streamed export writes the same
    from pipelines.run import run_recipe

    recipe = _export_recipe("flags")
    summary = run_recipe(recipe, store, stages=["binarize", "export"])
    assert summary.status == "done", summary.error
    data = Path(summary.export_dir) / "data"
    assert pq.read_table(next(data.glob("*.parquet"))).column("rationales").to_pylist() == [
        ["fine", None, "best"]
    ]
    line = json.loads(next(data.glob("*.jsonl")).read_text().splitlines()[0])
    assert "[rationale for text 2]" not in json.dumps(line)


def test_the_vectorised_column_check_is_the_same_check() -> None:
    """``null_placeholders`` (Arrow's search, then the Python check on the few candidates) nulls
    exactly what ``placeholder_rationale`` flags, on the known shapes and on random text."""
    import pyarrow as pa
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from pipelines.judge_quality import null_placeholders

    known = [
        "[rationale for text 2]",
        "`[Rationale for the rating in short sentences, at most 20 characters]`",
        "rationale for text 1",
        "<rationale>",
        "...",
        "…",
        "N/A",
        " none ",
        "[ ]",
        "<>",
        "-----",
        "[Text 3]",
        "Text 2: the reasoning is sound.",
        "Clear and right.",
        "",
        None,
        "x" * 300,
    ]

    def check(values: list[str | None]) -> None:
        got = null_placeholders(pa.array(values, pa.string())).to_pylist()
        assert got == [None if placeholder_rationale(v) else v for v in values]

    check(known)
    chars = list("[]<>{}().-_… \"'`abcnotxyz0123456789/")
    pieces = st.sampled_from([*chars, "rationale ", "text "])
    texts = st.one_of(st.none(), st.lists(pieces, max_size=12).map("".join), st.text(max_size=40))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(texts, min_size=1, max_size=20))
    def random_columns(values: list[str | None]) -> None:
        check(values)

    random_columns()
