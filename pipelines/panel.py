"""Judge panels (issue 14, section 2): several judges rate every conversation; the recipe's
aggregate of their ratings is the AI rating binarization uses; each judge's biases are measured.

A recipe names its judges under ``judges:`` (beside or instead of ``judge:``) and the aggregate
under ``panel:``. Each judge's judgment is stored as it is today, keyed by (conversation,
judge), so a killed job re-runs only the missing (conversation, judge) pairs. The aggregate is
stored as one more judgment whose ``judge_id`` is the panel's id (default ``panel``): every
reader of "the AI rating" (binarization, review filters, Argilla suggestions, statistics) reads
it by that id, unchanged. Aggregates:

* ``mean``: each candidate's mean rating over the judges that rated it;
* ``median``: each candidate's median rating (the mean of the middle two for an even count);
* ``majority``: each judge votes for its best answer (a judge whose top rating is tied votes for
  none); the answer with strictly the most votes wins, and the ratings stored are the mean of
  the judges that voted for it (so the winner is on top, on the judges' 1-5 scale). Without a
  strict winner (a tie of votes, e.g. two judges picking different answers, or no votes) the
  panel falls back to the mean of every judge; such a conversation is also one where the
  judges disagree, so it is in the "judges disagree" review queue.

Judges disagree on a conversation when some candidate's ratings differ by 2 or more between two
judges (the spread), or when two judges name different best answers (a tied top names none).
The fact is stored on the panel's judgment as it is written (an indexed review filter and an
Argilla ``select`` mode).

``panel_report`` measures, per judge: position bias (with ``reverse_pass``, the share of
conversations whose best answer changes when the shown order is reversed; without it too, the
share of conversations whose best answer was the one shown first, beside the share a judge
blind to position would give, the mean of 1/n), agreement with humans where they picked a
chosen answer, the rating distribution and the share of null ratings; between judges:
Krippendorff's alpha (interval, the ``krippendorff`` package) over every (conversation,
candidate) rated, pairwise Spearman correlation (scipy) and how often two judges name the same
best answer.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from pipelines.config import JudgeConfig, StrictModel
from pipelines.store import Store
from pipelines.types import Conversation, Progress, ProgressCallback

if TYPE_CHECKING:
    from pipelines.recipe import Recipe

Aggregate = Literal["mean", "median", "majority"]
AGGREGATES: tuple[str, ...] = ("mean", "median", "majority")
DISAGREE_SPREAD = 2.0  # a candidate rated this far apart by two judges: they disagree
JUDGE_RATINGS_COLUMN = "judge_ratings"  # the export's per-judge ratings (capyui profile)
REFRESH_EVERY_S = 2.0  # how often a running panel stage brings the aggregates up to date


class PanelConfig(StrictModel):
    """The ``panel:`` section of a recipe: how several judges' ratings become one."""

    # the judge_id the aggregate is stored under (and every reader of the AI rating uses)
    id: str = Field(default="panel", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    aggregate: Aggregate = "mean"
    # judges that must have rated a conversation (done) for the aggregate to be usable;
    # default: every judge of the panel
    min_judges: int | None = Field(default=None, ge=1)


# ---------------------------------------------------------------------------------------------
# aggregation and disagreement (pure functions over one conversation)
# ---------------------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def unique_best(ratings: Sequence[Any]) -> int | None:
    """Index of the single top-rated candidate; None when the top is tied or nothing rated."""
    nums = [(v, i) for i, r in enumerate(ratings) if (v := _num(r)) is not None]
    if not nums:
        return None
    top = max(v for v, _ in nums)
    best = [i for v, i in nums if v == top]
    return best[0] if len(best) == 1 else None


def top_set(ratings: Sequence[Any]) -> frozenset[int]:
    """Indices of every candidate sharing the top rating (empty when nothing rated)."""
    nums = [(v, i) for i, r in enumerate(ratings) if (v := _num(r)) is not None]
    if not nums:
        return frozenset()
    top = max(v for v, _ in nums)
    return frozenset(i for v, i in nums if v == top)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def aggregate(method: str, per_judge: Sequence[Sequence[Any]]) -> list[float | None]:
    """The panel's ratings of one conversation from each judge's ratings (aligned lists, null
    where a judge gave none); see the module docstring for each method and its ties."""
    if not per_judge:
        return []
    n = len(per_judge[0])
    columns = [[v for r in per_judge if (v := _num(r[i])) is not None] for i in range(n)]
    if method == "mean":
        return [_mean(c) for c in columns]
    if method == "median":
        return [round(float(statistics.median(c)), 4) if c else None for c in columns]
    if method == "majority":
        votes = Counter(b for r in per_judge if (b := unique_best(r)) is not None)
        ranked = votes.most_common()
        if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
            winner = ranked[0][0]
            bloc = [r for r in per_judge if unique_best(r) == winner]
            return [_mean([v for r in bloc if (v := _num(r[i])) is not None]) for i in range(n)]
        return [_mean(c) for c in columns]  # no strict winner: the mean of every judge
    raise ValueError(f"unknown panel aggregate {method!r} (known: {', '.join(AGGREGATES)})")


def disagreement(per_judge: Sequence[Sequence[Any]]) -> tuple[float | None, bool]:
    """``(spread, disagree)``: the largest difference between two judges' ratings of one
    candidate (None when no candidate has two ratings), and whether the judges disagree
    (spread >= 2, or two judges name different best answers)."""
    n = len(per_judge[0]) if per_judge else 0
    spread: float | None = None
    for i in range(n):
        vals = [v for r in per_judge if (v := _num(r[i])) is not None]
        if len(vals) >= 2:
            spread = max(spread or 0.0, max(vals) - min(vals))
    bests = {b for r in per_judge if (b := unique_best(r)) is not None}
    return spread, (spread is not None and spread >= DISAGREE_SPREAD) or len(bests) > 1


# ---------------------------------------------------------------------------------------------
# keeping the aggregates up to date
# ---------------------------------------------------------------------------------------------
def _panel_model(panel: PanelConfig, judges: Sequence[JudgeConfig]) -> str:
    return f"panel:{panel.aggregate}(" + ", ".join(j.display_name() or j.id for j in judges) + ")"


def refresh_panel(
    store: Store,
    panel: PanelConfig,
    judges: Sequence[JudgeConfig],
    conversation_ids: Iterable[str],
) -> int:
    """Bring the panel's aggregate judgment of each conversation up to date with its judges'
    judgments; returns how many were (re)written. A conversation whose aggregate is newer than
    every judgment it reads, and made with the same aggregate, is left alone (a resume does
    nothing twice). Judgments are matched on the candidate set of the newest one: a judgment
    of another candidate set (not re-judged yet) counts as missing."""
    judge_ids = [j.id for j in judges]
    model = _panel_model(panel, judges)
    need = panel.min_judges or len(judges)
    written = 0
    ids = list(conversation_ids)
    for i in range(0, len(ids), 2000):
        rows = store.panel_judgments(ids[i : i + 2000], [*judge_ids, panel.id])
        out: list[dict[str, Any]] = []  # one transaction per chunk
        for cid, by_judge in rows.items():
            mine = by_judge.pop(panel.id, None)
            usable = {jid: j for jid, j in by_judge.items() if j["status"] in ("done", "partial")}
            if not usable:
                continue
            newest = max(usable.values(), key=lambda j: j["updated_at"])
            keys = newest["candidate_keys"]
            used = {jid: j for jid, j in usable.items() if j["candidate_keys"] == keys}
            if (
                mine is not None
                and mine["model"] == model
                and mine["candidate_keys"] == keys
                and mine["updated_at"] >= max(j["updated_at"] for j in by_judge.values())
            ):
                continue
            order = [jid for jid in judge_ids if jid in used]
            per_judge = [used[jid]["ratings"] for jid in order]
            ratings = aggregate(panel.aggregate, per_judge)
            spread, disagree = disagreement(per_judge)
            done = sum(used[jid]["status"] == "done" for jid in order)
            if done >= need and all(r is not None for r in ratings):
                status = "done"
            else:
                status = "partial"
            rationales: list[str | None] = []
            for k in range(len(keys)):
                parts = [
                    f"[{jid}] {used[jid]['rationales'][k]}"
                    for jid in order
                    if k < len(used[jid]["rationales"]) and used[jid]["rationales"][k]
                ]
                rationales.append("\n".join(parts) or None)
            by_judge_ratings = {jid: used[jid]["ratings"] for jid in order}
            inputs = json.dumps({"aggregate": panel.aggregate, "ratings": by_judge_ratings})
            out.append(
                {
                    "conversation_id": cid,
                    "panel_id": panel.id,
                    "model": model,
                    "candidate_keys": keys,
                    "ratings": ratings,
                    "rationales": rationales,
                    "status": status,
                    "inputs": inputs,
                    "spread": spread,
                    "disagree": disagree,
                }
            )
        written += store.put_panel_judgments(out)
    return written


def _merge(parts: dict[str, Progress], start: float) -> Progress:
    """One "judge" progress over every judge of the panel."""
    out = Progress(stage="judge")
    for jid, p in parts.items():
        out.total += p.total
        out.done += p.done
        out.failed += p.failed
        out.skipped += p.skipped
        out.output_tokens += p.output_tokens
        out.notes.extend(f"{jid}: {n}" for n in p.notes)
        if p.message and p.message not in ("finished", "nothing to judge", "cancelled"):
            out.message = f"{jid}: {p.message}"
    out.elapsed_s = time.perf_counter() - start
    return out


async def judge_conversations_async(
    recipe: Recipe,
    store: Store,
    conversations: Sequence[Conversation],
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    budget: Any = None,
    limits: dict[str, asyncio.Semaphore] | None = None,
) -> Progress:
    """The judge stage of a recipe: its one judge as before, or every judge of its panel, then
    the panel's aggregates. ``limits`` (the pipelined stage): one semaphore per judge, so each
    judge server sees its own ``concurrency``; then each judge takes one request at a time here.
    Judges run concurrently (one after another under a budget, which admits requests in order).
    """
    from pipelines.judge import run_judging_async

    judges = recipe.all_judges()
    gens = [g.id for g in recipe.generators]
    attempts = recipe.generation.max_attempts

    def configured(judge: JudgeConfig) -> JudgeConfig:
        return judge.model_copy(update={"concurrency": 1}) if limits is not None else judge

    if len(judges) == 1:
        return await run_judging_async(
            store,
            configured(judges[0]),
            gens,
            conversations,
            max_attempts=attempts,
            on_progress=on_progress,
            cancel=cancel,
            budget=budget,
        )
    panel = recipe.panel or PanelConfig()
    start = time.perf_counter()
    parts: dict[str, Progress] = {j.id: Progress(stage="judge") for j in judges}

    def report(jid: str) -> Callable[[Progress], None]:
        def cb(p: Progress) -> None:
            parts[jid] = p
            if on_progress is not None:
                on_progress(_merge(parts, start))

        return cb

    async def one(judge: JudgeConfig) -> None:
        async def run() -> Progress:
            return await run_judging_async(
                store,
                configured(judge),
                gens,
                conversations,
                max_attempts=attempts,
                on_progress=report(judge.id),
                cancel=cancel,
                budget=budget,
            )

        if limits is not None and judge.id in limits:
            async with limits[judge.id]:
                parts[judge.id] = await run()
        else:
            parts[judge.id] = await run()

    ids = [c.conversation_id for c in conversations]
    stop = asyncio.Event()

    async def refresher() -> None:
        """Aggregates follow the judgments while a long stage runs (the review queue and the
        Results tab see them), not only at its end."""
        since = time.time()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), REFRESH_EVERY_S)
            except TimeoutError:
                pass
            changed, since = store.judged_since(since - 1e-6, [j.id for j in judges])
            if changed:
                refresh_panel(store, panel, judges, changed)

    ticker = asyncio.create_task(refresher()) if limits is None else None
    try:
        if budget is not None:
            for judge in judges:
                await one(judge)
                if budget.paused:
                    break
        else:
            await asyncio.gather(*(one(j) for j in judges))
    finally:
        stop.set()
        if ticker is not None:
            await ticker
    refresh_panel(store, panel, judges, ids)
    merged = _merge(parts, start)
    cancelled = cancel is not None and cancel.is_set()
    if not merged.message or cancelled:
        merged.message = "cancelled" if cancelled else "finished"
    if on_progress is not None:
        on_progress(merged)
    return merged


