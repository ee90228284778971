"""UltraFeedback judge prompts, the structured-output schema, and a judge-output parser.

Two prompt templates. ``ultrafeedback`` (the default): UltraFeedback's original rubrics and
layout, read at run time from the pinned distilabel package (``steps/tasks/templates/
ultrafeedback/*.jinja2`` and the ``UltraFeedback`` task's system prompt) and rendered exactly as
distilabel's ``UltraFeedback.format_input`` does. ``capyui``: CapyUI's paraphrase, below.

The paraphrase lives under ``pipelines/templates/ultrafeedback/``: one file per aspect
(the rubric) extending ``_judge.jinja`` (the ``### Input`` / ``### Output`` layout), with the
output-format section in ``_output_text.jinja`` (``#### Output for Text N`` / ``Rating`` /
``Rationale``) or ``_output_json.jinja`` (structured output).

The parser keys every rating on the ``Text N`` index the judge wrote, never on the order of the
blocks: a preamble, a blank line inside a rationale, a missing or duplicated block, or one
unreadable rating cannot move a rating onto the wrong candidate. What could not be read becomes
``None`` with the reason in ``ParsedJudgment.problems``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

ASPECTS: tuple[str, ...] = (
    "overall-rating",
    "helpfulness",
    "honesty",
    "instruction-following",
    "truthfulness",
)

TEMPLATE_DIR = Path(__file__).parent / "templates" / "ultrafeedback"
ROLES = ("system", "user", "assistant")

# Judge prompt templates. "ultrafeedback": UltraFeedback's original rubrics and layout, read at
# run time from the pinned distilabel package (the library the Capybara-DPO seed was built
# with), never retyped here. "capyui": CapyUI's own paraphrase (templates/ultrafeedback/).
TEMPLATES: tuple[str, ...] = ("ultrafeedback", "capyui")
DEFAULT_TEMPLATE = "ultrafeedback"
DISTILABEL = "distilabel"
DISTILABEL_INSTALL = "pip install -r requirements.txt (it pins distilabel==1.5.3)"
_DISTILABEL_DIR = "distilabel/steps/tasks/"


class RubricUnavailable(RuntimeError):
    """The original UltraFeedback rubric cannot be read (distilabel missing or changed);
    the message is one line naming the install step."""


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def template_environment() -> jinja2.Environment:
    """The Jinja environment of the judge templates (StrictUndefined: a missing variable fails)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _distilabel_file(relative: str) -> Path:
    """A file of the installed distilabel package, found through its metadata (distilabel
    itself is not imported: its dependencies conflict with the app's pins)."""
    from importlib.metadata import PackageNotFoundError, files

    wanted = _DISTILABEL_DIR + relative
    try:
        for f in files(DISTILABEL) or []:
            if str(f).replace("\\", "/") == wanted:
                path = Path(str(f.locate()))
                if path.is_file():
                    return path
    except PackageNotFoundError:
        raise RubricUnavailable(
            f"the original UltraFeedback rubric comes from distilabel, which is not installed:"
            f" {DISTILABEL_INSTALL}"
        ) from None
    raise RubricUnavailable(f"distilabel is installed but has no {wanted}: {DISTILABEL_INSTALL}")


@lru_cache(maxsize=8)
def original_template_source(aspect: str) -> str:
    """The text of distilabel's ``templates/ultrafeedback/{aspect}.jinja2``."""
    if aspect not in ASPECTS:
        raise ValueError(f"unknown judge aspect {aspect!r}; expected one of {', '.join(ASPECTS)}")
    return _distilabel_file(f"templates/ultrafeedback/{aspect}.jinja2").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def original_system_prompt() -> str:
    """The ``UltraFeedback`` task's system prompt (with its ``{no_texts}`` placeholder), read
    from distilabel's source with ``ast``: the default of its ``_system_prompt`` attribute."""
    import ast

    path = _distilabel_file("ultrafeedback.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "_system_prompt"
            and isinstance(node.value, ast.Call)
        ):
            for kw in node.value.keywords:
                if kw.arg == "default":
                    value = ast.literal_eval(kw.value)
                    if isinstance(value, str) and "{no_texts}" in value:
                        return value
    raise RubricUnavailable(
        f"distilabel's UltraFeedback system prompt not found in {path.name}: {DISTILABEL_INSTALL}"
    )


