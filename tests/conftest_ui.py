"""Helpers shared by the UI tests (imported explicitly; the lead owns tests/conftest.py).

``AppServer`` starts the real app (``python app.py``, the Space entry) in a subprocess on
127.0.0.1 with a free port and a temporary workspace, and stops it when the test ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]

CHROMIUM = Path("/usr/bin/chromium")
# a browser test needs Debian's chromium (playwright drives it; it downloads no browser)
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian chromium at /usr/bin/chromium (apt install chromium)",
)
LOOPBACK = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)[:/]")


def is_loopback(url: str) -> bool:
    """A request the browser under test may make: to 127.0.0.1 / localhost, or inline data."""
    return bool(LOOPBACK.match(url)) or url.startswith(("data:", "blob:"))


def guard_loopback(context: Any) -> list[str]:
    """Nothing leaves 127.0.0.1: every other request of the browser ``context`` is aborted
    (a remote load would leak untrusted content) and its URL recorded in the returned list."""
    remote: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if is_loopback(url):
            route.continue_()
        else:
            remote.append(url)
            route.abort()

    context.route("**/*", guard)
    return remote


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's, driven by playwright), closed on exit."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def guarded_context(browser: Any, **options: Any) -> Any:
    """A new browser context (1400x1000 unless said otherwise) with the loopback guard; the
    URLs it refused are in ``context.remote_requests``."""
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 1000}, **options})
    context.remote_requests = guard_loopback(context)
    return context


# Strings that would run script if any of them reached the DOM as HTML.
XSS_PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    "[click](javascript:window.__xss=1)",
    '<a href="javascript:window.__xss=1">link</a>',
    "![remote](http://127.0.0.1:9/x.png)",
    '<svg onload="window.__xss=1"></svg>',
    "${window.__xss=1}",
]


class AppServer:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"app-{self.port}.log"

    def __enter__(self) -> AppServer:
        env = {
            **os.environ,
            "CAPYUI_DATA_DIR": str(self.data_dir),
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            **self.env,
        }
        env.pop("SPACE_ID", None)
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited early:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as r:
                    if r.status == 200:
                        return self
            except urllib.error.HTTPError:
                return self  # serving, behind a login
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"app did not start:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def recipe_client(app: AppServer, recipe: dict[str, Any]) -> Any:
    """A gradio_client ``Client`` of the running ``app`` with ``recipe`` imported through the
    Recipe tab's endpoint (the import must succeed)."""
    from gradio_client import Client

    client = Client(app.url, verbose=False)
    status, error = client.predict(yaml.safe_dump(recipe), api_name="/recipe_import")
    assert error == "", status
    return client


def small_recipe_yaml(max_tokens: int = 12, judge_tokens: int = 220) -> str:
    """The quickstart recipe with tiny generations, so the embedded model is quick on a CPU."""
    data = yaml.safe_load((ROOT / "pipelines" / "recipes" / "quickstart.yaml").read_text())
    data["name"] = "ui-test"
    for g in data["generators"]:
        if g["backend"] == "embedded":
            g["max_tokens"] = max_tokens
    data["judge"]["max_tokens"] = judge_tokens
    data["judge"]["max_rationale_chars"] = 20  # grammar sampling cost grows with it
    return yaml.safe_dump(data, sort_keys=False)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def xss_rows() -> list[dict[str, object]]:
    """Capybara rows whose every message carries XSS payloads."""
    rows = []
    for i, payload in enumerate(XSS_PAYLOADS):
        rows.append(
            {
                "conversation": [
                    {"input": f"Question {i} {payload}", "output": f"Answer {i} {payload}"},
                    {"input": f"Follow-up {i} {payload}", "output": f"Original {i} {payload}"},
                ]
            }
        )
    return rows


_FACTOR: list[float] = []


def machine_factor() -> float:
    """How much slower this machine is right now than a quiet 2-core dev box (>= 1), measured
    with a fixed pure-Python workload. UI waits are scaled by it instead of being constants
    near the real latency."""
    if not _FACTOR:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            sum(i * i for i in range(300_000))
            best = min(best, time.perf_counter() - t0)
        _FACTOR.append(max(1.0, best / 0.03))
    return _FACTOR[0]


def scaled_ms(seconds: float) -> float:
    """A playwright timeout (ms) for something that takes ``seconds`` on a quiet machine."""
    return 1000 * seconds * machine_factor()


def wait_job_finished(page: Any, first_row_s: float = 120, stall_factor: float = 10) -> str:
    """Wait for the Run tab's job to end; returns the status text.

    No fixed deadline near the real latency: the wait extends every time a row completes, by
    ``stall_factor`` times the slowest gap between rows measured so far (the first row gets
    ``first_row_s`` scaled by ``machine_factor``). A job that stops making progress fails."""
    status = page.locator("#cu-job-status")
    done_re = re.compile(r"\): (done|failed|cancelled)")
    last_done, last_change = -1, time.monotonic()
    slowest = 0.0
    allowance = first_row_s * machine_factor()
    while True:
        text = status.inner_text()
        if done_re.search(text):
            return text
        done = sum(int(a) for a, _ in re.findall(r"(\d+)/(\d+)", text))
        now = time.monotonic()
        if done != last_done:
            if last_done >= 0:
                slowest = max(slowest, now - last_change)
                allowance = max(allowance, stall_factor * slowest)
            last_done, last_change = done, now
        if now - last_change > allowance:
            raise AssertionError(f"the job made no progress for {allowance:.0f}s:\n{text}")
        page.wait_for_timeout(500)
