"""The Arena in Argilla: a dataset of pairs, pushed and pulled like the ratings queue (issue 14a).

One Argilla record per (conversation, pair), the pairs chosen by the Arena's informative pair
selector (``pipelines.pairwise.refresh_pairs``: AI ties, judges disagreeing, the AI's pick vs
its runner-up, random; ``argilla.pair_reasons`` says which, in order). Record id (external id)
= ``conversation_id|key_1|key_2``.

- fields: ``conversation`` (chat: the prompt messages), ``response_a`` and ``response_b``: the
  two candidates, blind, sides drawn at random per record (seeded, so a re-push shows the same
  sides and the answers already given stay valid);
- questions: ``verdict`` (a label question: A is better / B is better / tie / both bad) and
  an optional ``comment``;
- metadata: source, turns and the reason the pair was picked (visible); the candidate key and
  model shown as A and as B and the AI's ratings of both, hidden from annotators: ``pull`` maps
  A / B back to candidate keys through ``key_a`` / ``key_b``.

``pull`` turns submitted responses into pairwise reviews in the store (source ``argilla``,
reviewer = Argilla username), exactly what an Arena verdict is (``pairwise.submit_verdict``),
so they feed binarization and the Results rankings; a discarded record is a skip. Re-pulling
writes only what changed: one review per (pair, reviewer), never a duplicate.

The HTTP plumbing, push bookkeeping (idempotent, resumable upserts), key handling and error
lines are ``ArgillaQueue``'s.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from pipelines.argilla_queue import (
    REVIEW_SOURCE,
    ArgillaQueue,
    ArgillaQueueError,
    PullSummary,
    Selection,
    _Item,
    _num,
)
from pipelines.pairwise import REASONS, PairwiseError, ordered, refresh_pairs, submit_verdict
from pipelines.records import seeded_order
from pipelines.store import Store

# the label question's values -> the Arena's verdicts (``pairwise.VERDICTS``)
VERDICT_LABELS: dict[str, str] = {
    "a": "A is better",
    "b": "B is better",
    "tie": "Tie (equally good)",
    "both_bad": "Both bad",
}

PAIR_GUIDELINES = """\
## Which response is better?

Each record is a conversation (all turns up to the last user message) and **two** candidate
answers to that last message, **A** and **B**. The models are not named and the sides are
random: judge the text only, as the next assistant turn of *this* conversation (earlier turns
count as context).

Answer **A is better**, **B is better**, **Tie** (equally good) or **Both bad** (neither is
acceptable). Pairs are picked where a human verdict matters most: the AI judge could not
separate the two, judges disagreed, or the AI's pick against its runner-up. **Discard** the
record when you cannot judge it (it counts as a skip). Your verdicts decide which answer becomes
`chosen` for this pair, and rank the models.
"""


def record_id(conversation_id: str, key_1: str, key_2: str) -> str:
    """The record's external id: one record per (conversation, pair), keys in order."""
    k1, k2 = ordered(key_1, key_2)
    return f"{conversation_id}|{k1}|{k2}"


