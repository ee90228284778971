"""Safe rendering of untrusted text (conversations, model answers, judge rationales).

Every string that comes from a dataset or a model is untrusted. It is rendered here to HTML
that can never run script or load anything remote:

* markdown is parsed with raw HTML *disabled* (``<script>`` etc. come out as literal text);
* the result goes through ``nh3`` (ammonia) with a small allow-list: no ``img``, no ``style``,
  no event-handler attributes, links only to http(s)/mailto and opened with
  ``rel="noopener noreferrer nofollow"``; ``javascript:`` links lose their ``href``;
* ``$``, ``{`` and ``}`` are emitted as character references so that no client-side template
  (Gradio's ``gr.HTML`` template) can ever see an expression in untrusted text.

Everything the UI shows as HTML is built from these helpers; labels and numbers that the app
itself computes still go through ``esc``.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Iterable, Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "pre",
    "code",
    "em",
    "strong",
    "del",
    "s",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "span",
    "div",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


@functools.cache
def _md() -> MarkdownIt:
    # "js-default" = CommonMark with raw HTML off and unsafe link protocols refused.
    return MarkdownIt("js-default", {"linkify": False, "typographer": False}).enable("table")


def _template_safe(text: str) -> str:
    return text.replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def esc(value: Any) -> str:
    """Plain text to HTML (also safe inside attribute values)."""
    return _template_safe(html.escape("" if value is None else str(value), quote=True))


def sanitize_html(fragment: str) -> str:
    """Clean an HTML fragment with the allow-list above."""
    cleaned = nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return _template_safe(cleaned)


def markdown_html(text: str | None) -> str:
    """Untrusted markdown to safe HTML."""
    if not text:
        return ""
    return sanitize_html(_md().render(text))


def message_html(message: dict[str, Any]) -> str:
    role = str(message.get("role", ""))
    label = ROLE_LABELS.get(role, role or "?")
    css_role = role if role in ROLE_LABELS else "other"
    return (
        f'<div class="cu-msg cu-{css_role}"><div class="cu-role">{esc(label)}</div>'
        f'<div class="cu-body">{markdown_html(str(message.get("content", "")))}</div></div>'
    )


def chat_html(messages: Sequence[dict[str, Any]], title: str | None = None) -> str:
    """A conversation as chat bubbles."""
    head = f'<div class="cu-chat-title">{esc(title)}</div>' if title else ""
    body = "".join(message_html(m) for m in messages)
    return f'<div class="cu-chat">{head}{body}</div>'


def chats_html(items: Iterable[tuple[str, Sequence[dict[str, Any]]]]) -> str:
    parts = [chat_html(msgs, title) for title, msgs in items]
    if not parts:
        return '<div class="cu-empty">Nothing to show.</div>'
    return '<div class="cu-chats">' + "".join(parts) + "</div>"


def candidate_html(
    label: str,
    text: str | None,
    *,
    model: str | None = None,
    ai_rating: float | None = None,
    rationale: str | None = None,
    show_ai: bool = True,
) -> str:
    """One candidate answer card. ``model`` is shown only when given (blind review hides it).

    A rationale that is only the judge template's placeholder (``[rationale for text 2]``) is
    flagged as a judge failure instead of being shown as a judgment."""
    from pipelines.judge_quality import placeholder_rationale

    who = f' <span class="cu-model">{esc(model)}</span>' if model else ""
    ai = ""
    if show_ai:
        rating = "—" if ai_rating is None else f"{ai_rating:g}"
        if placeholder_rationale(rationale):
            why = (
                '<span class="cu-flag cu-placeholder" title="The judge copied the prompt\'s '
                "placeholder instead of writing a rationale; treat this rating as a judge "
                f'failure">judge failure: placeholder rationale</span> <code>{esc(rationale)}'
                "</code>"
            )
        elif rationale:
            why = markdown_html(rationale)
        else:
            why = '<p class="cu-muted">no rationale</p>'
        ai = (
            f'<div class="cu-ai"><div class="cu-ai-rating">AI rating: <b>{esc(rating)}</b></div>'
            f'<div class="cu-ai-why">{why}</div></div>'
        )
    return (
        f'<div class="cu-cand"><div class="cu-cand-head">Candidate {esc(label)}{who}</div>'
        f'<div class="cu-body">{markdown_html(text or "")}</div>{ai}</div>'
    )


def table_html(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="cu-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def notice_html(text: str, kind: str = "info") -> str:
    from pipelines.secrets import mask_tokens  # every message of the page: masked (issue 10)

    kind = kind if kind in ("info", "warn", "error", "ok") else "info"
    return f'<div class="cu-notice cu-{kind}">{esc(mask_tokens(str(text)))}</div>'


MAX_ERROR_CHARS = 240


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters (with an ellipsis)."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def error_html(problem: str, hint: str | None = None) -> str:
    """An error notice: one capped line saying what went wrong, then what to do about it."""
    text = one_line(problem)
    if hint:
        text = f"{text.rstrip('.')}. {one_line(hint, 160)}"
    return notice_html(text, "error")


def progress_bar_html(done: int, total: int, label: str = "") -> str:
    """A labelled bar (``done``/``total``) that screen readers read as a progress bar."""
    total = max(int(total or 0), 0)
    done = min(max(int(done or 0), 0), total) if total else max(int(done or 0), 0)
    pct = 100.0 * done / total if total else 0.0
    return (
        f'<div class="cu-bar" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" '
        f'aria-valuenow="{done}" aria-label="{esc(label)}"><div class="cu-bar-fill" '
        f'style="width:{pct:.1f}%"></div><span class="cu-bar-text">{esc(label)} '
        f"{done}/{total}</span></div>"
    )


CSS = """
.cu-chat{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px;margin:6px 0;}
.cu-chat-title{font-size:12px;color:var(--body-text-color-subdued);margin-bottom:4px;}
.cu-msg{margin:6px 0;padding:6px 10px;border-radius:8px;max-width:92%;overflow-wrap:anywhere;}
.cu-user{background:var(--color-accent-soft);margin-right:auto;}
.cu-assistant{background:var(--background-fill-secondary);margin-left:auto;}
.cu-system{background:var(--background-fill-secondary);font-style:italic;}
.cu-role{font-size:11px;font-weight:600;text-transform:uppercase;opacity:.7;}
.cu-body p{margin:4px 0;} .cu-body pre{white-space:pre-wrap;overflow-wrap:anywhere;}
.cu-cand{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px;
  overflow-wrap:anywhere;min-height:60px;}
