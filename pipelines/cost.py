"""Tokens, cost and budgets (issue 14).

A recipe may carry a price table and a budget::

    prices:                       # USD per million tokens; keyed by generator/judge id or model
      mistral: {input: 0.25, output: 0.25}
      gpt-4o: {input: 2.5, output: 10, tokenizer: /models/gpt-4o-tokenizer}
    budget: {usd: 50}             # or {tokens: 2000000}, or both

Models without a price (local ones) cost nothing but their tokens still count towards a
``tokens`` budget.

* ``usage_report`` / ``spent``: tokens and cost so far per stage and model, from the store (the
  token counts every backend reports, per candidate and per judgment).
* ``dry_run``: the projected tokens and cost of what the recipe still has to do, before it runs.
  Prompt tokens are counted with the model's tokenizer where one is available locally (a
  ``tokenizer`` path or cached Hub id in the price entry, a ``vllm`` model directory, the
  embedded GGUF's vocabulary), else approximated as characters / 4 (stated in the report).
  Completion tokens are the mean observed so far for that model (at least 5 rows), else
  ``max_tokens`` (an upper bound).
* ``BudgetGuard``: sends requests in waves, each admitted only while the spend so far plus the
  worst case of every admitted request (estimated prompt tokens with a safety margin, plus
  ``max_tokens``) stays within the budget. When nothing more fits the stage stops before
  sending another request and the job ends ``paused``; raise the budget and run again: the job
  resumes with what is missing.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from pipelines.config import ModelConfig, StrictModel
from pipelines.types import GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from pipelines.recipe import Recipe
    from pipelines.store import Store

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 8  # chat-template tokens per message (role markers), counted on top
APPROX = "characters / 4 (no local tokenizer)"


class Price(StrictModel):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    # a local tokenizer directory or a Hub id already in the local cache (never downloaded)
    tokenizer: str | None = None


class Budget(StrictModel):
    usd: float | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _something(self) -> Budget:
        if self.usd is None and self.tokens is None:
            raise ValueError("budget needs usd and/or tokens")
        return self


def price_for(recipe: Recipe, ident: str, model: str | None = None) -> Price | None:
    """The price of a generator / judge: by its id first, then by its model name."""
    prices: dict[str, Price] = getattr(recipe, "prices", None) or {}
    if ident in prices:
        return prices[ident]
    if model and model in prices:
        return prices[model]
    return None


def usd(price: Price | None, prompt_tokens: float, completion_tokens: float) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


def _configs(recipe: Recipe) -> dict[str, ModelConfig]:
    out: dict[str, ModelConfig] = {g.id: g for g in recipe.generators}
    for judge in recipe.all_judges():  # issue 14: every judge of a panel
        out[judge.id] = judge
    return out


def usage_report(store: Store, recipe: Recipe) -> list[dict[str, Any]]:
    """Tokens and cost so far per stage and model: ``[{stage, id, model, rows, prompt_tokens,
    completion_tokens, usd, priced}]``."""
    configs = _configs(recipe)
    # issue 14: a judge panel's aggregate judgment sends no request (its judges' rows count)
    aggregate_id = recipe.rating_judge_id() if len(recipe.all_judges()) > 1 else None
    out = []
    for row in store.token_usage():
        if row["stage"] == "judge" and row["id"] == aggregate_id:
            continue
        cfg = configs.get(row["id"])
        price = price_for(recipe, row["id"], row["model"] or (cfg.model if cfg else None))
        out.append(
            {
                **row,
                "usd": round(usd(price, row["prompt_tokens"], row["completion_tokens"]), 6),
                "priced": price is not None,
            }
        )
    return out


def spent(store: Store, recipe: Recipe) -> tuple[float, int]:
    """``(usd, tokens)`` spent so far over every stage and model."""
    rows = usage_report(store, recipe)
    return (
        sum(r["usd"] for r in rows),
        sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows),
    )


# -- token counting ------------------------------------------------------------------------------
@functools.cache
def _hf_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, local_files_only=True)


@functools.cache
def _gguf_vocab(path: str) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=path, vocab_only=True, verbose=False)


class TokenCounter:
    """Counts tokens with the model's tokenizer where one is available locally, else
    approximates (``method`` says which)."""

    def __init__(self, cfg: ModelConfig | None, price: Price | None = None) -> None:
        self._count = None
        self.method = APPROX
        candidates: list[tuple[str, str]] = []
        if price is not None and price.tokenizer:
            candidates.append(("hf", price.tokenizer))
        if cfg is not None and cfg.backend == "vllm" and Path(cfg.model).is_dir():
            candidates.append(("hf", cfg.model))
        if cfg is not None and cfg.backend == "embedded":
            candidates.append(("gguf", ""))
        for kind, name in candidates:
            try:
                if kind == "hf":
                    tok = _hf_tokenizer(name)
                    self._count = lambda text, t=tok: len(t.encode(text, add_special_tokens=False))
                    self.method = f"tokenizer {name}"
                else:
                    from pipelines.backends.embedded import embedded_model_path

                    vocab = _gguf_vocab(str(embedded_model_path()))
                    self._count = lambda text, v=vocab: len(
                        v.tokenize(text.encode("utf-8"), add_bos=False, special=False)
                    )
                    self.method = "tokenizer of the embedded GGUF"
                break
            except Exception:  # noqa: BLE001 - no local tokenizer: approximate
                continue

    @property
    def exact(self) -> bool:
        return self._count is not None

    def text(self, text: str) -> int:
        if self._count is not None:
            return int(self._count(text))
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def messages(self, messages: Sequence[dict[str, Any]]) -> int:
        return sum(self.text(str(m.get("content") or "")) + MESSAGE_OVERHEAD for m in messages)


# -- dry run -------------------------------------------------------------------------------------
@dataclass
class Projection:
    rows: list[dict[str, Any]] = field(default_factory=list)
    spent_usd: float = 0.0
    spent_tokens: int = 0
    budget: dict[str, Any] | None = None

    @property
    def projected_usd(self) -> float:
        return sum(r["usd"] for r in self.rows)

    @property
    def projected_tokens(self) -> int:
        return sum(r["prompt_tokens"] + r["completion_tokens"] for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        total_usd = self.spent_usd + self.projected_usd
        total_tokens = self.spent_tokens + self.projected_tokens
        out: dict[str, Any] = {
            "spent_usd": round(self.spent_usd, 6),
            "spent_tokens": self.spent_tokens,
            "projected_usd": round(self.projected_usd, 6),
            "projected_tokens": self.projected_tokens,
            "total_usd": round(total_usd, 6),
            "total_tokens": total_tokens,
            "rows": self.rows,
        }
        if self.budget:
            fits = (self.budget.get("usd") is None or total_usd <= self.budget["usd"]) and (
                self.budget.get("tokens") is None or total_tokens <= self.budget["tokens"]
            )
            out["budget"] = self.budget
            out["fits_budget"] = fits
        return out


def _observed_completion(store: Store, stage: str, ident: str) -> float | None:
    for row in store.token_usage():
        n = row.get("requests") or row["rows"]  # per request: retries are requests too
        if row["stage"] == stage and row["id"] == ident and n >= 5:
            if row["completion_tokens"]:
                return row["completion_tokens"] / n
    return None


def _projected_row(
    stage: str,
    model: ModelConfig,
    requests: int,
    prompt: int,
    completion: int,
    price: Price | None,
    counter: TokenCounter,
    observed: float | None,
) -> dict[str, Any]:
    """One row of a ``Projection``: ``model`` (a generator or judge config) will send
    ``requests`` requests of these tokens."""
    return {
        "stage": stage,
        "id": model.id,
        "model": model.display_name(),
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "usd": round(usd(price, prompt, completion), 6),
        "priced": price is not None,
        "tokens_by": counter.method,
        "completion_by": "observed mean" if observed is not None else "max_tokens",
    }


def dry_run(recipe: Recipe, store: Store, limit: int | None = None) -> Projection:
    """Projected tokens and cost of the generation and judge work still to do for the stored
    conversations (``limit``: the first N, as ``run --limit``)."""
    from pipelines.generate import plan_generation, prompt_messages
    from pipelines.judge import plan_judging

    convs = store.conversations(limit=limit)
    proj = Projection()
    proj.spent_usd, proj.spent_tokens = spent(store, recipe)
    if recipe.budget is not None:
        proj.budget = recipe.budget.model_dump(exclude_none=True)
    # mean completion per generator: observed, else max_tokens (used for the judge's prompt too)
    answer_tokens: dict[str, float] = {}
    for plan in plan_generation(store, recipe.generators, convs, recipe.generation.max_attempts):
        gen = plan.generator
        price = price_for(recipe, gen.id, gen.model)
        counter = TokenCounter(gen, price)
        observed = _observed_completion(store, "generate", gen.id)
        per_answer = observed if observed is not None else float(gen.max_tokens)
        answer_tokens[gen.id] = per_answer
        if gen.backend == "original" or not plan.todo:
            continue
        prompt = sum(counter.messages(prompt_messages(gen, c)) for c, _ in plan.todo)
        completion = int(per_answer * len(plan.todo))
        proj.rows.append(
            _projected_row(
                "generate", gen, len(plan.todo), prompt, completion, price, counter, observed
            )
        )
    for judge in recipe.all_judges():  # issue 14: every judge of a panel
        price = price_for(recipe, judge.id, judge.model)
        counter = TokenCounter(judge, price)
        gens = [g.id for g in recipe.generators]
        tasks, _, _, _ = plan_judging(store, judge, gens, convs, recipe.generation.max_attempts)
        passes = 2 if judge.reverse_pass else 1
        rubric = 600  # the UltraFeedback rubric and instructions, in tokens (approximate)
        prompt = 0
        for t in tasks:
            prompt += counter.messages(t.conversation.messages) + rubric
            prompt += sum(counter.text(c.text) for c in t.candidates)
        # conversations whose candidates are not generated yet: judged after generation
        pending = 0
        planned = {t.conversation.conversation_id for t in tasks}
        judged = store.judgment_states(judge.id)
        for c in convs:
            if c.conversation_id not in planned and c.conversation_id not in judged:
                pending += 1
                prompt += counter.messages(c.messages) + rubric
                prompt += int(sum(answer_tokens.get(g, 0) for g in gens))
        requests = (len(tasks) + pending) * passes
        prompt *= passes
        observed = _observed_completion(store, "judge", judge.id)
        per_judgment = observed if observed is not None else float(judge.max_tokens)
        completion = int(per_judgment * requests)
        if requests:
            row = _projected_row(
                "judge", judge, requests, prompt, completion, price, counter, observed
            )
            proj.rows.append(row)
    return proj


# -- the budget ----------------------------------------------------------------------------------
class BudgetGuard:
    """Admits requests only while the worst case of everything admitted fits the budget."""

    def __init__(self, recipe: Recipe, store: Store) -> None:
        assert recipe.budget is not None
        self.recipe = recipe
        self.budget = recipe.budget
        self.spent_usd, self.spent_tokens = spent(store, recipe)
        self.paused = False
        self.held_back = 0
        self._configs = _configs(recipe)
        self._counters: dict[str, TokenCounter] = {}
        self._factor: dict[str, float] = {}
        # worst cases reserved by requests in flight (``reserve`` / ``settle``)
        self._held_usd = 0.0
        self._held_tokens = 0

    @classmethod
    def for_recipe(cls, recipe: Recipe, store: Store) -> BudgetGuard | None:
        return cls(recipe, store) if getattr(recipe, "budget", None) is not None else None

    @property
    def reason(self) -> str:
        parts = []
        if self.budget.usd is not None:
            parts.append(f"${self.spent_usd:.4f} of ${self.budget.usd:g}")
        if self.budget.tokens is not None:
            parts.append(f"{self.spent_tokens} of {self.budget.tokens} tokens")
        return (
            f"paused by the budget ({', '.join(parts)} spent; {self.held_back} request(s) would "
            "not fit): raise budget in the recipe and run again to resume"
        )

    def _counter(self, ident: str, model: str) -> TokenCounter:
        if ident not in self._counters:
            cfg = self._configs.get(ident)
            self._counters[ident] = TokenCounter(cfg, price_for(self.recipe, ident, model))
            # an approximation may undercount: start with a margin, learn from real usage
            self._factor[ident] = 1.1 if self._counters[ident].exact else 1.5
        return self._counters[ident]

    def _estimate(self, ident: str, model: str, req: GenerationRequest) -> int:
        counter = self._counter(ident, model)
        return math.ceil(counter.messages(req.messages) * self._factor[ident])

    def _fits(self, usd_more: float, tokens_more: int) -> bool:
        b = self.budget
        usd_now = self.spent_usd + self._held_usd
        if b.usd is not None and usd_now + usd_more > b.usd + 1e-12:
            return False
        tokens_now = self.spent_tokens + self._held_tokens
        return not (b.tokens is not None and tokens_now + tokens_more > b.tokens)

    def reserve(
        self, ident: str, model: str, req: GenerationRequest, n: int = 1
    ) -> tuple[float, int, int] | None:
        """Hold the worst case of one request (``n`` samples of it) for concurrent senders;
        None (and the guard paused) when it would not fit. ``settle`` releases the hold."""
        price = price_for(self.recipe, ident, model)
        p = self._estimate(ident, model, req)
        c = int(req.params.max_tokens) * max(1, n)
        cost = usd(price, p, c)
        if not self._fits(cost, p + c):
            self.paused = True
            self.held_back += 1
            return None
        self._held_usd += cost
        self._held_tokens += p + c
        return cost, p + c, p

    def settle(
        self,
        ident: str,
        model: str,
        hold: tuple[float, int, int],
        results: Sequence[GenerationResult],
    ) -> None:
        """Release a ``reserve`` hold and count what the requests really used (the whole
        worst case where the server reported no usage, to stay safe)."""
        cost, tokens, est = hold
        self._held_usd -= cost
        self._held_tokens -= tokens
        if not results or any(r.completion_tokens is None for r in results):
            self.spent_usd += cost
            self.spent_tokens += tokens
            return
        price = price_for(self.recipe, ident, model)
        p = sum(r.prompt_tokens if r.prompt_tokens is not None else est for r in results)
        c = sum(r.completion_tokens or 0 for r in results)
        self.spent_usd += usd(price, p, c)
        self.spent_tokens += p + c

    async def generate(
        self,
        backend: Any,
        requests: Sequence[GenerationRequest],
        ident: str,
        model: str = "",
        *,
        wave: int | None = None,
    ) -> AsyncIterator[GenerationResult]:
        """``backend.generate(requests)``, in waves that fit the budget; stops (``paused``)
        before a request that could exceed it."""
        price = price_for(self.recipe, ident, model)
        size = wave or max(16, 2 * int(getattr(self._configs.get(ident), "concurrency", 8)))
        pending = list(requests)
        while pending:
            admitted: list[GenerationRequest] = []
            estimates: dict[int, int] = {}
            usd_more, tokens_more = 0.0, 0
            for req in pending[:size]:
                p = self._estimate(ident, model, req)
                c = int(req.params.max_tokens)
                if not self._fits(usd_more + usd(price, p, c), tokens_more + p + c):
                    break
                usd_more += usd(price, p, c)
                tokens_more += p + c
                estimates[id(req)] = p
                admitted.append(req)
            if not admitted:
                self.paused = True
                self.held_back += len(pending)
                return
            pending = pending[len(admitted) :]
            by_key = {_key(r.key): r for r in admitted}
            async for res in backend.generate(admitted):
                sent = by_key.get(_key(res.key))
                est = estimates.get(id(sent), 0) if sent is not None else 0
                max_c = int(sent.params.max_tokens) if sent is not None else 0
                # no usage reported (or a failure): count the worst case, to stay safe
                p = res.prompt_tokens if res.prompt_tokens is not None else est
                c = res.completion_tokens if res.completion_tokens is not None else max_c
                if res.prompt_tokens and est:
                    raw = est / self._factor[ident]
                    self._factor[ident] = max(self._factor[ident], 1.05 * res.prompt_tokens / raw)
                self.spent_usd += usd(price, p, c)
                self.spent_tokens += p + c
                yield res


def _key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# -- live counters of a running job (issue 14a) ---------------------------------------------------
@dataclass
class LiveModel:
    """What one generator / judge has used since the job started."""

    stage: str
    id: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    tokens_per_s: float  # prompt + completion, over the job's elapsed time
    completion_tokens_per_s: float
    usd: float | None  # None: no price for this model

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class LiveStage:
    """A stage's rows: throughput and ETA at this run's pace."""

    stage: str
    done: int
    total: int
    failed: int
    rows_per_s: float
    eta_s: float | None  # None until a row finished in this run; 0 when nothing remains


@dataclass
class LiveUsage:
    """Tokens, throughput, ETA and cost so far of a running (or just finished) job."""

    since: float
    elapsed_s: float
    models: list[LiveModel] = field(default_factory=list)
    stages: list[LiveStage] = field(default_factory=list)
    workspace_usd: float = 0.0  # every stage, every job so far (what the budget counts)
    workspace_tokens: int = 0
    budget: dict[str, Any] | None = None
    running: bool = True

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.models)

    @property
    def priced(self) -> bool:
        return any(m.usd is not None for m in self.models)

    @property
    def usd(self) -> float:
        return sum(m.usd or 0.0 for m in self.models)

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "elapsed_s": round(self.elapsed_s, 2),
            "running": self.running,
            "tokens": self.tokens,
            "usd": round(self.usd, 6) if self.priced else None,
            "models": [
                {
                    **{k: v for k, v in m.__dict__.items() if k not in ("usd",)},
                    "tokens": m.tokens,
                    "tokens_per_s": round(m.tokens_per_s, 2),
                    "completion_tokens_per_s": round(m.completion_tokens_per_s, 2),
                    "usd": None if m.usd is None else round(m.usd, 6),
                }
                for m in self.models
            ],
            "stages": [
                {
                    **s.__dict__,
                    "rows_per_s": round(s.rows_per_s, 3),
                    "eta_s": None if s.eta_s is None else round(s.eta_s, 1),
                }
                for s in self.stages
            ],
            "workspace_usd": round(self.workspace_usd, 6),
            "workspace_tokens": self.workspace_tokens,
            **({"budget": self.budget} if self.budget else {}),
        }


_BEFORE: dict[tuple[str, float, str], tuple[float, int]] = {}


def _spent_before(store: Store, recipe: Recipe, since: float) -> tuple[float, int]:
    """``(usd, tokens)`` paid before ``since``, at the recipe's prices (cached per job)."""
    import json

    prices = json.dumps(
        {k: v.model_dump() for k, v in (getattr(recipe, "prices", None) or {}).items()},
        sort_keys=True,
    )
    key = (str(store.path), since, prices)
    if key not in _BEFORE:
        configs = _configs(recipe)
        cost, tokens = 0.0, 0
        for row in store.token_usage_since(0.0, until=since):
            cfg = configs.get(row["id"])
            price = price_for(recipe, row["id"], row["model"] or (cfg.model if cfg else None))
            cost += usd(price, row["prompt_tokens"], row["completion_tokens"])
            tokens += row["prompt_tokens"] + row["completion_tokens"]
        if len(_BEFORE) > 64:
            _BEFORE.clear()
        _BEFORE[key] = (cost, tokens)
    return _BEFORE[key]


