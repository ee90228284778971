"""The columnar binarize: the rules of ``rules.py`` as numpy masks over a (rows x candidates)
ratings matrix, the pairs emitted straight into a ``pyarrow.Table``.

Conversations with reviews or human pairwise verdicts are decided one by one (``rules.decide``)
inside the same chunk; the rest (the bulk) by the masks. The result is identical to
``reference.binarize_reference`` (same pairs, same order, same counters), which the tests check
over a grid of options.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import chain, repeat
from operator import attrgetter, gt, itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.binarize.config import BinarizeConfig
from pipelines.binarize.decontaminate import normalize_prompt
from pipelines.binarize.reference import binarize_reference
from pipelines.binarize.rows import (
    DROP_REASONS,
    BinarizeResult,
    JudgedConversation,
    arrow_schema,
    pa_concat,
)
from pipelines.binarize.rules import Rules, decide, stable_hashes
from pipelines.judge_quality import null_placeholders
from pipelines.types import Conversation

CHUNK_ROWS = 32_768  # rows per Arrow chunk: bounds memory and keeps int32 offsets far from 2 GiB


def binarize(
    rows: Iterable[JudgedConversation], options: BinarizeConfig | None = None
) -> BinarizeResult:
    """Turn judged conversations into preference pairs (see ``pipelines.binarize``).

    Columnar in chunks of ``CHUNK_ROWS`` conversations. Input the columns cannot represent (a
    conversation with more AI ratings than candidates, see ``fits_columns``; ``collect`` never
    makes one) goes to ``binarize_reference`` as a whole, so the result is the same either way."""
    config = options or BinarizeConfig()
    rows = rows if isinstance(rows, list) else list(rows)
    if not fits_columns(rows):
        return binarize_reference(rows, config)
    rules = Rules.of(config)
    dropped: Counter[str] = Counter({k: 0 for k in DROP_REASONS})
    tables = []
    kept = human = 0
    for start in range(0, len(rows), CHUNK_ROWS):
        table, k, h = _binarize_chunk(rows[start : start + CHUNK_ROWS], rules, dropped)
        tables.append(table)
        kept += k
        human += h
    return BinarizeResult(
        table=pa_concat(tables),
        dropped=dropped,
        rows_in=len(rows),
        rows_kept=kept,
        human_rows=human,
    )


def fits_columns(rows: list[JudgedConversation]) -> bool:
    """Whether every row has at most one AI rating per candidate. The ratings matrix has one
    column per candidate; the reference path keeps surplus ratings in the row's ``ratings``
    (and counts a surplus ``None`` as a null rating), which the matrix cannot hold."""
    return not any(map(gt, map(len, map(_AI_RATINGS, rows)), map(len, map(_CANDIDATES, rows))))


_CONVERSATION = attrgetter("conversation")
_MESSAGES = attrgetter("messages")
_CANDIDATES = attrgetter("candidates")
_AI_RATINGS = attrgetter("ai_ratings")
_RATIONALES = attrgetter("rationales")
_REVIEWS = attrgetter("reviews")
_PAIRWISE = attrgetter("pairwise")
_JUDGED = attrgetter("judged")
_JUDGE_MODEL = attrgetter("judge_model")
_SOURCE = attrgetter("source")
_CONVERSATION_ID = attrgetter("conversation_id")
_ORIGINAL = attrgetter("original_response")
_ROLE = itemgetter("role")  # of a message (a dict)
_MODEL = attrgetter("model")  # of a CandidateRow
_TEXT = attrgetter("text")


def _offsets(lengths: Any) -> Any:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _segments(starts: Any, lengths: Any) -> Any:
    """``concat(arange(s, s + n) for s, n in zip(starts, lengths))``, vectorised."""
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
        _offsets(lengths)[:-1] - starts, lengths
    )


def _kth_true(mask: Any, k: Any) -> Any:
    """Per row, the column of the ``k``-th (0-based) True of ``mask``."""
    hit = mask & (np.cumsum(mask, axis=1) == (k.astype(np.int64) + 1)[:, None])
    return np.argmax(hit, axis=1)


def _list_array(offsets: Any, values: Any) -> Any:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


_ROLE_CODES = {"system": 0, "user": 1, "assistant": 2}
_ROLE_NAMES = ("system", "user", "assistant")
_USER = 1


def _strings(values: Iterable[Any], n: int) -> Any:
    """A ``pa.string()`` array of ``n`` str / None values, without an intermediate list."""
    return pa.array(values, type=pa.string(), size=n)


def _binarize_chunk(
    rows: list[JudgedConversation], rules: Rules, dropped: Counter[str]
) -> tuple[Any, int, int]:
    """One chunk: (table of its pairs, rows kept, human rows); ``dropped`` is updated.

    Decides on small per-row / per-candidate numpy arrays first, then converts the text of the
    kept rows only (each string crosses from Python to Arrow once)."""
    n_rows = len(rows)
    convs = list(map(_CONVERSATION, rows))
    msgs_l = list(map(_MESSAGES, convs))
    cands_l = list(map(_CANDIDATES, rows))
    ai_l = list(map(_AI_RATINGS, rows))
    n_msg = np.fromiter(map(len, msgs_l), np.int64, n_rows)
    n_c = np.fromiter(map(len, cands_l), np.int64, n_rows)
    n_ai = np.fromiter(map(len, ai_l), np.int64, n_rows)  # never more than n_c: fits_columns
    for i in np.flatnonzero(n_ai < n_c).tolist():
        ai_l[i] = [*ai_l[i], *([None] * int(n_c[i] - n_ai[i]))]
    slow = np.fromiter(map(bool, map(_REVIEWS, rows)), bool, n_rows)  # reviewed: row by row
    slow |= np.fromiter(map(bool, map(_PAIRWISE, rows)), bool, n_rows)  # issue 14
    judged = np.fromiter(map(_JUDGED, rows), bool, n_rows)

    # -- roles, flattened (codes; other roles than system/user/assistant: -1) -------------
    msg_off = _offsets(n_msg)
    n_m = int(msg_off[-1])
    role_codes = np.fromiter(
        map(_ROLE_CODES.get, map(_ROLE, chain.from_iterable(msgs_l)), repeat(-1)),
        np.int8,
        n_m,
    )
    row_of_msg = np.repeat(np.arange(n_rows), n_msg)
    user_pos = np.flatnonzero(role_codes == _USER)
    user_row = row_of_msg[user_pos]
    n_user = np.bincount(user_row, minlength=n_rows)
    plen = np.zeros(n_rows, dtype=np.int64)  # prompt = messages up to the last user turn
    if len(user_pos):
        last = np.append(user_row[1:] != user_row[:-1], True)
        plen[user_row[last]] = user_pos[last] - msg_off[user_row[last]] + 1

    # -- AI ratings, flattened: a (rows x candidates) matrix, NaN where unrated -------------
    c_off = _offsets(n_c)
    row_of_c = np.repeat(np.arange(n_rows), n_c)
    ai = pa.array(list(chain.from_iterable(ai_l)), type=pa.float64())
    vals = np.array(ai.to_numpy(zero_copy_only=False), dtype=np.float64)
    valid = np.asarray(ai.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    nan_rated = valid & np.isnan(vals)
    if nan_rated.any():  # NaN ratings compare like Python floats only row by row
        slow |= np.bincount(row_of_c[nan_rated], minlength=n_rows) > 0
    has_null = np.bincount(row_of_c[~valid], minlength=n_rows) > 0
    n_elig = np.bincount(row_of_c[valid], minlength=n_rows)
    width = max(int(n_c.max(initial=0)), 1)
    col = np.arange(len(vals)) - c_off[row_of_c]
    rated = np.zeros((n_rows, width), dtype=bool)
    rated[row_of_c, col] = valid
    mat = np.full((n_rows, width), np.nan)
    mat[row_of_c, col] = np.where(valid, vals, np.nan)

    # -- rules, as masks (same order as ``rules._decide``) --------------------------------------
    alive = ~slow

    def drop(reason: str, cond: Any) -> None:
        nonlocal alive
        hit = alive & cond
        dropped[reason] += int(hit.sum())
        alive = alive & ~hit

    if rules.config.max_turns is not None:
        drop("too_many_turns", n_user > rules.config.max_turns)
    if rules.banned:
        banned = rules.banned
        flat_msgs = list(chain.from_iterable(msgs_l))
        hits = [
            p
            for p in user_pos[alive[user_row]].tolist()
            if normalize_prompt(flat_msgs[p]["content"]) in banned
        ]
        del flat_msgs
        contaminated = np.zeros(n_rows, dtype=bool)
        contaminated[row_of_msg[np.array(hits, dtype=np.int64)]] = True
        drop("contaminated", contaminated)
    drop("too_few_candidates", n_c < 2)
    drop("no_judgment", ~judged)
    if rules.config.drop_null_ratings:
        drop("null_rating", has_null)
    few = alive & (n_elig < 2)
    dropped["null_rating"] += int((few & has_null).sum())
    dropped["too_few_candidates"] += int((few & ~has_null).sum())
    alive &= ~few
    hi = np.where(rated, mat, -np.inf).max(axis=1)
    lo = np.where(rated, mat, np.inf).min(axis=1)
    drop("tie", hi == lo)
    if rules.config.min_chosen_rating is not None:
        drop("below_min_chosen", hi < rules.config.min_chosen_rating)
    drop("below_margin", hi - lo < rules.config.min_margin)

    # -- pairs of the AI-only rows ---------------------------------------------------------
    keep = np.flatnonzero(alive)
    r_k, m_k, hi_k = mat[keep], rated[keep], hi[keep][:, None]
    if rules.config.strategy == "all-pairs":
        ok = (
            m_k[:, :, None]
            & m_k[:, None, :]
            & (r_k[:, :, None] > r_k[:, None, :])
            & (r_k[:, :, None] - r_k[:, None, :] >= rules.config.min_margin)
        )
        if rules.config.min_chosen_rating is not None:
            ok &= (r_k >= rules.config.min_chosen_rating)[:, :, None]
        p_k, p_c, p_r = np.nonzero(ok)
        p_row = keep[p_k]
    else:
        best = m_k & (r_k == hi_k)
        n_best = best.sum(axis=1)
        if rules.config.strategy == "best-vs-worst":
            low = m_k & (r_k == lo[keep][:, None])
            n_low = low.sum(axis=1)
            need = np.flatnonzero((n_best > 1) | (n_low > 1))
        else:  # best-vs-random-lower
            low = m_k & (r_k < hi_k) & (hi_k - r_k >= rules.config.min_margin)
            n_low = low.sum(axis=1)
            need = np.arange(len(keep))
        k_best = np.zeros(len(keep), dtype=np.uint64)
        k_low = np.zeros(len(keep), dtype=np.uint64)
        if len(need):
            h = stable_hashes(
                rules.config.seed, [convs[i].conversation_id for i in keep[need].tolist()]
            )
            k_best[need] = h % n_best[need].astype(np.uint64)
            k_low[need] = (h >> np.uint64(20)) % n_low[need].astype(np.uint64)
        p_row, p_c, p_r = keep, _kth_true(best, k_best), _kth_true(low, k_low)

    # -- reviewed rows, row by row ---------------------------------------------------------
    human = np.zeros(n_rows, dtype=bool)
    slow_idx = np.flatnonzero(slow).tolist()
    if slow_idx:
        s_row: list[int] = []
        s_c: list[int] = []
        s_r: list[int] = []
        for i in slow_idx:
            decided = decide(rows[i], rules)
            if isinstance(decided, str):
                dropped[decided] += 1
                continue
            human[i] = decided.human
            lo_i, hi_i = int(c_off[i]), int(c_off[i + 1])
            vals[lo_i:hi_i] = [np.nan if r is None else r for r in decided.ratings]
            valid[lo_i:hi_i] = [r is not None for r in decided.ratings]
            for ci, ri in decided.pairs:
                s_row.append(i)
                s_c.append(ci)
                s_r.append(ri)
        if s_row:
            p_row = np.concatenate([p_row, np.array(s_row, dtype=np.int64)])
            p_c = np.concatenate([p_c, np.array(s_c, dtype=np.int64)])
            p_r = np.concatenate([p_r, np.array(s_r, dtype=np.int64)])
            order = np.argsort(p_row, kind="stable")
            p_row, p_c, p_r = p_row[order], p_c[order], p_r[order]

    # -- emit the kept rows ----------------------------------------------------------------
    kept = np.unique(p_row)
    kept_l = kept.tolist()
    table = _emit(
        [rows[i] for i in kept_l],
        [convs[i] for i in kept_l],
        np.searchsorted(kept, p_row),
        p_c,
        p_r,
        human=human[kept],
        role_codes=role_codes[_segments(msg_off[kept], n_msg[kept])],
        n_msg=n_msg[kept],
        plen=plen[kept],
        n_c=n_c[kept],
        cand_idx=_segments(c_off[kept], n_c[kept]),
        vals=vals,
        valid=valid,
    )
    return table, len(kept), int(human[kept].sum())


def _emit(
    rows: list[JudgedConversation],
    convs: list[Conversation],
    pair_pos: Any,
    p_c: Any,
    p_r: Any,
    *,
    human: Any,
    role_codes: Any,
    n_msg: Any,
    plen: Any,
    n_c: Any,
    cand_idx: Any,
    vals: Any,
    valid: Any,
) -> Any:
    """The pairs as a table of ``arrow_schema()``. ``rows`` are the kept rows (in order),
    ``pair_pos`` each pair's position in them, ``p_c`` / ``p_r`` its candidate indices."""
    schema = arrow_schema()
    message_fields = list(schema.field("conversation").type.value_type)
    n_kept = len(rows)
    n_pairs = len(pair_pos)
    one_per_row = n_pairs == n_kept  # then pair i is kept row i

    def per_pair(arr: Any) -> Any:
        return arr if one_per_row else arr.take(pa.array(pair_pos))

    # candidates of the kept rows
    c_off = _offsets(n_c)
    n_cand = int(c_off[-1])
    cands_flat = list(chain.from_iterable(map(_CANDIDATES, rows)))
    models = _strings(map(_MODEL, cands_flat), n_cand)
    texts = _strings(map(_TEXT, cands_flat), n_cand)
    c_idx = c_off[pair_pos] + p_c
    r_idx = c_off[pair_pos] + p_r

    # messages of the kept rows, then the chosen and the rejected answers as assistant
    # messages: one struct array that conversation / prompt / chosen / rejected take from
    msg_off = _offsets(n_msg)
    n_m = int(msg_off[-1])
    msgs_l = list(map(_MESSAGES, convs))
    answer = cands_flat.__getitem__
    contents = _strings(
        chain(
            map(dict.get, chain.from_iterable(msgs_l), repeat("content")),
            map(_TEXT, map(answer, c_idx.tolist())),
            map(_TEXT, map(answer, r_idx.tolist())),
        ),
        n_m + 2 * n_pairs,
    )
    del cands_flat
    if (role_codes >= 0).all():
        codes = np.concatenate([role_codes, np.full(2 * n_pairs, 2, dtype=np.int8)])
        roles = pa.array(_ROLE_NAMES, type=pa.string()).take(pa.array(codes))
    else:
        roles = _strings(
            chain(map(_ROLE, chain.from_iterable(msgs_l)), repeat("assistant", 2 * n_pairs)),
            n_m + 2 * n_pairs,
        )
    msgs = pa.StructArray.from_arrays([roles, contents], fields=message_fields)
    conversation = per_pair(_list_array(msg_off, msgs.slice(0, n_m)))

    pl = plen[pair_pos]
    starts = msg_off[pair_pos]
    if np.array_equal(plen, n_msg):
        prompt = conversation
    else:
        prompt = _list_array(_offsets(pl), msgs.take(pa.array(_segments(starts, pl))))

    # chosen / rejected: the prompt's messages, then the answer
    with_answer = _offsets(pl + 1)
    base = _segments(starts, pl + 1)
    ends = with_answer[1:] - 1

    def with_last(first_answer: int) -> Any:
        base[ends] = first_answer + np.arange(n_pairs)
        return _list_array(with_answer, msgs.take(pa.array(base)))

    ratings = pa.array(vals[cand_idx], type=pa.float64(), mask=~valid[cand_idx])
    rationales_l = list(map(_RATIONALES, rows))
    rat_off = _offsets(np.fromiter(map(len, rationales_l), np.int64, n_kept))
    rationales = null_placeholders(_strings(chain.from_iterable(rationales_l), int(rat_off[-1])))

    columns = {
        "source": per_pair(_strings(map(_SOURCE, convs), n_kept)),
        "conversation_id": per_pair(_strings(map(_CONVERSATION_ID, convs), n_kept)),
        "conversation": conversation,
        "original_response": per_pair(_strings(map(_ORIGINAL, convs), n_kept)),
        "generation_models": per_pair(_list_array(c_off, models)),
        "generations": per_pair(_list_array(c_off, texts)),
        "ratings": per_pair(_list_array(c_off, ratings)),
        "rationales": per_pair(_list_array(rat_off, rationales)),
        "rating_source": pa.array(["ai", "human"], type=pa.string()).take(
            pa.array(human[pair_pos].astype(np.int8))
        ),
        "prompt": prompt,
        "chosen": with_last(n_m),
        "rejected": with_last(n_m + n_pairs),
        "rating_chosen": ratings.take(pa.array(c_idx)),
        "rating_rejected": ratings.take(pa.array(r_idx)),
        "chosen_model": models.take(pa.array(c_idx)),
        "rejected_model": models.take(pa.array(r_idx)),
        "judge_model": per_pair(_strings(map(_JUDGE_MODEL, rows), n_kept)),
    }
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