def conversation_instruction(conversation: list[dict[str, str]]) -> str:
    """The ``instruction`` the original template shows for a conversation: a single user turn
    as it is (exactly what the seed rated); a multi-turn conversation as its role-tagged
    turns, led by one sentence saying that the texts answer its final user turn."""
    if len(conversation) == 1:
        return conversation[0]["content"]
    turns = "\n\n".join(f"[{m['role']}]: {m['content']}" for m in conversation)
    return (
        "The conversation below is between a user and an AI assistant. Each turn is tagged"
        " with its role. The texts that follow are candidate answers to the final user turn:"
        " judge each one as the assistant's next reply, taking the whole conversation into"
        " account.\n\n" + turns
    )


_ORIGINAL_OUTPUT_FORMAT = re.compile(r"(### Output\n)(#### Output for Text 1\n.*?)(\n+---\n)", re.S)


def _render_original(
    aspect: str,
    conversation: list[dict[str, str]],
    texts: list[str],
    *,
    structured: bool,
    max_rationale_chars: int | None,
) -> list[dict[str, str]]:
    """distilabel's ``UltraFeedback.format_input`` for ``instruction`` = the conversation:
    the same template rendered the same way (``jinja2.Template``, default settings). With
    ``structured`` the example of the output format asks for CapyUI's JSON instead."""
    source = original_template_source(aspect)
    user = jinja2.Template(source).render(
        instruction=conversation_instruction(conversation), generations=list(texts)
    )
    if structured:
        json_format = (
            template_environment()
            .get_template("_output_json.jinja")
            .render(texts=list(texts), max_rationale_chars=max_rationale_chars)
            .strip()
        )
        user, n = _ORIGINAL_OUTPUT_FORMAT.subn(
            lambda m: m.group(1) + json_format + m.group(3), user, count=1
        )
        if n != 1:
            raise RubricUnavailable(
                f"distilabel's {aspect} template has no '### Output' example to replace:"
                f" {DISTILABEL_INSTALL}"
            )
    system = original_system_prompt().format(no_texts=len(texts))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def render_judge_messages(
    aspect: str,
    conversation: list[dict[str, str]],
    texts: list[str],
    *,
    structured: bool,
    max_rationale_chars: int | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> list[dict[str, str]]:
    """The ``[system, user]`` messages asking the judge to rate ``texts`` on ``aspect``.

    ``conversation`` is the whole conversation up to and including the last user turn; the
    texts are the candidate answers to that turn, shown as ``<text 1>`` ... ``<text N>`` in the
    given order (shuffle before calling). ``structured`` selects the JSON output-format section
    (to pair with :func:`judge_json_schema`) instead of the ``#### Output for Text N`` one.
    ``template`` is ``"ultrafeedback"`` (the original rubric, from distilabel) or ``"capyui"``
    (CapyUI's paraphrase).
    """
    if template not in TEMPLATES:
        raise ValueError(
            f"unknown judge template {template!r}; expected one of {', '.join(TEMPLATES)}"
        )
    if aspect not in ASPECTS:
        raise ValueError(f"unknown judge aspect {aspect!r}; expected one of {', '.join(ASPECTS)}")
    if not conversation:
        raise ValueError("conversation is empty")
    for i, message in enumerate(conversation):
        if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise ValueError(f"conversation message {i} is not a {{role, content}} message")
    if conversation[-1]["role"] != "user":
        raise ValueError("conversation must end with the user turn the texts answer")
    if not texts:
        raise ValueError("no texts to judge")
    for i, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise ValueError(f"text {i} is not a string ({type(text).__name__})")
    if template == "ultrafeedback":
        return _render_original(
            aspect,
            conversation,
            texts,
            structured=structured,
            max_rationale_chars=max_rationale_chars,
        )
    env = template_environment()
    context = {
        "conversation": conversation,
        "texts": list(texts),
        "structured": structured,
        "max_rationale_chars": max_rationale_chars,
    }
    system = env.get_template("system.jinja").render(context).strip()
    user = env.get_template(f"{aspect}.jinja").render(context).strip() + "\n"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def judge_json_schema(n_texts: int, max_rationale_chars: int = 300) -> dict[str, Any]:
    """JSON schema of a structured judgment of ``n_texts`` texts.

    ``{"ratings": [{"text": i, "rating": 1..5, "rationale": "..."}, ...]}`` with exactly one
    item per text, in order: item ``i`` is a tuple position (``prefixItems``) whose ``text`` is
    ``const`` i, so a grammar-constrained judge cannot skip, repeat or misnumber a text.
    ``minItems``/``maxItems`` repeat the length for validators that ignore ``prefixItems``.
    Ratings are an ``enum`` and the rationale has a ``maxLength`` (a grammar otherwise lets it
    run until ``max_tokens`` and cuts it mid-word). Only keywords that llama.cpp's
    json-schema-to-grammar converter handles are used.
    """
    if n_texts < 1:
        raise ValueError("n_texts must be at least 1")
    if max_rationale_chars < 1:
        raise ValueError("max_rationale_chars must be at least 1")

    def item(i: int) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "text": {"type": "integer", "const": i},
                "rating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
                "rationale": {"type": "string", "maxLength": max_rationale_chars},
            },
            "required": ["text", "rating", "rationale"],
            "additionalProperties": False,
        }

    return {
        "type": "object",
        "properties": {
            "ratings": {
                "type": "array",
                "prefixItems": [item(i) for i in range(1, n_texts + 1)],
                "minItems": n_texts,
                "maxItems": n_texts,
            }
        },
        "required": ["ratings"],
        "additionalProperties": False,
    }


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