def judge_limits(recipe: Recipe) -> dict[str, asyncio.Semaphore]:
    """One semaphore per judge of the recipe, sized by its ``concurrency`` (pipelined stage)."""
    return {j.id: asyncio.Semaphore(j.concurrency) for j in recipe.all_judges()}


# ---------------------------------------------------------------------------------------------
# the export's per-judge ratings
# ---------------------------------------------------------------------------------------------
def judge_ratings_field() -> Any:
    """Arrow field of the export's per-judge ratings: for each pair, one entry per judge with
    its ratings aligned with ``generations`` (null where it gave none)."""
    import pyarrow as pa

    entry = pa.struct(
        [
            ("judge_id", pa.string()),
            ("model", pa.string()),
            ("ratings", pa.list_(pa.float64())),
        ]
    )
    return pa.field(JUDGE_RATINGS_COLUMN, pa.list_(entry))


def add_judge_ratings(
    store: Store, table: Any, rows: Sequence[Any], judges: Sequence[JudgeConfig]
) -> Any:
    """``table`` (binarized pairs) with the ``judge_ratings`` column: each judge's ratings of
    the pair's conversation, aligned with its ``generations`` (``rows``: the
    ``JudgedConversation`` chunk the pairs came from, whose candidates give that order)."""
    import pyarrow as pa

    keys_of = {r.conversation.conversation_id: [c.key for c in r.candidates] for r in rows}
    cids = table.column("conversation_id").to_pylist()
    judgments = store.panel_judgments(sorted(set(cids)), [j.id for j in judges])
    per_cid: dict[str, list[dict[str, Any]]] = {}
    for cid in set(cids):
        entries = []
        for judge in judges:
            j = judgments.get(cid, {}).get(judge.id)
            by_key = (
                dict(zip(j["candidate_keys"], j["ratings"], strict=False))
                if j and j["status"] in ("done", "partial")
                else {}
            )
            entries.append(
                {
                    "judge_id": judge.id,
                    "model": (j or {}).get("model") or judge.display_name(),
                    "ratings": [_num(by_key.get(k)) for k in keys_of.get(cid, [])],
                }
            )
        per_cid[cid] = entries
    column = pa.array([per_cid[c] for c in cids], type=judge_ratings_field().type)
    return table.append_column(judge_ratings_field(), column)


