"""What the browser benches share: the real app and a bare Gradio page served side by side,
Chromium on them, and the click-to-update timing loop.

    with browser_session(data_dir, bare_app=BARE_BUTTON_APP) as s:
        page = s.page(s.bare_url)
        bare = click_timings(page, "bare-btn", "bare-md", 40)

``browser_session`` starts the bare page (when given) beside the app (``AppServer``: the real
``python app.py`` on a free port), imports a recipe into the app when given one, waits for the
bare page, launches Chromium and tears everything down afterwards. Used by ``bench_review``,
``bench_pairwise``, ``bench_tabs`` and ``bench_scale``'s browser child.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import wait_http  # noqa: E402
from tests.conftest_ui import AppServer, chromium  # noqa: E402
from tests.support.net import free_port  # noqa: E402

VIEWPORT = {"width": 1400, "height": 1000}
BARE_START_S = 30  # how long the bare page may take to answer (a Gradio import on a busy CPU)

# the baseline: one Markdown and one button round-trip, nothing else
BARE_BUTTON_APP = textwrap.dedent("""
    import sys, gradio as gr
    n = {"i": 0}
    def step():
        n["i"] += 1
        return f"Step {n['i']}"
    with gr.Blocks() as demo:
        md = gr.Markdown("Step 0", elem_id="bare-md")
        btn = gr.Button("Next", elem_id="bare-btn")
        btn.click(step, None, md)
    demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), ssr_mode=False)
""")

# click ``buttonId`` n times; each time, ms until ``watchId``'s text changes
MEASURE_JS = """
async ([buttonId, watchId, n]) => {
  const times = [];
  for (let i = 0; i < n; i++) {
    const el = document.getElementById(watchId);
    const before = el.innerText;
    const t = performance.now();
    document.getElementById(buttonId).click();
    await new Promise((resolve, reject) => {
      const limit = setTimeout(() => reject(new Error('no update in 10s')), 10000);
      const check = () => {
        if (document.getElementById(watchId).innerText !== before) {
          clearTimeout(limit); resolve();
        } else requestAnimationFrame(check);
      };
      check();
    });
    times.push(performance.now() - t);
    await new Promise(r => setTimeout(r, 30));
  }
  return times;
}
"""


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank, rounded)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def against(values: list[float], ref: list[float]) -> tuple[float, float, float, float]:
    """(p50, p95, p50 / ref's p50, p95 / ref's p95): one row of a bench's ratio table."""
    p50, p95 = statistics.median(values), pct(values, 0.95)
    return p50, p95, p50 / statistics.median(ref), p95 / pct(ref, 0.95)


def click_timings(page: Any, button_id: str, watch_id: str, n: int) -> list[float]:
    """ms from a click on ``#button_id`` until ``#watch_id``'s text changes, ``n`` times."""
    return list(page.evaluate(MEASURE_JS, [button_id, watch_id, n]))


@dataclass
class Session:
    app: AppServer
    browser: Any  # playwright's Browser
    bare_url: str | None = None

    def page(self, url: str) -> Any:
        """A fresh page (the benches' viewport) at ``url``."""
        page = self.browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        return page


@contextmanager
def browser_session(
    data_dir: Path, *, bare_app: str | None = None, recipe_yaml: str | None = None
) -> Iterator[Session]:
    """The app on ``data_dir`` (with ``recipe_yaml`` imported when given), the bare Gradio
    page ``bare_app`` (a script taking its port as argv[1]) beside it when given, and
    Chromium; all stopped on exit."""
    bare: subprocess.Popen[bytes] | None = None
    bare_url = None
    if bare_app is not None:  # started first: it loads while the app starts
        port = free_port()
        bare_url = f"http://127.0.0.1:{port}/"
        bare = subprocess.Popen(
            [sys.executable, "-c", bare_app, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        with AppServer(data_dir) as app:
            if recipe_yaml is not None:
                from gradio_client import Client

                Client(app.url, verbose=False).predict(recipe_yaml, api_name="/recipe_import")
            if bare is not None:
                wait_http(f"{bare_url}config", BARE_START_S, bare)
            with chromium() as browser:
                yield Session(app, browser, bare_url)
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
