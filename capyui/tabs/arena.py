"""Arena tab: pairwise review, Chatbot-Arena style (issue 14).

Two candidates of one conversation side by side, blind, sides random. One keystroke per
verdict, and the next pair comes back in the same round trip: **a** A is better · **b** B is
better · **t** tie · **x** both bad · **s** skip. Which pairs are shown is configurable (the two
the AI cannot separate, the AI's pick vs its runner-up, judges disagreeing, random).

``results_panel`` is the Results tab's part: verdicts per model and the Bradley–Terry ranking of
the generators from human verdicts beside the one implied by the AI ratings.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor, reviewer_identity
from pipelines.pairwise import (
    DEFAULT_MAX_VERDICTS,
    DEFAULT_REASONS,
    REASONS,
    VERDICTS,
    PairwiseError,
    next_pair,
    rankings,
    refresh_pairs,
    submit_verdict,
    verdicts_per_model,
)

KEYS = {"a": "a", "b": "b", "t": "tie", "x": "both_bad", "s": "skip"}

# One keystroke per verdict while the Arena tab is visible (ignored while typing).
ARENA_KEYS_JS = r"""
<script>
(() => {
  if (window.__capyuiArenaKeys) return;
  window.__capyuiArenaKeys = true;
  const ids = {a: 'cu-arena-a', b: 'cu-arena-b', t: 'cu-arena-tie', x: 'cu-arena-bad',
               s: 'cu-arena-skip'};
  document.addEventListener('keydown', e => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
        (t.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(t.type)))) return;
    const arena = document.getElementById('cu-arena');
    if (!arena || arena.offsetParent === null) return;
    const id = ids[e.key.toLowerCase()];
    if (!id) return;
    const b = document.getElementById(id);
    if (b && !b.disabled) { b.click(); e.preventDefault(); }
  });
})();
</script>
"""


def _ids(ws: Any) -> tuple[list[str], str | None]:
    r = ws.recipe
    return [g.id for g in r.generators], r.rating_judge_id()


def _reasons(selected: list[str] | None) -> list[str]:
    chosen = [r for r in (selected or []) if r in REASONS]
    return chosen or list(DEFAULT_REASONS)


def progress_html(ws: Any, reviewer: str | None, with_queues: bool = False) -> str:
    """Verdict counts; ``with_queues`` adds pairs judged per queue (a scan of the queue: on
    start / refresh only, never per keystroke)."""
    p = ws.store.pairwise_progress((reviewer or "").strip() or None)
    queued = ws.store.pairwise_pair_reason_count() if with_queues else {}
    parts = ", ".join(
        f"{REASONS[r].split(' (')[0].lower()}: {v['judged']}/{v['pairs']}"
        for r, v in queued.items()
        if r in REASONS
    )
    return render.notice_html(
        f"Pairwise verdicts: {p['verdicts']} (skips {p['skips']}) on {p['conversations']} "
        f"conversations · by you: {p['mine']}"
        + (f" · pairs judged per queue — {parts}" if parts else ""),
        "info",
    )


def view(
    ws: Any,
    reviewer: str,
    reasons: list[str],
    max_verdicts: float | None,
    message: str = "",
    kind: str = "ok",
) -> list[Any]:
    """[state, header, chat, A, B, status] for the next pair of ``reviewer``."""
    status = render.notice_html(message, kind) if message else ""
    try:
        item = next_pair(
            ws.store,
            reviewer,
            reasons=_reasons(reasons),
            max_verdicts=int(max_verdicts or DEFAULT_MAX_VERDICTS),
        )
    except PairwiseError as exc:
        return [None, render.notice_html(str(exc), "warn"), "", "", "", status]
    if item is None:
        return [
            None,
            render.notice_html(
                "No pair left for you in these queues. Judge more conversations (Run tab), add "
                "another queue, or raise the verdicts per pair.",
                "info",
            ),
            "",
            "",
            "",
            status,
        ]
    conv = item.conversation
    state = {
        "conversation_id": conv.conversation_id,
        "left": item.left.key,
        "right": item.right.key,
        "reason": item.reason,
        "models": {
            c.key: f"{c.model} ({c.generator_id})" if c.model else c.generator_id
            for c in (item.left, item.right)
        },
    }
    head = (
        f"{REASONS[item.reason]} · conversation {conv.conversation_id} · {conv.num_turns} user "
        "turn(s) · which answer to the last user turn is better?"
    )
    return [
        state,
        render.notice_html(head, "info"),
        render.chat_html(conv.messages),
        render.candidate_html("A", item.left.text, show_ai=False),
        render.candidate_html("B", item.right.text, show_ai=False),
        status,
    ]


def answer(
    ws: Any,
    state: dict[str, Any] | None,
    reviewer: str,
    reasons: list[str],
    max_verdicts: float | None,
    verdict: str,
) -> list[Any]:
    """Store the verdict on the pair in ``state`` and return the next pair's view."""
    if not state:
        return [progress_html(ws, reviewer), *view(ws, reviewer, reasons, max_verdicts)]
    try:
        submit_verdict(
            ws.store,
            state["conversation_id"],
            reviewer,
            left_key=state["left"],
            right_key=state["right"],
            verdict=verdict,
            reason=state.get("reason"),
        )
    except PairwiseError as exc:
        return [
            gr.update(),
            state,
            gr.update(),
            gr.update(),
            gr.update(),
            gr.update(),
            render.notice_html(str(exc), "error"),
        ]
    models = state.get("models") or {}

    def name(key: str) -> str:
        return str(models.get(key) or key.rpartition("/")[0])

    said = VERDICTS[verdict]
    message = f"Saved “{said}” — A was {name(state['left'])}, B was {name(state['right'])}."
    return [progress_html(ws, reviewer), *view(ws, reviewer, reasons, max_verdicts, message)]


