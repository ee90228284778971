"""``collect``: everything binarization needs from the store, in a handful of bulk queries (one
per table, never one per conversation), as ``JudgedConversation`` rows."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pipelines.binarize.rows import JudgedConversation
from pipelines.store import Store
from pipelines.types import Conversation


def _in_clause(column: str, values: Sequence[str] | None) -> tuple[str, list[Any]]:
    if not values:
        return "", []
    return f" AND {column} IN ({','.join('?' * len(values))})", list(values)


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
    q = store.query
    # one chunk of conversations (collect_chunks): every query keyed by their ids (the unary
    # + keeps SQLite from walking the whole generator through its index instead)
    gen_col = "generator_id" if conversation_ids is None else "+generator_id"
    cand_sql, cand_params = _in_clause(gen_col, generator_ids)
    ids_sql, ids_params = _in_clause("conversation_id", conversation_ids)
    if conversation_ids is not None and not conversation_ids:
        return []
    candidates: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    cand_rows = q(
        "SELECT conversation_id, generator_id, sample_index, model, text FROM candidates"
        " WHERE status = 'done' AND text IS NOT NULL" + cand_sql + ids_sql + " ORDER BY"
        " conversation_id, generator_id, sample_index",
        cand_params + ids_params,
    )
    label = labels or model_labels({(gen, model) for _, gen, _, model, _ in cand_rows})
    for cid, gen, idx, model, text in cand_rows:
        candidates[cid].append((f"{gen}/{idx}", gen, label[gen, model], text))

    judge_sql, judge_params = ("", [])
    if judge_id is not None:
        judge_sql, judge_params = " AND judge_id = ?", [judge_id]
    judgments: dict[str, tuple[str, str, str, str]] = {}
    # Oldest first so that, without a judge_id, the most recent judgment wins.
    for cid, model, keys, ratings, rationales in q(
        "SELECT conversation_id, model, candidate_keys, ratings, rationales FROM judgments"
        " WHERE status = 'done'" + judge_sql + ids_sql + " ORDER BY updated_at",
        judge_params + ids_params,
    ):
        judgments[cid] = (model, keys, ratings, rationales)

    reviews: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cid, reviewer, source, ratings, chosen, rejected, discard, comment, ts in q(
        "SELECT conversation_id, reviewer, source, ratings, chosen, rejected, discard,"
        " comment, updated_at FROM reviews WHERE 1 = 1" + ids_sql + " ORDER BY updated_at",
        ids_params,
    ):
        reviews[cid].append(
            {
                "conversation_id": cid,
                "reviewer": reviewer,
                "source": source,
                "ratings": json.loads(ratings),
                "chosen": chosen,
                "rejected": rejected,
                "discard": bool(discard),
                "comment": comment,
                "updated_at": ts,
            }
        )

    from pipelines.pairwise import pair_outcomes

    pairwise = pair_outcomes(store.pairwise_reviews())

    out: list[JudgedConversation] = []
    loads = json.loads
    for cid, source, messages, original, metadata in q(
        "SELECT conversation_id, source, messages, original_response, metadata"
        " FROM conversations WHERE 1 = 1" + ids_sql + " ORDER BY rowid",
        ids_params,
    ):
        conv = Conversation(
            messages=loads(messages),
            source=source,
            original_response=original,
            metadata=loads(metadata),
            conversation_id=cid,
        )
        cands = candidates.get(cid, [])
        judgment = judgments.get(cid)
        if judgment is None:
            ai: list[int | None] = [None] * len(cands)
            rats: list[str | None] = [None] * len(cands)
            judge_model = None
        else:
            judge_model, keys, j_ratings, j_rationales = judgment
            pos = {k: i for i, k in enumerate(loads(keys))}
            j_r = loads(j_ratings)
            j_t = loads(j_rationales)
            ai, rats = [], []
            for c in cands:
                i = pos.get(c[0])
                ai.append(None if i is None or i >= len(j_r) else j_r[i])
                rats.append(None if i is None or i >= len(j_t) else j_t[i])
        out.append(
            JudgedConversation(
                conversation=conv,
                candidates=cands,
                ai_ratings=ai,
                rationales=rats,
                judge_model=judge_model,
                reviews=reviews.get(cid, []),
                judged=judgment is not None,
                pairwise=pairwise.get(cid, {}),
            )
        )
    return out
