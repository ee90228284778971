"""Waiting on a condition in a test, with a bound: the test fails (saying what it waited for)
rather than hanging."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(cond: Callable[[], object], what: str, timeout: float) -> None:
    """Poll ``cond`` every 50 ms until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
