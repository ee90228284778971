"""Issue 11 (+ issue 10 item 6): the original UltraFeedback rubric read from distilabel at run
time, compared with what distilabel's own ``UltraFeedback`` task formats; every judge answer
shape we know of; a parser that never raises on any string (fuzzed with hypothesis)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.judge_format import (
    ASPECTS,
    TEMPLATES,
    conversation_instruction,
    original_system_prompt,
    original_template_source,
    parse_judge_output,
    render_judge_messages,
)

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a prime number. {{ not_a_var }}"},
    {"role": "assistant", "content": "7."},
    {"role": "user", "content": "Now name an even one."},
]
TEXTS = ["2.", "4 is even and prime.\n\nWait, no.", "Two is the only even prime.", "{% x %}"]


def _distilabel_ultrafeedback(aspect: str):  # noqa: ANN202 - distilabel types
    """distilabel's real ``UltraFeedback`` task (loaded, with an LLM that never runs).

    distilabel is installed ``--no-deps`` in the app venv (requirements-dev.txt pins the few
    modules it imports that the app does not already have)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from distilabel.models.llms.base import LLM
        from distilabel.steps.tasks import UltraFeedback

    class _NoLLM(LLM):
        @property
        def model_name(self) -> str:
            return "none"

        def generate(self, inputs, num_generations=1, **kwargs):  # noqa: ANN001, ANN201
            raise AssertionError("the comparison never calls the LLM")

    task = UltraFeedback(llm=_NoLLM(), aspect=aspect, use_default_structured_output=False)
    task.load()
    return task


@pytest.mark.parametrize("aspect", ASPECTS)
@pytest.mark.parametrize("conversation", [CONVERSATION, CONVERSATION[1:2]], ids=["multi", "single"])
def test_original_prompt_is_what_distilabel_formats(aspect: str, conversation: list) -> None:
    task = _distilabel_ultrafeedback(aspect)
    instruction = conversation_instruction(conversation)
    expected = task.format_input({"instruction": instruction, "generations": TEXTS})
    ours = render_judge_messages(aspect, conversation, TEXTS, structured=False)
    assert ours == expected
    if len(conversation) == 1:  # a single turn is shown exactly as the seed showed it
        assert instruction == conversation[0]["content"]
    else:
        for m in conversation:
            assert f"[{m['role']}]: {m['content']}" in instruction


def test_original_is_the_default_and_unchanged_text() -> None:
    assert TEMPLATES[0] == "ultrafeedback"
    user = render_judge_messages("overall-rating", CONVERSATION, TEXTS, structured=False)[1]
    # the original wording, not CapyUI's paraphrase
    assert "1. **Low Quality**: Contains inaccuracies, may be entirely wrong" in user["content"]
    paraphrase = render_judge_messages(
        "overall-rating", CONVERSATION, TEXTS, structured=False, template="capyui"
    )[1]["content"]
    assert "Wrong or mostly wrong" in paraphrase
    assert "Contains inaccuracies" not in paraphrase
    # read from the installed package, not from this repository
    assert original_template_source("overall-rating").startswith("# General Text Quality")
    assert "{no_texts} text outputs" in original_system_prompt()


def test_original_structured_asks_for_json_with_the_same_rubric() -> None:
    text = render_judge_messages("honesty", CONVERSATION, TEXTS, structured=False)[1]["content"]
    js = render_judge_messages("honesty", CONVERSATION, TEXTS, structured=True)[1]["content"]
    assert text.split("## Format", 1)[0] == js.split("## Format", 1)[0]
    assert text.split("## Annotation", 1)[1] == js.split("## Annotation", 1)[1]
    assert '{"ratings": [{"text": 1, "rating": [rating for text 1]' in js
    assert "#### Output for Text" not in js


# ---- every answer shape ----------------------------------------------------------------------


def test_distilabel_parallel_lists_align_to_text_n() -> None:
    raw = json.dumps({"ratings": [3, 5], "rationales": ["ok-ish", "great"]})
    parsed = parse_judge_output(raw, 2)
    assert parsed.ratings == [3, 5] and parsed.rationales == ["ok-ish", "great"]
    assert parsed.problems == [] and parsed.format == "json"


def test_parallel_lists_helpfulness_rationale_for_rating() -> None:
    raw = json.dumps(
        {
            "types": [1, 2],
            "rationales": ["type why 1", "type why 2"],
            "ratings": [2, 4],
            "rationales-for-ratings": ["rating why 1", "rating why 2"],
        }
    )
    parsed = parse_judge_output(raw, 2)
    assert parsed.ratings == [2, 4]
    assert parsed.rationales == ["rating why 1", "rating why 2"]


def test_parallel_lists_of_the_wrong_length_are_not_guessed() -> None:
    parsed = parse_judge_output('{"ratings": [3, 5, 4], "rationales": ["a", "b", "c"]}', 2)
    assert parsed.ratings == [None, None]
    assert any("3 ratings for 2 texts" in p for p in parsed.problems)


