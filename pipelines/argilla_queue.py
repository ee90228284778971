"""Human review in Argilla: push judged conversations to a dataset, pull the reviews back.

One Argilla record per conversation (record id = conversation id):

- fields: ``conversation`` (a chat field: the prompt messages), ``candidate_1..N`` (markdown,
  one per candidate, in a per-conversation seeded shuffle) and ``rationale_1..N`` (the AI
  judge's rationale for that candidate). Conversations with fewer candidates leave slots empty.
- questions: ``rating_1..N`` (1-5, ``rating_1`` and ``rating_2`` required) with the judge's
  rating as a suggestion (agent = judge model), and an optional ``comment``.
- metadata for filtering: source, turns, lengths, AI ratings (best/worst/margin, tie). Model
  names, the judge and the slot -> candidate-key mapping (``key_1..N``) are metadata hidden
  from annotators, so the review is blind; ``pull`` maps ratings back through ``key_i``.

``push`` is idempotent and resumable: records are upserted by id, only what is new or changed
since the last push is sent (a push-state table in the store DB remembers a hash of each
record sent), a re-push updates fields/suggestions/metadata but never touches responses, and a
record whose candidate set changed after a human answered it is left alone (counted
``locked``). ``pull`` writes submitted and discarded responses into the store's reviews
(reviewer = Argilla username, source ``argilla``); binarization aggregates them.

The API key is read from the environment at call time (``api_key_env``) and is never
stored, logged or put in an error message. Errors are ``ArgillaQueueError`` with one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from pipelines.errors import error_line
from pipelines.rating_scale import rating_scale, scale_markdown
from pipelines.records import (
    REVIEW_SOURCE_ARGILLA,
    Candidate,
    Judgment,
    NeedsHuman,
    Review,
    gc_paused,
    shown_order,
)
from pipelines.store import Store
from pipelines.types import Conversation, Progress, ProgressCallback

log = logging.getLogger(__name__)

DEFAULT_API_URL = "http://127.0.0.1:6900"
DEFAULT_DATASET = "capyui-review"
REVIEW_SOURCE = REVIEW_SOURCE_ARGILLA  # the source of the reviews pulled from Argilla
STAGE_PUSH = "push-argilla"
STAGE_PULL = "pull-argilla"
RATING_VALUES = [1, 2, 3, 4, 5]
MAX_BULK = 500  # server limit per bulk upsert


GUIDELINES = """\
## Rate every response to the last user turn

Each record is a conversation (all turns up to the last user message) and 2 to {n} candidate
answers to that last message, in random order. Models are not named: judge the text only.

Rate **every** response shown, from 1 to 5, on its overall quality as the next assistant turn
of *this* conversation (earlier turns count as context). The scale is UltraFeedback's, the one
the AI judge rates with:

{scale}

The AI judge's rating is pre-filled as a suggestion and its note is shown under each response:
check it, and change the rating whenever you disagree (a submission that keeps every
suggestion untouched is counted as "accepted AI"). Then pick the **best** response (it becomes
`chosen`) and the **worst** one (`rejected`) when you can tell them apart; picks override the
ratings. Use *comment* for anything the curators should know. **Discard** the record when the
conversation itself is broken, unsafe or impossible to rate; a record is dropped from the
dataset when most of its reviewers discard it.
"""


# the preference questions: label -> the response's slot number ("1".."n")
PICK_QUESTIONS = {
    "best": "Best response (becomes `chosen`)",
    "worst": "Worst response (becomes `rejected`)",
}


def _picked_key(values: dict[str, Any], name: str, slots: dict[int, str | None]) -> str | None:
    """The candidate key a pick question's answer points at (None when unanswered)."""
    v = (values.get(name) or {}).get("value")
    if isinstance(v, list):  # a multi-label answer: only an unambiguous single pick counts
        v = v[0] if len(v) == 1 else None
    try:
        return slots.get(int(v)) if v is not None else None
    except (TypeError, ValueError):
        return None


def _accepted_ai(
    values: dict[str, Any], suggested: dict[str, Any], slots: dict[int, str | None]
) -> bool:
    """The submission kept every rating the AI suggested, untouched, and rated nothing else."""
    rated = {
        f"rating_{i}": (values.get(f"rating_{i}") or {}).get("value")
        for i, key in slots.items()
        if key
    }
    rated = {k: v for k, v in rated.items() if v is not None}
    ai = {k: v for k, v in suggested.items() if k.startswith("rating_") and v is not None}
    return bool(ai) and rated == ai


class ArgillaQueueError(Exception):
    """The Argilla review queue cannot do what was asked; the message is one line."""


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
SelectMode = Literal["all", "ties", "low_confidence", "judges_disagree"]
PairReason = Literal["ai_tie", "top2", "disagree", "random"]  # pipelines.pairwise.REASONS
DEFAULT_PAIR_REASONS: tuple[PairReason, ...] = ("ai_tie", "disagree", "top2", "random")


