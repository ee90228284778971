"""The Run tab's live stage rates: every rate of a running stage is measured on its live clock."""

from __future__ import annotations

import threading
import time

from capyui.tabs.run import rate_text
from pipelines.jobs import JobHandle
from pipelines.types import Progress


def test_a_stalled_stage_shows_its_rates_falling_on_the_live_clock() -> None:
    """Old code: tokens/s stayed at the rate up to the last finished row (600 tok/s here)
    while the model had been silent for nine seconds; rows/min already used the live clock."""
    stop = threading.Event()
    handle = JobHandle(job_name="j", stages=["generate"])
    handle.thread = threading.Thread(target=stop.wait, daemon=True)
    handle.thread.start()
    try:
        handle.record(
            Progress(stage="generate", done=1, total=10, output_tokens=600, elapsed_s=1.0)
        )
        # the stage started ten seconds ago; its only row finished after one second
        handle.stage_started["generate"] = time.monotonic() - 10.0
        live = handle.live_progress()["generate"]
        assert live["active"] is True
        assert 9.5 <= live["elapsed_s"] <= 60
        assert live["tokens_per_s"] <= 600 / 9.5  # output tokens over the live elapsed time
        assert live["rows_per_min"] <= 60 / 9.5
        assert live["since_update_s"] >= 0
        text = rate_text(live)
        assert "out " in text and "tok/s" in text and "600.0" not in text
    finally:
        stop.set()
        handle.thread.join(5)
    done = handle.live_progress()["generate"]  # finished: the reported counters as they were
    assert done["active"] is False and done["tokens_per_s"] == 600.0
