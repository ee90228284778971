"""``collect``: everything binarization needs from the store, in a handful of bulk queries (one
per table, never one per conversation), as ``JudgedConversation`` rows."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator

from pipelines.binarize.rows import JudgedConversation
from pipelines.records import CandidateRow, Judgment, Review, candidate_key, gc_paused
from pipelines.store import Store
from pipelines.types import Conversation


def model_labels(generators: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The label of each ``(generator_id, model)``: the model name where no other generator
    present uses it, else ``"{model} ({generator_id})"`` (e.g. two SmolLM2 generators that differ
    only by temperature or system prompt)."""
    pairs = set(generators)
    users: defaultdict[str, set[str]] = defaultdict(set)
    for gen, model in pairs:
        users[model].add(gen)
    return {
        (gen, model): model if len(users[model]) == 1 or not model else f"{model} ({gen})"
        for gen, model in pairs
    }


def collect_chunks(
    store: Store,
    *,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    chunk_rows: int = 5000,
) -> Iterator[list[JudgedConversation]]:
    """``collect`` in load-order chunks of ``chunk_rows`` conversations (issue 13: streaming
    binarize/export hold one chunk at a time). Model labels are computed once over the whole
    store, so every chunk labels a model as ``collect`` would."""
    labels = model_labels(store.generator_models(generator_ids))
    for ids in store.conversation_id_pages(chunk_rows):
        yield collect(
            store,
            generator_ids=generator_ids,
            judge_id=judge_id,
            conversation_ids=ids,
            labels=labels,
        )


def collect(
    store: Store,
    *,
    generator_ids: list[str] | None = None,
    judge_id: str | None = None,
    conversation_ids: list[str] | None = None,
    labels: dict[tuple[str, str], str] | None = None,
) -> list[JudgedConversation]:
    """Every stored conversation (load order) with its done candidates, the done judgment of
    ``judge_id`` (or, without one, the most recent done judgment) and its reviews.

    Five bulk queries whatever the number of conversations (the fifth: pairwise verdicts).
    Candidates are restricted to ``generator_ids`` when given, in (generator_id, sample_index)
    order. A candidate's model is labelled by ``model_labels``: the model name, or
    ``"{model} ({generator_id})"`` when several generators present share that model name.
    """
    if conversation_ids is not None and not conversation_ids:
        return []
    with gc_paused():  # records by the hundred thousand, no cycles: no GC passes over them
        return _collect(store, generator_ids, judge_id, conversation_ids, labels)


def _collect(
    store: Store,
    generator_ids: list[str] | None,
    judge_id: str | None,
    conversation_ids: list[str] | None,
    labels: dict[tuple[str, str], str] | None,
) -> list[JudgedConversation]:
    rows = store.binarize_rows(generator_ids, judge_id, conversation_ids)
    loads = json.loads
    candidates: dict[str, list[CandidateRow]] = defaultdict(list)
    label = labels or model_labels({(gen, model) for _, gen, _, model, _ in rows.candidates})
    for cid, gen, idx, model, text in rows.candidates:
        candidates[cid].append(CandidateRow(candidate_key(gen, idx), gen, label[gen, model], text))

    # oldest first: the newest done judgment of a conversation wins (parsed once it has won)
    newest = {cid: judgment for cid, *judgment in rows.judgments}

    reviews: dict[str, list[Review]] = defaultdict(list)
    for cid, reviewer, source, ratings, chosen, rejected, discard, comment, ts in rows.reviews:
        reviews[cid].append(
            Review(
                conversation_id=cid,
                reviewer=reviewer,
                source=source,
                ratings=loads(ratings),
                chosen=chosen,
                rejected=rejected,
                discard=bool(discard),
                comment=comment,
                updated_at=ts,
            )
        )

    from pipelines.pairwise import pair_outcomes

    pairwise = pair_outcomes(store.pairwise_reviews())

    out: list[JudgedConversation] = []
    for cid, source, messages, original, metadata in rows.conversations:
        conv = Conversation(
            messages=loads(messages),
            source=source,
            original_response=original,
            metadata=loads(metadata),
            conversation_id=cid,
        )
        cands = candidates.get(cid, [])
        judgment = _judgment(cid, newest.get(cid))
        ai: list[float | None]
        rats: list[str | None]
        if judgment is None:
            ai = [None] * len(cands)
            rats = [None] * len(cands)
        else:  # aligned with the candidates (None for a candidate the judge did not see)
            rating, rationale = judgment.rating_of(), judgment.rationale_of()
            ai = [rating.get(c.key) for c in cands]
            rats = [rationale.get(c.key) for c in cands]
        out.append(
            JudgedConversation(
                conversation=conv,
                candidates=cands,
                ai_ratings=ai,
                rationales=rats,
                judge_model=None if judgment is None else judgment.model,
                reviews=reviews.get(cid, []),
                judged=judgment is not None,
                pairwise=pairwise.get(cid, {}),
            )
        )
    return out


def _judgment(conversation_id: str, row: list[str] | None) -> Judgment | None:
    """A ``binarize_rows`` judgment row (less its conversation id) as a ``Judgment``."""
    if row is None:
        return None
    judge, model, keys, ratings, rationales = row
    return Judgment(
        conversation_id=conversation_id,
        judge_id=judge,
        model=model,
        candidate_keys=json.loads(keys),
        ratings=json.loads(ratings),
        rationales=json.loads(rationales),
    )
