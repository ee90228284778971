"""The engine's core nouns, one type each (issue 9).

* ``Conversation``: the prompt messages and the dataset's own answer (``pipelines.types``).
* ``Candidate``: one generator's answer to a conversation's last user turn.
* ``Judgment``: the AI judge's ratings of a conversation's candidates.
* ``Review``: one human's review of a conversation (built-in Review tab or Argilla).
* ``PairVerdict``: one human's verdict on a pair of candidates (the pairwise "arena").
* ``Pair``: one preference pair (chosen / rejected) as binarize decides it.

The store's read methods return these; every stage, the Argilla queue and the statistics use
their attributes. They also answer ``record["field"]`` and ``record.get("field")`` (and
``dict(record)``), so callers written when the store returned plain dicts keep working;
new code uses the attributes.

Also here, once each: the review sources (``REVIEW_SOURCE_UI``, ``REVIEW_SOURCE_ARGILLA``),
the seeded per-conversation shuffle (``seeded_order``) and the definition of "the AI is
unsure, a human should look" (``NeedsHuman``).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal, NamedTuple

from pipelines.types import Conversation

__all__ = [
    "Candidate",
    "CandidateRow",
    "Conversation",
    "Judgment",
    "NeedsHuman",
    "Pair",
    "PairVerdict",
    "REVIEW_SOURCE_ARGILLA",
    "REVIEW_SOURCE_UI",
    "Review",
    "ReviewSource",
    "candidate_key",
    "gc_paused",
    "review_display_order",
    "seeded_order",
    "shown_order",
]

# where a human review came from (the ``source`` column of reviews and pairwise reviews)
ReviewSource = Literal["ui", "argilla"]
REVIEW_SOURCE_UI: ReviewSource = "ui"
REVIEW_SOURCE_ARGILLA: ReviewSource = "argilla"

JudgmentStatus = Literal["done", "partial", "failed"]


_FIELD_NAMES: dict[type, frozenset[str]] = {}
_NAMES: dict[type, tuple[str, ...]] = {}


class _Record:
    """Read access by field name, for callers that still treat a record as a dict."""

    __slots__ = ()  # the records are slotted dataclasses: the store reads them by the million

    def __getitem__(self, name: str) -> Any:
        if name in self._names():
            return getattr(self, name)
        extra = getattr(self, "extra", None)
        if isinstance(extra, dict) and name in extra:
            return extra[name]
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.keys()

    def keys(self) -> list[str]:
        extra = getattr(self, "extra", None)
        names = [n for n in self._names() if n != "extra"]
        return names + (list(extra) if isinstance(extra, dict) else [])

    def __iter__(self) -> Iterator[str]:  # so that dict(record) is the row as a dict
        return iter(self.keys())

    def as_dict(self) -> dict[str, Any]:
        return {k: self[k] for k in self.keys()}

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        names = _NAMES.get(cls)
        if names is None:  # computed once per record type
            names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        return names

    @classmethod
    def _split(cls, row: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(known fields, other columns) of a row: a column a later migration adds lands in
        ``extra`` instead of breaking the read."""
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(cls._names()) - {"extra"}
        known, extra = {}, {}
        for k, v in row.items():
            if k in names:
                known[k] = v
            else:
                extra[k] = v
        return known, extra

    @classmethod
    def _positions(
        cls, columns: Sequence[str]
    ) -> tuple[Callable[[Sequence[Any]], tuple[Any, ...]], list[tuple[str, int]]] | None:
        """For rows with ``columns`` (a query's, in order): a getter of the record's fields (in
        field order, ``extra`` excepted) and the (name, position) of every other column; None
        when a field is not among the columns (the reader then goes by name)."""
        names = [n for n in cls._names() if n != "extra"]
        if not set(names) <= set(columns):
            return None
        where = {c: i for i, c in enumerate(columns)}
        extra_at = [(c, i) for c, i in where.items() if c not in names]
        return itemgetter(*(where[n] for n in names)), extra_at


def candidate_key(generator_id: str, sample_index: int) -> str:
    """A candidate's name inside its conversation: ``generator_id/sample_index``."""
    return f"{generator_id}/{sample_index}"


@dataclass(slots=True)
class Candidate(_Record):
    """A done candidate: one generator's answer (``text``) to a conversation's last turn."""

    conversation_id: str
    generator_id: str
    sample_index: int
    model: str
    text: str

    @property
    def key(self) -> str:
        return f"{self.generator_id}/{self.sample_index}"  # candidate_key, inlined: read per row


