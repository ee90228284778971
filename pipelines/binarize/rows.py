"""What binarize reads and writes: ``JudgedConversation`` (one conversation with its candidates,
AI ratings and reviews), ``BinarizeResult`` (the pairs as a ``pyarrow.Table`` plus the counters)
and the exported rows' columns (``COLUMNS``, ``arrow_schema``)."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipelines.records import CandidateRow, Review, gc_paused
from pipelines.types import Conversation

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


@dataclass(slots=True)
class JudgedConversation:
    """Everything binarization needs about one conversation.

    ``candidates`` are ``records.CandidateRow`` (key ``"generator_id/sample_index"``,
    generator_id, model label, text); ``ai_ratings`` and ``rationales`` are aligned with them
    (``None`` where the judge gave none). ``reviews`` are the conversation's ``records.Review``
    (oldest first). ``judged`` is False when no AI judgment exists for the conversation.
    """

    conversation: Conversation
    candidates: list[CandidateRow] = field(default_factory=list)
    ai_ratings: list[float | None] = field(default_factory=list)
    rationales: list[str | None] = field(default_factory=list)
    judge_model: str | None = None
    reviews: list[Review] = field(default_factory=list)
    judged: bool = True
    # issue 14: human pairwise (arena) outcomes, {(key_1, key_2): winner key | "tie"}
    pairwise: dict[tuple[str, str], str] = field(default_factory=dict)


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
