"""The built-in review queue: which conversations to show a human, one at a time, and what
they wrote back. Plain functions over the store (no UI code), used by the Review tab.

Queue filters (``FILTERS``), over conversations that have at least one done candidate:

* ``all``: every such conversation, in load order;
* ``unreviewed``: no review by this reviewer yet (by anyone when no reviewer is given);
* ``low_ai``: judged, and even the best AI rating is <= ``low_threshold`` (or every rating is
  null: the judge could not rate any candidate);
* ``ai_tie``: judged, at least two ratings, and the best rating is shared by two or more
  candidates (the judge cannot tell the top answers apart);
* ``needs_human``: the AI judge is unsure (``records.NeedsHuman``, the same definition
  Argilla's ``select: low_confidence`` pushes by): no usable judgment, a null rating or fewer
  than two ratings, a best rating <= 3, or the best two ratings less than 1 point apart;
* ``disagreement``: reviewed, and some human rating is >= 2 points away from the AI rating of
  the same candidate, or the human's chosen candidate is rated below another by the AI;
* ``judges_disagree``: a judge panel's judges rated some candidate 2 or more points apart, or
  named different best answers (issue 14; the fact is stored with the panel's judgment).

Candidates are shown in a per-conversation shuffled order (``display_order``,
``records.review_display_order``) so that a position never tells the reviewer which model
wrote an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.records import (
    REVIEW_SOURCE_UI,
    Candidate,
    Review,
    review_display_order,
)
from pipelines.store import StaleReviewError, Store
from pipelines.types import Conversation

FILTERS = {
    "all": "All with candidates",
    "unreviewed": "Unreviewed",
    "low_ai": "Low AI rating",
    "ai_tie": "AI ties",
    "needs_human": "AI unsure (needs a human)",
    "disagreement": "Human–AI disagreement",
    "judges_disagree": "Judges disagree",
}
REVIEW_SOURCE = REVIEW_SOURCE_UI  # the source of the reviews written by the Review tab


class ReviewError(ValueError):
    """A review that cannot be stored as given; the message is one line."""


@dataclass
class ReviewCandidate(Candidate):
    """A candidate as the Review tab shows it: with the AI judge's rating and rationale."""

    ai_rating: float | None = None
    rationale: str | None = None


@dataclass
class ReviewItem:
    conversation: Conversation
    candidates: list[ReviewCandidate]  # in display (shuffled) order
    judge_model: str | None = None
    my_review: Review | None = None
    other_reviews: list[Review] = field(default_factory=list)


display_order = review_display_order  # a stable shuffle of ``range(n)`` for one conversation


def _check_filter(filter: str) -> None:
    if filter not in FILTERS:
        raise ReviewError(f"unknown filter {filter!r} (known: {', '.join(FILTERS)})")


def queue_ids(
    store: Store,
    filter: str = "all",
    *,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    reviewer: str | None = None,
    low_threshold: float = 2,
    limit: int | None = None,
    offset: int = 0,
    after: str | None = None,
) -> list[str]:
    """Conversation ids of the review queue for ``filter``, in load order: one indexed SQL
    query (see ``Store.review_queue``). ``limit``/``offset`` or ``after`` (the last id of the
    previous page) page it; without them every id is returned."""
    _check_filter(filter)
    return store.review_queue(
        filter,
        generator_ids=generator_ids,
        judge_id=judge_id,
        reviewer=reviewer,
        low_threshold=low_threshold,
        review_source=REVIEW_SOURCE,
        limit=limit,
        offset=offset,
        after=after,
    )


def queue_page(
    store: Store,
    filter: str = "all",
    *,
    page_size: int = 50,
    after: str | None = None,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    reviewer: str | None = None,
    low_threshold: float = 2,
) -> list[str]:
    """One page of the queue: the first ``page_size`` ids after ``after`` (keyset paging, so
    opening a queue costs the same at 1k or 1M conversations)."""
    return queue_ids(
        store,
        filter,
        generator_ids=generator_ids,
        judge_id=judge_id,
        reviewer=reviewer,
        low_threshold=low_threshold,
        limit=page_size,
        after=after,
    )


