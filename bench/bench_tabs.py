"""Tab-switch latency on a large workspace, measured in Chromium.

    .venv/bin/python bench/bench_tabs.py [--conversations 10000] [--candidates 4] [--rounds 5]

Builds the same synthetic store as ``bench_review.py`` (N conversations x K candidates, each
judged), serves the app on it and, side by side, a bare Gradio page with two tabs whose select
event does one round trip. For each tab it measures click -> the tab's own select events have
finished (every Gradio request the click started, chained ones included, has answered: a
``queue/join`` ended by its ``process_completed`` message, a ``run/predict`` by its
response; the end is the last answer, once 150 ms pass quiet), and prints p50 / p95 per
tab with the ratio to the bare page's tab switch. Goal: every tab < 500 ms on 10k.

The request tracking is an init script that wraps ``fetch`` and ``EventSource`` before the
page's own code runs, so it sees Gradio's traffic whatever transport the client picks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._browser import VIEWPORT, browser_session, pct  # noqa: E402
from bench.bench_review import bench_recipe, build_store  # noqa: E402

TABS = ["Data", "Models", "Run", "Review", "Results", "Recipe"]

TRACK_JS = r"""
(() => {
  window.__cuPending = 0; window.__cuStarted = 0;
  const started = () => { window.__cuPending++; window.__cuStarted++; };
  const ended = (n) => { window.__cuPending = Math.max(0, window.__cuPending - (n || 1)); };
  const scan = (text) => {
    const n = (text.match(/process_completed/g) || []).length;
    if (n) ended(n);
  };
  const origFetch = window.fetch;
  window.fetch = async function (input, init) {
    const url = typeof input === 'string' ? input : (input && input.url) || '';
    const isJoin = /queue\/join/.test(url);
    const isPredict = /run\/predict|\/call\//.test(url) && !isJoin;
    if (isJoin || isPredict) started();
    const res = await origFetch.apply(this, arguments);
    if (isPredict) { res.clone().text().then(() => ended(1), () => ended(1)); }
    if (/queue\/data/.test(url) && res.body) {
      const [a, b] = res.body.tee();
      const reader = b.getReader(); const dec = new TextDecoder();
      (async () => { for (;;) { const {value, done} = await reader.read(); if (done) break;
        scan(dec.decode(value, {stream: true})); } })();
      return new Response(a, {headers: res.headers, status: res.status});
    }
    return res;
  };
  const OrigES = window.EventSource;
  if (OrigES) {
    window.EventSource = function (url, cfg) {
      const es = new OrigES(url, cfg);
      es.addEventListener('message', (e) => scan(String(e.data || '')));
      return es;
    };
    window.EventSource.prototype = OrigES.prototype;
  }
})();
"""

SWITCH_JS = """
async (name) => {
  const tab = Array.from(document.querySelectorAll('button[role=tab]'))
    .find(b => b.innerText.trim() === name);
  const before = window.__cuStarted;
  const t = performance.now();
  tab.click();
  // wait for every request the click started, chained ones (.then) included, to finish; the
  // end is the last completion once 150 ms pass with nothing new in flight (not counted)
  const limit = t + 60000;
  let end = null, seen = before;
  for (;;) {
    await new Promise(r => requestAnimationFrame(r));
    const now = performance.now();
    if (window.__cuStarted !== seen) { seen = window.__cuStarted; end = null; }
    if (window.__cuPending === 0 && end === null) end = now;
    if (window.__cuPending > 0) end = null;
    if (end !== null && now - end > 150) break;
    if (now > limit) throw new Error('tab ' + name + ' did not settle in 60 s');
  }
  return (seen > before ? end : t) - t;
}
"""


BARE_APP = textwrap.dedent("""
    import sys, gradio as gr
    with gr.Blocks() as demo:
        with gr.Tabs():
            with gr.Tab("One") as one:
                a = gr.Markdown("one")
            with gr.Tab("Two") as two:
                b = gr.Markdown("two")
        one.select(lambda: "one", None, a)
        two.select(lambda: "two", None, b)
    demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), ssr_mode=False)
""")


def measure(page: object, tabs: list[str], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {t: [] for t in tabs}
    for _ in range(rounds):
        for t in tabs:
            out[t].append(page.evaluate(SWITCH_JS, t))  # type: ignore[attr-defined]
            page.wait_for_timeout(100)  # type: ignore[attr-defined]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=10000)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--store", type=Path, default=None, help="reuse a built workspace folder")
    args = ap.parse_args()

    if args.store is not None and args.store.exists():
        data_dir = args.store
    else:
        data_dir = args.store or Path(tempfile.mkdtemp(prefix="capyui-bench-")) / "workspace"
        build_s = build_store(data_dir, args.conversations, args.candidates)
        print(f"store: {args.conversations} x {args.candidates} candidates ({build_s:.1f}s)")
    with browser_session(data_dir, bare_app=BARE_APP, recipe_yaml=bench_recipe()) as s:
        ctx = s.browser.new_context(viewport=VIEWPORT)
        ctx.add_init_script(TRACK_JS)
        page = ctx.new_page()
        page.goto(s.bare_url)
        page.get_by_role("tab", name="Two").wait_for()
        bare_t = measure(page, ["Two", "One"], args.rounds)
        page = ctx.new_page()
        page.goto(s.app.url)
        page.get_by_role("tab", name="Data").wait_for()
        page.wait_for_timeout(1500)  # the page's own load events
        first = measure(page, TABS, 1)  # first visits (nothing cached yet)
        again = measure(page, TABS, args.rounds)

    base = [v for vs in bare_t.values() for v in vs]
    b50 = statistics.median(base)
    print(f"\n{'tab switch':<26}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'x bare p50':>12}")
    print(
        f"{'bare gradio (2 tabs)':<26}{len(base):>4}{b50:>10.0f}{pct(base, 0.95):>10.0f}{1:>12.2f}"
    )
    worst = 0.0
    for label, res in (("first visit", first), ("again", again)):
        for t, vals in res.items():
            p95 = pct(vals, 0.95)
            worst = max(worst, p95)
            print(
                f"{t + ' (' + label + ')':<26}{len(vals):>4}{statistics.median(vals):>10.0f}"
                f"{p95:>10.0f}{statistics.median(vals) / b50:>12.2f}"
            )
    print(
        f"\nworst tab switch p95 = {worst:.0f} ms (goal < 500 ms): "
        f"{'OK' if worst < 500 else 'OVER'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
