"""The reference implementation of binarize: the rules of ``rules.py`` applied one conversation
at a time, emitting one ``records.Pair`` per pair. ``columnar.binarize`` gives the same result
faster."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pipelines.binarize.config import BinarizeConfig
from pipelines.binarize.rows import (
    COLUMNS,
    DROP_REASONS,
    BinarizeResult,
    JudgedConversation,
    pairs_to_table,
)
from pipelines.binarize.rules import Rules, decide
from pipelines.judge_quality import without_placeholders
from pipelines.records import Pair, gc_paused
from pipelines.types import Message


def _prompt_of(messages: list[Message]) -> list[Message]:
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return messages[: last_user + 1]


def binarize_reference(
    rows: Iterable[JudgedConversation], options: BinarizeConfig | None = None
) -> BinarizeResult:
    """The rules applied row by row (``rules.decide``), one ``records.Pair`` per pair.

    The specification the columnar path is tested against (tests/test_binarize.py
    ``test_columnar_path_matches_the_reference``), and the path ``binarize`` takes for input it
    cannot lay out as columns (``columnar.fits_columns``)."""
    with gc_paused():
        return _binarize_reference(rows, options or BinarizeConfig())


def _binarize_reference(
    rows: Iterable[JudgedConversation], config: BinarizeConfig
) -> BinarizeResult:
    rules = Rules.of(config)
    pairs: list[Pair] = []
    dropped: Counter[str] = Counter({k: 0 for k in DROP_REASONS})
    rows_in = rows_kept = human_rows = 0
    append = pairs.append
    for row in rows:
        rows_in += 1
        decided = decide(row, rules)
        if isinstance(decided, str):
            dropped[decided] += 1
            continue
        ratings = decided.ratings
        conv = row.conversation
        messages = conv.messages
        cands = row.candidates
        rows_kept += 1
        if decided.human:
            human_rows += 1
        models = [c.model for c in cands]
        texts = [c.text for c in cands]
        prompt = _prompt_of(messages)
        source = "human" if decided.human else "ai"
        rationales = without_placeholders(row.rationales)
        for ci, ri in decided.pairs:
            append(
                Pair(
                    conversation_id=conv.conversation_id,
                    prompt=prompt,
                    chosen=[*prompt, {"role": "assistant", "content": cands[ci].text}],
                    rejected=[*prompt, {"role": "assistant", "content": cands[ri].text}],
                    rating_chosen=ratings[ci],
                    rating_rejected=ratings[ri],
                    chosen_model=cands[ci].model,
                    rejected_model=cands[ri].model,
                    rating_source=source,
                    judge_model=row.judge_model,
                    source=conv.source,
                    extra={
                        "conversation": messages,
                        "original_response": conv.original_response,
                        "generation_models": models,
                        "generations": texts,
                        "ratings": ratings,
                        "rationales": rationales,
                    },
                )
            )
    # the pairs as rows in the exported columns' order (``BinarizeResult.pairs``)
    rows_out = [{name: pair[name] for name in COLUMNS} for pair in pairs]
    result = BinarizeResult(
        table=pairs_to_table(rows_out),
        dropped=dropped,
        rows_in=rows_in,
        rows_kept=rows_kept,
        human_rows=human_rows,
    )
    result._pairs = rows_out
    return result