def queue_count(
    store: Store,
    filter: str = "all",
    *,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    reviewer: str | None = None,
    low_threshold: float = 2,
) -> int:
    """How many conversations the queue for ``filter`` holds (an SQL aggregate)."""
    _check_filter(filter)
    return store.review_queue_count(
        filter,
        generator_ids=generator_ids,
        judge_id=judge_id,
        reviewer=reviewer,
        low_threshold=low_threshold,
        review_source=REVIEW_SOURCE,
    )


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
    ratings: dict[str, float | None] = {}
    rationales: dict[str, str | None] = {}
    judge_model = None
    if judgment is not None and judgment.usable:
        judge_model = judgment.model
        ratings, rationales = judgment.rating_of(), judgment.rationale_of()
    items = [
        ReviewCandidate(
            conversation_id=c.conversation_id,
            generator_id=c.generator_id,
            sample_index=c.sample_index,
            model=c.model,
            text=c.text,
            ai_rating=ratings.get(c.key),
            rationale=rationales.get(c.key),
        )
        for c in cands
    ]
    items = [items[i] for i in display_order(conversation_id, len(items))]
    mine, others = None, []
    for r in store.reviews(conversation_id):
        if reviewer and r.reviewer == reviewer and r.source == REVIEW_SOURCE:
            mine = r
        else:
            others.append(r)
    return ReviewItem(conv, items, judge_model, mine, others)


EMPTY_REVIEW = (
    "nothing to save: rate at least one candidate, pick a chosen or rejected answer, "
    "or tick Discard"
)


def ai_suggestion(
    store: Store, conversation_id: str, candidate_keys: list[str], judge_id: str | None = None
) -> dict[str, int]:
    """The judge's ratings of ``candidate_keys`` as whole 1..5 numbers (what the Review tab
    fills in when the reviewer asks for the AI's suggestion); empty when not judged."""
    judgment = store.judgment(conversation_id, judge_id)
    if judgment is None or not judgment.usable:
        return {}
    out: dict[str, int] = {}
    for key, rating in zip(judgment.candidate_keys, judgment.ratings, strict=False):
        if key in candidate_keys and rating is not None:
            out[key] = min(5, max(1, int(float(rating) + 0.5)))
    return out


def default_picks(ratings: dict[str, int]) -> tuple[str | None, str | None]:
    """(chosen, rejected) implied by ratings: the single best and single worst candidate,
    when both exist and differ in rating (a tie at the top or bottom implies no pick)."""
    if len(ratings) < 2:
        return None, None
    values = list(ratings.values())
    hi, lo = max(values), min(values)
    if hi == lo:
        return None, None
    best = [k for k, v in ratings.items() if v == hi]
    worst = [k for k, v in ratings.items() if v == lo]
    return (best[0] if len(best) == 1 else None), (worst[0] if len(worst) == 1 else None)


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
    judge_id: str | None = None,
    picks_from_ratings: bool = True,
    expected_version: str | None = None,
) -> dict[str, Any]:
    """Validate and store one review (source ``ui``); returns what was stored.

    A review must say something: at least one rating, a chosen or rejected pick, or a discard
    (``ReviewError`` otherwise; a comment alone is not a judgment). Missing picks default from
    the ratings (``default_picks``) unless ``picks_from_ratings`` is False. When the ratings
    are exactly the judge's (``ai_suggestion``) for every candidate and the picks are the ones
    they imply, the review is stored with ``accepted_ai=True``: the reviewer accepted the AI's
    suggestion rather than judging independently (stats and the card count it apart).

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
    if not clean and not chosen and not rejected and not discard:
        raise ReviewError(EMPTY_REVIEW)
    if picks_from_ratings and not discard:
        auto_chosen, auto_rejected = default_picks(clean)
        if not chosen and auto_chosen != rejected:
            chosen = auto_chosen
        if not rejected and auto_rejected != chosen:
            rejected = auto_rejected
    suggestion = ai_suggestion(store, conversation_id, candidate_keys, judge_id)
    accepted_ai = (
        not discard
        and bool(suggestion)
        and clean == suggestion
        and set(clean) == set(candidate_keys)
        and (chosen or None, rejected or None) == default_picks(suggestion)
    )
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
            accepted_ai=accepted_ai,
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
        "accepted_ai": accepted_ai,
    }


def review_progress(
    store: Store, *, generator_ids: list[str] | None = None, reviewer: str | None = None
) -> dict[str, int]:
    """``{"reviewable", "reviewed" (by anyone), "mine", "discarded"}``: SQL aggregates (the
    reviewable count is cached in the store until a candidate is written)."""
    return store.review_counts(generator_ids, reviewer, REVIEW_SOURCE)


def conversations_by_source(store: Store, source: str, limit: int = 20) -> list[Conversation]:
    """The first ``limit`` stored conversations of one source, in load order (Data preview)."""
    return store.conversations(ids=store.conversation_ids_from(source, limit))
