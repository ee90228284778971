"""Pairwise (Chatbot-Arena style) review: two candidates of one conversation side by side, blind,
sides random; the reviewer answers A, B, tie, both bad or skip.

* ``refresh_pairs`` fills the store's pair queue from the judgments (incrementally: only what
  changed since the last refresh) with the informative pair of each conversation per reason:

  - ``ai_tie``: the two candidates the AI judge cannot separate (equal ratings or a margin < 1,
    closest pair nearest the top);
  - ``top2``: the judge's pick against its runner-up;
  - ``disagree``: two judges pick different best answers (their two picks);
  - ``random``: any two done candidates (a stable random choice per conversation).

* ``next_pair`` serves the next pair for a reviewer: one indexed lookup per configured reason,
  least-seen pairs first, never a pair the reviewer already answered, at most ``max_verdicts``
  verdicts per pair (several reviewers per conversation).
* ``submit_verdict`` stores the verdict with the side shown as A, so it maps back to keys.
* ``pair_outcomes`` is what binarization uses: per conversation and pair, the human majority
  (a winner key, ``"tie"`` for tie / both bad / no majority).
* ``rankings`` fits Bradley–Terry strengths of the generators from the human verdicts and, side by
  side, from the pairwise order implied by the AI ratings, with bootstrap confidence intervals.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.records import Candidate, PairVerdict
from pipelines.store import Store
from pipelines.types import Conversation

REASONS: dict[str, str] = {
    "ai_tie": "AI can't separate them (tie or margin < 1)",
    "top2": "AI's pick vs its runner-up",
    "disagree": "Judges disagree on the best answer",
    "random": "Random pair",
}
VERDICTS: dict[str, str] = {
    "a": "A is better",
    "b": "B is better",
    "tie": "Tie",
    "both_bad": "Both bad",
    "skip": "Skip",
}
DEFAULT_REASONS = ("ai_tie", "disagree", "top2", "random")
DEFAULT_MAX_VERDICTS = 3
TIE_MARGIN = 1.0
# Bradley–Terry strengths are reported on the Elo scale (as Chatbot Arena does)
ELO_SCALE = 400.0
ELO_BASE = 1000.0


class PairwiseError(ValueError):
    """A verdict or request the store refuses (one line, for the reviewer)."""


def _hash(*parts: str) -> int:
    h = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") >> 1  # fits SQLite's signed 64-bit integer


def ordered(key_a: str, key_b: str) -> tuple[str, str]:
    return (key_a, key_b) if key_a < key_b else (key_b, key_a)


# ---------------------------------------------------------------------------------------------
# the queue
# ---------------------------------------------------------------------------------------------
def _rated(keys: Sequence[str], ratings: Sequence[float | None], allowed: set[str] | None):
    out = [
        (float(r), k)
        for k, r in zip(keys, ratings, strict=False)
        if r is not None and (allowed is None or k.rpartition("/")[0] in allowed)
    ]
    # best first; equal ratings in key order, so the choice is stable
    out.sort(key=lambda t: (-t[0], t[1]))
    return out


def pairs_from_judgment(
    keys: Sequence[str], ratings: Sequence[float | None], allowed: set[str] | None = None
) -> dict[str, tuple[str, str, float]]:
    """``reason -> (key_1, key_2, priority)`` for one judgment (ai_tie, top2)."""
    rated = _rated(keys, ratings, allowed)
    out: dict[str, tuple[str, str, float]] = {}
    if len(rated) < 2:
        return out
    (r1, k1), (r2, k2) = rated[0], rated[1]
    out["top2"] = (*ordered(k1, k2), r1 - r2)
    close = [
        (rated[i][0] - rated[i + 1][0], i)
        for i in range(len(rated) - 1)
        if rated[i][0] - rated[i + 1][0] < TIE_MARGIN
    ]
    if close:
        margin, i = min(close)  # smallest margin; nearest the top among equals
        out["ai_tie"] = (*ordered(rated[i][1], rated[i + 1][1]), margin)
    return out


@dataclass
class RefreshReport:
    judgments: int = 0
    pairs: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"judgments_read": self.judgments, "pairs_queued": dict(self.pairs)}


def refresh_pairs(
    store: Store,
    *,
    judge_id: str | None = None,
    generator_ids: Iterable[str] | None = None,
    seed: int = 0,
) -> RefreshReport:
    """Queue the informative pairs of every conversation judged (or generated, for ``random``)
    since the last refresh. Idempotent; a re-judged conversation gets its pairs recomputed."""
    allowed = set(generator_ids) if generator_ids is not None else None
    marks = store.pairwise_watermarks()
    report = RefreshReport()
    rows: list[tuple[str, str, str, str, float, int, float]] = []

    # ai_tie / top2 from the chosen judge (or each conversation's latest judgment)
    # every judgment that yields an ai_tie pair yields a top2 pair too: top2's mark is the newest
    since = max(marks.get("top2", 0.0), marks.get("ai_tie", 0.0))
    latest: dict[str, tuple[list[str], list[float | None], float]] = {}
    by_judge: dict[str, dict[str, tuple[list[str], list[float | None]]]] = defaultdict(dict)
    for jm in store.judgments_since(since):
        cid, jid, keys, ratings, ts = (
            jm.conversation_id,
            jm.judge_id,
            jm.candidate_keys,
            jm.ratings,
            jm.updated_at,
        )
        report.judgments += 1
        by_judge[cid][jid] = (keys, ratings)
        if judge_id is None or jid == judge_id:
            if cid not in latest or ts >= latest[cid][2]:
                latest[cid] = (keys, ratings, ts)
    for cid, (keys, ratings, ts) in latest.items():
        rand = _hash(str(seed), cid)
        for reason, (k1, k2, prio) in pairs_from_judgment(keys, ratings, allowed).items():
            rows.append((reason, cid, k1, k2, prio, rand, ts))
            report.pairs[reason] += 1

    # disagree: judges with different best answers (needs every judgment of the conversation,
    # those before the watermark too: a refresh may run while a panel is half done, e.g. the
    # Argilla follower's pushes of a pairs dataset during the judge stage (issue 13))
    for jm in store.usable_judgments(None, list(by_judge)):
        by_judge[jm.conversation_id].setdefault(jm.judge_id, (jm.candidate_keys, jm.ratings))
    multi = [cid for cid, js in by_judge.items() if len(js) > 1]
    if multi:
        for cid in multi:
            bests: list[tuple[float, str]] = []
            for keys, ratings in by_judge[cid].values():
                rated = _rated(keys, ratings, allowed)
                if rated:
                    bests.append((rated[0][0], rated[0][1]))
            picks = sorted({k for _, k in bests})
            if len(picks) >= 2:
                ts = latest.get(cid, ([], [], 0.0))[2]
                rows.append(("disagree", cid, picks[0], picks[1], 0.0, _hash(str(seed), cid), ts))
                report.pairs["disagree"] += 1

    # random: any two done candidates
    for cid, (keys, ts) in store.done_candidate_keys_since(marks.get("random", 0.0)).items():
        usable = [k for k in keys if allowed is None or k.rpartition("/")[0] in allowed]
        if len(usable) < 2:
            continue
        h = _hash(str(seed), cid, "random")
        i = h % len(usable)
        j = (i + 1 + (h >> 16) % (len(usable) - 1)) % len(usable)
        rows.append(("random", cid, *ordered(usable[i], usable[j]), 0.0, h, ts))
        report.pairs["random"] += 1

    store.put_pairwise_pairs(rows)
    return report


# ---------------------------------------------------------------------------------------------
# serving and answering
# ---------------------------------------------------------------------------------------------
@dataclass
class PairItem:
    conversation: Conversation
    reason: str
    left: Candidate  # shown as A
    right: Candidate  # shown as B
    key_1: str
    key_2: str

    @property
    def pair(self) -> tuple[str, str]:
        return self.key_1, self.key_2


def next_pair(
    store: Store,
    reviewer: str,
    *,
    reasons: Sequence[str] = DEFAULT_REASONS,
    max_verdicts: int = DEFAULT_MAX_VERDICTS,
    exclude: Iterable[str] = (),
    rng: random.Random | None = None,
) -> PairItem | None:
    """The next pair for ``reviewer``: reasons in the given order, sides random."""
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise PairwiseError("enter your name (or sign in) before reviewing")
    unknown = [r for r in reasons if r not in REASONS]
    if unknown:
        raise PairwiseError(f"unknown pair selection {unknown[0]!r} (known: {', '.join(REASONS)})")
    skip = list(exclude)
    for reason in reasons:
        for _ in range(3):  # a pair whose candidates vanished is skipped, not shown broken
            found = store.next_pairwise_pair(reviewer, reason, max_verdicts, skip)
            if found is None:
                break
            cid, k1, k2 = found
            cands = store.candidate_texts(cid, (k1, k2))
            conv = store.conversation(cid)
            if conv is None or len(cands) < 2:
                skip.append(cid)
                continue
            left, right = cands[k1], cands[k2]
            if (rng or random.SystemRandom()).random() < 0.5:
                left, right = right, left
            return PairItem(conv, reason, left, right, k1, k2)
    return None


def submit_verdict(
    store: Store,
    conversation_id: str,
    reviewer: str,
    *,
    left_key: str,
    right_key: str,
    verdict: str,
    reason: str | None = None,
    source: str = "ui",
) -> None:
    """Store ``reviewer``'s verdict on the pair shown as (A = left_key, B = right_key)."""
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise PairwiseError("enter your name (or sign in) before reviewing")
    if verdict not in VERDICTS:
        raise PairwiseError(f"unknown verdict {verdict!r} (use {', '.join(VERDICTS)})")
    if left_key == right_key:
        raise PairwiseError("a pair needs two different candidates")
    if len(store.candidate_texts(conversation_id, (left_key, right_key))) < 2:
        raise PairwiseError(
            f"conversation {conversation_id!r} has no such pair of candidates: "
            f"{left_key!r}, {right_key!r}"
        )
    winner = left_key if verdict == "a" else right_key if verdict == "b" else None
    k1, k2 = ordered(left_key, right_key)
    store.put_pairwise_review(
        conversation_id,
        k1,
        k2,
        reviewer,
        left_key=left_key,
        verdict=verdict,
        winner=winner,
        reason=reason,
        source=source,
    )


