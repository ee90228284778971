"""Scale-out: one `openai` generator over two replicas (``base_urls``) of a real llama.cpp
server. Each server sits behind a counting proxy (tests/support/fault_proxy.py, no faults) so
the test sees which replica answered what. Requests spread over both; killing one server
mid-run leaves the job to finish every row on the survivor."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.config import GeneratorConfig
from pipelines.generate import run_generation
from pipelines.store import Store
from pipelines.types import Progress
from tests.conftest import free_port, wait_http
from tests.support.fault_proxy import FaultProxy
from tests.support.llama_server import start_llama, stop
from tests.test_generation import make_conversations

pytestmark = pytest.mark.server


@dataclass
class Replica:
    proc: subprocess.Popen
    upstream: str
    proxy: FaultProxy
    url: str  # the proxy's /v1 url: what the backend is given

    def served(self) -> int:
        return len(self.proxy.completions())


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    """Two llama.cpp servers on free ports, one thread each, each behind a counting proxy."""
    started: list[Replica] = []
    procs = []
    try:
        for i in range(2):
            port = free_port()
            procs.append((port, start_llama(port, tmp_path / f"llama-{i}.log")))
        for port, proc in procs:
            upstream = f"http://127.0.0.1:{port}"
            wait_http(f"{upstream}/v1/models", 90, proc)
            proxy = FaultProxy(upstream)
            started.append(Replica(proc, upstream, proxy, proxy.start() + "/v1"))
        yield started
    finally:
        for r in started:
            r.proxy.stop()
        for _, proc in procs:
            stop(proc)


def replica_gen(urls: list[str], **kw: object) -> GeneratorConfig:
    base = dict(
        id="llama",
        backend="openai",
        base_urls=urls,
        model="smollm2",
        max_tokens=12,
        temperature=0.0,
        concurrency=1,  # one request in flight per replica: llama.cpp serialises anyway
        timeout_s=60,
        max_retries=0,
    )
    base.update(kw)
    return GeneratorConfig(**base)


def test_requests_spread_over_both_replicas(replicas: list[Replica], data_dir: Path) -> None:
    store = Store(data_dir)
    convs = make_conversations(8)
    store.add_conversations(convs)
    progress = run_generation(store, [replica_gen([r.url for r in replicas])], convs)
    assert (progress.done, progress.failed) == (8, 0)
    served = [r.served() for r in replicas]
    assert sum(served) == 8, served
    # least-busy routing with one request in flight per replica: an even split, give or take
    assert min(served) >= 3, served


def test_killing_one_replica_mid_run_finishes_on_the_survivor(
    replicas: list[Replica], data_dir: Path
) -> None:
    store = Store(data_dir)
    convs = make_conversations(12)
    store.add_conversations(convs)
    victim, survivor = replicas
    killed_at: list[int] = []

    def on_progress(p: Progress) -> None:
        if not killed_at and p.done >= 3:
            victim.proc.send_signal(signal.SIGKILL)
            killed_at.append(p.done)

    progress = run_generation(
        store, [replica_gen([r.url for r in replicas])], convs, on_progress=on_progress
    )
    assert killed_at, "the run ended before the kill"
    victim.proc.wait(10)
    # every row done, none failed: the request in flight on the killed server (if any) and
    # every later one went to the survivor
    assert (progress.done, progress.failed) == (12, 0), progress.message
    states = store.candidate_states("llama")
    assert len(states) == 12
    assert all(status == "done" for status, _ in states.values())
    served_before = victim.served()
    assert survivor.served() >= 12 - served_before
    assert survivor.served() >= 12 - killed_at[0] - 1
    # the benched replica is not retried in the same run (the bench lasts 15 s)
    assert victim.served() <= killed_at[0] + 2
