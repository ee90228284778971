"""Schema migrations: a workspace written by an earlier CapyUI opens and is upgraded in place."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from pipelines.store import SCHEMA_VERSION, SchemaTooNewError, Store

FIXTURE = Path(__file__).parent / "fixtures" / "workspace-v0"


def _copy_fixture(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    return ws


def test_workspace_from_before_versioning_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    ws = _copy_fixture(tmp_path)
    with sqlite3.connect(ws / "capyui.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0

    store = Store(ws)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.count_conversations() == 3
    counts = store.candidate_counts()
    assert counts["gen-a"]["done"] == 3 and counts["gen-b"]["done"] == 3
    assert len(store.judgments("judge")) == 3
    reviews = store.reviews()
    assert len(reviews) == 1 and reviews[0]["reviewer"] == "alice"
    assert [j["kind"] for j in store.jobs()] == ["generate"]
    store.close()

    # opening again is a no-op: same version, same rows
    again = Store(ws)
    assert again.schema_version() == SCHEMA_VERSION
    assert again.count_conversations() == 3
    again.close()


def test_workspace_from_a_newer_capyui_is_refused_with_one_line(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with sqlite3.connect(ws / "capyui.sqlite") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(SchemaTooNewError, match="upgrade CapyUI") as err:
        Store(ws)
    assert "\n" not in str(err.value)


def test_fresh_workspace_is_at_the_current_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "fresh")
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
