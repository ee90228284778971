"""Plain data types shared by every stage of the engine.

A conversation is a list of OpenAI-style messages ``{"role": ..., "content": str}``.
``Conversation.messages`` always ends with a user turn (the prompt); the dataset's own
answer to that turn, when there is one, is kept in ``original_response``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - installed with gradio, pinned in requirements.txt
    _orjson = None  # type: ignore[assignment]

Role = Literal["system", "user", "assistant"]
Message = dict[str, str]


def conversation_id_for(messages: list[Message]) -> str:
    """Stable id of a prompt: a hash of its role/content pairs (sources never change it)."""
    pairs = [[m["role"], m["content"]] for m in messages]
    if _orjson is not None:
        try:  # the same bytes as the json.dumps below, several times faster (issue 13)
            return hashlib.sha256(_orjson.dumps(pairs)).hexdigest()[:24]
        except (TypeError, _orjson.JSONEncodeError):
            pass  # e.g. a lone surrogate: the json module's bytes decide, as before
    canonical = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


@dataclass
class Conversation:
    """One normalised conversation: the prompt messages and the dataset's own answer."""

    messages: list[Message]
    source: str = ""
    original_response: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    conversation_id: str = ""

    def __post_init__(self) -> None:
        if not self.conversation_id:
            self.conversation_id = conversation_id_for(self.messages)

    @property
    def num_turns(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "user")


@dataclass
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: list[str] | None = None

    def request_kwargs(self) -> dict[str, Any]:
        """The sampling arguments every chat API takes (seed and stop only when set)."""
        kwargs: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if self.stop:
            kwargs["stop"] = self.stop
        return kwargs

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": self.stop,
        }


@dataclass
class GenerationRequest:
    """One completion to make. ``key`` is opaque to backends and returned with the result."""

    key: Any
    messages: list[Message]
    params: SamplingParams
    # JSON schema the answer must follow (structured output), when the caller needs one.
    json_schema: dict[str, Any] | None = None
    # The same request asking for a plain-text answer instead (the judge's UltraFeedback text
    # format): what a backend sends when a server refuses every structured-output format.
    text_messages: list[Message] | None = None
    # The conversation's own answer, used by the ``original`` backend only.
    original_response: str | None = None


@dataclass
class GenerationResult:
    key: Any
    text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    model: str = ""
    # for a request with a json_schema: the response format the answer was asked in
    response_format: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class Progress:
    """What a running stage reports after every committed row.

    ``total`` counts every row the stage should end with; ``skipped`` of them were already
    done before this run (and are included in ``done``).
    """

    stage: str
    done: int = 0
    total: int = 0
    failed: int = 0
    skipped: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0
    message: str = ""
    # what the stage wants on the job's record besides counters (e.g. a judge request format
    # a server refused and what was used instead)
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_s_at(self.elapsed_s)

    def tokens_per_s_at(self, elapsed_s: float) -> float:
        """Output tokens per second of this stage after ``elapsed_s`` seconds of its clock."""
        return self.output_tokens / elapsed_s if elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this run's rate (rows already done before the run don't count)."""
        finished = self.done + self.failed - self.skipped
        if finished <= 0 or self.elapsed_s <= 0:
            return None
        remaining = max(self.total - self.done - self.failed, 0)
        return remaining * self.elapsed_s / finished

    def eta_at(self, elapsed_s: float) -> float | None:
        """Seconds left if this run's rows keep coming at the pace seen after ``elapsed_s``
        seconds (the live stage clock, which keeps running while a request is in flight, so
        the estimate grows honestly during a long wait). None until a row finished in this
        run; 0 only when nothing remains."""
        remaining = max(self.total - self.done - self.failed, 0)
        if remaining == 0:
            return 0.0
        finished = self.done + self.failed - self.skipped
        if finished <= 0 or elapsed_s <= 0:
            return None
        return remaining * elapsed_s / finished

    def rate_per_min(self, elapsed_s: float | None = None) -> float:
        """Rows finished per minute in this run (0 before the first one)."""
        elapsed = self.elapsed_s if elapsed_s is None else elapsed_s
        finished = self.done + self.failed - self.skipped
        return 60.0 * finished / elapsed if elapsed > 0 and finished > 0 else 0.0

    def __setattr__(self, name: str, value: Any) -> None:
        # issue 10: a progress message can carry a backend's error text; it reaches the UI, the
        # CLI and logs, so it is masked as it is set
        if name == "message" and isinstance(value, str) and value:
            from pipelines.secrets import mask_tokens

            value = mask_tokens(value)
        super().__setattr__(name, value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "skipped": self.skipped,
            "output_tokens": self.output_tokens,
            "elapsed_s": round(self.elapsed_s, 3),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "rows_per_min": round(self.rate_per_min(), 2),
            "message": self.message,
            **({"notes": list(self.notes)} if self.notes else {}),
        }


# what every stage calls with its live progress (the CLI prints it, the app shows it)
ProgressCallback = Callable[[Progress], None]


def progress_reporter(
    progress: Progress, on_progress: ProgressCallback | None
) -> Callable[..., None]:
    """A stage's ``report(message="")``: stamps on ``progress`` the time since this call (and
    ``message`` when given) and hands it to ``on_progress``."""
    start = time.perf_counter()

    def report(message: str = "") -> None:
        progress.elapsed_s = time.perf_counter() - start
        if message:
            progress.message = message
        if on_progress is not None:
            on_progress(progress)

    return report