def live_usage(
    store: Store,
    recipe: Recipe,
    *,
    since: float,
    progress: dict[str, dict[str, Any]] | None = None,
    now: float | None = None,
    running: bool = True,
) -> LiveUsage:
    """The live counters of a job that started at ``since`` (epoch seconds): tokens per model
    from every request answered since then (``Store.token_usage_since``: retries included),
    tokens/s over the job's elapsed time, cost so far where the recipe prices the model, and
    per stage rows/s and the ETA from the job's progress (``JobHandle.live_progress``: ``done``,
    ``total``, ``failed``, ``skipped`` of rows done before this run, ``elapsed_s``). A job
    that is over (``running`` False) is measured up to its last answer, not to now."""
    rows = store.token_usage_since(since)
    now = time.time() if now is None else now
    if not running:
        now = min(now, max((r["last_at"] for r in rows), default=since))
    elapsed = max(now - since, 0.0)
    configs = _configs(recipe)
    out = LiveUsage(since=since, elapsed_s=elapsed, running=running)
    for row in rows:
        cfg = configs.get(row["id"])
        price = price_for(recipe, row["id"], row["model"] or (cfg.model if cfg else None))
        p, c = row["prompt_tokens"], row["completion_tokens"]
        out.models.append(
            LiveModel(
                stage=row["stage"],
                id=row["id"],
                model=row["model"] or (cfg.display_name() if cfg else row["id"]),
                requests=row["requests"],
                prompt_tokens=p,
                completion_tokens=c,
                tokens_per_s=(p + c) / elapsed if elapsed > 0 else 0.0,
                completion_tokens_per_s=c / elapsed if elapsed > 0 else 0.0,
                usd=None if price is None else usd(price, p, c),
            )
        )
    for stage, d in (progress or {}).items():
        if not isinstance(d, dict) or "total" not in d:
            continue
        done, total = int(d.get("done", 0)), int(d.get("total", 0))
        failed, skipped = int(d.get("failed", 0)), int(d.get("skipped", 0))
        stage_elapsed = float(d.get("elapsed_s") or 0.0)
        finished = done + failed - skipped
        remaining = max(total - done - failed, 0)
        rate = finished / stage_elapsed if stage_elapsed > 0 and finished > 0 else 0.0
        eta = 0.0 if remaining == 0 else (remaining / rate if rate > 0 else None)
        out.stages.append(LiveStage(stage, done, total, failed, rate, eta))
    # the workspace's spend: what was paid before the job (summed once per job: a GROUP BY over
    # every attempt would cost each poll ~0.7 s at a million rows) plus the job's own
    before_usd, before_tokens = _spent_before(store, recipe, since)
    out.workspace_usd = before_usd + out.usd
    out.workspace_tokens = before_tokens + out.tokens
    budget = getattr(recipe, "budget", None)
    if budget is not None:
        out.budget = budget.model_dump(exclude_none=True)
    return out