@dataclass
class ParsedJudgment:
    ratings: list[int | None]  # index i = Text i+1 as shown to the judge
    rationales: list[str | None]
    problems: list[str] = field(default_factory=list)
    # which reading produced it: "json", "json-partial" (truncated JSON), "text" or "none"
    format: str = "none"

    @property
    def complete(self) -> bool:
        """Every rating was readable."""
        return all(r is not None for r in self.ratings)


def parse_judge_output(raw: str, n_texts: int) -> ParsedJudgment:
    """Read the ratings of ``n_texts`` texts from a judge's answer, aligned on ``Text N``.

    Tries JSON first (bare, inside a fenced block, or with prose around it; items keyed by
    their text number, an index-keyed object, or distilabel's parallel ``ratings`` /
    ``rationales`` lists), then the ``#### Output for Text N`` text format, then whatever
    complete items a truncated JSON answer still holds.

    Never raises on any string (NaN, Infinity, 1e400, huge integers, deeply nested JSON,
    garbage): what cannot be read is ``None`` with the reason in ``problems``. Only a
    non-positive ``n_texts`` (a caller's bug) raises ``ValueError``.
    """
    if not isinstance(n_texts, int) or n_texts < 1:
        raise ValueError("n_texts must be at least 1")
    try:
        return _parse(raw, n_texts)
    except Exception as exc:  # noqa: BLE001 - a hostile answer must never stop the stage
        return _result(n_texts, {}, [f"judge output unreadable ({type(exc).__name__})"], "none")


