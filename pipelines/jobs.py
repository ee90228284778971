"""Background jobs: run recipe stages in a worker thread of the serving process.

A job keeps running when the browser tab that started it closes; its progress is held in
memory for live polling and its counters are committed to the store's ``jobs`` table. Since
every stage commits row by row, a job that was cancelled or cut short by a restart is resumed
by starting the same stages again: only what is missing is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.recipe import Recipe
from pipelines.run import RunSummary, run_recipe
from pipelines.store import Store
from pipelines.types import Progress


@dataclass
class JobHandle:
    job_name: str
    stages: list[str]
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    current_stage: str | None = None
    summary: RunSummary | None = None
    started_at: float = field(default_factory=time.time)
    error: str | None = None
    limit: int | None = None
    job_id: str | None = None
    # the live clock of each stage (monotonic start, last event), for the heartbeat and ETA
    stage_started: dict[str, float] = field(default_factory=dict)
    last_event: dict[str, float] = field(default_factory=dict)
    _last_progress: dict[str, Progress] = field(default_factory=dict)

    def record(self, p: Progress) -> None:
        """Keep a stage's latest progress (called from the job thread)."""
        now = time.monotonic()
        self.stage_started.setdefault(p.stage, now - p.elapsed_s)
        self.last_event[p.stage] = now
        self._last_progress[p.stage] = Progress(**{**p.__dict__})
        self.current_stage = p.stage
        self.progress[p.stage] = p.as_dict()

    def live_progress(self) -> dict[str, dict[str, Any]]:
        """Per stage: the last reported counters plus a live clock while the stage runs.

        For the stage in progress ``elapsed_s`` keeps counting between rows (a request in
        flight), ``since_update_s`` says how long ago the last row was committed, and
        ``eta_s`` / ``rows_per_min`` / ``tokens_per_s`` are recomputed from the live clock (a
        stalled model shows its rates falling, not the rate up to its last row). ``active`` is
        True for the stage the job is working on now (a heartbeat: the worker thread is alive)."""
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        running = self.running
        for stage, d in self.progress.items():
            d = dict(d)
            p = self._last_progress.get(stage)
            finished = d.get("message") in ("finished", "cancelled", "nothing to judge")
            active = running and stage == self.current_stage and not finished
            d["active"] = active
            if active and p is not None and stage in self.stage_started:
                elapsed = now - self.stage_started[stage]
                eta = p.eta_at(elapsed)
                d["elapsed_s"] = round(elapsed, 1)
                d["eta_s"] = None if eta is None else round(eta, 1)
                d["rows_per_min"] = round(p.rate_per_min(elapsed), 2)
                d["tokens_per_s"] = round(p.tokens_per_s_at(elapsed), 2)
                d["since_update_s"] = round(now - self.last_event.get(stage, now), 1)
            out[stage] = d
        return out

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def status(self) -> str:
        if self.running:
            return "cancelling" if self.cancel.is_set() else "running"
        if self.summary is not None:
            return self.summary.status
        return "failed" if self.error else "starting"

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.job_name,
            "stages": self.stages,
            "status": self.status,
            "current_stage": self.current_stage,
            "progress": self.live_progress(),
            "limit": self.limit,
            "heartbeat_at": time.time(),
            "started_at": self.started_at,  # issue 14a: the live token counters count from it
            "error": self.error or (self.summary.error if self.summary else None),
            "job_id": self.job_id or (self.summary.job_id if self.summary else None),
            "export_dir": self.summary.export_dir if self.summary else None,
        }


class JobManager:
    """At most one running job per workspace (the embedded model is one per process anyway)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self.current: JobHandle | None = None
        self.history: list[JobHandle] = []
        # called (in the job's thread) after every job ends, whatever its outcome: e.g. the
        # service recounting the review queues and the Results preview the job's rows changed
        self.on_finish: list[Callable[[], None]] = []

    def start(
        self, recipe: Recipe, stages: list[str], *, limit: int | None = None, name: str = "run"
    ) -> JobHandle:
        """Start ``stages`` of ``recipe`` in the background. Raises RuntimeError if busy."""
        with self._lock:
            if self.current is not None and self.current.running:
                raise RuntimeError(
                    f"a job is already running ({self.current.job_name}); cancel it or wait"
                )
            handle = JobHandle(job_name=name, stages=list(stages), limit=limit)

            def on_progress(p: Progress) -> None:
                handle.record(p)

            def on_job(job_id: str) -> None:
                handle.job_id = job_id

            def work() -> None:
                try:
                    handle.summary = run_recipe(
                        recipe,
                        self.store,
                        stages=stages,
                        limit=limit,
                        on_progress=on_progress,
                        cancel=handle.cancel,
                        job_kind=name,
                        on_job=on_job,
                    )
                except Exception as exc:  # noqa: BLE001 - surfaced in the UI as one line
                    from pipelines.errors import error_line

                    handle.error = error_line(exc, limit=500, with_type=True)
                finally:
                    for listener in list(self.on_finish):
                        try:
                            listener()
                        except Exception:  # noqa: BLE001 - a listener never fails the job
                            pass

            handle.thread = threading.Thread(target=work, name=f"capyui-job-{name}", daemon=True)
            self.current = handle
            self.history.append(handle)
            handle.thread.start()
            return handle

    def cancel(self) -> bool:
        """Ask the running job to stop after the rows in flight. True if one was running."""
        with self._lock:
            if self.current is not None and self.current.running:
                self.current.cancel.set()
                return True
            return False

    def wait(self, timeout: float | None = None) -> JobHandle | None:
        handle = self.current
        if handle is not None and handle.thread is not None:
            handle.thread.join(timeout)
        return handle
