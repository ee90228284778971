"""The binarize rules, for one conversation at a time (``decide``):

* effective rating of a candidate = mean human rating when any review rated it, else the AI
  judge's rating; a conversation is "human" when any human rating or pick was used;
* a human chosen / rejected pick overrides ratings (rating filters do not apply to a picked pair);
* a conversation is discarded when a majority of its reviews discard it;
* ties are always dropped, then ``min_chosen_rating`` and ``min_margin`` apply;
* null ratings either drop the row (``drop_null_ratings``) or just make the candidate ineligible;
* ``max_turns`` and decontamination drop conversations before any rating is looked at;
* human pairwise (arena) verdicts beat the AI's order for their pair (issue 14);
* the strategy picks the pairs: ``best-vs-worst``, ``best-vs-random-lower`` (a seeded pick per
  conversation, ``stable_hash``) or ``all-pairs``.

``columnar.binarize`` applies the same rules as numpy masks to the conversations without
reviews and calls ``decide`` for the others; ``reference.binarize_reference`` calls ``decide``
for every conversation.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from pipelines.binarize.config import BinarizeConfig
from pipelines.binarize.decontaminate import normalize_prompt, prompt_set
from pipelines.binarize.rows import JudgedConversation


def _majority(values: list[str]) -> str | None:
    """Most frequent value; ties go to the most recent (values are in review order)."""
    if not values:
        return None
    counts = Counter(values)
    top = max(counts.values())
    for v in reversed(values):
        if counts[v] == top:
            return v
    return None  # pragma: no cover


def stable_hash(seed: int, conversation_id: str) -> int:
    """A per-conversation pseudo-random integer: same seed + id, same pick, whatever the order."""
    digest = hashlib.blake2b(f"{seed}:{conversation_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stable_hashes(seed: int, conversation_ids: list[str]) -> Any:
    """``stable_hash`` of many ids, as a numpy uint64 array."""
    prefix = f"{seed}:"
    digests = b"".join(
        hashlib.blake2b((prefix + cid).encode(), digest_size=8).digest() for cid in conversation_ids
    )
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


@dataclass(frozen=True)
class Rules:
    """A ``BinarizeConfig`` ready to apply: the config itself plus the normalised prompts of its
    decontamination files (read once per run)."""

    config: BinarizeConfig
    banned: frozenset[str] = frozenset()

    @classmethod
    def of(cls, config: BinarizeConfig) -> Rules:
        banned = prompt_set(config.decontaminate) if config.decontaminate else frozenset()
        return cls(config=config, banned=banned)


class Decided(NamedTuple):
    """A conversation binarize keeps: its effective ratings (aligned with its candidates),
    whether a human decided it, and its pairs as (chosen index, rejected index)."""

    ratings: list[float | None]
    human: bool
    pairs: list[tuple[int, int]]


# The decision for one conversation: a drop reason (one of ``DROP_REASONS``) or ``Decided``.
Decision = str | Decided


def _decide(row: JudgedConversation, rules: Rules) -> Decision:
    """The rules for one conversation: a drop reason, or ``Decided``."""
    strategy = rules.config.strategy
    min_margin = rules.config.min_margin
    min_chosen = rules.config.min_chosen_rating
    seed = rules.config.seed
    conv = row.conversation
    messages = conv.messages
    reviews = row.reviews

    # -- conversation-level filters -------------------------------------------------------
    if reviews:
        n_discard = sum(1 for r in reviews if r.discard)
        if n_discard * 2 > len(reviews):
            return "discarded"
    if rules.config.max_turns is not None and (
        sum(1 for m in messages if m["role"] == "user") > rules.config.max_turns
    ):
        return "too_many_turns"
    banned = rules.banned
    if banned and any(
        m["role"] == "user" and normalize_prompt(m["content"]) in banned for m in messages
    ):
        return "contaminated"
    cands = row.candidates
    n = len(cands)
    if n < 2:
        return "too_few_candidates"

    # -- effective ratings ----------------------------------------------------------------
    ratings: list[float | None] = [None if r is None else float(r) for r in row.ai_ratings]
    if len(ratings) < n:
        ratings.extend([None] * (n - len(ratings)))
    human = False
    pick_chosen = pick_rejected = None
    if reviews:
        keep = [r for r in reviews if not r.discard]
        index = {c.key: i for i, c in enumerate(cands)}
        sums: dict[int, list[float]] = {}
        for r in keep:
            for key, value in (r.ratings or {}).items():
                i = index.get(key)
                if i is not None and value is not None:
                    sums.setdefault(i, []).append(float(value))
        for i, vals in sums.items():
            ratings[i] = sum(vals) / len(vals)
        human = bool(sums)
        ch = _majority([r.chosen for r in keep if r.chosen in index])
        rj = _majority([r.rejected for r in keep if r.rejected in index])
        if ch is not None and ch == rj:
            ch = rj = None
        pick_chosen = index[ch] if ch is not None else None
        pick_rejected = index[rj] if rj is not None else None
    picked = pick_chosen is not None or pick_rejected is not None

    if not row.judged and not human and not picked:
        return "no_judgment"
    has_null = None in ratings
    if has_null and rules.config.drop_null_ratings:
        return "null_rating"

    # -- choose pairs ---------------------------------------------------------------------
    chosen_list: list[tuple[int, int]]
    if picked:
        chosen_list = _picked_pairs(
            ratings, pick_chosen, pick_rejected, strategy, seed, conv.conversation_id
        )
        if not chosen_list:
            return "too_few_candidates"
        return Decided(ratings, True, chosen_list)
    eligible = [i for i in range(n) if ratings[i] is not None]
    if len(eligible) < 2:
        return "null_rating" if has_null else "too_few_candidates"
    hi = max(ratings[i] for i in eligible)  # type: ignore[type-var]
    lo = min(ratings[i] for i in eligible)  # type: ignore[type-var]
    if hi == lo:
        return "tie"
    if min_chosen is not None and hi < min_chosen:  # type: ignore[operator]
        return "below_min_chosen"
    if hi - lo < min_margin:  # type: ignore[operator]
        return "below_margin"
    if strategy == "best-vs-worst":
        best = [i for i in eligible if ratings[i] == hi]
        worst = [i for i in eligible if ratings[i] == lo]
        if len(best) > 1 or len(worst) > 1:
            h = stable_hash(seed, conv.conversation_id)
            chosen_list = [(best[h % len(best)], worst[(h >> 20) % len(worst)])]
        else:
            chosen_list = [(best[0], worst[0])]
    elif strategy == "best-vs-random-lower":
        h = stable_hash(seed, conv.conversation_id)
        best = [i for i in eligible if ratings[i] == hi]
        c = best[h % len(best)]
        lower = [
            i
            for i in eligible
            if ratings[i] < hi and hi - ratings[i] >= min_margin  # type: ignore[operator]
        ]
        chosen_list = [(c, lower[(h >> 20) % len(lower)])]
    else:  # all-pairs
        chosen_list = [
            (i, j)
            for i in eligible
            for j in eligible
            if ratings[i] > ratings[j]  # type: ignore[operator]
            and ratings[i] - ratings[j] >= min_margin  # type: ignore[operator]
            and (min_chosen is None or ratings[i] >= min_chosen)  # type: ignore[operator]
        ]
    return Decided(ratings, human, chosen_list)


# Drops that a human pairwise verdict overrides: the AI could not order the candidates, but a
_PAIRWISE_OVERRIDES = frozenset(
    {"tie", "below_margin", "below_min_chosen", "null_rating", "no_judgment"}
)


def decide(row: JudgedConversation, rules: Rules) -> Decision:
    """``_decide``, then the human pairwise verdicts (issue 14): a verdict beats the AI's order
    for its pair (the pair is flipped when the humans preferred the other answer), a human tie
    or both-bad drops the pair, and where the AI could not order the candidates at all, the
    pairs the humans decided are used."""
    decided = _decide(row, rules)
    if not row.pairwise or (isinstance(decided, str) and decided not in _PAIRWISE_OVERRIDES):
        return decided
    index = {c.key: i for i, c in enumerate(row.candidates)}
    outcomes: dict[frozenset[int], int | None] = {}  # pair -> winner index, None for a tie
    for (k1, k2), outcome in row.pairwise.items():
        if k1 in index and k2 in index:
            outcomes[frozenset((index[k1], index[k2]))] = (
                None if outcome == "tie" else index.get(outcome)
            )
    if not outcomes:
        return decided
    decisive = [
        (w, next(iter(p - {w}))) for p, w in outcomes.items() if w is not None and len(p) == 2
    ]
    if isinstance(decided, str):
        if not decisive:
            return "human_pairwise_tie"
        ratings: list[float | None] = [None if r is None else float(r) for r in row.ai_ratings]
        ratings.extend([None] * (len(row.candidates) - len(ratings)))
        decisive.sort()
        return Decided(
            ratings, True, decisive if rules.config.strategy == "all-pairs" else decisive[:1]
        )
    ratings, human, chosen_list = decided.ratings, decided.human, decided.pairs
    out: list[tuple[int, int]] = []
    touched = False
    beat = {loser: w for w, loser in decisive}  # loser -> a candidate humans preferred
    lost = {w: loser for w, loser in decisive}

    def close(i: int, j: int) -> bool:  # the AI could not separate them (margin < 1)
        a, b = ratings[i], ratings[j]
        return a is not None and b is not None and abs(a - b) < 1

    for ci, ri in chosen_list:
        key = frozenset((ci, ri))
        if key not in outcomes:
            # the humans resolved a near-tie next to the AI's pick: their winner is chosen,
            # their loser rejected (only for the one-pair strategies)
            if rules.config.strategy != "all-pairs":
                w = beat.get(ci)
                if w is not None and w != ri and close(w, ci):
                    ci, touched = w, True
                loser = lost.get(ri)
                if loser is not None and loser != ci and close(loser, ri):
                    ri, touched = loser, True
                # a human verdict confirmed the AI's own pick among near-equals
                if (ci in lost and close(ci, lost[ci])) or (ri in beat and close(ri, beat[ri])):
                    touched = True
            out.append((ci, ri))
            continue
        touched = True
        winner = outcomes[key]
        if winner is not None:
            out.append((winner, ri if winner == ci else ci))
    if rules.config.strategy == "all-pairs":
        have = {frozenset(p) for p in out}
        extra = [p for p in decisive if frozenset(p) not in have]
        touched = touched or bool(extra)
        out.extend(sorted(extra))
    if not out:
        return "human_pairwise_tie"
    return Decided(ratings, human or touched, out)


def _picked_pairs(
    ratings: list[float | None],
    pick_chosen: int | None,
    pick_rejected: int | None,
    strategy: str,
    seed: int,
    conversation_id: str,
) -> list[tuple[int, int]]:
    """Pairs when a human picked the chosen and/or rejected candidate. The pick wins over any
    rating; the missing side is filled by the strategy from the other candidates' ratings
    (unrated candidates rank last / are used only when nothing is rated)."""
    n = len(ratings)
    if pick_chosen is not None and pick_rejected is not None:
        return [(pick_chosen, pick_rejected)]

    def order(i: int) -> float:
        r = ratings[i]
        return float("-inf") if r is None else r

    if pick_chosen is not None:
        others = [i for i in range(n) if i != pick_chosen]
        if not others:
            return []
        if strategy == "all-pairs":
            return [(pick_chosen, j) for j in others]
        if strategy == "best-vs-random-lower":
            rc = ratings[pick_chosen]
            lower = [
                j
                for j in others
                if rc is None or (ratings[j] is not None and ratings[j] < rc)  # type: ignore[operator]
            ]
            pool = lower or others
            return [(pick_chosen, pool[stable_hash(seed, conversation_id) % len(pool)])]
        rated = [j for j in others if ratings[j] is not None]
        pool = rated or others
        return [(pick_chosen, min(pool, key=order))]
    assert pick_rejected is not None
    others = [i for i in range(n) if i != pick_rejected]
    if not others:
        return []
    if strategy == "all-pairs":
        return [(i, pick_rejected) for i in others]
    return [(max(others, key=order), pick_rejected)]
