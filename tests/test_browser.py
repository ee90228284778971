"""The app in a real browser: Debian's Chromium driven by the Python ``playwright`` package.

* the whole flow with the embedded model: load the sample, generate + judge 3 conversations,
  review one with keyboard shortcuts, binarize, export; a screenshot of every tab is kept in
  ``test-artifacts/``;
* untrusted text (conversations, candidates, rationales) carrying script / event-handler /
  ``javascript:`` payloads is shown in the Data preview and the Review tab without running.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.store import Store
from pipelines.types import GenerationResult
from tests.conftest_ui import (
    ARTIFACTS,
    XSS_PAYLOADS,
    AppServer,
    chromium,
    guarded_context,
    needs_chromium,
    small_recipe_yaml,
    wait_job_finished,
    write_jsonl,
)

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    # nothing leaves 127.0.0.1: remote loads would be a leak of untrusted content
    context = guarded_context(browser)
    pg = context.new_page()
    pg.remote_requests = context.remote_requests  # type: ignore[attr-defined]
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs  # type: ignore[attr-defined]
    yield pg
    context.close()


def _tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(400)


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _import_recipe(page: Any, tmp_path: Path, text: str) -> None:
    _tab(page, "Recipe")
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    page.locator("input[type=file]").last.set_input_files(str(path))
    page.wait_for_timeout(800)
    page.locator("#cu-recipe-import").click()
    page.locator("#cu-recipe-status .cu-ok").wait_for(timeout=15000)


def test_end_to_end_flow(page: Any, tmp_path: Path) -> None:
    t0 = time.monotonic()
    # the curator signs in: the reviewer of a review is the signed-in user (issue 10)
    env = {"CAPYUI_AUTH": "bob:bob-pass-1", "CAPYUI_OWNERS": "bob"}
    with AppServer(tmp_path / "workspace", env=env) as app:
        page.goto(app.url)
        page.get_by_label("username").fill("bob")
        page.get_by_label("password").fill("bob-pass-1")
        page.get_by_role("button", name="Login").click()
        page.get_by_role("tab", name="Data").wait_for()

        _import_recipe(page, tmp_path, small_recipe_yaml(max_tokens=16, judge_tokens=220))
        _shot(page, "tab-recipe")

        _tab(page, "Data")
        page.locator("#cu-load").click()
        page.locator("#cu-load-report").get_by_text("Detected format").wait_for(timeout=30000)
        assert page.locator("#cu-data-preview .cu-chat").count() == 8
        _shot(page, "tab-data")

        _tab(page, "Models")
        assert "only demonstrates the flow" in page.locator("#cu-models").inner_text()
        _shot(page, "tab-models")

        _tab(page, "Run")
        page.locator("#cu-run-limit input").fill("3")
        page.locator("#cu-start").click()
        # no fixed deadline: the wait follows the job's own pace (a loaded machine is slower)
        text = wait_job_finished(page)
        assert "): done" in text, text
        assert "judge" in text
        _shot(page, "tab-run")
        store = Store(app.data_dir)
        assert len(store.judgments()) == 3

        _tab(page, "Review")
        reviewer = page.locator("#cu-reviewer input, #cu-reviewer textarea").first
        assert reviewer.input_value() == "bob" and not reviewer.is_editable()
        page.locator("#cu-load-queue").click()
        page.locator("#cu-review-header").get_by_text("Conversation 1 of 3").wait_for(timeout=15000)
        page.wait_for_timeout(1000)  # let the tab's own first load settle
        cards = page.locator("#cu-review .cu-cand-slot:visible")
        assert cards.count() == 3
        assert page.locator("#cu-review .cu-model").count() == 0  # blind
        page.locator("#cu-review-header").click()
        # keyboard: rate the focused candidate, move right, rate, move right, rate, submit
        for key in ["5", "l", "1", "l", "3", "s"]:
            page.keyboard.press(key)
            page.wait_for_timeout(150)
        page.locator("#cu-review-status").get_by_text("Saved").wait_for(timeout=15000)
        assert page.locator("#cu-review .cu-model").count() == 3  # revealed after submit
        _shot(page, "tab-review")
        reviews = store.reviews()
        assert len(reviews) == 1 and reviews[0]["reviewer"] == "bob"
        assert sorted(reviews[0]["ratings"].values()) == [1, 3, 5]
        page.keyboard.press("j")
        page.locator("#cu-review-header").get_by_text("Conversation 2 of 3").wait_for(timeout=15000)

        _tab(page, "Results")
        page.locator("#cu-preview").click()
        page.locator("#cu-bin-counts table").first.wait_for(timeout=30000)
        page.locator("#cu-export").click()
        page.locator("#cu-export-status .cu-ok, #cu-export-status .cu-error").wait_for(
            timeout=60000
        )
        assert page.locator("#cu-export-status .cu-ok").count() == 1, page.locator(
            "#cu-export-status"
        ).inner_text()
        _shot(page, "tab-results")
        page.locator('#cu-files a[href*="train-00000-of-00001.parquet"]').first.wait_for()
        out = app.data_dir / "export" / "ui-test" / "data"
        assert (out / "train-00000-of-00001.parquet").stat().st_size > 0
        assert (out / "train-00000-of-00001.jsonl").read_text().count("\n") >= 1
        # the download link serves the file
        href = page.locator('#cu-files a[href*=".jsonl"]').first.get_attribute("href")
        assert href and page.request.get(href).ok
        assert page.dialogs == [] and page.remote_requests == []
    print(f"end-to-end browser flow: {time.monotonic() - t0:.1f}s")


def _xss_dom_state(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => ({
            xss: typeof window.__xss,
            scripts: Array.from(document.querySelectorAll('script'))
                .filter(s => (s.textContent || '').includes('__xss')).length,
            handlers: Array.from(document.querySelectorAll('*')).filter(el =>
                Array.from(el.attributes).some(a => a.name.startsWith('on') &&
                    a.value.includes('__xss'))).length,
            jsLinks: Array.from(document.querySelectorAll('a[href]'))
                .filter(a => a.getAttribute('href').trim().toLowerCase()
                    .startsWith('javascript:')).length,
            imgs: Array.from(document.querySelectorAll('#cu-data-preview img, #cu-review img'))
                .length,
            text: document.body.innerText.includes('<script>window.__xss=1</script>'),
        })"""
    )


