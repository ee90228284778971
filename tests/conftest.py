"""Shared fixtures: real servers on 127.0.0.1, started here and stopped when the tests end."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.net import free_port

if TYPE_CHECKING:
    from tests.support.argilla_server import Server

ROOT = Path(__file__).resolve().parent.parent


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with the embedded GGUF; yields the /v1 url."""
    from tests.support.llama_server import start_llama, stop

    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = start_llama(port, log, threads=os.cpu_count() or 2, n_ctx=4096)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 60, proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "workspace"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def argilla(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A real local Argilla (``scripts/argilla-local``, see ``tests/support/argilla_server``)
    for one test module, in its own data dir: each module starts from an empty server. Its
    ``ARGILLA_API_URL`` / ``ARGILLA_API_KEY`` are in ``os.environ`` while it runs. Skipped
    where it cannot start (no redis-server)."""
    from tests.support.argilla_server import local_argilla, missing_requirement

    reason = missing_requirement()
    if reason:
        pytest.skip(reason)
    name = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    with local_argilla(tmp_path_factory.mktemp(f"argilla-{name}")) as server:
        yield server