def build(ws: Any, tab: gr.Tab, demo: gr.Blocks) -> None:
    with gr.Column(elem_id="cu-arena"):
        with gr.Row():
            reviewer = gr.Textbox(
                label="Reviewer (your name, or sign in)", scale=2, elem_id="cu-arena-reviewer"
            )
            reasons = gr.CheckboxGroup(
                [(v, k) for k, v in REASONS.items()],
                value=list(DEFAULT_REASONS),
                label="Pairs to show (in this order)",
                scale=4,
                elem_id="cu-arena-reasons",
            )
            max_verdicts = gr.Number(
                value=DEFAULT_MAX_VERDICTS,
                minimum=1,
                maximum=20,
                precision=0,
                label="Verdicts per pair",
                scale=1,
            )
            start_btn = gr.Button("Start / refresh", elem_id="cu-arena-start", scale=1)
        progress = gr.HTML(js_on_load=None, elem_id="cu-arena-progress")
        header = gr.HTML(js_on_load=None, elem_id="cu-arena-header")
        chat = gr.HTML(js_on_load=None, elem_id="cu-arena-chat")
        with gr.Row(equal_height=False):
            left = gr.HTML(js_on_load=None, elem_id="cu-arena-left")
            right = gr.HTML(js_on_load=None, elem_id="cu-arena-right")
        with gr.Row():
            buttons = {
                "a": gr.Button("A is better (a)", variant="primary", elem_id="cu-arena-a"),
                "b": gr.Button("B is better (b)", variant="primary", elem_id="cu-arena-b"),
                "tie": gr.Button("Tie (t)", elem_id="cu-arena-tie"),
                "both_bad": gr.Button("Both bad (x)", elem_id="cu-arena-bad"),
                "skip": gr.Button("Skip (s)", elem_id="cu-arena-skip"),
            }
        status = gr.HTML(js_on_load=None, elem_id="cu-arena-status")
        gr.Markdown(
            "Keys: **a** / **b** the better answer · **t** tie · **x** both bad · **s** skip. "
            "Sides are random and models are named only after your verdict. Verdicts feed "
            "binarization (a human verdict beats the AI's order for that pair; a tie or both "
            "bad drops it) and the rankings in the Results tab."
        )
    state = gr.State(None)
    outputs = [progress, state, header, chat, left, right, status]
    inputs = [reviewer, reasons, max_verdicts]

    def start(who: str, rs: list[str], mv: float | None) -> list[Any]:
        who = reviewer_identity(who)  # signed in: the identity, never the typed name
        gens, judge_id = _ids(ws)
        refresh_pairs(ws.store, judge_id=judge_id, generator_ids=gens)
        return [progress_html(ws, who, with_queues=True), *view(ws, who, rs, mv)]

    start_btn.click(start, inputs, outputs, api_name="arena_start")
    for verdict, btn in buttons.items():

        def on_click(
            st: dict[str, Any] | None, who: str, rs: list[str], mv: float | None, _v: str = verdict
        ) -> list[Any]:
            return answer(ws, st, reviewer_identity(who), rs, mv, _v)

        btn.click(
            on_click,
            [state, *inputs],
            outputs,
            api_name=f"arena_{verdict}",
            show_progress="hidden",
            concurrency_limit=None,
        )

    def who_am_i() -> Any:
        actor = current_actor()
        if actor.via != "local":  # signed in: the identity, shown, never typed
            name = actor.name or ""
            return gr.update(value=name, interactive=False, label="Reviewer (signed in)")
        return gr.update()

    demo.load(who_am_i, None, reviewer, show_progress="hidden", api_visibility="private")

    def on_select(st: dict[str, Any] | None, who: str, rs: list[str], mv: float | None) -> Any:
        if st:  # coming back keeps the pair on screen
            return [progress_html(ws, reviewer_identity(who)), *[gr.update()] * 6]
        return start(who, rs, mv)

    tab.select(
        on_select,
        [state, *inputs],
        outputs,
        show_progress="hidden",
        api_visibility="private",  # the page's own event, not an API
    )


