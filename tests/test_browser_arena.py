"""The Arena tab (pairwise review, issue 14) in Chromium, by keyboard: one key per verdict, the
next pair follows, every verdict lands in the store mapped back to candidate keys, and the
Results tab shows the rankings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult
from tests.conftest_ui import AppServer
from tests.test_browser import _shot, _tab, browser, page  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian chromium"),
]

GENS = ["smol-precise", "smol-creative", "original"]  # the default (quickstart) recipe's ids


def seed_store(data_dir: Path, n: int) -> list[str]:
    """``n`` conversations whose first two candidates the AI rated equal (the ai_tie queue)."""
    store = Store(data_dir)
    ids = []
    for i in range(n):
        conv = Conversation(
            messages=[{"role": "user", "content": f"Question number {i}?"}],
            source="test",
            original_response=f"original {i}",
        )
        store.add_conversations([conv])
        for g in GENS:
            store.put_candidate(
                conv.conversation_id,
                g,
                0,
                GenerationResult(key=None, text=f"Answer of {g} to {i}", model=f"model-{g}"),
            )
        store.put_judgment(
            conv.conversation_id,
            "smol-judge",
            model="judge",
            candidate_keys=[f"{g}/0" for g in GENS],
            ratings=[4, 4, 1],
            rationales=[None] * 3,
            order_shown=[0, 1, 2],
            seed=1,
            raw_output=None,
            error=None,
        )
        ids.append(conv.conversation_id)
    store.close()
    return ids


def test_arena_by_keyboard(page: Any, tmp_path: Path) -> None:  # noqa: F811
    data_dir = tmp_path / "workspace"
    seed_store(data_dir, 6)
    with AppServer(data_dir) as app:
        page.goto(app.url)
        _tab(page, "Arena")
        page.locator("#cu-arena-reviewer input, #cu-arena-reviewer textarea").first.fill("ann")
        page.locator("#cu-arena-start").click()
        header = page.locator("#cu-arena-header")
        header.get_by_text("can't separate").wait_for(timeout=15000)
        assert page.locator("#cu-arena .cu-model").count() == 0  # blind
        store = Store(app.data_dir)
        page.locator("#cu-arena-header").click()  # focus the page, not a text field
        sequence = [("a", "a"), ("b", "b"), ("t", "tie"), ("x", "both_bad"), ("s", "skip")]
        seen: list[str] = []
        for n, (key, verdict) in enumerate(sequence, start=1):
            shown = page.locator("#cu-arena-left").inner_text()
            page.keyboard.press(key)
            page.wait_for_function(
                f"() => document.querySelector('#cu-arena-progress').innerText"
                f".includes('by you: {n}')",
                timeout=15000,
            )
            rows = store.pairwise_reviews()
            assert len(rows) == n
            row = next(r for r in rows if r["conversation_id"] not in seen)
            seen.append(row["conversation_id"])
            assert row["reviewer"] == "ann" and row["verdict"] == verdict
            assert {row["key_1"], row["key_2"]} == {"smol-precise/0", "smol-creative/0"}
            # A was the left card: the verdict maps back to the key shown there
            left_gen = row["left_key"].rpartition("/")[0]
            assert f"Answer of {left_gen}" in shown
            if verdict == "a":
                assert row["winner"] == row["left_key"]
            elif verdict == "b":
                assert row["winner"] != row["left_key"] and row["winner"]
            else:
                assert row["winner"] is None
            status = page.locator("#cu-arena-status").inner_text()
            assert "Saved" in status and "model-" in status  # models named after the verdict
        assert len(set(seen)) == 5  # a new pair after every key
        _shot(page, "tab-arena")

        _tab(page, "Results")
        page.get_by_text("Pairwise (arena) verdicts and rankings").click()
        page.locator("#cu-arena-rank").click()
        page.locator("#cu-arena-results table").nth(1).wait_for(timeout=30000)
        text = page.locator("#cu-arena-results").inner_text()
        assert "smol-precise" in text and "implied by AI ratings" in text
        _shot(page, "tab-results-arena")
        assert page.dialogs == [] and page.remote_requests == []
