"""Starting llama-cpp-python's OpenAI-compatible server with the embedded GGUF on 127.0.0.1
(tests and benchmarks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start_llama(
    port: int, log: Path, threads: int = 1, cpu: int | None = None, n_ctx: int = 2048
) -> subprocess.Popen:
    """A llama.cpp OpenAI-compatible server with the embedded GGUF (optionally on one core)."""
    from pipelines.backends.embedded import embedded_model_path

    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_model_path()),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--verbose",
        "False",
    ]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