def _parse(raw: str, n_texts: int) -> ParsedJudgment:
    if raw is None or not str(raw).strip():
        return _result(n_texts, {}, ["empty judge output"], "none")
    raw = str(raw)

    obj = _find_json(raw)
    if obj is not None:
        found, problems = _read_json(obj, n_texts)
        return _result(n_texts, found, problems, "json")

    sections, problems = _text_sections(raw, n_texts)
    looks_json = bool(re.search(r'"ratings"\s*:|^\s*(?:```\w*\s*)?[\[{]', raw))
    if looks_json and not sections:
        found, json_problems = _salvage_json(raw, n_texts)
        if found:
            return _result(n_texts, found, json_problems, "json-partial")
    if not sections and not problems:
        return _result(
            n_texts, {}, ["no 'Output for Text N' section or JSON ratings found"], "none"
        )
    found = {}
    for index, candidates in sections.items():
        readings = [_read_section(text) for text in candidates]
        # first section wins; a later one only when the first has no readable rating (a judge
        # that echoes the format's "Rating: [Rating for text 1]" placeholder and then answers)
        k = next((k for k, r in enumerate(readings) if r[0] is not None), 0)
        if len(candidates) > 1:
            why = "" if k == 0 else "; the earlier had no readable rating"
            problems.append(f"Text {index}: {len(candidates)} sections; kept section {k + 1}{why}")
        found[index] = readings[k]
    return _result(n_texts, found, problems, "text")


def _result(
    n_texts: int,
    found: dict[int, tuple[int | None, str | None, str | None]],
    problems: list[str],
    fmt: str,
) -> ParsedJudgment:
    ratings: list[int | None] = []
    rationales: list[str | None] = []
    problems = list(problems)
    for index in range(1, n_texts + 1):
        rating, rationale, problem = found.get(index, (None, None, None))
        if index not in found:
            if fmt != "none":  # "none" already says why nothing was read
                problems.append(f"Text {index} missing")
        elif problem:
            problems.append(f"Text {index}: {problem}")
        ratings.append(rating)
        rationales.append(rationale)
    return ParsedJudgment(ratings=ratings, rationales=rationales, problems=problems, format=fmt)


# ---- ratings --------------------------------------------------------------------------------

_RATING_VALUE = re.compile(
    r"""^[\s\[\(\{*_"'`]*            # brackets, bold, quotes
        (?P<num>[+-]?\d+(?:[.,]\d+)?)
        (?P<rest>.*)$""",
    re.VERBOSE | re.DOTALL,
)
_OUT_OF = re.compile(r"^\s*(?:/|out\s+of|of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_EXPONENT = re.compile(r"^[eE][+-]?\d")
_RANGE_OR_MORE = re.compile(r"^\s*(?:-|–|to|or)\s*\d", re.IGNORECASE)


def _read_rating(value: Any) -> tuple[int | None, str | None]:
    """A 1..5 rating from a JSON value or the text after ``Rating:``; else (None, reason)."""
    if isinstance(value, bool) or value is None:
        return None, f"rating {value!r} unreadable"
    if isinstance(value, (int, float)):
        if isinstance(value, int) and abs(value) > 10**6:
            return None, "rating is a huge number, outside 1-5"
        number: float = value
        shown = repr(value)
    else:
        text = str(value).strip()
        shown = repr(_clip(text))
        m = _RATING_VALUE.match(text)
        if not m:
            return None, f"rating {shown} unreadable"
        rest = m.group("rest")
        if _EXPONENT.match(rest):
            return None, f"rating {shown} is not a plain number"
        if _RANGE_OR_MORE.match(rest):
            return None, f"rating {shown} is ambiguous"
        scale = _OUT_OF.match(rest)
        if scale and float(scale.group(1)) != 5:
            return None, f"rating {shown} is not on the 1-5 scale"
        try:
            number = float(m.group("num").replace(",", "."))
        except ValueError:  # pragma: no cover - the regex only lets numbers through
            return None, f"rating {shown} unreadable"
    if not math.isfinite(number):
        return None, f"rating {shown} is not a finite number"
    if number != int(number):
        return None, f"rating {shown} is not a whole number"
    if not 1 <= int(number) <= 5:
        return None, f"rating {shown} outside 1-5"
    return int(number), None


def _clip(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- JSON -----------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|jsonc)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_DECODER = json.JSONDecoder()
_INDEX_KEY = re.compile(r"^\s*(?:output\s+for\s+)?(?:text|response|answer)?\s*#?\s*(\d+)\s*$", re.I)


def _find_json(raw: str) -> Any | None:
    """The first JSON value in ``raw`` that looks like a judgment (fenced blocks first)."""
    chunks = [m.group(1) for m in _FENCE.finditer(raw)] + [raw]
    for chunk in chunks:
        tries = 0
        for m in re.finditer(r"[\[{]", chunk):
            tries += 1
            if tries > 200:
                break
            try:
                obj, _ = _DECODER.raw_decode(chunk, m.start())
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                continue
            if _looks_like_judgment(obj):
                return obj
    return None


def _looks_like_judgment(obj: Any) -> bool:
    if isinstance(obj, dict):
        if isinstance(obj.get("ratings"), (list, dict)):
            return True
        return bool(obj) and all(_INDEX_KEY.match(str(k)) for k in obj)
    if isinstance(obj, list):
        return bool(obj) and all(
            isinstance(x, dict) and ("text" in x or "rating" in x) for x in obj
        )
    return False


def _json_index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= 10**6 else None
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str):
        m = _INDEX_KEY.match(value)
        if m:
            return _small_int(m.group(1))
    return None