class CandidateRow(NamedTuple):
    """A candidate as binarize carries it (``JudgedConversation.candidates``): a named tuple,
    cheap to build by the hundred thousand, read by field name (``row.text``); ``key`` is
    ``candidate_key(generator_id, sample_index)`` and ``model`` the model's label."""

    key: str
    generator_id: str
    model: str
    text: str


@dataclass(slots=True)
class Judgment(_Record):
    """The AI judge's ratings of a conversation's candidates. ``ratings`` and ``rationales`` are
    aligned with ``candidate_keys`` (storage order); ``order_shown`` maps the position shown to
    the judge to an index in ``candidate_keys``. A rating is None where it was unreadable."""

    conversation_id: str
    judge_id: str
    model: str = ""
    status: str = "done"  # JudgmentStatus
    candidate_keys: list[str] = field(default_factory=list)
    ratings: list[float | None] = field(default_factory=list)
    rationales: list[str | None] = field(default_factory=list)
    order_shown: list[int] = field(default_factory=list)
    seed: int | None = None
    raw_output: str | None = None
    error: str | None = None
    attempts: int = 1
    updated_at: float = 0.0
    # with a reverse pass: each pass's ratings ([forward, reversed]), aligned with candidate_keys
    pass_ratings: list[list[float | None] | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # columns added by later migrations

    JSON_COLUMNS = ("candidate_keys", "ratings", "rationales", "order_shown", "pass_ratings")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Judgment:
        known, extra = cls._split(row)
        for k in cls.JSON_COLUMNS:
            if isinstance(known.get(k), str):
                known[k] = json.loads(known[k])
        return cls(**known, extra=extra)

    @classmethod
    def reader(cls, columns: Sequence[str]) -> Callable[[Sequence[Any]], Judgment]:
        """row -> Judgment for rows with ``columns`` (e.g. ``SELECT *``'s, in order): the
        columns' positions are worked out once per query, each row is read by position
        (a bulk read builds its records at about the cost of the plain dicts it replaced)."""
        layout = cls._positions(columns)
        if layout is None:
            return lambda row: cls.from_row(dict(zip(columns, row, strict=True)))
        known, extra_at = layout
        loads = json.loads

        def make(row: Sequence[Any]) -> Judgment:
            (cid, jid, model, status, keys, ratings, rationales, order, seed, raw, error, attempts,
             updated_at, passes) = known(row)  # fmt: skip
            return cls(
                cid, jid, model, status,
                loads(keys) if isinstance(keys, str) else keys,
                loads(ratings) if isinstance(ratings, str) else ratings,
                loads(rationales) if isinstance(rationales, str) else rationales,
                loads(order) if isinstance(order, str) else order,
                seed, raw, error, attempts, updated_at,
                loads(passes) if isinstance(passes, str) else passes,
                {c: row[i] for c, i in extra_at} if extra_at else {},
            )  # fmt: skip

        return make

    @property
    def usable(self) -> bool:
        """Done or partial: some ratings can be read."""
        return self.status != "failed"

    def rating_of(self) -> dict[str, float | None]:
        """candidate key -> the AI's rating (None where unreadable)."""
        return dict(zip(self.candidate_keys, self.ratings, strict=False))

    def rationale_of(self) -> dict[str, str | None]:
        """candidate key -> the judge's rationale."""
        return dict(zip(self.candidate_keys, self.rationales, strict=False))


@dataclass(slots=True)
class Review(_Record):
    """One human's review of a conversation: ratings by candidate key, picks, discard."""

    conversation_id: str
    reviewer: str
    source: str = REVIEW_SOURCE_UI  # ReviewSource
    ratings: dict[str, int] = field(default_factory=dict)
    chosen: str | None = None
    rejected: str | None = None
    discard: bool = False
    comment: str | None = None
    accepted_ai: bool = False
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Review:
        known, extra = cls._split(row)
        if isinstance(known.get("ratings"), str):
            known["ratings"] = json.loads(known["ratings"])
        known["discard"] = bool(known.get("discard"))
        known["accepted_ai"] = bool(known.get("accepted_ai"))
        return cls(**known, extra=extra)

    @classmethod
    def reader(cls, columns: Sequence[str]) -> Callable[[Sequence[Any]], Review]:
        """row -> Review for rows with ``columns`` (see ``Judgment.reader``)."""
        layout = cls._positions(columns)
        if layout is None:
            return lambda row: cls.from_row(dict(zip(columns, row, strict=True)))
        known, extra_at = layout
        loads = json.loads

        def make(row: Sequence[Any]) -> Review:
            cid, reviewer, source, ratings, chosen, rejected, discard, comment, acc, at = known(row)
            return cls(
                cid, reviewer, source,
                loads(ratings) if isinstance(ratings, str) else ratings,
                chosen, rejected, bool(discard), comment, bool(acc), at,
                {c: row[i] for c, i in extra_at} if extra_at else {},
            )  # fmt: skip

        return make


@dataclass(slots=True)
class PairVerdict(_Record):
    """One human's verdict on a pair of candidates (``key_1 < key_2``); ``left_key`` was shown
    as A; ``winner`` is a candidate key for verdicts a / b, else None."""

    conversation_id: str
    key_1: str
    key_2: str
    reviewer: str
    source: str = REVIEW_SOURCE_UI
    left_key: str = ""
    verdict: str = "skip"  # a | b | tie | both_bad | skip
    winner: str | None = None
    reason: str | None = None
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PairVerdict:
        known, extra = cls._split(row)
        return cls(**known, extra=extra)


@dataclass(slots=True)
class Pair(_Record):
    """One preference pair as binarize emits it (a row of its Arrow table / export): the
    prompt messages, the chosen and the rejected conversation (prompt + answer), their ratings,
    models, and where the ratings came from (``rating_source``: human or AI). The other columns
    (the conversation, every generation with its rating and rationale...) are in ``extra``."""

    conversation_id: str
    prompt: list[dict[str, str]] = field(default_factory=list)
    chosen: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    rating_chosen: float | None = None
    rating_rejected: float | None = None
    chosen_model: str = ""
    rejected_model: str = ""
    rating_source: str = ""
    judge_model: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Pair:
        known, extra = cls._split(row)
        return cls(**known, extra=extra)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many acyclic containers (a bulk read's records, a
    push plan, binarize's rows): each time the heap grows by a quarter CPython runs a full
    collection over everything alive, which otherwise dominates the run time. Reference
    counting still frees every object; the collector resumes (if it was on) at the end."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------------------------
# the one seeded shuffle
# ---------------------------------------------------------------------------------------------
def seeded_order(n: int, seed: int | str) -> list[int]:
    """A stable permutation of ``range(n)`` for ``seed``: position -> original index. The
    permutation depends only on ``n`` and the seed (``random.shuffle`` never looks at the
    values), so shuffling a list of ``n`` items with the same seed gives
    ``[items[i] for i in seeded_order(n, seed)]``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def shown_order(conversation_id: str, n: int, seed: int) -> list[int]:
    """The order a conversation's ``n`` candidates are shown in by the AI judge and in
    Argilla (seed: the judge's / the Argilla config's ``shuffle_seed``). Stored judgments
    (``order_shown``) and pushed records (``slot_keys``) were made with it: never change it."""
    return seeded_order(n, f"{seed}:{conversation_id}")


def review_display_order(conversation_id: str, n: int) -> list[int]:
    """The order the built-in Review tab shows a conversation's ``n`` candidates in, so that a
    position never tells the reviewer which model wrote an answer (independent of any judge
    seed: the same for every reviewer and every judge)."""
    digest = hashlib.sha256(f"review:{conversation_id}".encode()).hexdigest()
    return seeded_order(n, int(digest[:12], 16))


# ---------------------------------------------------------------------------------------------
# the one definition of "a human should look at this"
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeedsHuman:
    """The AI judge is unsure about a conversation, so a human should review it, when

    * it has no usable judgment, or
    * a candidate's rating is null (unreadable), or fewer than two candidates are rated, or
    * even the best rating is <= ``low_rating`` (every answer is poor), or
    * the best two ratings are closer than ``min_margin`` (the judge cannot tell the top
      answers apart; a tie at the top is a margin of 0).

    The Review tab's "AI unsure" queue and Argilla's ``select: low_confidence`` both use it.
    """

    low_rating: float = 3.0
    min_margin: float = 1.0

    def __call__(self, ratings: Sequence[float | None], judged: bool = True) -> bool:
        rated = sorted((float(r) for r in ratings if r is not None), reverse=True)
        if not judged or len(rated) < 2 or len(rated) < len(ratings):
            return True
        return rated[0] <= self.low_rating or rated[0] - rated[1] < self.min_margin
