"""A scripted OpenAI-compatible judge on 127.0.0.1, for checking rating *alignment*.

A real small model's ratings carry no signal, so alignment through shuffling cannot be checked
with it. This server reads the texts from the real judge prompt (``<text i> ...`` blocks under
the last ``Texts:``) and rates each by a marker it contains (``[[score=N]]``), answering in the
text format or JSON as asked. Every request body is kept for assertions.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.chat_stub import StubChatServer, completion

TEXT_BLOCK = re.compile(r"^<text (\d+)> (.*?)(?=^<text \d+> |\n### Output|\Z)", re.S | re.M)
SCORE = re.compile(r"\[\[score=(\d)\]\]")


class ScriptedJudge(StubChatServer):
    def __init__(self, style: str = "text") -> None:
        super().__init__()
        self.style = style  # text | json | preamble | hostile

    def answer(self, prompt: str) -> str:
        texts_part = prompt.rsplit("Texts:", 1)[-1]
        blocks = TEXT_BLOCK.findall(texts_part)
        items = []
        for idx, text in blocks:
            m = SCORE.search(text)
            items.append((int(idx), int(m.group(1)) if m else None))
        if self.style == "hostile":  # numbers no rating can be (issue 10, item 6)
            bad = ["NaN", "Infinity", "1e400", "-Infinity", "9" * 400]
            rated = ", ".join(
                f'{{"text": {i}, "rating": {bad[k % len(bad)]}, "rationale": "x"}}'
                for k, (i, _) in enumerate(items)
            )
            return '{"ratings": [' + rated + "]}"
        if self.style == "json":
            return json.dumps(
                {
                    "ratings": [
                        {"text": i, "rating": r, "rationale": f"scored {r}"}
                        for i, r in reversed(items)
                    ]
                }
            )
        out = ["Sure! Here is my evaluation.\n"] if self.style == "preamble" else []
        for i, r in items:
            out.append(
                f"#### Output for Text {i}\nRating: {r if r else 'N/A'}\n"
                f"Rationale: scored {r}.\n\nIt has a blank line inside.\n"
            )
        return "\n".join(out)

    def reply(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        return completion(body["model"], self.answer(body["messages"][-1]["content"]))
