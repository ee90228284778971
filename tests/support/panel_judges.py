"""Two scripted OpenAI-compatible judges with a known bias, for the judge-panel tests.

Candidate texts carry two markers, ``[[a=N]]`` and ``[[b=N]]`` (``[[b=null]]``: no rating).

* ``PositionalJudge`` ("A") always rates the text shown first 5 and every other text by its
  ``a`` marker (kept below 5 in the tests): its best answer is always the one shown first.
* ``ContentJudge`` ("B") rates each text by its ``b`` marker wherever it is shown (``N/A`` for
  ``null``): no position bias.

Both answer in UltraFeedback's text format (the judges run with ``structured: false``) and log,
per request, the texts in the order shown.
"""

from __future__ import annotations

import re
import time

from tests.support.scripted_judge import TEXT_BLOCK, ScriptedJudge

A_MARK = re.compile(r"\[\[a=(\d)\]\]")
B_MARK = re.compile(r"\[\[b=(\d|null)\]\]")


class _MarkerJudge(ScriptedJudge):
    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__("text")
        self.shown: list[list[str]] = []  # per request: the texts in the order shown
        self.delay_s = delay_s  # a slow judge, so that a job can be killed part-way

    def rate(self, position: int, text: str) -> int | None:
        raise NotImplementedError

    def answer(self, prompt: str) -> str:
        if self.delay_s:
            time.sleep(self.delay_s)
        blocks = TEXT_BLOCK.findall(prompt.rsplit("Texts:", 1)[-1])
        self.shown.append([text.strip() for _, text in blocks])
        out = []
        for pos, (idx, text) in enumerate(blocks):
            r = self.rate(pos, text)
            out.append(
                f"#### Output for Text {idx}\nRating: {r if r is not None else 'N/A'}\n"
                f"Rationale: rated {r} at position {pos + 1}.\n"
            )
        return "\n".join(out)


class PositionalJudge(_MarkerJudge):
    def rate(self, position: int, text: str) -> int | None:
        if position == 0:
            return 5
        m = A_MARK.search(text)
        return int(m.group(1)) if m else None


class ContentJudge(_MarkerJudge):
    def rate(self, position: int, text: str) -> int | None:
        m = B_MARK.search(text)
        return None if m is None or m.group(1) == "null" else int(m.group(1))
