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
from pipelines.records import Review
from pipelines.review import (
    FILTERS,
    ReviewError,
    ai_suggestion,
    default_picks,
    queue_ids,
    review_item,
    review_progress,
    submit_review,
)

SLOTS = 6
LETTERS = "ABCDEFGH"[:SLOTS]
# the one rating scale (UltraFeedback's level names, shared with the judge and Argilla)
RATING_CHOICES = rating_choices()
REVIEWER_KEY = "capyui-reviewer"  # the browser's localStorage key for the remembered name


def resolve_reviewer(
    request: gr.Request | None, profile: gr.OAuthProfile | None, remembered: str | None
) -> tuple[str, bool]:
    """Who is reviewing: (name, signed_in). The signed-in identity when there is one (the
    app's password login, then Hugging Face sign-in); else the name this browser remembered.
    ``signed_in`` locks the reviewer box (an identity is not typed)."""
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return str(username), True
    if profile is not None and getattr(profile, "username", None):
        return str(profile.username), True
    return (remembered or "").strip()[:100], False


def empty_queue_message(ws: Any, filter_: str, reviewer: str | None) -> str:
    """Why the queue is empty, and what to do: an empty 'Unreviewed' queue with reviewable
    conversations means the work is done, not that nothing was generated."""
    gens, _ = _ids(ws)
    p = review_progress(ws.store, generator_ids=gens, reviewer=(reviewer or "").strip() or None)
    if p["reviewable"] == 0:
        return (
            "Nothing to review yet: no conversation has candidates. Generate them in the Run tab."
        )
    if filter_ == "unreviewed":
        who = "you have" if reviewer else "reviewers have"
        return (
            f"All done: {who} reviewed every one of the {p['reviewable']} conversations with "
            "candidates. Pick 'All with candidates' to revisit them."
        )
    return f"No conversation matches '{FILTERS.get(filter_, filter_)}'. Pick another queue."


def form_state(
    keys: list[str], rates: Any, chosen: Any, rejected: Any, discard: Any, comment: Any
) -> dict[str, Any]:
    """The review form's values by candidate key (what a draft keeps)."""
    letter_key = dict(zip(LETTERS, keys, strict=False))
    return {
        "ratings": {k: int(rates[i]) for i, k in enumerate(keys) if i < len(rates) and rates[i]},
        "chosen": letter_key.get(chosen or ""),
        "rejected": letter_key.get(rejected or ""),
        "discard": bool(discard),
        "comment": (comment or "").strip(),
    }


def _saved_state(review: Review | dict[str, Any] | None) -> dict[str, Any]:
    r = review or {}
    return {
        "ratings": {k: int(v) for k, v in (r.get("ratings") or {}).items() if v is not None},
        "chosen": r.get("chosen"),
        "rejected": r.get("rejected"),
        "discard": bool(r.get("discard")),
        "comment": (r.get("comment") or "").strip(),
    }


def is_blank(state: dict[str, Any]) -> bool:
    return (
        not (state["ratings"] or state["chosen"] or state["rejected"] or state["discard"])
        and not (state["comment"])
    )


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
    *,
    draft: dict[str, Any] | None = None,
    empty: str | None = None,
    kind: str = "ok",
) -> list[Any]:
    """Every output of the review view for ``queue[pos]``. ``draft``: unsaved form values to
    restore instead of the stored review; ``empty``: what to say when the queue is empty."""
    gens, judge_id = _ids(ws)
    reviewer = (reviewer or "").strip()
    item = None
    if queue:
        pos = max(0, min(pos, len(queue) - 1))
        item = review_item(
            ws.store, queue[pos], generator_ids=gens, judge_id=judge_id, reviewer=reviewer or None
        )
    if item is None:
        empty_html = render.notice_html(
            empty
            or "Nothing to review for this filter. Generate candidates in the Run tab, or pick "
            "another filter.",
            "info",
        )
        slots: list[Any] = []
        for _ in range(SLOTS):
            slots += [gr.update(visible=False), "", None]
        return [
            empty_html,
            "",
            *slots,
            gr.update(choices=[], value=None),
            gr.update(choices=[], value=None),
            False,
            "",
            [],
            0,
            render.notice_html(message, "info") if message else "",
            None,
        ]
    mine = dict(item.my_review or {})
    if draft:
        mine.update(draft)
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
                show_ai=show_ai or bool(item.my_review),  # after your own review: no anchoring
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
        + (" · unsaved draft restored" if draft else "")
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
    status = render.notice_html(message, kind) if message else ""
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
        # what this view was rendered from: a submit from a stale view is refused (issue 10)
        ws.store.review_version(conv.conversation_id, reviewer) if reviewer else None,
    ]