# ---------------------------------------------------------------------------------------------
# the report: biases and agreement, per judge
# ---------------------------------------------------------------------------------------------
@dataclass
class JudgeStats:
    judge_id: str
    judgments: int = 0  # every stored judgment (any status)
    failed: int = 0
    ratings: int = 0  # rating slots of usable judgments
    nulls: int = 0
    rating_sum: float = 0.0
    histogram: dict[int, int] = field(default_factory=lambda: {k: 0 for k in range(1, 6)})
    # position bias: best answer shown first (forward pass), and the share a blind judge gives
    first_best: int = 0
    first_eligible: int = 0
    first_expected: float = 0.0
    # with reverse_pass: the best answer changes when the shown order is reversed
    reverse_changed: int = 0
    reverse_pairs: int = 0
    # agreement with humans: the judge's best is the humans' chosen answer
    human_matched: int = 0
    human_compared: int = 0

    def as_dict(self) -> dict[str, Any]:
        def share(a: float, b: int) -> float | None:
            return round(a / b, 4) if b else None

        usable = self.judgments - self.failed
        return {
            "judge_id": self.judge_id,
            "judgments": self.judgments,
            "failed": self.failed,
            "null_share": share(self.nulls, self.ratings),
            "histogram": dict(self.histogram),
            "mean_rating": share(self.rating_sum, self.ratings - self.nulls),
            "first_shown_best": share(self.first_best, self.first_eligible),
            "first_shown_expected": share(self.first_expected, self.first_eligible),
            "reverse_changed": share(self.reverse_changed, self.reverse_pairs),
            "reverse_conversations": self.reverse_pairs,
            "human_agreement": share(self.human_matched, self.human_compared),
            "human_compared": self.human_compared,
            "usable": usable,
        }


