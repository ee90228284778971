"""Background jobs: run recipe stages in a worker thread of the serving process.

A job keeps running when the browser tab that started it closes; its progress is held in
memory for live polling and its counters are committed to the store's ``jobs`` table. Since
every stage commits row by row, a job that was cancelled or cut short by a restart is resumed
by starting the same stages again: only what is missing is done.
"""

from __future__ import annotations

import threading
import time
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
            "progress": {k: dict(v) for k, v in self.progress.items()},
            "error": self.error or (self.summary.error if self.summary else None),
            "job_id": self.summary.job_id if self.summary else None,
            "export_dir": self.summary.export_dir if self.summary else None,
        }


class JobManager:
    """At most one running job per workspace (the embedded model is one per process anyway)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self.current: JobHandle | None = None
        self.history: list[JobHandle] = []

    def start(
        self, recipe: Recipe, stages: list[str], *, limit: int | None = None, name: str = "run"
    ) -> JobHandle:
        """Start ``stages`` of ``recipe`` in the background. Raises RuntimeError if busy."""
        with self._lock:
            if self.current is not None and self.current.running:
                raise RuntimeError(
                    f"a job is already running ({self.current.job_name}); cancel it or wait"
                )
            handle = JobHandle(job_name=name, stages=list(stages))

            def on_progress(p: Progress) -> None:
                handle.current_stage = p.stage
                handle.progress[p.stage] = p.as_dict()

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
                    )
                except Exception as exc:  # noqa: BLE001 - surfaced in the UI as one line
                    handle.error = f"{type(exc).__name__}: {exc}"

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

    def interrupted_jobs(self) -> list[dict[str, Any]]:
        """Jobs recorded in the store that did not finish (process died, or cancelled)."""
        return [
            j for j in self.store.jobs() if j["status"] in ("interrupted", "cancelled", "paused")
        ]
