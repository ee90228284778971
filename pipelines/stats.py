"""Statistics of a judged / binarized dataset, as pandas DataFrames and plain dicts.

* ``model_stats``: per generator model, the AI rating histogram (1..5 and null), mean rating,
  candidate count, and how often the model's answer was chosen / rejected in the pairs
  (``win_rate`` = chosen / (chosen + rejected)).
* ``agreement``: judge vs human, over every (candidate, reviewer) the judge and a reviewer both
  rated: exact agreement, within-1 agreement, Spearman rank correlation (pandas).
* ``compute_stats``: both, as one JSON-able dict (what the dataset card and the UI use).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pandas as pd

from pipelines.binarize import JudgedConversation
from pipelines.records import Review

HIST_COLUMNS = ["1", "2", "3", "4", "5", "null"]
MODEL_COLUMNS = [
    "model",
    "count",
    *HIST_COLUMNS,
    "mean_rating",
    "chosen",
    "rejected",
    "win_rate",
]


class PairLabels:
    """The chosen model, rejected model and rating source of every pair, counted chunk by
    chunk as a streamed binarize goes (issue 13: the win rates without holding the pairs).
    Iterating yields one dict per pair, which is what ``store_stats(pairs=...)`` reads."""

    COLUMNS = ("chosen_model", "rejected_model", "rating_source")

    def __init__(self) -> None:
        self.counts: Counter[tuple[Any, Any, Any]] = Counter()

    def add(self, table: Any) -> None:
        """Count the pairs of one binarized chunk (a pyarrow table of pairs)."""
        cols = table.select(list(self.COLUMNS)).columns
        self.counts.update(zip(*(c.to_pylist() for c in cols), strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for (chosen, rejected, source), n in self.counts.items():
            pair = {"chosen_model": chosen, "rejected_model": rejected, "rating_source": source}
            for _ in range(n):
                yield pair


def _bucket(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    b = int(math.floor(float(value) + 0.5))  # round half up (a human mean of 3.5 -> 4)
    return str(min(5, max(1, b)))


def model_stats(
    rows: Iterable[JudgedConversation], pairs: Sequence[dict[str, Any]] = ()
) -> pd.DataFrame:
    """One row per generator model (sorted by model): ``MODEL_COLUMNS``."""
    hist: dict[str, dict[str, int]] = {}
    total: dict[str, float] = {}
    rated: dict[str, int] = {}
    for row in rows:
        for candidate, rating in zip(row.candidates, row.ai_ratings, strict=False):
            model = candidate.model
            h = hist.get(model)
            if h is None:
                h = hist[model] = dict.fromkeys(HIST_COLUMNS, 0)
                total[model] = 0.0
                rated[model] = 0
            h[_bucket(rating)] += 1
            if rating is not None:
                total[model] += float(rating)
                rated[model] += 1
    chosen: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for p in pairs:
        chosen[p["chosen_model"]] = chosen.get(p["chosen_model"], 0) + 1
        rejected[p["rejected_model"]] = rejected.get(p["rejected_model"], 0) + 1
    records = _model_records(hist, total, rated, chosen, rejected)
    return pd.DataFrame.from_records(records, columns=MODEL_COLUMNS)


def _model_records(
    hist: dict[str, dict[str, int]],
    total: dict[str, float],
    rated: dict[str, int],
    chosen: dict[str, int],
    rejected: dict[str, int],
) -> list[dict[str, Any]]:
    """One row per model: its rating histogram, mean AI rating, chosen / rejected counts and
    win rate (the Results table and the card), from the per-model tallies."""
    records = []
    for model in sorted(set(hist) | set(chosen) | set(rejected)):
        h = hist.get(model, dict.fromkeys(HIST_COLUMNS, 0))
        c, r = chosen.get(model, 0), rejected.get(model, 0)
        records.append(
            {
                "model": model,
                "count": sum(h.values()),
                **h,
                "mean_rating": total[model] / rated[model] if rated.get(model) else None,
                "chosen": c,
                "rejected": r,
                "win_rate": c / (c + r) if c + r else None,
            }
        )
    return records


def rating_pairs(rows: Iterable[JudgedConversation]) -> pd.DataFrame:
    """Every (candidate, reviewer) rated by both the judge and a human:
    columns conversation_id, candidate_key, model, reviewer, ai, human."""
    records = []
    for row in rows:
        if not row.reviews:
            continue
        by_key = {c.key: (c.model, a) for c, a in zip(row.candidates, row.ai_ratings, strict=False)}
        for review in row.reviews:
            for key, human in (review.ratings or {}).items():
                model, ai = by_key.get(key, (None, None))
                if ai is None or human is None:
                    continue
                records.append(
                    {
                        "conversation_id": row.conversation.conversation_id,
                        "candidate_key": key,
                        "model": model,
                        "reviewer": review.reviewer,
                        "ai": float(ai),
                        "human": float(human),
                    }
                )
    return pd.DataFrame.from_records(
        records, columns=["conversation_id", "candidate_key", "model", "reviewer", "ai", "human"]
    )


def agreement(rows: Iterable[JudgedConversation]) -> dict[str, Any]:
    """Judge/human agreement: ``n``, ``exact``, ``within_1`` (fractions), ``spearman``
    (None when fewer than 2 pairs or either side is constant)."""
    return _agreement_of(rating_pairs(rows))


def _agreement_of(df: pd.DataFrame) -> dict[str, Any]:
    n = len(df)
    if n == 0:
        return {"n": 0, "exact": None, "within_1": None, "spearman": None}
    diff = (df["ai"] - df["human"]).abs()
    # DataFrame.corr ranks in pandas itself (Series.corr would need scipy for spearman)
    rho = float(df[["ai", "human"]].corr(method="spearman").iloc[0, 1]) if n >= 2 else float("nan")
    return {
        "n": int(n),
        "exact": float((diff == 0).mean()),
        "within_1": float((diff <= 1).mean()),
        "spearman": None if rho is None or math.isnan(rho) else float(rho),
    }


def judge_quality(rows: Iterable[JudgedConversation]) -> dict[str, int]:
    """Judge failures hiding in "done" judgments: rationales that are the template's own
    placeholder (``pipelines.judge_quality``). ``placeholder_rationales`` counts candidates,
    ``judgments_with_placeholders`` conversations; both count as judge failures."""
    from pipelines.judge_quality import count_placeholders

    candidates = conversations = 0
    for row in rows:
        n = count_placeholders(row.rationales)
        candidates += n
        conversations += 1 if n else 0
    return {"placeholder_rationales": candidates, "judgments_with_placeholders": conversations}


def review_counts(reviews: Iterable[Review]) -> dict[str, int]:
    """Human reviews (``Store.reviews()``) counted by kind: ``reviews`` (all),
    ``human_judged`` (the reviewer's own ratings or picks), ``accepted_ai`` (the AI's suggestion
    submitted untouched: not an independent human judgment), ``discarded``."""
    total = accepted = discarded = 0
    for r in reviews:
        total += 1
        if r.discard:
            discarded += 1
        elif r.accepted_ai:
            accepted += 1
    return {
        "reviews": total,
        "human_judged": total - accepted - discarded,
        "accepted_ai": accepted,
        "discarded": discarded,
    }


def compute_stats(
    rows: Sequence[JudgedConversation],
    pairs: Sequence[dict[str, Any]] = (),
    reviews: Iterable[Review] | None = None,
) -> dict[str, Any]:
    """``{"models": [per-model dicts], "agreement": {...}, "pairs": n, "rating_source": {...},
    "judge_quality": {...}}`` plus ``"reviews": review_counts(reviews)`` when ``reviews`` (the
    store's reviews) are given. JSON-able (NaN -> None)."""
    models = model_stats(rows, pairs)
    records = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in models.to_dict(orient="records")
    ]
    sources: dict[str, int] = {}
    for p in pairs:
        sources[p["rating_source"]] = sources.get(p["rating_source"], 0) + 1
    out: dict[str, Any] = {
        "models": records,
        "agreement": agreement(rows),
        "pairs": len(pairs),
        "rating_source": sources,
        "judge_quality": judge_quality(rows),
    }
    if reviews is not None:
        out["reviews"] = review_counts(reviews)
    return out