def _small_int(digits: str) -> int | None:
    """``int(digits)`` for a text number; None for one too long to be a text index (Python
    refuses to convert strings of more than 4300 digits)."""
    digits = digits.strip()
    return int(digits) if len(digits) <= 9 else None


def _read_json(obj: Any, n_texts: int) -> tuple[dict[int, tuple], list[str]]:
    """Items aligned by their ``text`` field (never list order)."""
    problems: list[str] = []
    items: list[tuple[Any, Any, str]] = []  # (index value, item, where)
    ratings = obj.get("ratings") if isinstance(obj, dict) and "ratings" in obj else obj
    if (
        isinstance(obj, dict)
        and isinstance(ratings, list)
        and ratings
        and not any(isinstance(x, dict) for x in ratings)
    ):
        return _read_parallel_lists(obj, ratings, n_texts)
    if isinstance(ratings, list):
        for k, item in enumerate(ratings, start=1):
            if not isinstance(item, dict):
                problems.append(f"JSON item {k} is not an object; ignored")
                continue
            items.append((item.get("text"), item, f"JSON item {k}"))
    elif isinstance(ratings, dict):  # {"text 1": {...}} or {"1": 4}
        for key, item in ratings.items():
            if not isinstance(item, dict):
                item = {"rating": item}
            items.append((key, item, f"JSON key {key!r}"))
    found: dict[int, tuple] = {}
    for index_value, item, where in items:
        index = _json_index(index_value)
        if index is None:
            problems.append(f"{where} has no usable text number ({index_value!r}); ignored")
            continue
        if not 1 <= index <= n_texts:
            problems.append(f"{where} rates Text {index}, outside 1-{n_texts}; ignored")
            continue
        rating, problem = _read_rating(item.get("rating", item.get("score")))
        if "rating" not in item and "score" not in item:
            problem = "no rating"
        rationale = item.get("rationale", item.get("reason"))
        rationale = rationale.strip() or None if isinstance(rationale, str) else None
        if index in found:
            if found[index][0] is None and rating is not None:
                problems.append(f"Text {index} rated twice; kept the later readable rating")
                found[index] = (rating, rationale, None)
            else:
                problems.append(f"Text {index} rated twice; kept the first")
            continue
        found[index] = (rating, rationale, problem)
    return found, problems


# distilabel's UltraFeedback structured output (and several fine-tuned judges): parallel lists,
# entry k rates Text k. For helpfulness/truthfulness the rating's own rationale is
# "rationales-for-ratings" ("rationales" there explains the "types").
_RATIONALE_LISTS = ("rationales-for-ratings", "rationales_for_rating", "rationales_for_ratings")