@dataclass
class PanelReport:
    judges: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # judge pairs: spearman, same best
    alpha: float | None = None  # Krippendorff's alpha (interval) over every judge
    alpha_units: int = 0
    disagree: int = 0  # conversations whose judges disagree (the panel's stored fact)
    panel_id: str | None = None
    aggregate: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "judges": self.judges,
            "pairs": self.pairs,
            "alpha": self.alpha,
            "alpha_units": self.alpha_units,
            "disagree": self.disagree,
            "panel_id": self.panel_id,
            "aggregate": self.aggregate,
        }


def _bucket(value: float) -> int:
    return min(5, max(1, int(value + 0.5)))


def _humans_chosen(picks: Iterable[tuple[str, str]]) -> dict[str, str]:
    """conversation -> the answer most reviewers picked as chosen (a tie between picks: none)."""
    by_cid: dict[str, Counter[str]] = defaultdict(Counter)
    for cid, key in picks:
        by_cid[cid][key] += 1
    out = {}
    for cid, counts in by_cid.items():
        ranked = counts.most_common(2)
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
            out[cid] = ranked[0][0]
    return out


def krippendorff_alpha(columns: Sequence[Sequence[float]]) -> float | None:
    """Krippendorff's alpha (interval) of a reliability matrix given as one column of values
    per judge (NaN: not rated), with the ``krippendorff`` package; None when undefined."""
    import math

    import numpy as np

    if len(columns) < 2 or not columns[0]:
        return None
    data = np.array([np.frombuffer(c, dtype=float) if isinstance(c, array) else c for c in columns])
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    if pairable.sum() < 1:
        return None
    data = data[:, pairable]
    if len(np.unique(data[~np.isnan(data)])) < 2:
        return None  # one value everywhere: no variation to agree on
    import krippendorff

    value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))
    return None if math.isnan(value) else round(value, 4)


