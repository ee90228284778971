"""Per-model statistics and judge/human agreement."""

from __future__ import annotations

import json
import math

import pandas as pd

from pipelines.binarize import BinarizeOptions, JudgedConversation, binarize
from pipelines.records import CandidateRow, Review
from pipelines.stats import (
    HIST_COLUMNS,
    MODEL_COLUMNS,
    agreement,
    compute_stats,
    histogram_frame,
    model_stats,
)
from pipelines.types import Conversation


def row(
    ai: list[float | None], reviews: dict[str, dict[str, int]] | None = None, q: str = "q"
) -> JudgedConversation:
    """One conversation (``q``) with candidates A, B, C rated ``ai`` by the judge and
    ``reviews``: reviewer -> that human's ratings by candidate key."""
    models = ["A", "B", "C"][: len(ai)]
    conv = Conversation(messages=[{"role": "user", "content": q}])
    return JudgedConversation(
        conversation=conv,
        candidates=[CandidateRow(f"{m}/0", m, m, f"{m} answer") for m in models],
        ai_ratings=ai,
        rationales=[None] * len(ai),
        judge_model="judge",
        reviews=[
            Review(conversation_id=conv.conversation_id, reviewer=who, ratings=ratings)
            for who, ratings in (reviews or {}).items()
        ],
    )


def test_model_stats_histogram_mean_and_win_rate() -> None:
    rows = [row([5, 1, None], q="1"), row([4, 2, 3], q="2"), row([1, 5, 5], q="3")]
    pairs = binarize(rows, BinarizeOptions()).pairs
    df = model_stats(rows, pairs)
    assert list(df.columns) == MODEL_COLUMNS
    a = df.set_index("model").loc["A"]
    assert [int(a[c]) for c in HIST_COLUMNS] == [1, 0, 0, 1, 1, 0]
    assert a["count"] == 3 and math.isclose(a["mean_rating"], 10 / 3)
    c = df.set_index("model").loc["C"]
    assert int(c["null"]) == 1 and math.isclose(c["mean_rating"], 4.0)
    # pairs: row1 A>B, row2 A>B, row3 B or C (tie at the top, seeded) > A
    assert int(a["chosen"]) == 2 and int(a["rejected"]) == 1
    assert math.isclose(a["win_rate"], 2 / 3)
    assert int(df["chosen"].sum()) == len(pairs) == int(df["rejected"].sum())


def test_agreement_exact_within_one_and_spearman() -> None:
    ai = [5, 1, 3]
    rows = [
        row(
            ai,
            {"h1": {"A/0": 5, "B/0": 2, "C/0": 3}, "h2": {"A/0": 3}},
        ),
        row([None, 4], {"h1": {"A/0": 4, "B/0": 4}}, q="x"),
    ]
    got = agreement(rows)
    # pairs (ai, human): (5,5) (1,2) (3,3) (5,3) (4,4); (None, 4) is skipped
    assert got["n"] == 5
    assert math.isclose(got["exact"], 3 / 5)
    assert math.isclose(got["within_1"], 4 / 5)
    expected = pd.Series([5, 1, 3, 5, 4]).rank().corr(pd.Series([5, 2, 3, 3, 4]).rank())
    assert math.isclose(got["spearman"], expected)


def test_agreement_without_reviews_or_with_constant_ratings() -> None:
    assert agreement([row([5, 1])]) == {"n": 0, "exact": None, "within_1": None, "spearman": None}
    constant = agreement([row([3, 3], {"h": {"A/0": 3, "B/0": 3}})])
    assert constant["exact"] == 1.0 and constant["spearman"] is None


def test_compute_stats_is_json_serialisable_and_plottable() -> None:
    rows = [row([5, 1]), row([None, None], q="nulls")]
    stats = compute_stats(rows, binarize(rows).pairs)
    json.dumps(stats)  # no NaN, no numpy scalars that json cannot write
    assert stats["pairs"] == 1 and stats["rating_source"] == {"ai": 1}
    hist = histogram_frame(stats)
    assert list(hist.columns) == ["model", "rating", "count"]
    assert int(hist[(hist.model == "A") & (hist.rating == "null")]["count"].iloc[0]) == 1
