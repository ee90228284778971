"""A local OpenAI-compatible chat server that reports token usage (issue 14's budget tests).

Every answer is ``answer <n>``; ``usage.completion_tokens`` is the request's ``max_tokens`` and
``usage.prompt_tokens`` a fixed number, so the cost of every row is known in advance. Every
request body is kept, so a test can count what was sent.
"""

from __future__ import annotations

import threading
from typing import Any

from tests.support.chat_stub import StubChatServer, completion


class UsageServer(StubChatServer):
    def __init__(self, prompt_tokens: int = 10, hold_after: int | None = None) -> None:
        super().__init__()
        self.prompt_tokens = prompt_tokens
        # requests after the first ``hold_after`` wait for ``release`` (a job caught mid-run)
        self.hold_after = hold_after
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def reply(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        if self.hold_after is not None and n > self.hold_after:
            self.gate.wait(120)
        return completion(
            body["model"],
            # the marker lets tests/support/scripted_judge.py rate it
            f"answer {n} [[score=3]]",
            id=f"x{n}",
            finish_reason="length",
            prompt_tokens=self.prompt_tokens,
            completion_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 1),
        )
