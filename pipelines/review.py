"""The built-in review queue: which conversations to show a human, one at a time, and what
they wrote back. Plain functions over the store (no UI code), used by the Review tab.

Queue filters (``FILTERS``), over conversations that have at least one done candidate:

* ``all``: every such conversation, in load order;
* ``unreviewed``: no review by this reviewer yet (by anyone when no reviewer is given);
* ``low_ai``: judged, and even the best AI rating is <= ``low_threshold`` (or every rating is
  null: the judge could not rate any candidate);
* ``ai_tie``: judged, at least two ratings, and the best rating is shared by two or more
  candidates (the judge cannot tell the top answers apart);
* ``disagreement``: reviewed, and some human rating is >= 2 points away from the AI rating of
  the same candidate, or the human's chosen candidate is rated below another by the AI.

Candidates are shown in a per-conversation shuffled order (``display_order``) so that a
position never tells the reviewer which model wrote an answer.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from pipelines.store import StaleReviewError, Store
from pipelines.types import Conversation

FILTERS = {
    "all": "All with candidates",
    "unreviewed": "Unreviewed",
    "low_ai": "Low AI rating",
    "ai_tie": "AI ties",
    "disagreement": "Human–AI disagreement",
}
REVIEW_SOURCE = "ui"


class ReviewError(ValueError):
    """A review that cannot be stored as given; the message is one line."""


@dataclass
class ReviewCandidate:
    key: str
    generator_id: str
    model: str
    text: str
    ai_rating: float | None = None
    rationale: str | None = None


@dataclass
class ReviewItem:
    conversation: Conversation
    candidates: list[ReviewCandidate]  # in display (shuffled) order
    judge_model: str | None = None
    my_review: dict[str, Any] | None = None
    other_reviews: list[dict[str, Any]] = field(default_factory=list)


def _in(column: str, values: list[str] | None) -> tuple[str, list[Any]]:
    if not values:
        return "", []
    return f" AND {column} IN ({','.join('?' * len(values))})", list(values)


def display_order(conversation_id: str, n: int) -> list[int]:
    """A stable shuffle of ``range(n)`` for one conversation."""
    seed = int(hashlib.sha256(f"review:{conversation_id}".encode()).hexdigest()[:12], 16)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _candidate_ids(store: Store, generator_ids: list[str] | None) -> list[str]:
    sql, params = _in("generator_id", generator_ids)
    rows = store.query(
        "SELECT c.conversation_id FROM conversations c WHERE EXISTS (SELECT 1 FROM candidates d"
        " WHERE d.conversation_id = c.conversation_id AND d.status = 'done'"
        + sql.replace("generator_id", "d.generator_id")
        + ") ORDER BY c.rowid",
        params,
    )
    return [r[0] for r in rows]


def _ratings_by_conversation(
    store: Store, judge_id: str | None
) -> dict[str, tuple[list[str], list[float | None]]]:
    sql = "SELECT conversation_id, candidate_keys, ratings FROM judgments WHERE status != 'failed'"
    params: list[Any] = []
    if judge_id:
        sql += " AND judge_id = ?"
        params.append(judge_id)
    out: dict[str, tuple[list[str], list[float | None]]] = {}
    for cid, keys, ratings in store.query(sql + " ORDER BY updated_at", params):
        out[cid] = (json.loads(keys), json.loads(ratings))
    return out


def _reviews_by_conversation(
    store: Store, reviewer: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    sql = "SELECT conversation_id, reviewer, ratings, chosen, discard FROM reviews"
    params: list[Any] = []
    if reviewer:
        sql += " WHERE reviewer = ? AND source = ?"
        params = [reviewer, REVIEW_SOURCE]
    out: dict[str, list[dict[str, Any]]] = {}
    for cid, who, ratings, chosen, discard in store.query(sql, params):
        out.setdefault(cid, []).append(
            {
                "reviewer": who,
                "ratings": json.loads(ratings),
                "chosen": chosen,
                "discard": bool(discard),
            }
        )
    return out


def _disagrees(keys: list[str], ai: list[float | None], reviews: list[dict[str, Any]]) -> bool:
    by_key = {k: r for k, r in zip(keys, ai, strict=False) if r is not None}
    best = max(by_key.values(), default=None)
    for review in reviews:
        for key, human in (review.get("ratings") or {}).items():
            if human is not None and key in by_key and abs(float(human) - by_key[key]) >= 2:
                return True
        chosen = review.get("chosen")
        if chosen in by_key and best is not None and by_key[chosen] < best:
            return True
    return False


def queue_ids(
    store: Store,
    filter: str = "all",
    *,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    reviewer: str | None = None,
    low_threshold: float = 2,
) -> list[str]:
    """Conversation ids of the review queue for ``filter``, in load order."""
    if filter not in FILTERS:
        raise ReviewError(f"unknown filter {filter!r} (known: {', '.join(FILTERS)})")
    ids = _candidate_ids(store, generator_ids)
    if filter == "all":
        return ids
    if filter == "unreviewed":
        done = _reviews_by_conversation(store, reviewer or None)
        return [c for c in ids if c not in done]
    judged = _ratings_by_conversation(store, judge_id)
    if filter == "low_ai":
        out = []
        for c in ids:
            if c in judged:
                rated = [r for r in judged[c][1] if r is not None]
                if not rated or max(rated) <= low_threshold:
                    out.append(c)
        return out
    if filter == "ai_tie":
        out = []
        for c in ids:
            if c in judged:
                rated = [r for r in judged[c][1] if r is not None]
                if len(rated) >= 2 and rated.count(max(rated)) >= 2:
                    out.append(c)
        return out
    reviews = _reviews_by_conversation(store)
    return [c for c in ids if c in reviews and c in judged and _disagrees(*judged[c], reviews[c])]


def review_item(
    store: Store,
    conversation_id: str,
    *,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    reviewer: str | None = None,
) -> ReviewItem | None:
    """One conversation with its done candidates (display order), AI ratings and reviews."""
    conv = store.conversation(conversation_id)
    if conv is None:
        return None
    cands = store.candidates_for(conversation_id, generator_ids)
    judgment = store.judgment(conversation_id, judge_id)
    ai: dict[str, tuple[float | None, str | None]] = {}
    judge_model = None
    if judgment is not None and judgment["status"] != "failed":
        judge_model = judgment["model"]
        for i, key in enumerate(judgment["candidate_keys"]):
            rating = judgment["ratings"][i] if i < len(judgment["ratings"]) else None
            why = judgment["rationales"][i] if i < len(judgment["rationales"]) else None
            ai[key] = (rating, why)
    items = [
        ReviewCandidate(
            key=c.key,
            generator_id=c.generator_id,
            model=c.model,
            text=c.text,
            ai_rating=ai.get(c.key, (None, None))[0],
            rationale=ai.get(c.key, (None, None))[1],
        )
        for c in cands
    ]
    items = [items[i] for i in display_order(conversation_id, len(items))]
    mine, others = None, []
    for r in store.reviews(conversation_id):
        if reviewer and r["reviewer"] == reviewer and r["source"] == REVIEW_SOURCE:
            mine = r
        else:
            others.append(r)
    return ReviewItem(conv, items, judge_model, mine, others)


def submit_review(
    store: Store,
    conversation_id: str,
    reviewer: str,
    *,
    candidate_keys: list[str],
    ratings: dict[str, int | None] | None = None,
    chosen: str | None = None,
    rejected: str | None = None,
    discard: bool = False,
    comment: str | None = None,
    expected_version: str | None = None,
) -> dict[str, Any]:
    """Validate and store one review (source ``ui``); returns what was stored.

    ``expected_version``: ``store.review_version`` when the view was rendered; a stale view (the
    conversation or this reviewer's review changed since) is refused, never silently applied."""
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise ReviewError("give a reviewer name (or sign in) before submitting")
    if store.conversation(conversation_id) is None:
        raise ReviewError(f"unknown conversation {conversation_id}")
    clean: dict[str, int] = {}
    for key, value in (ratings or {}).items():
        if value in (None, ""):
            continue
        if key not in candidate_keys:
            raise ReviewError(f"rating for an unknown candidate {key!r}")
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise ReviewError(f"rating {value!r} is not a number from 1 to 5") from None
        if not 1 <= v <= 5:
            raise ReviewError(f"rating {v} is outside 1..5")
        clean[key] = v
    for name, pick in (("chosen", chosen), ("rejected", rejected)):
        if pick and pick not in candidate_keys:
            raise ReviewError(f"{name} is not one of this conversation's candidates")
    if chosen and rejected and chosen == rejected:
        raise ReviewError("chosen and rejected must be different candidates")
    comment = (comment or "").strip() or None
    try:
        store.put_review(
            conversation_id,
            reviewer,
            REVIEW_SOURCE,
            ratings=clean,
            chosen=chosen or None,
            rejected=rejected or None,
            discard=bool(discard),
            comment=comment,
            expected_version=expected_version,
        )
    except StaleReviewError:
        raise ReviewError(
            "this conversation changed since you opened it (new candidates or ratings, or your "
            "review saved from another tab): nothing was saved; reload it and review again"
        ) from None
    return {
        "ratings": clean,
        "chosen": chosen or None,
        "rejected": rejected or None,
        "discard": bool(discard),
        "comment": comment,
    }


def review_progress(
    store: Store, *, generator_ids: list[str] | None = None, reviewer: str | None = None
) -> dict[str, int]:
    """``{"reviewable", "reviewed" (by anyone), "mine", "discarded"}``."""
    ids = set(_candidate_ids(store, generator_ids))
    everyone = _reviews_by_conversation(store)
    mine = _reviews_by_conversation(store, reviewer) if reviewer else {}
    return {
        "reviewable": len(ids),
        "reviewed": sum(1 for c in everyone if c in ids),
        "mine": sum(1 for c in mine if c in ids),
        "discarded": sum(
            1 for c, rs in everyone.items() if c in ids and any(r["discard"] for r in rs)
        ),
    }


def conversations_by_source(store: Store, source: str, limit: int = 20) -> list[Conversation]:
    """The first ``limit`` stored conversations of one source, in load order (Data preview)."""
    rows = store.query(
        "SELECT conversation_id FROM conversations WHERE source = ? ORDER BY rowid LIMIT ?",
        (source, int(limit)),
    )
    return store.conversations(ids=[r[0] for r in rows])