class ArgillaConfig(BaseModel):
    """The ``argilla:`` section of a recipe. Never holds a secret: only env var names."""

    model_config = ConfigDict(extra="forbid")

    # The server: ``api_url`` wins, else the env var named by ``api_url_env``, else the local
    # server of scripts/argilla-local.
    api_url: str | None = None
    api_url_env: str = "ARGILLA_API_URL"
    api_key_env: str = "ARGILLA_API_KEY"
    # For an Argilla running in a private Hugging Face Space: env var holding an HF token.
    hf_token_env: str | None = None
    workspace: str = "argilla"
    dataset_name: str = Field(default=DEFAULT_DATASET, min_length=1, max_length=200)
    # Candidate slots per record (fixed per dataset); conversations with more are skipped.
    max_candidates: int = Field(default=4, ge=2, le=8)
    # Task distribution: submitted responses needed for a record to be complete.
    min_submitted: int = Field(default=1, ge=1, le=50)
    shuffle_seed: int = 42
    # Which conversations to push: all, AI ties, low-confidence ones, those where a judge
    # panel's judges disagree (issue 14), or explicit ids.
    select: SelectMode | list[str] = "all"
    # low_confidence: the AI judge is unsure (``records.NeedsHuman``, the Review tab's "AI
    # unsure" queue too): no usable AI rating, a null rating, best rating <= low_rating, or
    # the best two ratings closer than min_margin.
    low_rating: float = Field(default=NeedsHuman.low_rating, ge=1, le=5)
    min_margin: float = Field(default=NeedsHuman.min_margin, ge=0, le=4)
    batch_size: int = Field(default=256, ge=1, le=MAX_BULK)
    max_retries: int = Field(default=3, ge=0, le=20)
    timeout_s: float = Field(default=60.0, gt=0)
    # How often a background pull runs (the UI's "live" reviews).
    pull_interval_s: float = Field(default=60.0, ge=1)
    # issue 13: a run with push-argilla and judge pushes what was judged every this many
    # seconds while it judges (pipelines/argilla_follow); 0: only the final push-argilla stage.
    follow_every_s: float = Field(default=5.0, ge=0, le=3600)
    guidelines: str | None = None
    # issue 14a: "pairs" pushes and pulls the Arena's dataset of pairs (pipelines/argilla_pairs)
    # instead of the ratings records: one record per (conversation, informative pair), its own
    # dataset, the pair selections in the Arena's order.
    mode: Literal["ratings", "pairs"] = "ratings"
    pairs_dataset_name: str = Field(default="capyui-pairs", min_length=1, max_length=200)
    pair_reasons: list[PairReason] = Field(
        default_factory=lambda: list(DEFAULT_PAIR_REASONS), min_length=1
    )

    @field_validator("api_url_env", "api_key_env", "hf_token_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        from pipelines.secrets import ENV_NAME, TOKEN_PATTERN

        if v is not None and (not ENV_NAME.match(v) or TOKEN_PATTERN.search(v)):
            raise ValueError("is the NAME of an environment variable, never the key itself")
        return v

    @field_validator("api_url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        from pipelines.secrets import url_has_credentials

        if v is not None and url_has_credentials(v):
            raise ValueError("must not carry credentials (user:password@ or a key)")
        return v

    def resolved_api_url(self) -> str:
        return (self.api_url or os.environ.get(self.api_url_env) or DEFAULT_API_URL).rstrip("/")


@dataclass
class Selection:
    """Which stored conversations to push (see ``ArgillaConfig.select``)."""

    mode: Literal["all", "ties", "low_confidence", "judges_disagree", "ids"] = "all"
    ids: list[str] = field(default_factory=list)
    low_rating: float = NeedsHuman.low_rating
    min_margin: float = NeedsHuman.min_margin

    @classmethod
    def parse(
        cls,
        select: str | Sequence[str] | Selection | None,
        *,
        low_rating: float = NeedsHuman.low_rating,
        min_margin: float = NeedsHuman.min_margin,
    ) -> Selection:
        if isinstance(select, Selection):
            return select
        if select is None:
            return cls("all", low_rating=low_rating, min_margin=min_margin)
        if isinstance(select, str):
            mode = {
                "low": "low_confidence",
                "low-confidence": "low_confidence",
                "judges-disagree": "judges_disagree",
            }.get(select, select)
            if mode not in ("all", "ties", "low_confidence", "judges_disagree"):
                raise ArgillaQueueError(
                    f"unknown selection '{select}' (all, ties, low_confidence, judges_disagree,"
                    " or a list of ids)"
                )
            return cls(mode, low_rating=low_rating, min_margin=min_margin)  # type: ignore[arg-type]
        return cls(
            "ids", ids=[str(s) for s in select], low_rating=low_rating, min_margin=min_margin
        )

    def accepts(
        self, ratings: list[float | None], judged: bool, judges_disagree: bool = False
    ) -> bool:
        if self.mode in ("all", "ids"):
            return True
        if self.mode == "judges_disagree":
            return judges_disagree
        rated = sorted((r for r in ratings if r is not None), reverse=True)
        if self.mode == "ties":
            return len(rated) >= 2 and rated[0] == rated[1]
        return self._needs_human(ratings, judged)

    @property
    def _needs_human(self) -> NeedsHuman:
        rule = self.__dict__.get("_rule")
        if rule is None or (rule.low_rating, rule.min_margin) != (self.low_rating, self.min_margin):
            rule = self.__dict__["_rule"] = NeedsHuman(self.low_rating, self.min_margin)
        return rule


@dataclass
class PushSummary:
    url: str
    dataset: str
    workspace: str
    selected: int = 0  # conversations the selector chose that can be pushed
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # already on the server as they are now
    locked: int = 0  # candidate set changed after a human answered: left alone
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # not pushable: reason -> count
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    cancelled: bool = False

    @property
    def pushed(self) -> int:
        return self.created + self.updated

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pushed": self.pushed}


@dataclass
class PullSummary:
    url: str
    dataset: str
    records: int = 0  # records read from the server
    responses: int = 0  # submitted + discarded responses seen
    submitted: int = 0
    discarded: int = 0
    drafts: int = 0  # ignored until submitted
    written: int = 0  # reviews added or changed in the store
    unchanged: int = 0
    unknown: int = 0  # responses on records that are not in this store
    reviewers: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def answered(self, rec: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
        """A record's final responses, ``(response, "submitted" | "discarded")``, counted
        here (drafts are counted and skipped: they are not answers yet)."""
        for resp in rec.get("responses") or []:
            status = resp.get("status")
            if status == "draft":
                self.drafts += 1
                continue
            if status not in ("submitted", "discarded"):
                continue
            self.responses += 1
            if status == "submitted":
                self.submitted += 1
            else:
                self.discarded += 1
            yield resp, status


# ---------------------------------------------------------------------------------------------
# the queue
# ---------------------------------------------------------------------------------------------
class ArgillaQueue:
    """One Argilla dataset used as CapyUI's human review queue.

    Nothing talks to the server until a method is called; every method re-reads the API key
    from ``api_key_env``.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key_env: str = "ARGILLA_API_KEY",
        workspace: str = "argilla",
        dataset_name: str = DEFAULT_DATASET,
        *,
        config: ArgillaConfig | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = ArgillaConfig(
                api_url=api_url,
                api_key_env=api_key_env,
                workspace=workspace,
                dataset_name=dataset_name,
                **options,
            )
        self.config = config
        self.api_url = config.resolved_api_url()
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ArgillaConfig | dict[str, Any] | None) -> ArgillaQueue:
        if config is None:
            config = ArgillaConfig()
        elif isinstance(config, dict):
            config = ArgillaConfig.model_validate(config)
        return cls(config=config)

    @property
    def dataset_name(self) -> str:
        return self.config.dataset_name

    @property
    def workspace(self) -> str:
        return self.config.workspace

    # -- http -------------------------------------------------------------------------------
    def _api_key(self) -> str:
        from pipelines.endpoints import EndpointError, api_key_for

        try:  # issue 10: the key goes only to an Argilla URL the owner registered for it
            key = (api_key_for([self.api_url], self.config.api_key_env) or "").strip()
        except EndpointError as exc:
            if "is not set" not in str(exc):
                raise ArgillaQueueError(str(exc)) from None
            key = ""
        if not key:
            raise ArgillaQueueError(
                f"{self.config.api_key_env} is not set: export the API key of the Argilla server"
                f" at {self.api_url} (scripts/argilla-local start prints it)"
            )
        return key

    def _headers(self) -> dict[str, str]:
        headers = {"X-Argilla-Api-Key": self._api_key()}
        if self.config.hf_token_env and os.environ.get(self.config.hf_token_env):
            headers["Authorization"] = f"Bearer {os.environ[self.config.hf_token_env]}"
        return headers

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                # no redirects: httpx would resend X-Argilla-Api-Key to wherever a redirect
                # points (it strips only Authorization across origins) (issue 10)
                self._http = httpx.Client(
                    base_url=self.api_url, timeout=self.config.timeout_s, follow_redirects=False
                )
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def _send(
        self, method: str, path: str, *, retry_codes: Iterable[int] = (), **kw: Any
    ) -> httpx.Response:
        """One HTTP call with the queue's one retry policy (tenacity): up to ``max_retries``
        more tries, waiting 1, 2, 4, 8, 8... seconds, after a transport error (not a refused
        connection: nothing listens, waiting will not help) or a 5xx / ``retry_codes`` answer.
        The last answer is returned as it is; a transport error that stays becomes one line."""
        again = set(retry_codes)

        def last_outcome(state: RetryCallState) -> httpx.Response:
            assert state.outcome is not None
            return state.outcome.result()  # the last response, or its exception re-raised

        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=wait_exponential(multiplier=1, max=8),
            retry=retry_if_exception(
                lambda e: (
                    isinstance(e, httpx.TransportError) and not isinstance(e, httpx.ConnectError)
                )
            )
            | retry_if_result(lambda r: r.status_code >= 500 or r.status_code in again),
            retry_error_callback=last_outcome,
            reraise=True,
        )
        try:
            return retrying(
                lambda: self._client().request(method, path, headers=self._headers(), **kw)
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _request(self, method: str, path: str, *, ok: Iterable[int] = (), **kw: Any) -> Any:
        """One API call (``_send``: transport errors and 5xx retried); a failure becomes one
        line; a status in ``ok`` returns the response, anything else its JSON."""
        resp = self._send(method, path, **kw)
        if resp.status_code in ok:
            return resp
        self._raise_for(resp, f"{method} {path}")
        return resp.json() if resp.content else None

    def _unreachable(self, exc: Exception) -> ArgillaQueueError:
        reason = type(exc).__name__
        text = str(exc).splitlines()[0] if str(exc) else ""
        if "refused" in text.lower():
            reason = "connection refused"
        elif isinstance(exc, httpx.TimeoutException):
            reason = f"no answer within {self.config.timeout_s:g} s"
        return ArgillaQueueError(
            f"cannot reach Argilla at {self.api_url} ({reason}); start a local one with"
            f" scripts/argilla-local start, or set {self.config.api_url_env}"
        )

    def _raise_for(self, resp: httpx.Response, what: str) -> None:
        code = resp.status_code
        if 300 <= code < 400:  # redirects are not followed (they would carry the key along)
            raise ArgillaQueueError(
                f"Argilla at {self.api_url} answered with a redirect (HTTP {code}): set the API "
                "URL to the server's final address"
            )
        if code < 400:
            return
        if code == 401:
            raise ArgillaQueueError(
                f"Argilla at {self.api_url} rejected the API key in {self.config.api_key_env}"
                " (HTTP 401): check the key"
            )
        if code == 403:
            raise ArgillaQueueError(
                f"the Argilla user of {self.config.api_key_env} may not {what} (HTTP 403):"
                " an owner or an admin of the workspace is needed"
            )
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        if isinstance(detail, dict):
            detail = detail.get("params", {}).get("message") or detail.get("code") or detail
        detail = error_line(str(detail))
        if code == 404 and "html" in resp.headers.get("content-type", ""):
            detail = "not an Argilla API (is the URL right?)"
        raise ArgillaQueueError(f"Argilla {what} failed (HTTP {code}): {detail}")

    # -- server objects ---------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self._request("GET", "/api/v1/me")

    def _workspace_id(self) -> str:
        items = self._request("GET", "/api/v1/me/workspaces")["items"]
        for ws in items:
            if ws["name"] == self.workspace:
                return ws["id"]
        names = ", ".join(sorted(w["name"] for w in items)) or "none"
        raise ArgillaQueueError(
            f"workspace '{self.workspace}' not found at {self.api_url} (this key sees: {names})"
        )

    def _find_dataset(self) -> dict[str, Any] | None:
        ws_id = self._workspace_id()
        for ds in self._request("GET", "/api/v1/me/datasets")["items"]:
            if ds["name"] == self.dataset_name and ds["workspace_id"] == ws_id:
                return ds
        return None

    def _dataset_key(self, dataset_id: str) -> str:
        return f"{self.api_url}|{dataset_id}"

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Where the queue stands; never raises (``ok`` False with a one-line ``error``)."""
        out: dict[str, Any] = {
            "ok": False,
            "url": self.api_url,
            "workspace": self.workspace,
            "dataset": self.dataset_name,
            "dataset_exists": False,
            "error": None,
        }
        try:
            me = self.whoami()
            out["user"], out["role"] = me.get("username"), me.get("role")
            ds = self._find_dataset()
            if ds is not None:
                out["dataset_exists"] = True
                out["dataset_id"] = ds["id"]
                out["dataset_url"] = f"{self.api_url}/dataset/{ds['id']}/annotation-mode"
                progress = self._request("GET", f"/api/v1/datasets/{ds['id']}/progress")
                out["records"] = progress.get("total", 0)
                out["completed"] = progress.get("completed", 0)
                out["pending"] = progress.get("pending", 0)
            out["ok"] = True
        except ArgillaQueueError as exc:
            out["error"] = str(exc)
        return out

    # -- settings ---------------------------------------------------------------------------
    def _settings_spec(self) -> dict[str, dict[str, Any]]:
        """What the dataset must look like: name -> type (and rating values) per kind."""
        n = self.config.max_candidates
        fields = {"conversation": "chat"}
        questions: dict[str, Any] = {}
        metadata = {
            "source": "terms",
            "num_turns": "integer",
            "n_candidates": "integer",
            "prompt_chars": "integer",
            "response_chars_min": "integer",
            "response_chars_max": "integer",
            "ai_rating_best": "float",
            "ai_rating_worst": "float",
            "ai_margin": "float",
            "ai_tie": "terms",
            "judge": "terms",
        }
        for i in range(1, n + 1):
            fields[f"candidate_{i}"] = "text"
            fields[f"rationale_{i}"] = "text"
            questions[f"rating_{i}"] = ("rating", RATING_VALUES)
            metadata[f"model_{i}"] = "terms"
            metadata[f"key_{i}"] = "terms"
        # preference picks: the best (chosen) and the worst (rejected) response, by slot
        for name in PICK_QUESTIONS:
            questions[name] = ("label_selection", [str(i) for i in range(1, n + 1)])
        questions["comment"] = ("text", None)
        return {"fields": fields, "questions": questions, "metadata": metadata}

    def _build_settings(self, client: Any) -> Any:
        import argilla as rg

        n = self.config.max_candidates
        fields: list[Any] = [
            rg.ChatField(
                name="conversation",
                title="Conversation",
                required=True,
                _client=client,
                description="The conversation up to the last user message",
            )
        ]
        questions: list[Any] = []
        scale = rating_scale()
        for i in range(1, n + 1):
            fields.append(
                rg.TextField(
                    name=f"candidate_{i}",
                    title=f"Response {i}",
                    use_markdown=True,
                    required=False,
                    client=client,
                )
            )
            fields.append(
                rg.TextField(
                    name=f"rationale_{i}",
                    title=f"AI judge's note on response {i}",
                    use_markdown=True,
                    required=False,
                    client=client,
                )
            )
            questions.append(
                rg.RatingQuestion(
                    name=f"rating_{i}",
                    title=f"Rating of response {i} (1 = {scale[0].name}, 5 = {scale[4].name})",
                    values=RATING_VALUES,
                    required=i <= 2,
                    client=client,
                )
            )
        labels = {str(i): f"Response {i}" for i in range(1, n + 1)}
        for name, title in PICK_QUESTIONS.items():
            questions.append(
                rg.LabelQuestion(
                    name=name, title=title, labels=labels, required=False, client=client
                )
            )
        questions.append(
            rg.TextQuestion(
                name="comment",
                title="Comment (optional)",
                required=False,
                use_markdown=False,
                client=client,
            )
        )
        spec = self._settings_spec()["metadata"]
        hidden = {"judge", "ai_rating_best", "ai_rating_worst", "ai_margin", "ai_tie"}
        metadata: list[Any] = []
        for name, kind in spec.items():
            visible = name not in hidden and not name.startswith(("model_", "key_"))
            title = name.replace("_", " ")
            if kind == "terms":
                metadata.append(
                    rg.TermsMetadataProperty(
                        name=name, title=title, visible_for_annotators=visible, client=client
                    )
                )
            elif kind == "integer":
                metadata.append(
                    rg.IntegerMetadataProperty(
                        name=name, title=title, visible_for_annotators=visible, client=client
                    )
                )
            else:
                metadata.append(
                    rg.FloatMetadataProperty(
                        name=name, title=title, visible_for_annotators=visible, client=client
                    )
                )
        return rg.Settings(
            fields=fields,
            questions=questions,
            metadata=metadata,
            guidelines=self.config.guidelines or GUIDELINES.format(n=n, scale=scale_markdown()),
            distribution=rg.TaskDistribution(min_submitted=self.config.min_submitted),
            allow_extra_metadata=False,
        )

    def _check_compatible(self, dataset_id: str) -> dict[str, str]:
        """Raise when the dataset cannot hold our records; returns question name -> id."""
        spec = self._settings_spec()
        have_fields = {
            f["name"]: f["settings"]["type"]
            for f in self._request("GET", f"/api/v1/datasets/{dataset_id}/fields")["items"]
        }
        questions = self._request("GET", f"/api/v1/datasets/{dataset_id}/questions")["items"]
        have_questions = {q["name"]: q["settings"] for q in questions}
        have_meta = {
            m["name"]: m["settings"]["type"]
            for m in self._request("GET", f"/api/v1/me/datasets/{dataset_id}/metadata-properties")[
                "items"
            ]
        }
        problems: list[str] = []
        for name, kind in spec["fields"].items():
            if have_fields.get(name) != kind:
                problems.append(
                    f"field {name} "
                    + ("missing" if name not in have_fields else f"is {have_fields[name]}")
                )
        for name, (kind, values) in spec["questions"].items():
            got = have_questions.get(name)
            if got is None and name in PICK_QUESTIONS:
                continue  # a dataset pushed before picks existed: ratings only
            if got is None:
                problems.append(f"question {name} missing")
            elif got.get("type") != kind:
                problems.append(f"question {name} is {got.get('type')}")
            elif values is not None and [o.get("value") for o in got.get("options", [])] != values:
                problems.append(f"question {name} has other values")
        for name, kind in spec["metadata"].items():
            if have_meta.get(name) != kind:
                problems.append(
                    f"metadata {name} "
                    + ("missing" if name not in have_meta else f"is {have_meta[name]}")
                )
        extra_slots = [
            n for n in have_fields if n.startswith("candidate_") and n not in spec["fields"]
        ]
        if extra_slots:
            problems.append(f"it has {len(extra_slots)} more candidate slots")
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ArgillaQueueError(
                f"dataset '{self.dataset_name}' in workspace '{self.workspace}' exists with"
                f" incompatible settings: {'; '.join(problems[:3])}{more}; use another"
                " dataset_name or delete that dataset"
            )
        return {q["name"]: q["id"] for q in questions}

    def _sdk(self) -> Any:
        """An argilla SDK client (only push needs one: it builds the settings and records)."""
        import argilla as rg

        headers = self._headers()
        extra = (
            {"headers": {"Authorization": headers["Authorization"]}}
            if ("Authorization" in headers)
            else {}
        )
        try:
            return rg.Argilla(
                api_url=self.api_url,
                api_key=headers["X-Argilla-Api-Key"],
                timeout=int(self.config.timeout_s),
                retries=self.config.max_retries,
                **extra,
            )
        except Exception as exc:  # noqa: BLE001 - the SDK raises many kinds; checked first
            raise ArgillaQueueError(
                f"Argilla client for {self.api_url} failed: {error_line(exc)}"
            ) from None

    def ensure_dataset(self) -> dict[str, Any]:
        """Find the dataset, or create it with the review settings (the argilla SDK builds
        them); a dataset of that name with other settings is an error. Updates the task
        distribution when ``min_submitted`` changed. Returns ``{"id", "name", "workspace",
        "url", "question_ids": {name: id}}``."""
        self.whoami()  # clear errors for an unreachable server / a bad key first
        existing = self._find_dataset()
        if existing is None:
            import argilla as rg

            client = self._sdk()
            try:
                dataset = rg.Dataset(
                    name=self.dataset_name,
                    workspace=self.workspace,
                    settings=self._build_settings(client),
                    client=client,
                )
                dataset.create()
            except Exception as exc:  # noqa: BLE001 - SDK errors become one line
                raise ArgillaQueueError(
                    f"cannot create dataset '{self.dataset_name}' in workspace"
                    f" '{self.workspace}': {error_line(exc)}"
                ) from None
            existing = self._request("GET", f"/api/v1/datasets/{dataset.id}")
        question_ids = self._check_compatible(existing["id"])
        want = self.config.min_submitted
        if (existing.get("distribution") or {}).get("min_submitted") != want:
            self._request(
                "PATCH",
                f"/api/v1/datasets/{existing['id']}",
                json={"distribution": {"strategy": "overlap", "min_submitted": want}},
            )
        return {
            "id": existing["id"],
            "name": self.dataset_name,
            "workspace": self.workspace,
            "url": f"{self.api_url}/dataset/{existing['id']}/annotation-mode",
            "question_ids": question_ids,
        }

    def delete_dataset(self) -> bool:
        """Delete the dataset (and its responses!) on the server. Returns False if absent."""
        ds = self._find_dataset()
        if ds is None:
            return False
        self._request("DELETE", f"/api/v1/datasets/{ds['id']}")
        return True

    # -- push -------------------------------------------------------------------------------
    def push(
        self,
        store: Store,
        judge_id: str | None,
        generator_ids: Sequence[str] | None = None,
        select: str | Sequence[str] | Selection | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        only: Sequence[str] | None = None,
    ) -> PushSummary:
        """Push the selected conversations (with >= 2 done candidates of ``generator_ids``,
        all generators when None) and ``judge_id``'s ratings as suggestions. ``only``: look at
        these conversations alone (the Argilla follower's just-judged batch, ``argilla_follow``),
        the selection applied to them exactly as to the whole store; the plan and the push
        state read are then as small as the batch."""
        t0 = time.monotonic()
        selection = Selection.parse(
            self.config.select if select is None else select,
            low_rating=self.config.low_rating,
            min_margin=self.config.min_margin,
        )
        summary = PushSummary(url=self.api_url, dataset=self.dataset_name, workspace=self.workspace)
        dataset = self.ensure_dataset()
        dataset_key = self._dataset_key(dataset["id"])
        items, skipped = self._plan(store, judge_id, generator_ids, selection, only)
        state = store.argilla_push_state(
            dataset_key, None if only is None else [item.conversation_id for item in items]
        )
        summary.skipped = dict(skipped)
        summary.selected = len(items)
        progress = Progress(stage=STAGE_PUSH, total=len(items))

        def report(message: str = "") -> None:
            progress.done = summary.pushed + summary.unchanged + summary.locked
            progress.failed = summary.failed
            progress.skipped = summary.unchanged
            progress.elapsed_s = time.monotonic() - t0
            progress.message = message
            if on_progress is not None:
                on_progress(progress)

        todo: list[_Item] = []
        relocked: list[_Item] = []
        for item in items:
            old = state.get(item.conversation_id)
            if old is not None and old[1] == item.record_hash:
                summary.unchanged += 1
            elif old is not None and old[2] != item.slot_keys:
                relocked.append(item)  # candidate set changed: allowed only if unanswered
            else:
                todo.append(item)
        for item in relocked:
            server_id = state[item.conversation_id][0]
            if server_id and self._has_responses(server_id):
                summary.locked += 1
            else:
                todo.append(item)
        report("started")

        batch_size = min(self.config.batch_size, MAX_BULK)
        for start in range(0, len(todo), batch_size):
            if cancel is not None and cancel.is_set():
                summary.cancelled = True
                break
            batch = todo[start : start + batch_size]
            self._push_batch(store, dataset, dataset_key, batch, summary)
            report(f"pushed {summary.pushed} records")
        summary.elapsed_s = round(time.monotonic() - t0, 3)
        report("cancelled" if summary.cancelled else "finished")
        return summary

    def _has_responses(self, record_id: str) -> bool:
        resp = self._request("GET", f"/api/v1/records/{record_id}", ok=(404,))
        if isinstance(resp, httpx.Response):  # 404: deleted on the server
            return False
        return bool(resp.get("responses"))

    def _push_batch(
        self,
        store: Store,
        dataset: dict[str, Any],
        dataset_key: str,
        batch: list[_Item],
        summary: PushSummary,
    ) -> None:
        """Upsert one batch by external id (PUT .../records/bulk, as the SDK's ``log`` does,
        without building SDK objects), retrying transient failures. A batch the server
        refuses is split until the bad records are isolated, so one never blocks the rest.
        Responses are not part of the payload, so the server keeps them as they are."""
        qids = dataset["question_ids"]
        payload = {
            "items": [
                {
                    "external_id": item.conversation_id,
                    "fields": item.fields,
                    "metadata": item.metadata,
                    "suggestions": [
                        {
                            "question_id": qids[s["question_name"]],
                            "value": s["value"],
                            "agent": s["agent"] or None,
                            "type": s["type"],
                        }
                        for s in item.suggestions
                    ],
                }
                for item in batch
            ]
        }
        path = f"/api/v1/datasets/{dataset['id']}/records/bulk"
        resp = self._send("PUT", path, json=payload, retry_codes=(429,))
        code = resp.status_code
        if code >= 400:
            if code in (401, 403, 404):
                self._raise_for(resp, "record upsert")
            if len(batch) > 1:
                mid = len(batch) // 2
                self._push_batch(store, dataset, dataset_key, batch[:mid], summary)
                self._push_batch(store, dataset, dataset_key, batch[mid:], summary)
                return
            summary.failed += 1
            if len(summary.errors) < 10:
                try:
                    self._raise_for(resp, "record upsert")
                except ArgillaQueueError as exc:
                    summary.errors.append(f"{batch[0].conversation_id}: {exc}")
            return
        by_external = {r["external_id"]: r["id"] for r in resp.json().get("items", [])}
        rows = []
        now = time.time()
        for item in batch:
            rows.append(
                (
                    dataset_key,
                    item.conversation_id,
                    by_external.get(item.conversation_id),
                    item.record_hash,
                    json.dumps(item.slot_keys),
                    now,
                )
            )
        # The server does not say which records it already had (its bulk answer drops
        # updated_item_ids): count what this store had pushed before as updated. A batch in
        # flight when a push was killed is counted as created when it is re-sent.
        existing = store.put_argilla_push(dataset_key, rows)
        summary.updated += existing
        summary.created += len(batch) - existing

    @gc_paused()  # tens of thousands of records and dicts, no cycles (see gc_paused)
    def _plan(
        self,
        store: Store,
        judge_id: str | None,
        generator_ids: Sequence[str] | None,
        selection: Selection,
        only: Sequence[str] | None = None,
    ) -> tuple[list[_Item], Counter[str]]:
        """The records to push for the selection (of the ``only`` conversations when given),
        built from three bulk queries."""
        gens = list(generator_ids) if generator_ids else None
        cands: dict[str, list[Candidate]] = defaultdict(list)
        for cand in store.done_candidate_texts(gens, only):
            cands[cand.conversation_id].append(cand)

        judgments: dict[str, Judgment] = {}
        for judgment in store.usable_judgments(judge_id, only):
            judgments[judgment.conversation_id] = judgment  # oldest first: the newest wins

        # issue 14: conversations whose panel judges disagree (the stored fact, indexed)
        disagree = (
            store.judges_disagree_ids(judge_id) if selection.mode == "judges_disagree" else set()
        )
        if only is not None:  # in load order, as a whole-store push would send them
            wanted = list(dict.fromkeys(only))
            if selection.mode == "ids":
                chosen = set(selection.ids)
                wanted = [w for w in wanted if w in chosen]
            convs = store.conversations(ids=wanted)
            missing = 0
        elif selection.mode == "ids":
            wanted = list(dict.fromkeys(selection.ids))
            convs = store.conversations(ids=wanted)
            found = {c.conversation_id for c in convs}
            missing = sum(1 for w in wanted if w not in found)
        else:
            convs = store.conversations()
            missing = 0
        skipped: Counter[str] = Counter()
        if missing:
            skipped["not_in_store"] = missing
        n_slots = self.config.max_candidates
        items: list[_Item] = []
        for conv in convs:
            cs = cands.get(conv.conversation_id, [])
            if len(cs) < 2:
                skipped["too_few_candidates"] += 1
                continue
            if len(cs) > n_slots:
                skipped["too_many_candidates"] += 1
                continue
            judge = judgments.get(conv.conversation_id)
            by_key = judge.rating_of() if judge else {}
            keys = [c.key for c in cs]
            ratings = [_num(by_key.get(k)) for k in keys]
            if not selection.accepts(ratings, judge is not None, conv.conversation_id in disagree):
                skipped["not_selected"] += 1
                continue
            items.append(self._item(conv, cs, keys, judge, by_key))
        return items, skipped

    def _item(
        self,
        conv: Conversation,
        cands: list[Candidate],
        cand_keys: list[str],
        judge: Judgment | None,
        ratings: dict[str, float | None],
    ) -> _Item:
        """One record: ``cand_keys`` are the candidates' keys, ``ratings`` is
        ``judge.rating_of()`` (the AI rating by candidate key)."""
        by_key = {
            k: (c.model or c.generator_id, c.text) for k, c in zip(cand_keys, cands, strict=True)
        }
        keys = sorted(by_key)
        order = shown_order(conv.conversation_id, len(keys), self.config.shuffle_seed)
        slot_keys = [keys[i] for i in order]
        judge_model = (judge.model or judge.judge_id) if judge else ""
        rationales = judge.rationale_of() if judge else {}
        fields: dict[str, Any] = {
            "conversation": [
                {"role": m["role"], "content": m["content"] or " "} for m in conv.messages
            ]
        }
        metadata: dict[str, Any] = {
            "source": conv.source or "unknown",
            "num_turns": conv.num_turns,
            "n_candidates": len(slot_keys),
            "prompt_chars": sum(len(m["content"]) for m in conv.messages),
        }
        suggestions: list[dict[str, Any]] = []
        lengths: list[int] = []
        rated: list[float] = []
        for i, key in enumerate(slot_keys, 1):
            model, text = by_key[key]
            fields[f"candidate_{i}"] = text if text.strip() else "*(empty response)*"
            lengths.append(len(text))
            note = rationales.get(key)
            rating = _num(ratings.get(key))
            if note or rating is not None:
                shown = "no rating" if rating is None else f"{rating:g}/5"
                fields[f"rationale_{i}"] = f"**{shown}** — {note}" if note else f"**{shown}**"
            if rating is not None:
                rated.append(rating)
                suggestions.append(
                    {
                        "question_name": f"rating_{i}",
                        "value": min(5, max(1, int(rating + 0.5))),
                        "agent": judge_model,
                        "type": "model",
                    }
                )
            metadata[f"model_{i}"] = model
            metadata[f"key_{i}"] = key
        metadata["response_chars_min"] = min(lengths)
        metadata["response_chars_max"] = max(lengths)
        if judge_model:
            metadata["judge"] = judge_model
        if rated:
            best, worst = max(rated), min(rated)
            metadata["ai_rating_best"] = float(best)
            metadata["ai_rating_worst"] = float(worst)
            metadata["ai_margin"] = float(best - worst)
            metadata["ai_tie"] = "yes" if len(rated) >= 2 and sorted(rated)[-2] == best else "no"
        digest = hashlib.sha256(
            json.dumps([fields, metadata, suggestions], sort_keys=True, ensure_ascii=False).encode(
                "utf-8"
            )
        ).hexdigest()[:32]
        return _Item(conv.conversation_id, slot_keys, fields, metadata, suggestions, digest)

    # -- pull -------------------------------------------------------------------------------
    def pull(self, store: Store, page_size: int = 1000) -> PullSummary:
        """Copy submitted and discarded responses into the store's reviews (source
        'argilla', reviewer = Argilla username). Unchanged reviews are not rewritten."""
        t0 = time.monotonic()
        ds = self._find_dataset()
        summary = PullSummary(url=self.api_url, dataset=self.dataset_name)
        if ds is None:
            raise ArgillaQueueError(
                f"dataset '{self.dataset_name}' not found in workspace '{self.workspace}' at"
                f" {self.api_url}: push first"
            )
        users = self._usernames(ds["workspace_id"])
        question_names = {
            str(q["id"]): q["name"]
            for q in self._request("GET", f"/api/v1/datasets/{ds['id']}/questions")["items"]
        }
        known = set(store.conversation_ids())
        have: dict[tuple[str, str], Review] = {
            (r.conversation_id, r.reviewer): r for r in store.reviews() if r.source == REVIEW_SOURCE
        }
        n_slots = self.config.max_candidates
        reviewers: set[str] = set()
        writes: list[tuple[str, str, dict[str, Any]]] = []
        offset = 0
        while True:
            page = self._request(
                "GET",
                f"/api/v1/datasets/{ds['id']}/records",
                params={
                    "include": ["responses", "suggestions"],
                    "offset": offset,
                    "limit": page_size,
                },
            )
            items = page.get("items", [])
            for rec in items:
                summary.records += 1
                rec["_suggested"] = {
                    question_names.get(str(sg.get("question_id")), ""): sg.get("value")
                    for sg in rec.get("suggestions") or []
                }
                self._pull_record(rec, users, known, have, n_slots, summary, writes, reviewers)
            offset += len(items)
            if not items or offset >= page.get("total", 0):
                break
        store.put_reviews(
            Review(cid, reviewer, REVIEW_SOURCE, **review) for cid, reviewer, review in writes
        )
        summary.written = len(writes)
        summary.reviewers = sorted(reviewers)
        summary.elapsed_s = round(time.monotonic() - t0, 3)
        return summary

    def _pull_record(
        self,
        rec: dict[str, Any],
        users: dict[str, str],
        known: set[str],
        have: dict[tuple[str, str], Review],
        n_slots: int,
        summary: PullSummary,
        writes: list[tuple[str, str, dict[str, Any]]],
        reviewers: set[str],
    ) -> None:
        cid = rec.get("external_id") or ""
        meta = rec.get("metadata") or {}
        slots = {i: meta.get(f"key_{i}") for i in range(1, n_slots + 1)}
        for resp, status in summary.answered(rec):
            if cid not in known:
                summary.unknown += 1
                continue
            reviewer = users.get(str(resp.get("user_id")), str(resp.get("user_id")))
            reviewers.add(reviewer)
            values = resp.get("values") or {}
            ratings: dict[str, int] = {}
            for i, key in slots.items():
                v = (values.get(f"rating_{i}") or {}).get("value")
                if key and v is not None:
                    ratings[key] = int(v)
            comment = (values.get("comment") or {}).get("value") or None
            picks = {name: _picked_key(values, name, slots) for name in PICK_QUESTIONS}
            if picks["best"] is not None and picks["best"] == picks["worst"]:
                picks = {"best": None, "worst": None}  # the same response both: no pair
            review = {
                "ratings": ratings,
                "discard": status == "discarded",
                "comment": comment,
                "chosen": picks["best"],
                "rejected": picks["worst"],
                "accepted_ai": status == "submitted"
                and _accepted_ai(values, rec.get("_suggested") or {}, slots),
            }
            old = have.get((cid, reviewer))
            if old is not None and all(getattr(old, k) == v for k, v in review.items()):
                summary.unchanged += 1
                continue
            writes.append((cid, reviewer, review))

    def _usernames(self, workspace_id: str) -> dict[str, str]:
        """user id -> username (owners see every user; admins their workspace's)."""
        for path in ("/api/v1/users", f"/api/v1/workspaces/{workspace_id}/users"):
            try:
                items = self._request("GET", path)["items"]
            except ArgillaQueueError:
                continue
            return {str(u["id"]): u["username"] for u in items}
        return {}

    def start_background_pull(
        self,
        store: Store,
        interval_s: float | None = None,
        on_pull: Callable[[PullSummary], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> BackgroundPull:
        """Pull now and then every ``interval_s`` seconds in a daemon thread until stopped."""
        puller = BackgroundPull(
            self, store, interval_s or self.config.pull_interval_s, on_pull, on_error
        )
        puller.start()
        return puller


class BackgroundPull:
    """A daemon thread that pulls reviews on an interval. ``stop()`` ends it; ``pull_now()``
    wakes it early. ``last_summary`` / ``last_error`` tell how the latest pull went."""

    def __init__(
        self,
        queue: ArgillaQueue,
        store: Store,
        interval_s: float,
        on_pull: Callable[[PullSummary], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.interval_s = interval_s
        self.on_pull = on_pull
        self.on_error = on_error
        self.last_summary: PullSummary | None = None
        self.last_error: str | None = None
        self.last_pull_at: float | None = None
        self.pulls = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="argilla-pull", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def pull_now(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                summary = self.queue.pull(self.store)
                self.last_summary, self.last_error = summary, None
                if self.on_pull is not None:
                    self.on_pull(summary)
            except Exception as exc:  # noqa: BLE001 - the thread must survive any failure
                self.last_error = (
                    str(exc) if isinstance(exc, ArgillaQueueError) else (error_line(exc))
                )
                log.warning("argilla background pull failed: %s", self.last_error)
                if self.on_error is not None:
                    self.on_error(self.last_error)
            self.pulls += 1
            self.last_pull_at = time.time()
            self._wake.wait(self.interval_s)
            self._wake.clear()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@dataclass
class _Item:
    conversation_id: str
    slot_keys: list[str]
    fields: dict[str, Any]
    metadata: dict[str, Any]
    suggestions: list[dict[str, Any]]
    record_hash: str


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