def panel_report(
    store: Store,
    judge_ids: Sequence[str],
    *,
    panel_id: str | None = None,
    aggregate_name: str | None = None,
) -> PanelReport:
    """Biases of each judge and the agreement between them (see the module docstring), in one
    streamed pass over the judgments (grouped by conversation) plus the reviews' picks. The
    panel's own aggregate (``panel_id``) is reported as one more row (its agreement with
    humans, distribution and nulls), never in the between-judge agreement."""
    from scipy.stats import spearmanr

    judges = list(judge_ids)
    rows_for = [*judges, panel_id] if panel_id else judges
    stats = {j: JudgeStats(j) for j in rows_for}
    chosen = _humans_chosen(store.review_picks())
    columns = {j: array("d") for j in judges}
    pair_best: dict[tuple[str, str], list[int]] = {
        (a, b): [0, 0] for i, a in enumerate(judges) for b in judges[i + 1 :]
    }
    nan = float("nan")

    def finish(group: dict[str, tuple[str, list[str], list[Any], list[int], Any]]) -> None:
        # units of agreement: (conversation, candidate) over the keys any judge rated
        unit_keys: list[str] = []
        for jid in judges:
            if jid in group and group[jid][0] != "failed":
                for k in group[jid][1]:
                    if k not in unit_keys:
                        unit_keys.append(k)
        if unit_keys:
            for jid in judges:
                by_key: dict[str, Any] = {}
                if jid in group and group[jid][0] != "failed":
                    by_key = dict(zip(group[jid][1], group[jid][2], strict=False))
                for k in unit_keys:
                    v = _num(by_key.get(k))
                    columns[jid].append(nan if v is None else v)
        bests = {
            jid: (b if b is None else group[jid][1][b])
            for jid in judges
            if jid in group and group[jid][0] != "failed"
            for b in [unique_best(group[jid][2])]
        }
        for (a, b), counts in pair_best.items():
            if bests.get(a) is not None and bests.get(b) is not None:
                counts[1] += 1
                counts[0] += bests[a] == bests[b]

    current: str | None = None
    group: dict[str, tuple[str, list[str], list[Any], list[int], Any]] = {}
    for cid, jid, status, keys, ratings, order, passes in store.iter_judgments_by_conversation(
        rows_for
    ):
        if cid != current:
            if current is not None:
                finish(group)
            current, group = cid, {}
        group[jid] = (status, keys, ratings, order, passes)
        s = stats[jid]
        s.judgments += 1
        if status == "failed":
            s.failed += 1
            continue
        for r in ratings:
            s.ratings += 1
            v = _num(r)
            if v is None:
                s.nulls += 1
            else:
                s.histogram[_bucket(v)] += 1
                s.rating_sum += v
        best = unique_best(ratings)
        if cid in chosen:
            s.human_compared += 1
            s.human_matched += best is not None and keys[best] == chosen[cid]
        if jid == panel_id:
            continue
        forward = passes[0] if passes and passes[0] is not None else ratings
        first = unique_best(forward)
        if first is not None and order and len(order) == len(ratings):
            s.first_eligible += 1
            s.first_best += first == order[0]
            s.first_expected += 1 / len(order)
        if passes and len(passes) == 2 and passes[0] is not None and passes[1] is not None:
            a_top, b_top = top_set(passes[0]), top_set(passes[1])
            if a_top and b_top:
                s.reverse_pairs += 1
                s.reverse_changed += a_top != b_top
    if current is not None:
        finish(group)

    report = PanelReport(panel_id=panel_id, aggregate=aggregate_name)
    for jid in rows_for:
        d = stats[jid].as_dict()
        d["is_panel"] = jid == panel_id
        report.judges.append(d)
    report.alpha_units = len(columns[judges[0]]) if judges else 0
    report.alpha = krippendorff_alpha([columns[j] for j in judges])
    for (a, b), (same, both) in pair_best.items():
        xa, xb = columns[a], columns[b]
        pairs = [(x, y) for x, y in zip(xa, xb, strict=True) if x == x and y == y]
        rho: float | None = None
        if len(pairs) >= 3:
            xs, ys = zip(*pairs, strict=True)
            if len(set(xs)) > 1 and len(set(ys)) > 1:
                rho = round(float(spearmanr(xs, ys).statistic), 4)
        report.pairs.append(
            {
                "judges": [a, b],
                "spearman": rho,
                "rated_by_both": len(pairs),
                "same_best": round(same / both, 4) if both else None,
                "conversations": both,
            }
        )
    report.disagree = store.count_judges_disagree(panel_id) if panel_id else 0
    return report


def recipe_panel_report(store: Store, recipe: Recipe) -> PanelReport | None:
    """The panel report of a recipe with several judges (None with one judge or none)."""
    judges = recipe.all_judges()
    if len(judges) < 2:
        return None
    panel = recipe.panel or PanelConfig()
    return panel_report(
        store, [j.id for j in judges], panel_id=panel.id, aggregate_name=panel.aggregate
    )
