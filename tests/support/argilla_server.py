"""A real Argilla server for tests: ``scripts/argilla-local`` (argilla-server 2.8.0 + Debian
redis-server + osmem-server) on free 127.0.0.1 ports, in a throw-away data dir.

    with local_argilla(tmp_dir) as server:      # started here, stopped on exit
        server.url, server.api_key, server.http()

By default the server's ``ARGILLA_API_URL`` / ``ARGILLA_API_KEY`` are exported into
``os.environ`` while it runs (and restored after), so code that reads them finds this server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "argilla-local"
EXPORTED = ("ARGILLA_API_URL", "ARGILLA_API_KEY")


class ArgillaStartError(RuntimeError):
    """``argilla-local start`` failed; the message carries the tail of every log."""


def missing_requirement() -> str | None:
    """Why a local Argilla cannot start here (a reason to skip), or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install -y redis-server)"
    return None


@dataclass
class Server:
    url: str
    api_key: str
    env: dict[str, str]  # the environment argilla-local runs with (ports, data dir)
    data_dir: Path

    def http(self, key: str | None = None, token: str | None = None) -> httpx.Client:
        headers = (
            {"Authorization": f"Bearer {token}"}
            if token
            else {"X-Argilla-Api-Key": key or self.api_key}
        )
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    @property
    def exports(self) -> dict[str, str]:
        return {"ARGILLA_API_URL": self.url, "ARGILLA_API_KEY": self.api_key}

    def add_annotator(self, name: str, workspace: str = "argilla") -> tuple[str, str]:
        """A new annotator ``name`` in ``workspace``, made by the owner as the Argilla UI does
        (REST: the SDK's User does not expose the key the server returns): (API key, password)."""
        password = "pw-" + secrets.token_hex(8)
        with self.http() as owner:
            user = owner.post(
                "/api/v1/users",
                json={
                    "username": name,
                    "password": password,
                    "first_name": name,
                    "role": "annotator",
                },
            )
            assert user.status_code == 201, user.text
            ws = next(
                w
                for w in owner.get("/api/v1/me/workspaces").json()["items"]
                if w["name"] == workspace
            )
            added = owner.post(
                f"/api/v1/workspaces/{ws['id']}/users", json={"user_id": user.json()["id"]}
            )
            assert added.status_code == 201, added.text
        return user.json()["api_key"], password


def _logs(data_dir: Path) -> str:
    logs = data_dir / "logs"
    if not logs.exists():
        return ""
    return "\n".join(
        f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.glob("*.log"))
    )


@contextmanager
def local_argilla(
    data_dir: Path, *, export_env: bool = True, start_timeout: float = 900
) -> Iterator[Server]:
    """Start a local Argilla in ``data_dir``; stop it (and restore the environment) on exit."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ARGILLA_LOCAL_DIR": str(data_dir),
        "ARGILLA_LOCAL_PORT": str(free_port()),
        "ARGILLA_LOCAL_REDIS_PORT": str(free_port()),
        "ARGILLA_LOCAL_SEARCH_PORT": str(free_port()),
        "ARGILLA_LOCAL_PASSWORD": "owner-" + secrets.token_hex(6),
    }
    try:
        r = subprocess.run(
            [sys.executable, str(SCRIPT), "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=start_timeout,
        )
    except subprocess.TimeoutExpired:
        subprocess.run([sys.executable, str(SCRIPT), "stop"], env=env, timeout=120)
        raise ArgillaStartError(
            f"argilla-local start took more than {start_timeout:g}s\n{_logs(data_dir)}"
        ) from None
    if r.returncode != 0:
        subprocess.run([sys.executable, str(SCRIPT), "stop"], env=env, timeout=120)
        raise ArgillaStartError(
            f"argilla-local start failed: {r.stderr.strip()}\n{_logs(data_dir)}"
        )
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in r.stdout.splitlines()
        if line.startswith("export ")
    )
    saved = {k: os.environ.get(k) for k in EXPORTED}
    if export_env:
        os.environ.update({k: exports[k] for k in EXPORTED})
    try:
        yield Server(exports["ARGILLA_API_URL"], exports["ARGILLA_API_KEY"], env, data_dir)
    finally:
        if export_env:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        subprocess.run([sys.executable, str(SCRIPT), "stop"], env=env, timeout=120)
