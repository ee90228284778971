"""Review tab: the built-in review queue, one conversation at a time.

Candidates are shown side by side in a per-conversation shuffled order, blind by default (the
model names appear once you have submitted your review). Rate each candidate 1-5, pick the
chosen / rejected answer, discard the conversation or comment. Keyboard: j / k next /
previous, h / l (or arrows) move the focused candidate, 1-5 rate it, s submit
(``capyui/static/review_keys.js``).

Layout and wiring only: the queue (paged SQL: a page of ids and the queue's size), the item,
the submit and the progress come from ``pipelines.service.WorkspaceService``. Every handler
returns its outputs by component (``ReviewView``), so no path can miscount a positional list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from capyui import render
from capyui.guard import current_actor, reviewer_identity
from pipelines.rating_scale import rating_choices
from pipelines.records import Review
from pipelines.review import FILTERS, ReviewItem, default_picks
from pipelines.service import QueuePage, ServiceError, WorkspaceService

SLOTS = 6
LETTERS = "ABCDEFGH"[:SLOTS]
# the one rating scale (UltraFeedback's level names, shared with the judge and Argilla)
RATING_CHOICES = rating_choices()
REVIEWER_KEY = "capyui-reviewer"  # the browser's localStorage key for the remembered name

Updates = dict[Any, Any]  # component -> new value or gr.update(...)


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


def progress_html(ws: WorkspaceService, reviewer: str | None) -> str:
    p = ws.review_progress(current_actor(), (reviewer or "").strip() or None)
    mine = f" · by you: {p.mine}" if reviewer else ""
    return render.notice_html(
        f"Reviewed {p.reviewed} of {p.reviewable} conversations with candidates"
        f"{mine} · discarded: {p.discarded}",
        "info",
    )


@dataclass
class ReviewView:
    """The Review tab's components; ``item``/``empty`` map what is shown onto them, by
    component (one place)."""

    header: gr.HTML
    chat: gr.HTML
    columns: list[gr.Column]
    cards: list[gr.HTML]
    ratings: list[gr.Radio]
    chosen: gr.Dropdown
    rejected: gr.Dropdown
    discard: gr.Checkbox
    comment: gr.Textbox
    status: gr.HTML
    progress: gr.HTML
    queue: gr.State  # QueuePage | None
    pos: gr.State
    keys: gr.State
    drafts: gr.State
    seen: gr.State  # review_version of the conversation shown (stale views are refused)

    @property
    def form(self) -> list[Any]:
        return [*self.ratings, self.chosen, self.rejected, self.discard, self.comment]

    @property
    def item_outputs(self) -> list[Any]:
        """What rendering one conversation updates (the order is the API's output order)."""
        slots: list[Any] = []
        for col, card, rating in zip(self.columns, self.cards, self.ratings, strict=True):
            slots += [col, card, rating]
        return [
            self.header,
            self.chat,
            *slots,
            self.chosen,
            self.rejected,
            self.discard,
            self.comment,
            self.keys,
            self.pos,
            self.status,
            self.seen,
        ]

    def notice(self, message: str, kind: str = "info") -> Updates:
        return {self.status: render.notice_html(message, kind) if message else ""}

    def empty(self, message: str) -> Updates:
        out: Updates = {
            self.header: render.notice_html(message, "info"),
            self.chat: "",
            self.chosen: gr.update(choices=[], value=None),
            self.rejected: gr.update(choices=[], value=None),
            self.discard: False,
            self.comment: "",
            self.keys: [],
            self.pos: 0,
            self.status: "",
            self.seen: None,
        }
        for col, card, rating in zip(self.columns, self.cards, self.ratings, strict=True):
            out.update({col: gr.update(visible=False), card: "", rating: None})
        return out

    def item(
        self,
        ws: WorkspaceService,
        item: ReviewItem,
        page: QueuePage,
        pos: int,
        reviewer: str,
        blind: bool,
        show_ai: bool,
        *,
        draft: dict[str, Any] | None,
    ) -> Updates:
        mine = dict(item.my_review or {})
        if draft:
            mine.update(draft)
        reveal = (not blind) or bool(item.my_review)
        cands = item.candidates[:SLOTS]
        keys = [c.key for c in cands]
        letters = list(LETTERS[: len(cands)])
        out: Updates = {}
        for i, (col, card, rating) in enumerate(
            zip(self.columns, self.cards, self.ratings, strict=True)
        ):
            if i >= len(cands):
                out.update({col: gr.update(visible=False), card: "", rating: None})
                continue
            c = cands[i]
            html = render.candidate_html(
                letters[i],
                c.text,
                model=f"{c.model} ({c.generator_id})" if reveal else None,
                ai_rating=c.ai_rating,
                rationale=c.rationale,
                show_ai=show_ai or bool(item.my_review),  # after your own review: no anchoring
            )
            mine_rating = (mine.get("ratings") or {}).get(c.key)
            out.update(
                {
                    col: gr.update(visible=True),
                    card: html,
                    rating: str(mine_rating) if mine_rating else None,
                }
            )
        by_key = dict(zip(keys, letters, strict=True))
        conv = item.conversation
        head = (
            f"Conversation {pos + 1} of {page.total} · "
            f"{conv.conversation_id} · source {conv.source} · {conv.num_turns} user turn(s)"
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
        out.update(
            {
                self.header: render.notice_html(head, "info"),
                self.chat: render.chat_html(conv.messages) + others,
                self.chosen: gr.update(choices=letters, value=by_key.get(mine.get("chosen") or "")),
                self.rejected: gr.update(
                    choices=letters, value=by_key.get(mine.get("rejected") or "")
                ),
                self.discard: bool(mine.get("discard")),
                self.comment: mine.get("comment") or "",
                self.keys: keys,
                self.pos: pos,
                self.status: "",
                # what this view was rendered from: a submit from a stale view is refused
                self.seen: (
                    ws.review_version(current_actor(), conv.conversation_id, reviewer)
                    if reviewer
                    else None
                ),
            }
        )
        return out


def show(
    ws: WorkspaceService,
    v: ReviewView,
    page: QueuePage | None,
    pos: int,
    reviewer: str,
    blind: bool,
    show_ai: bool,
    message: str = "",
    *,
    draft: dict[str, Any] | None = None,
    empty: str | None = None,
    kind: str = "ok",
) -> Updates:
    """Every output of the review view for ``page.ids[pos]`` (read from the store).
    ``draft``: unsaved form values to restore instead of the stored review; ``empty``: what to
    say when the queue is empty."""
    reviewer = (reviewer or "").strip()
    item = None
    if page is not None and page.ids:
        pos = max(0, min(pos, len(page.ids) - 1))
        item = ws.review_item(current_actor(), page.ids[pos], reviewer or None)
    if item is None or page is None:
        out = v.empty(
            empty
            or "Nothing to review for this filter. Generate candidates in the Run tab, or pick "
            "another filter."
        )
    else:
        out = v.item(ws, item, page, pos, reviewer, blind, show_ai, draft=draft)
    out.update(v.notice(message, kind))
    return out


def build(
    ws: WorkspaceService, tab: gr.Tab, demo: gr.Blocks, remembered: gr.BrowserState | None = None
) -> None:
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
        columns: list[gr.Column] = []
        cards: list[gr.HTML] = []
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
                columns.append(col)
                cards.append(card)
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
    v = ReviewView(
        header=header,
        chat=chat,
        columns=columns,
        cards=cards,
        ratings=ratings,
        chosen=chosen,
        rejected=rejected,
        discard=discard,
        comment=comment,
        status=status,
        progress=progress,
        queue=gr.State(None),
        pos=gr.State(0),
        keys=gr.State([]),
        drafts=gr.State({}),  # conversation id -> unsaved form values (this browser tab)
        seen=gr.State(None),
    )
    if remembered is None:
        remembered = gr.BrowserState("", storage_key=REVIEWER_KEY)

    def load_queue(filter_: str, who: str, blind_: bool, ai_: bool) -> Updates:
        who = reviewer_identity(who)
        try:
            page = ws.review_queue(current_actor(), filter_, who)
        except ServiceError as exc:
            out = show(ws, v, None, 0, who, blind_, ai_, str(exc))
            return {**out, v.queue: None, v.progress: progress_html(ws, who)}
        empty = None if page.ids else ws.empty_queue_message(current_actor(), filter_, who)
        out = show(ws, v, page, 0, who, blind_, ai_, empty=empty)
        ws.warm_review_counts()  # the other AI queues' counts, in the background
        return {**out, v.queue: page, v.progress: progress_html(ws, who)}

    def _stash(
        d: dict[str, Any], page: QueuePage | None, p: int, ks: list[str], who: str, values: Any
    ) -> tuple[dict[str, Any], bool]:
        """Keep the form as a draft of the shown conversation when it differs from what is
        stored."""
        d = dict(d or {})
        if page is None or not page.ids or not ks:
            return d, False
        p = max(0, min(p or 0, len(page.ids) - 1))
        cid = page.ids[p]
        current = form_state(ks, values[:SLOTS], *values[SLOTS:])
        item = ws.review_item(current_actor(), cid, who)
        saved = _saved_state(item.my_review if item else None)
        has_review = bool(item is not None and item.my_review)
        if current == saved or (is_blank(current) and not has_review):
            d.pop(cid, None)
            return d, False
        d[cid] = current
        return d, True

    def step(delta: int) -> Any:
        def go(
            page: QueuePage | None,
            p: int,
            ks: list[str],
            d: dict[str, Any],
            who: str,
            blind_: bool,
            ai_: bool,
            *values: Any,
        ) -> Updates:
            who = reviewer_identity(who)
            d, kept = _stash(d, page, p, ks, who, values)
            p = p or 0
            target = p + delta
            if page is not None and target >= len(page.ids) and not page.complete:
                page = ws.review_more(current_actor(), page)  # the next page of the queue
            n = len(page.ids) if page is not None else 0
            note, kind = "", "ok"
            if n and delta and not 0 <= target < n:
                edge = "last" if delta > 0 else "first"
                note = (
                    f"This is the {edge} conversation of the queue ({p + 1} of {n}). "
                    "Pick another queue or press Load queue for new ones."
                )
                kind, target = "warn", p
            if kept and target != p:
                note = (
                    f"Your unsaved input on conversation {p + 1} is kept as a draft: go back "
                    "(k/j) and press s to submit it."
                )
                kind = "warn"
            target = max(0, min(target, n - 1)) if n else 0
            draft = d.get(page.ids[target]) if page is not None and n else None
            out = show(ws, v, page, target, who, blind_, ai_, note, draft=draft, kind=kind)
            return {**out, v.drafts: d, v.queue: page}

        return go

    def submit(
        page: QueuePage | None,
        p: int,
        ks: list[str],
        d: dict[str, Any],
        who: str,
        blind_: bool,
        ai_: bool,
        *rest: Any,
    ) -> Updates:
        who = reviewer_identity(who)  # the signed-in identity; a typed name only for local use
        rates = rest[:SLOTS]
        ch, rj, disc, com, version = rest[SLOTS:]
        if page is None or not page.ids or not ks:
            return show(ws, v, page, p, who, blind_, ai_, "Nothing to submit.")
        if not (who or "").strip():
            # said right under the name field, where it needs fixing (and at the button)
            miss = "Give a reviewer name (or sign in) before submitting."
            return {
                v.progress: progress_html(ws, who) + render.notice_html(miss, "error"),
                **v.notice(miss + " The field is at the top of the tab.", "error"),
            }
        letter_key = dict(zip(LETTERS, ks, strict=False))
        cid = page.ids[p]
        try:
            stored = ws.submit_review(
                current_actor(),
                cid,
                who,
                candidate_keys=ks,
                ratings={k: rates[i] for i, k in enumerate(ks) if rates[i]},
                chosen=letter_key.get(ch or ""),
                rejected=letter_key.get(rj or ""),
                discard=bool(disc),
                comment=com,
                expected_version=version,
            )
        except ServiceError as exc:
            # keep the view (and the reviewer's unsaved input) as it is; say why
            return v.notice(str(exc), "error")
        d = {k: val for k, val in (d or {}).items() if k != cid}
        msg = "Saved. Press j for the next one."
        if stored.accepted_ai:
            msg = "Saved as 'accepted the AI's suggestion' (not counted as your own judgment)."
        out = show(ws, v, page, p, who, blind_, ai_, msg)
        return {**out, v.progress: progress_html(ws, who), v.drafts: d}

    def use_ai(page: QueuePage | None, p: int, ks: list[str]) -> Updates:
        if page is None or not page.ids or not ks:
            return {}
        suggestion = ws.ai_suggestion(current_actor(), page.ids[p or 0], ks)
        if not suggestion:
            return v.notice("No AI ratings for this conversation.", "warn")
        key_letter = dict(zip(ks, LETTERS, strict=False))
        best, worst = default_picks(suggestion)
        out: Updates = {
            rating: str(suggestion[ks[i]]) if i < len(ks) and ks[i] in suggestion else None
            for i, rating in enumerate(v.ratings)
        }
        out[v.chosen] = key_letter.get(best or "")
        out[v.rejected] = key_letter.get(worst or "")
        out.update(
            v.notice(
                "Filled in the AI's ratings. Change any to make it your own judgment; "
                "submitted untouched it counts as 'accepted the AI's suggestion'.",
                "info",
            )
        )
        return out

    view = v.item_outputs
    queue_inputs = [flt, reviewer, blind, show_ai]
    queue_outputs = [v.queue, progress, *view]
    reload_btn.click(load_queue, queue_inputs, queue_outputs, api_name="review_queue")
    flt.input(load_queue, queue_inputs, queue_outputs, show_progress="hidden")
    nav_inputs = [v.queue, v.pos, v.keys, v.drafts, reviewer, blind, show_ai, *v.form]
    nav_outputs = [*view, v.drafts, v.queue]
    next_btn.click(step(1), nav_inputs, nav_outputs, api_name="review_next", show_progress="hidden")
    prev_btn.click(
        step(-1), nav_inputs, nav_outputs, api_name="review_prev", show_progress="hidden"
    )
    for box in (blind, show_ai):
        box.input(step(0), nav_inputs, nav_outputs, show_progress="hidden")
    submit_btn.click(
        submit, [*nav_inputs, v.seen], [progress, *view, v.drafts], api_name="review_submit"
    )
    use_ai_btn.click(
        use_ai,
        [v.queue, v.pos, v.keys],
        [*ratings, chosen, rejected, status],
        show_progress="hidden",
        api_visibility="private",
    )

    def who_am_i(saved: str) -> Any:
        actor = current_actor()
        if actor.via != "local":  # signed in: the identity, shown, never typed
            name = actor.name or ""
            return gr.update(value=name, interactive=False, label="Reviewer (signed in)")
        name = reviewer_identity(saved)
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
        page: QueuePage | None, p: int, filter_: str, who: str, blind_: bool, ai_: bool
    ) -> Updates:
        # coming back to the tab keeps your place in the queue; a first visit loads it
        who = reviewer_identity(who)
        if page is not None and page.ids:
            out = show(ws, v, page, p or 0, who, blind_, ai_)
            return {**out, v.progress: progress_html(ws, who)}
        return load_queue(filter_, who, blind_, ai_)

    tab.select(on_select, [v.queue, v.pos, *queue_inputs], queue_outputs, show_progress="hidden")
    # the AI queues' counts in the background from the start (and after a recipe change or a
    # job: judging invalidates them), so opening one on a large workspace reads its count
    ws.warm_review_counts()
    ws.on_recipe_change(ws.warm_review_counts)
    ws.on_job_finish(ws.warm_review_counts)

    from capyui.tabs import argilla  # the Argilla review queue panel, below the built-in one

    argilla.build(ws, tab, demo)