def results_panel(ws: Any) -> None:
    """Pairwise results in the Results tab: verdicts per model and the two rankings."""
    with gr.Accordion("Pairwise (arena) verdicts and rankings", open=False):
        out = gr.HTML(js_on_load=None, elem_id="cu-arena-results")
        btn = gr.Button("Compute rankings", elem_id="cu-arena-rank")
    btn.click(lambda: results_html(ws), None, out, api_name="arena_rankings")


def results_html(ws: Any) -> str:
    _, judge_id = _ids(ws)
    per_model = verdicts_per_model(ws.store)
    both = rankings(ws.store, judge_id)
    parts = ["<h4>Human pairwise verdicts per generator</h4>"]
    if per_model:
        parts.append(
            render.table_html(
                ["generator", "shown", "wins", "losses", "ties", "both bad", "skips", "win rate"],
                [
                    (
                        r["generator"],
                        r["shown"],
                        r["wins"],
                        r["losses"],
                        r["ties"],
                        r["both_bad"],
                        r["skips"],
                        "—" if r["win_rate"] is None else f"{r['win_rate']:.0%}",
                    )
                    for r in per_model
                ],
            )
        )
    else:
        parts.append(render.notice_html("No pairwise verdicts yet (Arena tab).", "info"))
    ai_rank = {r["model"]: r for r in both["ai"].rows}
    human_rank = {r["model"]: r for r in both["human"].rows}
    models = [r["model"] for r in both["human"].rows] + [m for m in ai_rank if m not in human_rank]
    if models:

        def cell(r: dict[str, Any] | None) -> str:
            if r is None:
                return "—"
            return f"#{r['rank']} · {r['score']:.0f} [{r['ci_low']:.0f}, {r['ci_high']:.0f}]"

        parts.append(
            "<h4>Bradley–Terry ranking of the generators (Elo scale, 95% bootstrap CI)</h4>"
        )
        parts.append(
            render.table_html(
                [
                    "generator",
                    f"from humans ({both['human'].comparisons} verdicts)",
                    f"implied by AI ratings ({both['ai'].comparisons} comparisons)",
                ],
                [(m, cell(human_rank.get(m)), cell(ai_rank.get(m))) for m in models],
            )
        )
    return "".join(parts)