def _read_parallel_lists(
    obj: dict[str, Any], ratings: list[Any], n_texts: int
) -> tuple[dict[int, tuple], list[str]]:
    """``{"ratings": [3, 5], "rationales": ["...", "..."]}``: aligned by list position, which
    is the text number only when there is exactly one rating per text."""
    if len(ratings) != n_texts:
        return {}, [
            f"JSON 'ratings' list holds {len(ratings)} ratings for {n_texts} texts; "
            "cannot tell which text each rates"
        ]
    rationales: Any = next(
        (obj[k] for k in _RATIONALE_LISTS if isinstance(obj.get(k), list)), obj.get("rationales")
    )
    if not isinstance(rationales, list) or len(rationales) != n_texts:
        rationales = [None] * n_texts
    found: dict[int, tuple] = {}
    for index, (value, why) in enumerate(zip(ratings, rationales, strict=True), start=1):
        rating, problem = _read_rating(value)
        rationale = why.strip() or None if isinstance(why, str) else None
        found[index] = (rating, rationale, problem)
    return found, []


_PARTIAL_TEXT = re.compile(r'"text"\s*:\s*"?(\d+)')
_PARTIAL_RATING = re.compile(r'"rating"\s*:\s*"?(\d+(?:\.\d+)?)"?\s*[,}\s]')
_PARTIAL_RATIONALE = re.compile(r'"rationale"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)


def _salvage_json(raw: str, n_texts: int) -> tuple[dict[int, tuple], list[str]]:
    """Complete items of a truncated JSON judgment, plus a rating from a cut-off last item."""
    start = raw.find('"ratings"')
    start = raw.find("[", start) + 1 if start >= 0 else 0
    items: list[dict] = []
    pos = start
    tail = raw[start:]
    while True:
        brace = raw.find("{", pos)
        if brace < 0:
            break
        try:
            obj, end = _DECODER.raw_decode(raw, brace)
        except (ValueError, RecursionError):
            tail = raw[brace:]
            # a '{' inside a rationale string of a complete item cannot start a later item
            # before that item ends, so the first failure is the cut-off item
            break
        if isinstance(obj, dict):
            items.append(obj)
        pos = end
        tail = raw[end:]
    found, problems = _read_json(items, n_texts)
    partial = tail[tail.find("{") :] if "{" in tail else ""
    text_m = _PARTIAL_TEXT.search(partial)
    rating_m = _PARTIAL_RATING.search(partial)
    if text_m and rating_m:
        index = _small_int(text_m.group(1)) or 0
        if 1 <= index <= n_texts and index not in found:
            rating, problem = _read_rating(rating_m.group(1))
            rationale_m = _PARTIAL_RATIONALE.search(partial)
            rationale = None
            if rationale_m:
                try:
                    rationale = json.loads('"' + rationale_m.group(1).rstrip("\\") + '"')
                except ValueError:
                    rationale = rationale_m.group(1)
                rationale = rationale.strip() or None
            found[index] = (rating, rationale, problem or "rationale cut off (truncated output)")
    if found:
        problems.insert(0, "JSON output truncated; read the items before the cut")
    return found, problems


# ---- text format ----------------------------------------------------------------------------

_MD = r"(?:\*\*|__|\*|_)?"
# "#### Output for Text 3", "**Output for Text 3:**", "### output for text 3 (Rating: 4)"...
_STRONG_HEADER = re.compile(
    rf"^[ \t>]*(?:#{{1,6}}[ \t]*)?(?:(?:[-*+]|\d+[.)])[ \t]+)?{_MD}[ \t]*output[ \t]+for[ \t]+{_MD}"
    rf"text[ \t]*#?[ \t]*(\d+)[ \t]*{_MD}[ \t]*[:.\-–—)]?[ \t]*{_MD}(?P<rest>.*)$",
    re.IGNORECASE | re.MULTILINE,
)
# "Text 3:", "### Text 3", "**Text 3**" alone on a line or followed by ':' -- only used when
# the answer has no "Output for Text N" header at all.
_WEAK_HEADER = re.compile(
    rf"^[ \t>]*(?:#{{1,6}}[ \t]*)?(?:[-*+][ \t]+)?{_MD}[ \t]*text[ \t]*#?[ \t]*(\d+)[ \t]*{_MD}"
    rf"[ \t]*(?:$|[:)][ \t]*{_MD}(?P<rest>.*)$)",
    re.IGNORECASE | re.MULTILINE,
)
_LABEL = re.compile(
    rf"^[^\w\n]*(?P<label>rating|score|rationale|reasoning|reason|justification|explanation"
    rf"|type)s?[ \t]*(?:\([^)\n]*\))?[ \t]*{_MD}[ \t]*[:=][ \t]*{_MD}[ \t]*(?P<rest>.*)$",
    re.IGNORECASE,
)


def _text_sections(raw: str, n_texts: int) -> tuple[dict[int, list[str]], list[str]]:
    """Each ``Text N`` header's section (up to the next header), grouped by N."""
    headers = list(_STRONG_HEADER.finditer(raw)) or list(_WEAK_HEADER.finditer(raw))
    sections: dict[int, list[str]] = {}
    problems: list[str] = []
    for k, m in enumerate(headers):
        end = headers[k + 1].start() if k + 1 < len(headers) else len(raw)
        index = _small_int(m.group(1))
        body = (m.group("rest") or "") + raw[m.end() : end]
        if index is None or not 1 <= index <= n_texts:
            problems.append(
                f"section for Text {_clip(m.group(1), 12)} is outside 1-{n_texts}; ignored"
            )
            continue
        sections.setdefault(index, []).append(body)
    return sections, problems


def _read_section(body: str) -> tuple[int | None, str | None, str | None]:
    """(rating, rationale, problem) of one ``Output for Text N`` section."""
    fields: dict[str, list[str]] = {}
    current: str | None = None
    loose: list[str] = []
    for line in body.split("\n"):
        m = _LABEL.match(line)
        if m:
            label = m.group("label").lower()
            label = {"score": "rating", "type": "type"}.get(label, label)
            if label not in ("rating", "type"):
                label = "rationale"
            if label == "rationale" and current == "rating" and "type" in fields:
                # helpfulness / truthfulness: "Type / Rationale / Rating / Rationale", the
                # second rationale being the rating's own
                label = "rating_rationale"
            if label in fields:  # a second "Rating:" / "Rationale:" is content, not a field
                if current is not None:
                    fields[current].append(line)
                continue
            current = label
            fields[current] = [m.group("rest")]
        elif current is not None:
            fields[current].append(line)
        else:
            loose.append(line)

    rating: int | None = None
    problem: str | None = None
    after_rating: list[str] = []
    if "rating" not in fields:
        problem = "no 'Rating:' line"
    else:
        value_lines = [x for x in fields["rating"] if x.strip()]
        value = _strip_md(value_lines[0]) if value_lines else ""
        if not value:
            problem = "empty rating"
        else:
            rating, problem = _read_rating(value)
        after_rating = fields["rating"][1:] if fields["rating"][0].strip() else value_lines[1:]
    rationale_lines = fields.get("rating_rationale") or fields.get("rationale")
    if rationale_lines is None:  # no "Rationale:" label: whatever prose the section holds
        rationale_lines = loose + after_rating
    rationale = _clean_rationale(rationale_lines)
    return rating, rationale, problem


def _strip_md(text: str) -> str:
    return text.strip().strip("*_`").strip()


def _clean_rationale(lines: list[str]) -> str | None:
    text = "\n".join(lines)
    # trailing separators / fences / closing bold left by the next section or a wrapper block
    text = re.sub(r"(?:\n[ \t]*(?:-{3,}|\*{3,}|_{3,}|```)[ \t]*)+\s*$", "", "\n" + text.rstrip())
    text = text.strip()
    text = re.sub(r"^(?:\*\*|__)\s*", "", text)
    text = re.sub(r"\s*(?:\*\*|__)$", "", text) if text.count("**") % 2 else text
    text = text.strip()
    return text or None