class ArgillaPairsQueue(ArgillaQueue):
    """The Argilla dataset of pairs (``argilla.pairs_dataset_name``)."""

    @property
    def dataset_name(self) -> str:
        return self.config.pairs_dataset_name

    # -- settings ---------------------------------------------------------------------------
    def _settings_spec(self) -> dict[str, dict[str, Any]]:
        return {
            "fields": {"conversation": "chat", "response_a": "text", "response_b": "text"},
            "questions": {
                "verdict": ("label_selection", list(VERDICT_LABELS)),
                "comment": ("text", None),
            },
            "metadata": {
                "source": "terms",
                "num_turns": "integer",
                "reason": "terms",
                "conversation_id": "terms",
                "key_a": "terms",
                "key_b": "terms",
                "model_a": "terms",
                "model_b": "terms",
                "ai_rating_a": "float",
                "ai_rating_b": "float",
            },
        }

    def _build_settings(self, client: Any) -> Any:
        import argilla as rg

        fields: list[Any] = [
            rg.ChatField(
                name="conversation",
                title="Conversation",
                required=True,
                _client=client,
                description="The conversation up to the last user message",
            ),
            rg.TextField(name="response_a", title="Response A", use_markdown=True, client=client),
            rg.TextField(name="response_b", title="Response B", use_markdown=True, client=client),
        ]
        questions: list[Any] = [
            rg.LabelQuestion(
                name="verdict",
                title="Which response is better?",
                labels=dict(VERDICT_LABELS),
                required=True,
                client=client,
            ),
            rg.TextQuestion(
                name="comment",
                title="Comment (optional)",
                required=False,
                use_markdown=False,
                client=client,
            ),
        ]
        visible = {"source", "num_turns", "reason"}
        metadata: list[Any] = []
        for name, kind in self._settings_spec()["metadata"].items():
            cls = {
                "terms": rg.TermsMetadataProperty,
                "integer": rg.IntegerMetadataProperty,
                "float": rg.FloatMetadataProperty,
            }[kind]
            metadata.append(
                cls(
                    name=name,
                    title=name.replace("_", " "),
                    visible_for_annotators=name in visible,
                    client=client,
                )
            )
        return rg.Settings(
            fields=fields,
            questions=questions,
            metadata=metadata,
            guidelines=self.config.guidelines or PAIR_GUIDELINES,
            distribution=rg.TaskDistribution(min_submitted=self.config.min_submitted),
            allow_extra_metadata=False,
        )

    # -- push: the records are the Arena's queued pairs -------------------------------------
    def _plan(
        self,
        store: Store,
        judge_id: str | None,
        generator_ids: Sequence[str] | None,
        selection: Selection,
        only: Sequence[str] | None = None,
    ) -> tuple[list[_Item], Counter[str]]:
        gens = list(generator_ids) if generator_ids else None
        refresh_pairs(store, judge_id=judge_id, generator_ids=gens)
        reasons = [str(r) for r in self.config.pair_reasons]
        ids = selection.ids if selection.mode == "ids" else None
        if only is not None:  # the follower's batch: these conversations' pairs alone
            chosen = None if ids is None else set(ids)
            ids = [c for c in only if chosen is None or c in chosen]
        # one record per pair: a pair queued for several reasons is named by the first
        rank = {r: i for i, r in enumerate(reasons)}
        pairs: dict[tuple[str, str, str], str] = {}
        for reason, cid, k1, k2 in store.queued_pairs(reasons, ids):
            key = (cid, k1, k2)
            if key not in pairs or rank[reason] < rank[pairs[key]]:
                pairs[key] = reason
        skipped: Counter[str] = Counter()
        if ids is not None:
            queued = {cid for cid, _, _ in pairs}
            skipped["no_pair_queued"] = sum(1 for c in dict.fromkeys(ids) if c not in queued)
        wanted = {cid for cid, _, _ in pairs}
        texts: dict[tuple[str, str], tuple[str, str]] = {}
        for cand in store.done_candidate_texts(gens, sorted(wanted) if only is not None else None):
            if cand.conversation_id in wanted:
                texts[cand.conversation_id, cand.key] = (cand.model or cand.generator_id, cand.text)
        ratings: dict[str, dict[str, float | None]] = defaultdict(dict)
        for judgment in store.usable_judgments(
            judge_id, sorted(wanted) if only is not None else None
        ):
            if judgment.conversation_id in wanted:  # oldest first: the newest judgment wins
                ratings[judgment.conversation_id] = {
                    k: _num(r) for k, r in judgment.rating_of().items()
                }
        convs = {c.conversation_id: c for c in store.conversations(ids=sorted(wanted))}
        items: list[_Item] = []
        for (cid, k1, k2), reason in pairs.items():
            conv = convs.get(cid)
            if conv is None or (cid, k1) not in texts or (cid, k2) not in texts:
                skipped["candidate_missing"] += 1
                continue
            rid = record_id(cid, k1, k2)
            left, right = k1, k2
            if seeded_order(2, f"{self.config.shuffle_seed}:{rid}")[0] == 1:  # blind sides
                left, right = right, left
            fields: dict[str, Any] = {
                "conversation": [
                    {"role": m["role"], "content": m["content"] or " "} for m in conv.messages
                ]
            }
            metadata: dict[str, Any] = {
                "source": conv.source or "unknown",
                "num_turns": conv.num_turns,
                "reason": reason,
                "conversation_id": cid,
            }
            for side, shown in (("a", left), ("b", right)):
                model, text = texts[cid, shown]
                fields[f"response_{side}"] = text if text.strip() else "*(empty response)*"
                metadata[f"key_{side}"] = shown
                metadata[f"model_{side}"] = model
                ai = ratings.get(cid, {}).get(shown)
                if ai is not None:
                    metadata[f"ai_rating_{side}"] = float(ai)
            digest = hashlib.sha256(
                json.dumps([fields, metadata], sort_keys=True, ensure_ascii=False).encode()
            ).hexdigest()[:32]
            items.append(_Item(rid, [left, right], fields, metadata, [], digest))
        return items, skipped

    # -- pull: verdicts into the store's pairwise reviews -----------------------------------
    def pull(self, store: Store, page_size: int = 1000) -> PullSummary:
        """Copy submitted verdicts (and discards, as skips) into the store's pairwise reviews
        (source 'argilla', reviewer = Argilla username). Unchanged verdicts are not rewritten."""
        t0 = time.monotonic()
        ds = self._find_dataset()
        if ds is None:
            raise ArgillaQueueError(
                f"dataset '{self.dataset_name}' not found in workspace '{self.workspace}' at"
                f" {self.api_url}: push the pairs first"
            )
        summary = PullSummary(url=self.api_url, dataset=self.dataset_name)
        users = self._usernames(ds["workspace_id"])
        have: dict[tuple[str, str, str, str], tuple[str, str]] = {
            (r["conversation_id"], r["key_1"], r["key_2"], r["reviewer"]): (
                r["left_key"],
                r["verdict"],
            )
            for r in store.pairwise_reviews()
            if r["source"] == REVIEW_SOURCE
        }
        reviewers: set[str] = set()
        writes: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._request(
                "GET",
                f"/api/v1/datasets/{ds['id']}/records",
                params={"include": ["responses"], "offset": offset, "limit": page_size},
            )
            items = page.get("items", [])
            for rec in items:
                summary.records += 1
                self._pull_pair(rec, users, have, summary, writes, reviewers)
            offset += len(items)
            if not items or offset >= page.get("total", 0):
                break
        for w in writes:
            try:
                submit_verdict(store, source=REVIEW_SOURCE, **w)
            except PairwiseError:  # the pair's candidates are not in this store
                summary.unknown += 1
                continue
            summary.written += 1
        summary.reviewers = sorted(reviewers)
        summary.elapsed_s = round(time.monotonic() - t0, 3)
        return summary

    def _pull_pair(
        self,
        rec: dict[str, Any],
        users: dict[str, str],
        have: dict[tuple[str, str, str, str], tuple[str, str]],
        summary: PullSummary,
        writes: list[dict[str, Any]],
        reviewers: set[str],
    ) -> None:
        meta = rec.get("metadata") or {}
        cid, key_a, key_b = meta.get("conversation_id"), meta.get("key_a"), meta.get("key_b")
        reason = meta.get("reason") if meta.get("reason") in REASONS else None
        for resp, status in summary.answered(rec):
            verdict = "skip"
            if status == "submitted":
                value = ((resp.get("values") or {}).get("verdict") or {}).get("value")
                if isinstance(value, list):  # a multi-label answer: only a single pick counts
                    value = value[0] if len(value) == 1 else None
                if value not in VERDICT_LABELS:
                    summary.unknown += 1  # not an answer this dataset asks for
                    continue
                verdict = str(value)
            if not cid or not key_a or not key_b or key_a == key_b:
                summary.unknown += 1
                continue
            reviewer = users.get(str(resp.get("user_id")), str(resp.get("user_id")))
            reviewers.add(reviewer)
            k1, k2 = ordered(key_a, key_b)
            if have.get((cid, k1, k2, reviewer)) == (key_a, verdict):
                summary.unchanged += 1
                continue
            writes.append(
                {
                    "conversation_id": cid,
                    "reviewer": reviewer,
                    "left_key": key_a,
                    "right_key": key_b,
                    "verdict": verdict,
                    "reason": reason,
                }
            )


def queue_for(config: Any) -> ArgillaQueue:
    """The queue of the recipe's ``argilla:`` section: ratings records or the pairs dataset."""
    queue = ArgillaQueue.from_config(config)
    if queue.config.mode == "pairs":
        return ArgillaPairsQueue(config=queue.config)
    return queue