def build(ws: Any, tab: gr.Tab, demo: gr.Blocks, remembered: gr.BrowserState | None = None) -> None:
    """The Review tab. ``remembered``: the browser-stored reviewer name; it must be rendered
    outside the tabs (a tab not shown yet reads nothing from localStorage at page load)."""
    with gr.Column(elem_id="cu-review"):
        with gr.Row():
            # the reviewer is the signed-in identity (issue 10): shown, never typed
            reviewer = gr.Textbox(
                label="Reviewer (your name, or sign in)",
                scale=2,
                elem_id="cu-reviewer",
                max_length=100,
            )
            flt = gr.Dropdown(
                [(v, k) for k, v in FILTERS.items()], value="unreviewed", label="Queue", scale=2
            )
            blind = gr.Checkbox(value=True, label="Blind (hide models until I submit)")
            # off by default: the AI's ratings anchor a reviewer who sees them first
            show_ai = gr.Checkbox(value=False, label="Show AI ratings", elem_id="cu-show-ai")
            reload_btn = gr.Button("Load queue", elem_id="cu-load-queue", scale=1)
        # right under the name field: progress, and "give a reviewer name" when it is missing
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
            chosen = gr.Dropdown(
                [], label="Chosen (default: best rated)", value=None, elem_id="cu-chosen"
            )
            rejected = gr.Dropdown(
                [], label="Rejected (default: worst rated)", value=None, elem_id="cu-rejected"
            )
            discard = gr.Checkbox(label="Discard this conversation", elem_id="cu-discard")
            comment = gr.Textbox(label="Comment", lines=1, scale=2, elem_id="cu-comment")
        with gr.Row():
            prev_btn = gr.Button("← Previous (k)", elem_id="cu-prev")
            use_ai_btn = gr.Button("Fill in the AI's ratings", elem_id="cu-use-ai")
            submit_btn = gr.Button("Submit review (s)", variant="primary", elem_id="cu-submit")
            next_btn = gr.Button("Next (j) →", elem_id="cu-next")
        status = gr.HTML(js_on_load=None, elem_id="cu-review-status")
        gr.Markdown(
            "Keys: **j**/**k** next/previous · **h**/**l** or ←/→ focus a candidate · "
            "**1**–**5** rate it · **s** submit. Candidate order is shuffled per conversation. "
            "A review needs a rating, a pick or a discard; unsaved input is kept as a draft "
            "when you move on. Submitting the AI's ratings untouched is recorded as "
            "*accepted the AI's suggestion*, not as your own judgment."
        )
    queue = gr.State([])
    pos = gr.State(0)
    keys = gr.State([])
    drafts = gr.State({})  # conversation id -> unsaved form values (this browser tab)
    seen = gr.State(None)  # review_version of the conversation shown (stale views are refused)
    if remembered is None:
        remembered = gr.BrowserState("", storage_key=REVIEWER_KEY)

    view = [
        header,
        chat,
        *slot_outputs,
        chosen,
        rejected,
        discard,
        comment,
        keys,
        pos,
        status,
        seen,
    ]
    form = [*ratings, chosen, rejected, discard, comment]

    def _me(typed: str | None = None) -> str:
        """The reviewer (``guard.reviewer_identity``); this browser remembers a local name."""
        from capyui.guard import reviewer_identity

        return reviewer_identity(typed)

    def load_queue(filter_: str, who: str, blind_: bool, ai_: bool) -> list[Any]:
        who = _me(who)
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
        empty = None if ids else empty_queue_message(ws, filter_, who)
        return [
            ids,
            progress_html(ws, who),
            *render_item(ws, ids, 0, who, blind_, ai_, empty=empty),
        ]

    def _stash(
        d: dict[str, Any], q: list[str], p: int, ks: list[str], who: str, values: Any
    ) -> tuple[dict[str, Any], bool]:
        """Keep the form as a draft of q[p] when it differs from what is stored."""
        d = dict(d or {})
        if not q or not ks:
            return d, False
        p = max(0, min(p or 0, len(q) - 1))
        cid = q[p]
        current = form_state(ks, values[:SLOTS], *values[SLOTS:])
        gens_, judge_ = _ids(ws)
        item = review_item(
            ws.store,
            cid,
            generator_ids=gens_,
            judge_id=judge_,
            reviewer=(who or "").strip() or None,
        )
        saved = _saved_state(item.my_review if item else None)
        if current == saved or (is_blank(current) and not item_has_review(item)):
            d.pop(cid, None)
            return d, False
        d[cid] = current
        return d, True

    def item_has_review(item: Any) -> bool:
        return bool(item is not None and item.my_review)

    def step(delta: int) -> Any:
        def go(
            q: list[str],
            p: int,
            ks: list[str],
            d: dict[str, Any],
            who: str,
            blind_: bool,
            ai_: bool,
            *values: Any,
        ) -> list[Any]:
            who = _me(who)
            d, kept = _stash(d, q, p, ks, who, values)
            p = p or 0
            target = p + delta
            note, kind = "", "ok"
            if q and delta and not 0 <= target < len(q):
                edge = "last" if delta > 0 else "first"
                note = (
                    f"This is the {edge} conversation of the queue ({p + 1} of {len(q)}). "
                    "Pick another queue or press Load queue for new ones."
                )
                kind, target = "warn", p
            if kept and target != p:
                note = (
                    f"Your unsaved input on conversation {p + 1} is kept as a draft: go back "
                    "(k/j) and press s to submit it."
                )
                kind = "warn"
            target = max(0, min(target, len(q) - 1)) if q else 0
            draft = d.get(q[target]) if q else None
            return [*render_item(ws, q, target, who, blind_, ai_, note, draft=draft, kind=kind), d]

        return go

    def submit(
        q: list[str],
        p: int,
        ks: list[str],
        d: dict[str, Any],
        who: str,
        blind_: bool,
        ai_: bool,
        *rest: Any,
    ) -> list[Any]:
        who = _me(who)  # the signed-in identity; a typed name only for the local user
        rates = rest[:SLOTS]
        ch, rj, disc, com, version = rest[SLOTS:]
        keep = [gr.update()] * (len(view) - 4)  # all but keys, pos, status, seen
        if not q or not ks:
            return [gr.update(), *render_item(ws, q, p, who, blind_, ai_, "Nothing to submit."), d]
        if not (who or "").strip():
            # said right under the name field, where it needs fixing (and at the button)
            miss = "Give a reviewer name (or sign in) before submitting."
            return [
                progress_html(ws, who) + render.notice_html(miss, "error"),
                *keep,
                ks,
                p,
                render.notice_html(miss + " The field is at the top of the tab.", "error"),
                gr.update(),
                d,
            ]
        letter_key = dict(zip(LETTERS, ks, strict=False))
        gens_, judge_ = _ids(ws)
        try:
            stored = submit_review(
                ws.store,
                q[p],
                who,
                candidate_keys=ks,
                ratings={k: rates[i] for i, k in enumerate(ks) if rates[i]},
                chosen=letter_key.get(ch or ""),
                rejected=letter_key.get(rj or ""),
                discard=bool(disc),
                comment=com,
                judge_id=judge_,
                expected_version=version,
            )
        except ReviewError as exc:
            # keep the view (and the reviewer's unsaved input) as it is; say why
            return [
                gr.update(),
                *keep,
                ks,
                p,
                render.notice_html(str(exc), "error"),
                gr.update(),
                d,
            ]
        d = {k: v for k, v in (d or {}).items() if k != q[p]}
        msg = "Saved. Press j for the next one."
        if stored.get("accepted_ai"):
            msg = "Saved as 'accepted the AI's suggestion' (not counted as your own judgment)."
        return [progress_html(ws, who), *render_item(ws, q, p, who, blind_, ai_, msg), d]

    def use_ai(q: list[str], p: int, ks: list[str]) -> list[Any]:
        if not q or not ks:
            return [gr.update()] * (SLOTS + 3)
        _, judge_ = _ids(ws)
        suggestion = ai_suggestion(ws.store, q[p or 0], ks, judge_)
        if not suggestion:
            return [
                *[gr.update()] * (SLOTS + 2),
                render.notice_html("No AI ratings for this conversation.", "warn"),
            ]
        key_letter = dict(zip(ks, LETTERS, strict=False))
        best, worst = default_picks(suggestion)
        return [
            *[
                str(suggestion[ks[i]]) if i < len(ks) and ks[i] in suggestion else None
                for i in range(SLOTS)
            ],
            key_letter.get(best or ""),
            key_letter.get(worst or ""),
            render.notice_html(
                "Filled in the AI's ratings. Change any to make it your own judgment; "
                "submitted untouched it counts as 'accepted the AI's suggestion'.",
                "info",
            ),
        ]

    queue_inputs = [flt, reviewer, blind, show_ai]
    reload_btn.click(load_queue, queue_inputs, [queue, progress, *view], api_name="review_queue")
    flt.input(load_queue, queue_inputs, [queue, progress, *view], show_progress="hidden")
    nav_inputs = [queue, pos, keys, drafts, reviewer, blind, show_ai, *form]
    next_btn.click(
        step(1), nav_inputs, [*view, drafts], api_name="review_next", show_progress="hidden"
    )
    prev_btn.click(
        step(-1), nav_inputs, [*view, drafts], api_name="review_prev", show_progress="hidden"
    )
    for box in (blind, show_ai):
        box.input(step(0), nav_inputs, [*view, drafts], show_progress="hidden")
    submit_btn.click(
        submit, [*nav_inputs, seen], [progress, *view, drafts], api_name="review_submit"
    )
    use_ai_btn.click(
        use_ai,
        [queue, pos, keys],
        [*ratings, chosen, rejected, status],
        show_progress="hidden",
        api_visibility="private",
    )

    def who_am_i(saved: str) -> Any:
        from capyui.guard import current_actor

        actor = current_actor()
        if actor.via != "local":  # signed in: the identity, shown, never typed
            name = actor.name or ""
            return gr.update(value=name, interactive=False, label="Reviewer (signed in)")
        name = _me(saved)
        return gr.update(value=name) if name else gr.update()

    demo.load(who_am_i, remembered, reviewer, show_progress="hidden", api_visibility="private")
    # the name typed here is remembered by this browser (localStorage) for the next visit
    reviewer.change(
        lambda who: (who or "").strip()[:100],
        reviewer,
        remembered,
        show_progress="hidden",
        api_visibility="private",
        queue=False,
    )

    def on_select(
        q: list[str], p: int, filter_: str, who: str, blind_: bool, ai_: bool
    ) -> list[Any]:
        # coming back to the tab keeps your place in the queue; a first visit loads it
        who = _me(who)
        if q:
            return [q, progress_html(ws, who), *render_item(ws, q, p or 0, who, blind_, ai_)]
        return load_queue(filter_, who, blind_, ai_)

    tab.select(
        on_select, [queue, pos, *queue_inputs], [queue, progress, *view], show_progress="hidden"
    )

    from capyui.tabs import argilla  # the Argilla review queue panel, below the built-in one

    argilla.build(ws, tab, demo)
