"""Is a judge's rationale a real judgment, or junk copied from the prompt?

Small judges (and constrained decoding with a tiny token budget) often echo the output
format's placeholders instead of writing a rationale: ``[rationale for text 2]``,
``[Rationale for the rating in short sentences]``, ``<rationale>``, ``...``. Those are shown to
reviewers and exported as if they were judgments. ``placeholder_rationale`` recognises them;
the Review tab flags them and the stats count them as judge failures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# words the judge templates use inside their placeholders
_TEMPLATE_WORDS = (
    r"rationale|rating|reason|reasoning|justification|explanation|text|score|output|"
    r"your|here|the|for|of|in|short|sentences|a|an|and|number|whole|from|to|at|most|"
    r"characters|candidate|answer|response|\d+|n|i|x|\.\.\.|…"
)
_WRAPPED = re.compile(r"^\s*[\[<{(]\s*(?P<inner>.*?)\s*[\]>})]\s*[.:]?\s*$", re.DOTALL)
_ONLY_TEMPLATE_WORDS = re.compile(rf"^(?:(?:{_TEMPLATE_WORDS})[\s,.:;/_-]*)+$", re.IGNORECASE)
_EMPTY_LIKE = re.compile(r"^\s*(?:\.{2,}|…|-+|_+|n/?a|none|null|todo|tbd|rationale)\s*$", re.I)
_KEY_WORDS = re.compile(r"rationale|rating|reason|justification|explanation|text\s*\d", re.I)
# plain substrings that every _KEY_WORDS match contains
_KEY_WORD_STEMS = ("rationale", "rating", "reason", "justification", "explanation", "text")


# the longest placeholder the templates hold is ~70 characters ("[Rationale for the rating in
# short sentences, at most 20 characters]"); past this a text is written, not echoed
MAX_PLACEHOLDER_CHARS = 200


# Every placeholder_rationale() match also matches this (RE2, searched by Arrow in C++): the
# cheap first pass of ``null_placeholders`` over a whole column.
_MAYBE = (
    r"(?i)rationale|rating|reason|justification|explanation|text"
    r"|^\s*[\"'`]*\s*[\[<{(.\-_…]|^\s*[\"'`]*\s*(n/?a|none|null|todo|tbd)"
)


def null_placeholders(column: Any) -> Any:
    """A ``pa.string()`` array with placeholder rationales replaced by null (an export's
    column): Arrow's vectorised search narrows the candidates, ``placeholder_rationale``
    decides on those few."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(column) == 0:
        return column
    maybe = pc.and_(
        pc.less_equal(pc.utf8_length(column), MAX_PLACEHOLDER_CHARS),
        pc.match_substring_regex(column, _MAYBE),
    )
    idx = np.flatnonzero(pc.fill_null(maybe, False).to_numpy(zero_copy_only=False))
    flags = np.zeros(len(column), dtype=bool)
    for i in idx:
        flags[i] = placeholder_rationale(column[int(i)].as_py())
    if not flags.any():
        return column
    return pc.if_else(pa.array(flags), pa.scalar(None, pa.string()), column)


def without_placeholders(rationales: Iterable[str | None]) -> list[str | None]:
    """The rationales with placeholders replaced by None: what an export carries (a judge's
    echo of its template is no rationale; stats and the card count it as a judge failure)."""
    return [None if placeholder_rationale(r) else r for r in rationales]


def placeholder_rationale(text: str | None) -> bool:
    """True when ``text`` is a template placeholder or an empty-like filler, not a rationale.

    A rationale that is missing altogether (None or blank) is not a placeholder: it is simply
    absent (the judge gave a rating without one)."""
    if text is None or len(text) > MAX_PLACEHOLDER_CHARS or not text.strip():
        return False  # (a template's placeholder is short: a long text is never one)
    stripped = text.strip().strip("\"'`")
    if _EMPTY_LIKE.match(stripped):
        return True
    low = stripped.lower()
    if not any(word in low for word in _KEY_WORD_STEMS):
        # no key word: only an empty wrapper ("[ ]", "<>") is left to be a placeholder; this
        # plain-substring path keeps a real rationale's check cheap (exports check each one)
        if stripped[:1] not in "[<{(":
            return False
        wrapped = _WRAPPED.match(stripped)
        return wrapped is not None and not wrapped.group("inner").strip()
    wrapped = _WRAPPED.match(stripped)
    inner = wrapped.group("inner") if wrapped else stripped
    if not inner.strip():
        return True
    # the whole text is made of the template's own words ("rationale for text 2",
    # "[Rationale for the rating in short sentences, at most 20 characters]")
    return bool(_ONLY_TEMPLATE_WORDS.match(inner.strip())) and bool(_KEY_WORDS.search(inner))


def count_placeholders(rationales: Iterable[str | None]) -> int:
    return sum(1 for r in rationales if placeholder_rationale(r))