.cu-cand-head{font-weight:600;margin-bottom:4px;}
.cu-model{font-weight:400;font-size:12px;padding:1px 6px;border-radius:6px;
  background:var(--color-accent-soft);}
.cu-ai{border-top:1px dashed var(--border-color-primary);margin-top:6px;padding-top:4px;
  font-size:13px;}
.cu-muted{opacity:.6;}
.cu-table{border-collapse:collapse;font-size:13px;margin:4px 0;}
.cu-table th,.cu-table td{border:1px solid var(--border-color-primary);padding:3px 8px;
  text-align:left;vertical-align:top;}
.cu-notice{padding:8px 12px;border-radius:8px;margin:4px 0;overflow-wrap:anywhere;
  max-width:100%;box-sizing:border-box;}
.cu-info{background:var(--background-fill-secondary);}
.cu-warn{background:#fff3cd;color:#664d03;} .cu-error{background:#f8d7da;color:#842029;}
.cu-ok{background:#d1e7dd;color:#0f5132;}
.cu-cand-slot.cu-focus{outline:3px solid var(--color-accent);border-radius:10px;}
.cu-bar{position:relative;height:20px;border-radius:6px;background:var(--background-fill-secondary);
  border:1px solid var(--border-color-primary);min-width:160px;overflow:hidden;}
.cu-bar-fill{position:absolute;left:0;top:0;bottom:0;background:var(--color-accent-soft);
  border-right:2px solid var(--color-accent);}
.cu-bar-text{position:relative;padding:0 6px;font-size:12px;line-height:20px;white-space:nowrap;}
.cu-pulse{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px;
  background:var(--color-accent);animation:cu-pulse 1s ease-in-out infinite;}
@keyframes cu-pulse{0%,100%{opacity:.25}50%{opacity:1}}
.cu-flag{display:inline-block;font-size:12px;padding:1px 6px;border-radius:6px;
  background:#fff3cd;color:#664d03;margin:2px 0;}
.cu-inline-error:empty{display:none;}
.cu-confirm{border:1px solid #f1aeb5;border-radius:8px;padding:4px 8px;background:#fff5f5;}
"""


def panel_html(report: dict[str, Any] | None) -> str:
    """A judge panel's biases and agreement (``pipelines.panel.PanelReport.as_dict()``) for the
    Results tab: one row per judge (and the panel's aggregate), then the judge pairs; empty
    for a recipe with a single judge."""
    if not report or not report.get("judges"):
        return ""

    def pct(v: Any, of: int | None = None) -> str:
        if v is None:
            return "—"
        return f"{100 * float(v):.0f}%" + (f" of {of}" if of else "")

    def num(v: Any) -> str:
        return "—" if v is None else f"{float(v):.2f}"

    judges = [
        (
            j["judge_id"] + (" (aggregate)" if j.get("is_panel") else ""),
            j["judgments"],
            j["failed"],
            pct(j["null_share"]),
            " · ".join(f"{k}: {v}" for k, v in sorted(j["histogram"].items())),
            num(j["mean_rating"]),
            "—"
            if j.get("is_panel")
            else f"{pct(j['first_shown_best'])} (blind: {pct(j['first_shown_expected'])})",
            pct(j["reverse_changed"], j["reverse_conversations"]),
            pct(j["human_agreement"], j["human_compared"]),
        )
        for j in report["judges"]
    ]
    head = (
        f"<h4>Judge panel ({esc(report.get('aggregate') or 'mean')} of the judges, stored as "
        f"<code>{esc(report.get('panel_id') or '')}</code>)</h4>"
    )
    per_judge = table_html(
        [
            "judge",
            "judgments",
            "failed",
            "null ratings",
            "rating distribution",
            "mean",
            "best shown first",
            "best changes when order reversed",
            "agrees with humans' chosen",
        ],
        judges,
    )
    pairs = table_html(
        ["judges", "Spearman ρ", "candidates rated by both", "same best answer"],
        [
            (" / ".join(p["judges"]), num(p["spearman"]), p["rated_by_both"], pct(p["same_best"]))
            for p in report.get("pairs") or []
        ],
    )
    summary = notice_html(
        f"Krippendorff's alpha (interval) between the judges: {num(report.get('alpha'))} over "
        f"{report.get('alpha_units', 0)} rated candidates. Judges disagree on "
        f'{report.get("disagree", 0)} conversation(s): the Review tab\'s "Judges disagree" '
        "filter and the Argilla select mode judges_disagree list them.",
        "info",
    )
    return f'<div class="cu-panel" id="cu-judge-panel">{head}{per_judge}{pairs}{summary}</div>'