# ---------------------------------------------------------------------------------------------
# outcomes (for binarization) and rankings (for Results)
# ---------------------------------------------------------------------------------------------
def majority_outcome(verdicts: Iterable[PairVerdict]) -> str | None:
    """The humans' outcome for one pair: the winner's key, ``"tie"`` (tie, both bad, or no
    strict majority between the answers), or None when there are only skips."""
    votes: Counter[str] = Counter()
    for v in verdicts:
        if v.verdict in ("a", "b") and v.winner:
            votes[v.winner] += 1
        elif v.verdict in ("tie", "both_bad"):
            votes["tie"] += 1
    if not votes:
        return None
    (top, n), *rest = votes.most_common()
    if rest and rest[0][1] == n:
        return "tie"  # humans disagree: no confident order
    return top


def pair_outcomes(
    verdicts: Iterable[PairVerdict],
) -> dict[str, dict[tuple[str, str], str]]:
    """``conversation_id -> {(key_1, key_2): winner key | "tie"}`` from stored verdicts."""
    grouped: dict[tuple[str, str, str], list[PairVerdict]] = defaultdict(list)
    for v in verdicts:
        grouped[v.conversation_id, v.key_1, v.key_2].append(v)
    out: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for (cid, k1, k2), vs in grouped.items():
        outcome = majority_outcome(vs)
        if outcome is not None:
            out[cid][k1, k2] = outcome
    return dict(out)