def test_parallel_lists_with_one_unreadable_rating() -> None:
    parsed = parse_judge_output('{"ratings": [4, "N/A", 2]}', 3)
    assert parsed.ratings == [4, None, 2]
    assert any(p.startswith("Text 2:") for p in parsed.problems)


@pytest.mark.parametrize(
    "raw",
    [
        '```json\n{"ratings": [2, 5], "rationales": ["a", "b"]}\n```',
        'Here is my judgment:\n{"ratings": [2, 5], "rationales": ["a", "b"]}\nHope it helps.',
        'Sure.\n```\n{"1": {"rating": 2}, "2": {"rating": 5}}\n```',
        '{"text 2": 5, "text 1": 2}',
        '[{"text": 2, "rating": 5}, {"text": 1, "rating": 2}]',
        "#### Output for Text 2\nRating: 5\nRationale: b\n\n#### Output for Text 1\nRating: 2\n"
        "Rationale: a",
    ],
    ids=["fenced", "prose", "fenced-index-keys", "index-keys", "item-list", "text-blocks"],
)
def test_known_shapes_read_aligned(raw: str) -> None:
    assert parse_judge_output(raw, 2).ratings == [2, 5]


# ---- never raises (issue 10, item 6) ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"ratings": [{"text": 1, "rating": NaN}, {"text": 2, "rating": Infinity}]}',
        '{"ratings": [{"text": 1, "rating": 1e400}, {"text": 2, "rating": -Infinity}]}',
        '{"ratings": [NaN, 1e400]}',
        '{"ratings": [{"text": NaN, "rating": 4}, {"text": 1e400, "rating": 4}]}',
        '{"ratings": [{"text": 1, "rating": ' + "9" * 4000 + "}]}",
        '{"ratings": [{"text": ' + "9" * 4000 + ', "rating": 3}]}',
        "[" * 100_000 + "]" * 100_000,
        '{"ratings": ' + "[" * 50_000,
        "#### Output for Text " + "9" * 5000 + "\nRating: 4",
        "#### Output for Text 1\nRating: 1e400\n#### Output for Text 2\nRating: " + "9" * 5000,
        '{"1": NaN, "2": 4}',
        '{"ratings": {"' + "1" * 5000 + '": 3}}',
        "\x00\udcff garbage \u202e",
    ],
)
def test_hostile_numbers_and_nesting_become_null_with_reason(raw: str) -> None:
    parsed = parse_judge_output(raw, 2)
    assert len(parsed.ratings) == 2 and len(parsed.rationales) == 2
    assert all(r is None or (isinstance(r, int) and 1 <= r <= 5) for r in parsed.ratings)
    assert None not in parsed.ratings or parsed.problems  # every null says why


def test_1e400_text_rating_is_not_read_as_1() -> None:
    parsed = parse_judge_output("#### Output for Text 1\nRating: 1e400\nRationale: x", 1)
    assert parsed.ratings == [None] and "not a plain number" in parsed.problems[0]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(["ratings", "rationales", "text", "rating", "rationale", "1", "2"])
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


def _checked(parsed_ratings: list, n: int) -> None:
    assert len(parsed_ratings) == n
    for r in parsed_ratings:
        assert r is None or (isinstance(r, int) and 1 <= r <= 5 and not math.isnan(r))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=400), st.integers(min_value=1, max_value=8))
def test_fuzz_any_string(raw: str, n: int) -> None:
    _checked(parse_judge_output(raw, n).ratings, n)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    _json_values, st.integers(min_value=1, max_value=6), st.sampled_from(["", "```json\n", "x "])
)
def test_fuzz_json_shaped(value: object, n: int, wrap: str) -> None:
    raw = wrap + json.dumps(value, allow_nan=True)
    parsed = parse_judge_output(raw, n)
    _checked(parsed.ratings, n)
    assert all(r is not None for r in parsed.ratings) or parsed.problems


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=-3, max_value=12),
            st.one_of(
                st.integers(),
                st.floats(allow_nan=True, allow_infinity=True).map(repr),
                st.text(max_size=12),
            ),
        ),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=8),
)
def test_fuzz_text_blocks(blocks: list, n: int) -> None:
    raw = "\n\n".join(f"#### Output for Text {i}\nRating: {r}\nRationale: r{i}" for i, r in blocks)
    _checked(parse_judge_output(raw, n).ratings, n)


def test_original_helpfulness_text_format_keeps_the_ratings_rationale() -> None:
    """UltraFeedback's helpfulness/truthfulness answer: Type / Rationale / Rating / Rationale."""
    raw = (
        "#### Output for Text 1\nType: 1, 2\nRationale: Clear and relevant.\nRating: 4\n"
        "Rationale: Accurate and informative.\n\n#### Output for Text 2\nType: None\n"
        "Rationale: Off topic.\nRating: 1\nRationale: Wrong."
    )
    parsed = parse_judge_output(raw, 2)
    assert parsed.ratings == [4, 1]
    assert parsed.rationales == ["Accurate and informative.", "Wrong."]
