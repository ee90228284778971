"""The one 1-5 rating scale: the same five level names and descriptions for the AI judge, the
Review tab and Argilla, so that a human rating and the judge's rating mean the same thing when
binarization mixes them (human beats AI).

The levels are UltraFeedback's own, read (like the judge's rubric) from the pinned distilabel
package's ``overall-rating`` template: ``1. **Low Quality**: Contains inaccuracies, ...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pipelines.judge_format import RubricUnavailable, original_template_source

SCALE_ASPECT = "overall-rating"
# "1. **Low Quality**: ..." (the original writes "5, **Excellent**" with a comma)
_LEVEL = re.compile(r"^\s*([1-5])[.,]\s*\*\*(?P<name>[^*\n]+)\*\*\s*:\s*(?P<text>.+?)\s*$", re.M)


@dataclass(frozen=True)
class Level:
    value: int
    name: str
    description: str


@lru_cache(maxsize=8)
def rating_scale(aspect: str = SCALE_ASPECT) -> tuple[Level, ...]:
    """The five levels of ``aspect``'s original rubric, 1 to 5.

    Without distilabel (an install that skipped ``requirements-nodeps.txt``) the levels are
    the bare numbers, with the install step as the description of level 1, so the Review tab
    still works and says what is missing."""
    try:
        source = original_template_source(aspect)
    except RubricUnavailable as exc:
        return tuple(Level(v, str(v), str(exc) if v == 1 else "") for v in range(1, 6))
    scoring = source.split("**Scoring**", 1)[-1]
    found: dict[int, Level] = {}
    for m in _LEVEL.finditer(scoring):
        value = int(m.group(1))
        found.setdefault(value, Level(value, m.group("name").strip(), m.group("text").strip()))
    if sorted(found) != [1, 2, 3, 4, 5]:
        return tuple(Level(v, str(v), "") for v in range(1, 6))
    return tuple(found[v] for v in range(1, 6))


def level_label(value: int, aspect: str = SCALE_ASPECT) -> str:
    """``"4 · Very Good"``: how a rating is offered to a human."""
    level = rating_scale(aspect)[value - 1]
    return str(value) if level.name == str(value) else f"{value} · {level.name}"


def rating_choices(aspect: str = SCALE_ASPECT) -> list[tuple[str, str]]:
    """(label, value) pairs for a 1-5 choice widget; the values stay "1".."5"."""
    return [(level_label(v, aspect), str(v)) for v in range(1, 6)]


def scale_markdown(aspect: str = SCALE_ASPECT) -> str:
    """The scale as a markdown table, highest level first (the Argilla guidelines)."""
    rows = ["| rating | level | meaning |", "|---|---|---|"]
    for level in reversed(rating_scale(aspect)):
        text = level.description.replace("|", "\\|")
        rows.append(f"| {level.value} | {level.name} | {text} |")
    return "\n".join(rows)
