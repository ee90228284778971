"""Judgments are stamped in commit order, so readers that keep an ``updated_at`` watermark
(the Arena's pair refresh, the Argilla follower) never skip one committed behind it."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path

import pytest

from pipelines import store as store_mod
from pipelines.pairwise import refresh_pairs
from pipelines.store import Store
from pipelines.types import Conversation


def _judge(store: Store, cid: str) -> None:
    store.put_judgment(
        cid,
        "judge",
        model="m",
        candidate_keys=["a/0", "b/0"],
        ratings=[5.0, 2.0],
        rationales=["good", "bad"],
        order_shown=[0, 1],
        seed=0,
        raw_output="{}",
        error=None,
    )


def test_a_judgment_waiting_for_the_write_lock_is_stamped_after_the_one_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old code took the time before waiting for the lock: a judgment that waited behind
    another writer committed with an earlier time than the one committed before it, and a
    pair refresh run between the two commits skipped it for good."""
    store = Store(tmp_path / "ws")
    convs = [Conversation(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(2)]
    store.add_conversations(convs)
    first, late = convs[0].conversation_id, convs[1].conversation_id
    clock = itertools.count(1000.0, 0.001)  # the store's clock: 1000.000, 1000.001, ...
    monkeypatch.setattr(store_mod.time, "time", lambda: next(clock))

    other = sqlite3.connect(store.path, isolation_level=None, timeout=60)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    waiting = threading.Thread(target=_judge, args=(store, late))
    waiting.start()
    # meanwhile the other writer commits a judgment stamped later than anything the store's
    # clock gave so far (e.g. another process whose write got the lock first)
    other.execute(
        "INSERT INTO judgments (conversation_id, judge_id, model, status, candidate_keys,"
        " ratings, rationales, order_shown, seed, raw_output, error, updated_at, attempts)"
        " VALUES (?, 'judge', 'm', 'done', '[\"a/0\", \"b/0\"]', '[4.0, 1.0]',"
        " '[\"x\", \"y\"]', '[0, 1]', 0, '{}', NULL, 5000.0, 1)",
        (first,),
    )
    other.execute("COMMIT")
    waiting.join(60)
    assert not waiting.is_alive()
    stamps = dict(store.query("SELECT conversation_id, updated_at FROM judgments"))
    assert stamps[late] > stamps[first] == 5000.0

    # what that order means to a watermark reader: a refresh that read only the first commit
    # (its watermark is 5000.0) finds the late one on its next run
    store.query("DELETE FROM pairwise_pairs")
    store.put_pairwise_pairs([("top2", first, "a/0", "b/0", 0.0, 1, 5000.0)])
    report = refresh_pairs(store)
    assert report.judgments == 1  # the late judgment, not skipped
    queued = {r[0] for r in store.query("SELECT conversation_id FROM pairwise_pairs")}
    assert late in queued
    other.close()
