"""Helpers shared by the UI tests (imported explicitly; the lead owns tests/conftest.py).

``AppServer`` starts the real app (``python app.py``, the Space entry) in a subprocess on
127.0.0.1 with a free port and a temporary workspace, and stops it when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
