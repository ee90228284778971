"""Review tab: the built-in review queue, one conversation at a time.

Candidates are shown side by side in a per-conversation shuffled order, blind by default (the
model names appear once you have submitted your review). Rate each candidate 1-5, pick the
chosen / rejected answer, discard the conversation or comment. Keyboard: j / k next /
previous, h / l (or arrows) move the focused candidate, 1-5 rate it, s submit.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from capyui import render
from pipelines.rating_scale import rating_choices
from pipelines.review import (
    FILTERS,
    ReviewError,
    queue_ids,
    review_item,
    review_progress,
    submit_review,
)

SLOTS = 6
LETTERS = "ABCDEFGH"[:SLOTS]
# the one rating scale (UltraFeedback's level names, shared with the judge and Argilla)
RATING_CHOICES = rating_choices()


def _ids(ws: Any) -> tuple[list[str], str | None]:
    r = ws.recipe
    return [g.id for g in r.generators], (r.judge.id if r.judge is not None else None)


def progress_html(ws: Any, reviewer: str | None) -> str:
    gens, _ = _ids(ws)
    p = review_progress(ws.store, generator_ids=gens, reviewer=(reviewer or "").strip() or None)
    mine = f" · by you: {p['mine']}" if reviewer else ""
    return render.notice_html(
        f"Reviewed {p['reviewed']} of {p['reviewable']} conversations with candidates"
        f"{mine} · discarded: {p['discarded']}",
        "info",
    )


def render_item(
    ws: Any,
    queue: list[str],
    pos: int,
    reviewer: str,
    blind: bool,
    show_ai: bool,
    message: str = "",
) -> list[Any]:
    """Every output of the review view for ``queue[pos]``."""
    gens, judge_id = _ids(ws)
    reviewer = (reviewer or "").strip()
    item = None
    if queue:
        pos = max(0, min(pos, len(queue) - 1))
        item = review_item(
            ws.store, queue[pos], generator_ids=gens, judge_id=judge_id, reviewer=reviewer or None
        )
    if item is None:
        empty = render.notice_html(
            "Nothing to review for this filter. Generate candidates in the Run tab, or pick "
            "another filter.",
            "info",
        )
        slots: list[Any] = []
        for _ in range(SLOTS):
            slots += [gr.update(visible=False), "", None]
        return [
            empty,
            "",
            *slots,
            gr.update(choices=[], value=None),
            gr.update(choices=[], value=None),
            False,
            "",
            [],
            0,
            render.notice_html(message, "info") if message else "",
        ]
    mine = item.my_review or {}
    reveal = (not blind) or bool(item.my_review)
    cands = item.candidates[:SLOTS]
    keys = [c.key for c in cands]
    letters = list(LETTERS[: len(cands)])
    slots = []
    for i in range(SLOTS):
        if i < len(cands):
            c = cands[i]
            card = render.candidate_html(
                letters[i],
                c.text,
                model=f"{c.model} ({c.generator_id})" if reveal else None,
                ai_rating=c.ai_rating,
                rationale=c.rationale,
                show_ai=show_ai,
            )
            rating = (mine.get("ratings") or {}).get(c.key)
            slots += [gr.update(visible=True), card, str(rating) if rating else None]
        else:
            slots += [gr.update(visible=False), "", None]
    by_key = dict(zip(keys, letters, strict=True))
    conv = item.conversation
    head = (
        f"Conversation {pos + 1} of {len(queue)} · {conv.conversation_id} · source "
        f"{conv.source} · {conv.num_turns} user turn(s)"
        + (f" · judge: {item.judge_model}" if item.judge_model else "")
        + (" · you reviewed this" if item.my_review else "")
    )
    others = ""
    if item.other_reviews and reveal:
        others = render.table_html(
            ["other reviewer", "chosen", "rejected", "discard", "comment"],
            [
                (
                    r["reviewer"],
                    by_key.get(r["chosen"] or "", r["chosen"] or ""),
                    by_key.get(r["rejected"] or "", r["rejected"] or ""),
                    r["discard"],
                    r["comment"] or "",
                )
                for r in item.other_reviews
            ],
        )
    status = render.notice_html(message, "ok") if message else ""
    return [
        render.notice_html(head, "info"),
        render.chat_html(conv.messages) + others,
        *slots,
        gr.update(choices=letters, value=by_key.get(mine.get("chosen") or "")),
        gr.update(choices=letters, value=by_key.get(mine.get("rejected") or "")),
        bool(mine.get("discard")),
        mine.get("comment") or "",
        keys,
        pos,
        status,
    ]


def build(ws: Any, tab: gr.Tab, demo: gr.Blocks) -> None:
    with gr.Column(elem_id="cu-review"):
        with gr.Row():
            reviewer = gr.Textbox(
                label="Reviewer (your name, or sign in)", scale=2, elem_id="cu-reviewer"
            )
            flt = gr.Dropdown(
                [(v, k) for k, v in FILTERS.items()], value="unreviewed", label="Queue", scale=2
            )
            blind = gr.Checkbox(value=True, label="Blind (hide models until I submit)")
            show_ai = gr.Checkbox(value=True, label="Show AI ratings")
            reload_btn = gr.Button("Load queue", elem_id="cu-load-queue", scale=1)
        progress = gr.HTML(js_on_load=None, elem_id="cu-review-progress")
        header = gr.HTML(js_on_load=None, elem_id="cu-review-header")
        chat = gr.HTML(js_on_load=None, elem_id="cu-review-chat")
        slot_outputs: list[Any] = []
        ratings: list[gr.Radio] = []
        with gr.Row(equal_height=False):
            for i in range(SLOTS):
                with gr.Column(visible=False, elem_classes=["cu-cand-slot"], min_width=220) as col:
                    card = gr.HTML(js_on_load=None, elem_classes=["cu-cand-html"])
                    rating = gr.Radio(
                        RATING_CHOICES,
                        label=f"Your rating for {LETTERS[i]}",
                        elem_id=f"cu-rate-{i}",
                    )
                slot_outputs += [col, card, rating]
                ratings.append(rating)
        with gr.Row():
            chosen = gr.Dropdown([], label="Chosen", value=None, elem_id="cu-chosen")
            rejected = gr.Dropdown([], label="Rejected", value=None, elem_id="cu-rejected")
            discard = gr.Checkbox(label="Discard this conversation", elem_id="cu-discard")
            comment = gr.Textbox(label="Comment", lines=1, scale=2, elem_id="cu-comment")
        with gr.Row():
            prev_btn = gr.Button("← Previous (k)", elem_id="cu-prev")
            submit_btn = gr.Button("Submit review (s)", variant="primary", elem_id="cu-submit")
            next_btn = gr.Button("Next (j) →", elem_id="cu-next")
        status = gr.HTML(js_on_load=None, elem_id="cu-review-status")
        gr.Markdown(
            "Keys: **j**/**k** next/previous · **h**/**l** or ←/→ focus a candidate · "
            "**1**–**5** rate it · **s** submit. Candidate order is shuffled per conversation."
        )
    queue = gr.State([])
    pos = gr.State(0)
    keys = gr.State([])

    view = [header, chat, *slot_outputs, chosen, rejected, discard, comment, keys, pos, status]

    def load_queue(filter_: str, who: str, blind_: bool, ai_: bool) -> list[Any]:
        gens_, judge_ = _ids(ws)
        try:
            ids = queue_ids(
                ws.store,
                filter_,
                generator_ids=gens_,
                judge_id=judge_,
                reviewer=(who or "").strip() or None,
            )
        except ReviewError as exc:
            return [[], progress_html(ws, who), *render_item(ws, [], 0, who, blind_, ai_, str(exc))]
        return [ids, progress_html(ws, who), *render_item(ws, ids, 0, who, blind_, ai_)]

    def step(delta: int) -> Any:
        def go(q: list[str], p: int, who: str, blind_: bool, ai_: bool) -> list[Any]:
            return render_item(ws, q, (p or 0) + delta, who, blind_, ai_)

        return go

    def submit(
        q: list[str], p: int, ks: list[str], who: str, blind_: bool, ai_: bool, *rest: Any
    ) -> list[Any]:
        rates = rest[:SLOTS]
        ch, rj, disc, com = rest[SLOTS:]
        if not q or not ks:
            return [gr.update(), *render_item(ws, q, p, who, blind_, ai_, "Nothing to submit.")]
        letter_key = dict(zip(LETTERS, ks, strict=False))
        try:
            submit_review(
                ws.store,
                q[p],
                who,
                candidate_keys=ks,
                ratings={k: rates[i] for i, k in enumerate(ks) if rates[i]},
                chosen=letter_key.get(ch or ""),
                rejected=letter_key.get(rj or ""),
                discard=bool(disc),
                comment=com,
            )
        except ReviewError as exc:
            # keep the view (and the reviewer's unsaved input) as it is; say why
            return [
                gr.update(),
                gr.update(),
                gr.update(),
                *[gr.update()] * (SLOTS * 3),
                gr.update(),
                gr.update(),
                gr.update(),
                gr.update(),
                ks,
                p,
                render.notice_html(str(exc), "error"),
            ]
        return [
            progress_html(ws, who),
            *render_item(ws, q, p, who, blind_, ai_, "Saved. Press j for the next one."),
        ]

    queue_inputs = [flt, reviewer, blind, show_ai]
    reload_btn.click(load_queue, queue_inputs, [queue, progress, *view], api_name="review_queue")
    flt.input(load_queue, queue_inputs, [queue, progress, *view], show_progress="hidden")
    nav_inputs = [queue, pos, reviewer, blind, show_ai]
    next_btn.click(step(1), nav_inputs, view, api_name="review_next", show_progress="hidden")
    prev_btn.click(step(-1), nav_inputs, view, api_name="review_prev", show_progress="hidden")
    for box in (blind, show_ai):
        box.input(step(0), nav_inputs, view, show_progress="hidden")
    submit_btn.click(
        submit,
        [queue, pos, keys, reviewer, blind, show_ai, *ratings, chosen, rejected, discard, comment],
        [progress, *view],
        api_name="review_submit",
    )

    def who_am_i(profile: gr.OAuthProfile | None) -> Any:
        return profile.username if profile is not None else gr.update()

    demo.load(who_am_i, None, reviewer, show_progress="hidden", api_visibility="private")

    def on_select(
        q: list[str], p: int, filter_: str, who: str, blind_: bool, ai_: bool
    ) -> list[Any]:
        # coming back to the tab keeps your place in the queue; a first visit loads it
        if q:
            return [q, progress_html(ws, who), *render_item(ws, q, p or 0, who, blind_, ai_)]
        return load_queue(filter_, who, blind_, ai_)

    tab.select(
        on_select, [queue, pos, *queue_inputs], [queue, progress, *view], show_progress="hidden"
    )

    from capyui.tabs import argilla  # the Argilla review queue panel, below the built-in one

    argilla.build(ws, tab, demo)