def _generator(key: str) -> str:
    return key.rpartition("/")[0] or key


def verdicts_per_model(store: Store) -> list[dict[str, Any]]:
    """Per generator: wins, losses, ties, both bad, skips over the human pairwise verdicts."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for v in store.pairwise_reviews():
        g1, g2 = _generator(v.key_1), _generator(v.key_2)
        verdict = v.verdict
        for g in (g1, g2):
            table[g]["shown"] += 1
        if verdict in ("a", "b") and v.winner:
            w = _generator(v.winner)
            loser = g2 if v.winner == v.key_1 else g1
            table[w]["wins"] += 1
            table[loser]["losses"] += 1
        elif verdict in ("tie", "both_bad", "skip"):
            name = {"tie": "ties", "both_bad": "both_bad", "skip": "skips"}[verdict]
            for g in (g1, g2):
                table[g][name] += 1
    out = []
    for g, c in sorted(table.items()):
        decided = c["wins"] + c["losses"] + c["ties"]
        out.append(
            {
                "generator": g,
                "shown": c["shown"],
                "wins": c["wins"],
                "losses": c["losses"],
                "ties": c["ties"],
                "both_bad": c["both_bad"],
                "skips": c["skips"],
                "win_rate": (c["wins"] + 0.5 * c["ties"]) / decided if decided else None,
            }
        )
    return out


def bradley_terry(
    wins: np.ndarray, *, prior: float = 0.1, iters: int = 200, tol: float = 1e-9
) -> np.ndarray:
    """Bradley–Terry strengths (log scale, mean 0) from a wins matrix ``wins[i, j]`` (times i
    beat j; a tie counts half to each) by Hunter's MM algorithm. A small symmetric ``prior`` of
    pseudo-comparisons keeps the fit finite when a model never lost or never won."""
    n = wins.shape[0]
    if n == 0:
        return np.zeros(0)
    w = wins.astype(float) + prior * (1 - np.eye(n))
    games = w + w.T
    total_wins = w.sum(axis=1)
    p = np.ones(n)
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = total_wins / denom
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    return np.log(p)


@dataclass
class Ranking:
    """Elo-scale strengths with a bootstrap confidence interval, best first."""

    source: str  # human | ai
    rows: list[dict[str, Any]]
    comparisons: int


def rank(
    comparisons: Sequence[tuple[str, str, float]],
    *,
    source: str,
    boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> Ranking:
    """Bradley–Terry ranking from ``(model_i, model_j, score_i)`` comparisons (score 1 = i won,
    0.5 tie, 0 = j won), with a percentile bootstrap over the comparisons."""
    models = sorted({m for a, b, _ in comparisons for m in (a, b)})
    idx = {m: i for i, m in enumerate(models)}
    n = len(models)
    if n == 0:
        return Ranking(source, [], 0)
    # aggregate into cells (i, j, score): the bootstrap resamples cell counts (multinomial)
    cells: Counter[tuple[int, int, float]] = Counter(
        (idx[a], idx[b], float(s)) for a, b, s in comparisons
    )
    keys = list(cells)
    counts = np.array([cells[k] for k in keys], dtype=float)
    ii = np.array([k[0] for k in keys], dtype=int)
    jj = np.array([k[1] for k in keys], dtype=int)
    ss = np.array([k[2] for k in keys], dtype=float)

    def fit(c: np.ndarray) -> np.ndarray:
        w = np.zeros((n, n))
        np.add.at(w, (ii, jj), c * ss)
        np.add.at(w, (jj, ii), c * (1 - ss))
        return bradley_terry(w)

    est = fit(counts)
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    samples = np.array(
        [fit(rng.multinomial(total, counts / total).astype(float)) for _ in range(boot)]
    )
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    to_elo = ELO_SCALE / np.log(10)
    lo = np.percentile(samples, lo_q, axis=0) if boot else est
    hi = np.percentile(samples, hi_q, axis=0) if boot else est
    played = np.zeros(n)
    np.add.at(played, ii, counts)
    np.add.at(played, jj, counts)
    rows = [
        {
            "model": models[i],
            "score": round(ELO_BASE + to_elo * est[i], 1),
            "ci_low": round(ELO_BASE + to_elo * lo[i], 1),
            "ci_high": round(ELO_BASE + to_elo * hi[i], 1),
            "comparisons": int(played[i]),
        }
        for i in range(n)
    ]
    rows.sort(key=lambda r: -r["score"])
    for r_, row in enumerate(rows, start=1):
        row["rank"] = r_
    return Ranking(source, rows, total)


def human_comparisons(store: Store) -> list[tuple[str, str, float]]:
    """One comparison per human verdict (tie and both bad count as a draw; skips don't count)."""
    out = []
    for v in store.pairwise_reviews():
        g1, g2 = _generator(v.key_1), _generator(v.key_2)
        if g1 == g2:
            continue
        if v.verdict in ("a", "b") and v.winner:
            out.append((g1, g2, 1.0 if v.winner == v.key_1 else 0.0))
        elif v.verdict in ("tie", "both_bad"):
            out.append((g1, g2, 0.5))
    return out


def ai_comparisons(store: Store, judge_id: str | None = None) -> list[tuple[str, str, float]]:
    """Every pair of rated candidates of every judgment, ordered by the AI ratings."""
    latest: dict[str, tuple[list[str], list[float | None]]] = {}
    for jm in store.judgments_since(-1.0, judge_id):
        # oldest first within a conversation: the newest wins
        latest[jm.conversation_id] = (jm.candidate_keys, jm.ratings)
    out = []
    for keys, ratings in latest.values():
        rated = [(_generator(k), r) for k, r in zip(keys, ratings, strict=False) if r is not None]
        for i in range(len(rated)):
            for j in range(i + 1, len(rated)):
                (gi, ri), (gj, rj) = rated[i], rated[j]
                if gi != gj:
                    out.append((gi, gj, 1.0 if ri > rj else 0.0 if ri < rj else 0.5))
    return out


def rankings(
    store: Store, judge_id: str | None = None, *, boot: int = 200, seed: int = 0
) -> dict[str, Ranking]:
    """``{"human": ..., "ai": ...}`` Bradley–Terry rankings of the generators."""
    return {
        "human": rank(human_comparisons(store), source="human", boot=boot, seed=seed),
        "ai": rank(ai_comparisons(store, judge_id), source="ai", boot=boot, seed=seed),
    }
