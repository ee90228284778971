"""Argilla push following the judge (issue 13): reviewers get records while the job still runs.

A run whose stages include ``push-argilla`` together with ``judge`` starts an
``ArgillaFollower`` beside the judging (pipelined with generation or not). A thread of its own
(never the job's event loop, so a slow or absent Argilla never stalls generation or judging)
looks every ``argilla.follow_every_s`` seconds for the conversations the rating judge wrote a
judgment for since its last look (``Store.judgment_times_since``, the judgments_updated index)
and pushes just those through the recipe's queue (``queue_for``: ratings records or pairs) with
``ArgillaQueue.push(only=...)``: the same selection (``argilla.select``), the same records and
the same push state as the final stage, so nothing is sent twice. The final ``push-argilla``
stage then plans the whole store as always and finds what the follower sent ``unchanged``; it
pushes only the rest (conversations judged in the last seconds, or before this run).

Nothing is lost or duplicated by a kill: records are upserted by id and the push state is
written after each bulk upsert, so a re-run sends what is missing. When a push fails (Argilla
down, a bad key) the follower notes the error once in the push-argilla progress and stops; the
judging goes on, and the final stage reports the error as it always did.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.recipe import Recipe
from pipelines.store import Store
from pipelines.types import Progress, ProgressCallback

STAGE = "push-argilla"
OVERLAP_S = 2.0  # re-read this much of the judgments before the watermark (late commits)


@dataclass
class FollowSummary:
    """What the follower pushed while the judge ran."""

    pushes: int = 0  # follow-up pushes made (each of one or more bulk batches)
    seen: int = 0  # judged conversations looked at
    selected: int = 0  # of them, chosen by the selection
    pushed: int = 0  # records created or updated
    unchanged: int = 0
    locked: int = 0
    failed: int = 0
    error: str | None = None  # the push error that stopped the following

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def should_follow(recipe: Recipe, stages: list[str]) -> bool:
    """Whether a run of ``stages`` pushes to Argilla as it judges."""
    return (
        "push-argilla" in stages
        and "judge" in stages
        and recipe.argilla is not None
        and recipe.has_judge()
        and recipe.argilla.follow_every_s > 0
    )


class ArgillaFollower:
    """Pushes newly judged conversations to Argilla from a background thread, every
    ``every_s`` seconds, until ``close``."""

    def __init__(
        self,
        recipe: Recipe,
        store: Store,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        every_s: float | None = None,
    ) -> None:
        assert recipe.argilla is not None and recipe.has_judge()
        self.recipe = recipe
        self.store = store
        self.progress = progress
        self.cancel = cancel
        self.every_s = every_s if every_s is not None else recipe.argilla.follow_every_s
        self.judge_id = recipe.rating_judge_id()
        self.generator_ids = [g.id for g in recipe.generators]
        self.summary = FollowSummary()
        self._halt = threading.Event()  # stop: between two bulk batches at the latest
        self._since = time.time()  # this run's judgments only; earlier ones: the final push
        self._seen: dict[str, float] = {}  # conversation -> judgment time already pushed
        self._thread = threading.Thread(target=self._run, name="argilla-follow", daemon=True)

    def start(self) -> ArgillaFollower:
        self._thread.start()
        return self

    def close(self) -> FollowSummary:
        """Stop following (an upsert in flight finishes and is recorded) and wait."""
        self._halt.set()
        self._thread.join()
        return self.summary

    def __enter__(self) -> ArgillaFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        from pipelines.argilla_pairs import queue_for

        assert self.recipe.argilla is not None
        queue = queue_for(self.recipe.argilla)
        try:
            while not self._halt.wait(self.every_s):
                if self.cancel is not None and self.cancel.is_set():
                    break
                if not self._follow(queue):
                    break
        finally:
            queue.close()
            self.store.close()  # this thread's connection

    def _follow(self, queue: Any) -> bool:
        """One look and push; False when a failure ends the following."""
        from pipelines.errors import error_line

        assert self.judge_id is not None
        try:
            times = self.store.judgment_times_since(self._since - OVERLAP_S, [self.judge_id])
            new = sorted(
                (ts, cid) for cid, ts in times.items() if ts > self._seen.get(cid, float("-inf"))
            )
            if not new:
                return True
            pushed = queue.push(
                self.store,
                self.judge_id,
                self.generator_ids,
                cancel=self._halt,
                only=[cid for _, cid in new],
            )
        except Exception as exc:  # noqa: BLE001 - never fails the judging; the final stage reports
            from pipelines.argilla_queue import ArgillaQueueError

            known = isinstance(exc, ArgillaQueueError)
            self.summary.error = error_line(exc, limit=300, with_type=not known)
            self._report(f"following stopped: {self.summary.error}", note=self.summary.error)
            return False
        s = self.summary
        s.pushes += 1
        s.seen += len(new)
        s.selected += pushed.selected
        s.pushed += pushed.pushed
        s.unchanged += pushed.unchanged
        s.locked += pushed.locked
        s.failed += pushed.failed
        if not pushed.cancelled:  # a halted push leaves its rest to the final stage
            self._seen.update((cid, ts) for ts, cid in new)
            self._since = max(self._since, new[-1][0])
            floor = self._since - OVERLAP_S
            self._seen = {c: t for c, t in self._seen.items() if t > floor}
        self._report(f"following the judge: {s.pushed} records pushed")
        return True

    def _report(self, message: str, note: str | None = None) -> None:
        if self.progress is None:
            return
        s = self.summary
        self.progress(
            Progress(
                stage=STAGE,
                done=s.pushed + s.unchanged + s.locked,
                total=s.selected,
                failed=s.failed,
                skipped=s.unchanged,
                message=message,
                notes=[note] if note else [],
            )
        )