def _assert_clean(page: Any, state: dict[str, Any]) -> None:
    assert state["xss"] == "undefined", state
    assert state["scripts"] == 0 and state["handlers"] == 0, state
    assert state["jsLinks"] == 0 and state["imgs"] == 0, state
    assert page.dialogs == [] and page.remote_requests == [], (page.dialogs, page.remote_requests)


def test_untrusted_text_never_runs(page: Any, tmp_path: Path) -> None:
    from tests.conftest_ui import xss_rows

    src = write_jsonl(tmp_path / "xss.jsonl", xss_rows())
    with AppServer(tmp_path / "workspace") as app:
        page.goto(app.url)
        page.get_by_role("tab", name="Data").wait_for()
        page.get_by_label("Upload a file").check()
        page.locator("#component-0 input[type=file], input[type=file]").first.set_input_files(
            str(src)
        )
        page.wait_for_timeout(800)
        page.locator("#cu-load").click()
        page.locator("#cu-load-report").get_by_text("Detected format").wait_for(timeout=30000)
        assert page.locator("#cu-data-preview .cu-chat").count() == len(XSS_PAYLOADS)
        page.wait_for_timeout(500)
        state = _xss_dom_state(page)
        _assert_clean(page, state)
        assert state["text"], "the payload should be shown as text"
        _shot(page, "xss-data")

        # candidates and judge rationales carrying the payloads, straight into the store
        store = Store(app.data_dir)
        for conv in store.conversations():
            keys = []
            for gen, payload in zip(
                ("smol-precise", "smol-creative"), XSS_PAYLOADS[:2], strict=True
            ):
                text = f"{gen} says {payload} and " + " ".join(XSS_PAYLOADS)
                store.put_candidate(
                    conv.conversation_id,
                    gen,
                    0,
                    GenerationResult(key=None, text=text, model="evil<b>model"),
                )
                keys.append(f"{gen}/0")
            store.put_judgment(
                conv.conversation_id,
                "smol-judge",
                model="judge",
                candidate_keys=keys,
                ratings=[4, 2],
                rationales=[" ".join(XSS_PAYLOADS)] * 2,
                order_shown=[0, 1],
                seed=0,
                raw_output=None,
                error=None,
            )
        _tab(page, "Review")
        # (local use: the one local user is the owner and the reviewer, "local")
        page.locator("#cu-load-queue").click()
        page.locator("#cu-review-header").get_by_text(
            f"Conversation 1 of {len(XSS_PAYLOADS)}"
        ).wait_for(timeout=15000)
        for _ in range(len(XSS_PAYLOADS) - 1):
            page.locator("#cu-next").click()
            page.wait_for_timeout(250)
        page.locator("#cu-review-header").get_by_text(
            f"Conversation {len(XSS_PAYLOADS)} of"
        ).wait_for(timeout=15000)
        page.get_by_label("Blind (hide models until I submit)").uncheck()
        page.wait_for_timeout(800)
        assert "evil<b>model" in page.locator("#cu-review").inner_text()
        _shot(page, "xss-review")
        _assert_clean(page, _xss_dom_state(page))