def histogram_frame(stats: dict[str, Any]) -> pd.DataFrame:
    """Long-form (model, rating, count) frame of ``compute_stats(...)["models"]``, for plots."""
    records = [
        {"model": m["model"], "rating": col, "count": int(m[col])}
        for m in stats["models"]
        for col in HIST_COLUMNS
    ]
    return pd.DataFrame.from_records(records, columns=["model", "rating", "count"])


def store_stats(
    store: Any,
    *,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    pairs: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """``compute_stats`` read straight from the store with SQL aggregates (issue 13): the
    per-model histogram is one GROUP BY over the candidates and their judgments, the agreement
    is driven by the reviews; nothing is materialised per conversation. ``pairs`` (from a
    binarize run) add the chosen / rejected / win-rate columns, as in ``compute_stats``."""
    from pipelines.binarize import model_labels

    cache_key = None
    if pairs == ():  # the Results page's first look: reused until the store changes
        cache_key = (tuple(generator_ids or ()), judge_id, store.change_marker())
        cached = store.__dict__.get("_stats_cache")
        if cached is not None and cached[0] == cache_key:
            return copy.deepcopy(cached[1])
    hist_rows = store.rating_histogram(generator_ids, judge_id)
    label = model_labels({(gen, model) for gen, model, *_ in hist_rows})
    hist: dict[str, dict[str, int]] = {}
    total: dict[str, float] = {}
    rated: dict[str, int] = {}
    for gen, model, bucket, n, sum_ in hist_rows:
        name = label[gen, model]
        h = hist.setdefault(name, dict.fromkeys(HIST_COLUMNS, 0))
        h["null" if bucket is None else str(bucket)] += int(n)
        if bucket is not None:
            total[name] = total.get(name, 0.0) + float(sum_ or 0.0)
            rated[name] = rated.get(name, 0) + int(n)
    chosen: dict[str, int] = {}
    rejected: dict[str, int] = {}
    sources: dict[str, int] = {}
    n_pairs = 0
    for p in pairs:  # iterated once: a generator keeps a streamed export's memory flat
        n_pairs += 1
        chosen[p["chosen_model"]] = chosen.get(p["chosen_model"], 0) + 1
        rejected[p["rejected_model"]] = rejected.get(p["rejected_model"], 0) + 1
        sources[p["rating_source"]] = sources.get(p["rating_source"], 0) + 1
    models = _model_records(hist, total, rated, chosen, rejected)
    both = store.rated_by_both(generator_ids, judge_id)
    df = pd.DataFrame.from_records(
        [
            {
                "conversation_id": cid,
                "candidate_key": key,
                "model": label.get((gen, model), model),
                "reviewer": who,
                "ai": float(ai),
                "human": float(human),
            }
            for cid, key, gen, model, who, ai, human in both
        ],
        columns=["conversation_id", "candidate_key", "model", "reviewer", "ai", "human"],
    )
    # running totals kept with each judgment (issue 13): no pass over every rationale
    placeholders, judged_with = store.placeholder_counts(judge_id)
    out = {
        "models": models,
        "agreement": _agreement_of(df),
        "pairs": n_pairs,
        "rating_source": sources,
        "judge_quality": {
            "placeholder_rationales": placeholders,
            "judgments_with_placeholders": judged_with,
        },
        "reviews": store.review_kind_counts(),
    }
    if cache_key is not None:
        store.__dict__["_stats_cache"] = (cache_key, copy.deepcopy(out))
    return out
