"""Judge prompts (Jinja templates), the structured-output schema and the judge-output parser."""

from __future__ import annotations

import json
import textwrap

import jinja2
import pytest

from pipelines.judge_format import (
    ASPECTS,
    ParsedJudgment,
    judge_json_schema,
    parse_judge_output,
    render_judge_messages,
    template_environment,
)

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a prime number.\n\nJust one, please. {{ not_a_var }}"},
    {"role": "assistant", "content": "7."},
    {"role": "user", "content": "Now name an even one."},
]
TEXTS = ["2.", "4 is even and prime.\n\nWait, no.", "Two is the only even prime.", "{% x %}"]


def _d(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# --------------------------------------------------------------------------------------------
# The corpus: (judge output, n_texts, expected ratings, expected rationales, problem fragments)
# A rationale of ... means "not checked"; problem fragments must each appear in some problem.
# --------------------------------------------------------------------------------------------

CASES: dict[str, tuple[str, int, list, list, list[str]]] = {
    "clean": (
        _d("""
            #### Output for Text 1
            Rating: 4
            Rationale: Correct and short.

            #### Output for Text 2
            Rating: 2
            Rationale: Contradicts itself.
            """),
        2,
        [4, 2],
        ["Correct and short.", "Contradicts itself."],
        [],
    ),
    "preamble_and_epilogue": (
        _d("""
            Sure! Here is my evaluation of the texts.

            Rating: 1 is the lowest on this scale.

            #### Output for Text 1
            Rating: 5
            Rationale: Perfect.

            #### Output for Text 2
            Rating: 3
            Rationale: Fine.
            """),
        2,
        [5, 3],
        ["Perfect.", "Fine."],
        [],
    ),
    "bold_markdown": (
        _d("""
            ### **Output for Text 1**
            **Rating:** 4
            **Rationale:** Good answer.

            **Output for Text 2:**
            **Rating**: **2**
            **Rationale**: Weak.
            """),
        2,
        [4, 2],
        ["Good answer.", "Weak."],
        [],
    ),
    "blank_lines_inside_rationale": (
        _d("""
            #### Output for Text 1
            Rating: 3
            Rationale: First paragraph.

            Second paragraph of the same rationale.

            - a bullet

            #### Output for Text 2
            Rating: 5
            Rationale: Only one.
            """),
        2,
        [3, 5],
        ["First paragraph.\n\nSecond paragraph of the same rationale.\n\n- a bullet", "Only one."],
        [],
    ),
    "shuffled_block_order": (
        _d("""
            #### Output for Text 3
            Rating: 1
            Rationale: Third.

            #### Output for Text 1
            Rating: 5
            Rationale: First.

            #### Output for Text 2
            Rating: 3
            Rationale: Second.
            """),
        3,
        [5, 3, 1],
        ["First.", "Second.", "Third."],
        [],
    ),
    "missing_block": (
        _d("""
            #### Output for Text 1
            Rating: 4
            Rationale: One.

            #### Output for Text 3
            Rating: 2
            Rationale: Three.
            """),
        3,
        [4, None, 2],
        ["One.", None, "Three."],
        ["Text 2 missing"],
    ),
    "n_a_rating": (
        _d("""
            #### Output for Text 1
            Rating: N/A
            Rationale: Cannot judge an empty text.

            #### Output for Text 2
            Rating: 4
            Rationale: Fine.
            """),
        2,
        [None, 4],
        ["Cannot judge an empty text.", "Fine."],
        ["Text 1: rating 'N/A' unreadable"],
    ),
    "rating_variants": (
        _d("""
            #### Output for Text 1
            Rating: 4/5
            Rationale: a

            #### Output for Text 2
            Rating: 4 (very good)
            Rationale: b

            #### Output for Text 3
            Rating: [2]
            Rationale: c

            #### Output for Text 4
            Rating: 5.0
            Rationale: d

            #### Output for Text 5
            Rating: 3 out of 5
            Rationale: e
            """),
        5,
        [4, 4, 2, 5, 3],
        ["a", "b", "c", "d", "e"],
        [],
    ),
    "bad_rating_values": (
        _d("""
            #### Output for Text 1
            Rating: 7
            Rationale: a

            #### Output for Text 2
            Rating: 4.5
            Rationale: b

            #### Output for Text 3
            Rating: 8/10
            Rationale: c

            #### Output for Text 4
            Rating: 3-4
            Rationale: d

            #### Output for Text 5
            Rationale: e
            """),
        5,
        [None, None, None, None, None],
        ["a", "b", "c", "d", "e"],
        [
            "Text 1: rating '7' outside 1-5",
            "Text 2: rating '4.5' is not a whole number",
            "Text 3: rating '8/10' is not on the 1-5 scale",
            "Text 4: rating '3-4' is ambiguous",
            "Text 5: no 'Rating:' line",
        ],
    ),
    "duplicate_header_first_wins": (
        _d("""
            #### Output for Text 1
            Rating: 2
            Rationale: First opinion.

            #### Output for Text 2
            Rating: 3
            Rationale: Two.

            #### Output for Text 1
            Rating: 5
            Rationale: Second opinion.
            """),
        2,
        [2, 3],
        ["First opinion.", "Two."],
        ["Text 1: 2 sections; kept section 1"],
    ),
    "echoed_format_placeholder_then_answer": (
        _d("""
            #### Output for Text 1
            Rating: [Rating for text 1, a whole number from 1 to 5]
            Rationale: [Rationale for the rating in short sentences]

            #### Output for Text 1
            Rating: 4
            Rationale: Real one.
            """),
        1,
        [4],
        ["Real one."],
        ["Text 1: 2 sections; kept section 2; the earlier had no readable rating"],
    ),
    "out_of_range_index": (
        _d("""
            #### Output for Text 1
            Rating: 3
            Rationale: One.

            #### Output for Text 2
            Rating: 4
            Rationale: Two.

            #### Output for Text 3
            Rating: 5
            Rationale: There is no text 3.
            """),
        2,
        [3, 4],
        ["One.", "Two."],
        ["section for Text 3 is outside 1-2; ignored"],
    ),
    "loose_headers_case_spaces": (
        _d("""
            output  for  TEXT  1:
            rating :  1
            RATIONALE: lower case everywhere.
            ## Output for Text 2 - Rating: 5
            Rationale: Rating on the header line.
            """),
        2,
        [1, 5],
        ["lower case everywhere.", "Rating on the header line."],
        [],
    ),
    "bare_text_headers": (
        _d("""
            Text 1:
            Rating: 2
            Rationale: Meh.

            **Text 2**
            Rating: 5
            Rationale: Great; better than Text 1: it is correct.
            """),
        2,
        [2, 5],
        ["Meh.", "Great; better than Text 1: it is correct."],
        [],
    ),
    "rating_on_next_line_and_rationale_first": (
        _d("""
            #### Output for Text 1
            **Rating:**
            3
            **Rationale:** Value on its own line.

            #### Output for Text 2
            Rationale: Rationale comes first here.
            Rating: 1
            """),
        2,
        [3, 1],
        ["Value on its own line.", "Rationale comes first here."],
        [],
    ),
    "wrapped_in_code_fence_with_separators": (
        _d("""
            ```
            #### Output for Text 1
            Rating: 4
            Rationale: Good.

            ---

            #### Output for Text 2
            Rating: 2
            Rationale: Bad.
            ```
            """),
        2,
        [4, 2],
        ["Good.", "Bad."],
        [],
    ),
    "numbered_list_headers_no_rationale_label": (
        _d("""
            1. **Output for Text 1**
               - Rating: 2
               The answer is wrong.

            2. **Output for Text 2**
               - Rating: 4
            """),
        2,
        [2, 4],
        ["The answer is wrong.", None],
        [],
    ),
    "json_plain": (
        '{"ratings": [{"text": 1, "rating": 5, "rationale": "A"}, '
        '{"text": 2, "rating": 1, "rationale": "B"}]}',
        2,
        [5, 1],
        ["A", "B"],
        [],
    ),
    "json_in_fence_with_prose": (
        _d("""
            Here are my ratings:

            ```json
            {"ratings": [
              {"text": 1, "rating": 3, "rationale": "ok"},
              {"text": 2, "rating": 4, "rationale": "good"}
            ]}
            ```
            Let me know if you need more!
            """),
        2,
        [3, 4],
        ["ok", "good"],
        [],
    ),
    "json_with_prose_no_fence": (
        'My answer: {"ratings": [{"text": 1, "rating": "4/5", "rationale": "x {y}"}]} Done.',
        1,
        [4],
        ["x {y}"],
        [],
    ),
    "json_items_out_of_order": (
        json.dumps(
            {
                "ratings": [
                    {"text": 3, "rating": 1, "rationale": "three"},
                    {"text": 1, "rating": 5, "rationale": "one"},
                    {"text": 2, "rating": 3, "rationale": "two"},
                ]
            }
        ),
        3,
        [5, 3, 1],
        ["one", "two", "three"],
        [],
    ),
    "json_missing_duplicate_out_of_range_bad": (
        json.dumps(
            {
                "ratings": [
                    {"text": 1, "rating": 4, "rationale": "first"},
                    {"text": 1, "rating": 2, "rationale": "again"},
                    {"text": 9, "rating": 5, "rationale": "nope"},
                    {"rating": 5, "rationale": "no index"},
                    {"text": 3, "rating": "N/A", "rationale": "cannot"},
                    {"text": 4, "rating": 4.0, "rationale": "float"},
                ]
            }
        ),
        4,
        [4, None, None, 4],
        ["first", None, "cannot", "float"],
        [
            "Text 1 rated twice; kept the first",
            "rates Text 9, outside 1-4; ignored",
            "JSON item 4 has no usable text number",
            "Text 2 missing",
            "Text 3: rating 'N/A' unreadable",
        ],
    ),
    "json_truncated": (
        '{"ratings": [{"text": 2, "rating": 4, "rationale": "two, with a } brace"}, '
        '{"text": 1, "rating": 3, "rationale": "one is cut off mid-wo',
        3,
        [3, 4, None],
        ["one is cut off mid-wo", "two, with a } brace", None],
        [
            "JSON output truncated",
            "Text 1: rationale cut off",
            "Text 3 missing",
        ],
    ),
    "json_truncated_before_rating": (
        '```json\n{"ratings": [{"text": 1, "rating": 5, "rationale": "fine"}, {"text": 2, "rat',
        2,
        [5, None],
        ["fine", None],
        ["JSON output truncated", "Text 2 missing"],
    ),
    "json_keyed_by_text": (
        '{"Text 2": {"rating": 1, "rationale": "b"}, "Text 1": {"rating": 2, "rationale": "a"}}',
        2,
        [2, 1],
        ["a", "b"],
        [],
    ),
    "json_empty_list": (
        '{"ratings": []}',
        2,
        [None, None],
        [None, None],
        ["Text 1 missing", "Text 2 missing"],
    ),
    "empty": ("", 3, [None, None, None], [None, None, None], ["empty judge output"]),
    "whitespace_only": ("  \n\n ", 1, [None], [None], ["empty judge output"]),
    "garbage": (
        "I think the second answer is the best one.",
        2,
        [None, None],
        [None, None],
        ["no 'Output for Text N' section or JSON ratings found"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_corpus(name: str) -> None:
    raw, n, ratings, rationales, problems = CASES[name]
    parsed = parse_judge_output(raw, n)
    assert isinstance(parsed, ParsedJudgment)
    assert parsed.ratings == ratings, parsed.problems
    assert len(parsed.rationales) == n
    for got, want in zip(parsed.rationales, rationales, strict=True):
        if want is not ...:
            assert got == want
    for fragment in problems:
        assert any(fragment in p for p in parsed.problems), (fragment, parsed.problems)
    if not problems:
        assert parsed.problems == []
    assert parsed.complete == all(r is not None for r in ratings)


def test_public_parser_failure_modes_do_not_shift_ratings() -> None:
    """A preamble + blank line inside a rationale + a missing block: every rating stays put."""
    raw = _d("""
        Let me evaluate each text carefully.

        #### Output for Text 1
        Rating: 2
        Rationale: Wrong.

        Also too long.

        #### Output for Text 3
        Rating: 5
        Rationale: Right.
        """)
    parsed = parse_judge_output(raw, 3)
    assert parsed.ratings == [2, None, 5]
    assert parsed.rationales == ["Wrong.\n\nAlso too long.", None, "Right."]
    assert parsed.problems == ["Text 2 missing"]
    assert not parsed.complete


def test_format_recorded() -> None:
    assert parse_judge_output(CASES["clean"][0], 2).format == "text"
    assert parse_judge_output(CASES["json_plain"][0], 2).format == "json"
    assert parse_judge_output(CASES["json_truncated"][0], 3).format == "json-partial"
    assert parse_judge_output("", 2).format == "none"


def test_structured_round_trip() -> None:
    """A JSON answer that follows the schema parses back exactly."""
    answer = {
        "ratings": [
            {"text": i, "rating": (i % 5) + 1, "rationale": f"because {i}"} for i in range(1, 8)
        ]
    }
    parsed = parse_judge_output(json.dumps(answer), 7)
    assert parsed.complete and parsed.problems == []
    assert parsed.ratings == [2, 3, 4, 5, 1, 2, 3]
    assert parsed.rationales == [f"because {i}" for i in range(1, 8)]


def test_n_texts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        parse_judge_output("x", 0)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_each_aspect_renders(aspect: str, structured: bool) -> None:
    # CapyUI's paraphrase (the named alternative; the default, the original rubric from
    # distilabel, is compared with distilabel's own formatting in test_judge_original.py)
    messages = render_judge_messages(
        aspect, CONVERSATION, TEXTS, structured=structured, template="capyui"
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert (
        messages[0]["content"] == "Your role is to evaluate text quality based on given criteria."
    )
    user = messages[1]["content"]
    # the rubric: a 1-5 scale
    assert "**Scoring**" in user and "1. **" in user and "5. **" in user
    # the whole conversation, role-tagged, in order, verbatim (Jinja syntax in data not evaluated)
    annotation = user.split("## Annotation", 1)[1]
    pos = 0
    for m in CONVERSATION:
        tagged = f"[{m['role']}]: {m['content']}"
        pos = annotation.index(tagged, pos) + len(tagged)
    assert "candidate answers to the final user turn" in annotation
    # every text tagged <text i>, in order
    pos = annotation.index("Texts:")
    for i, text in enumerate(TEXTS, start=1):
        tagged = f"<text {i}> {text}"
        pos = annotation.index(tagged, pos) + len(tagged)
    assert annotation.rstrip().endswith("### Output")
    fmt = user.split("## Annotation", 1)[0]
    for i in range(1, len(TEXTS) + 1):
        assert f"<text {i}> [Text {i}]" in fmt
        if structured:
            assert f'{{"text": {i}, "rating": [rating for text {i}]' in fmt
        else:
            assert f"#### Output for Text {i}\nRating: [" in fmt
    assert ("#### Output for Text" in user) is not structured
    assert ('{"ratings": [' in user) is structured


def test_aspects_have_distinct_rubrics() -> None:
    rubrics = {
        a: render_judge_messages(a, CONVERSATION, TEXTS, structured=False, template="capyui")[1][
            "content"
        ].split("## Format", 1)[0]
        for a in ASPECTS
    }
    assert len(set(rubrics.values())) == len(ASPECTS)
    assert rubrics["overall-rating"].startswith("# General Text Quality Assessment")
    assert "1. **Low Quality**" in rubrics["overall-rating"]
    assert "5. **Excellent**" in rubrics["overall-rating"]


def test_max_rationale_chars_in_prompt() -> None:
    for structured in (False, True):
        user = render_judge_messages(
            "helpfulness",
            CONVERSATION,
            TEXTS,
            structured=structured,
            max_rationale_chars=123,
            template="capyui",
        )[1]["content"]
        assert "at most 123 characters" in user


def test_prompt_is_parseable_by_its_own_parser_as_placeholder() -> None:
    """The format example in the prompt has placeholders only; it must never parse as ratings."""
    user = render_judge_messages("honesty", CONVERSATION, TEXTS, structured=False)[1]["content"]
    parsed = parse_judge_output(user.split("---", 1)[0], len(TEXTS))
    assert parsed.ratings == [None] * len(TEXTS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"aspect": "style"}, "unknown judge aspect"),
        ({"conversation": []}, "conversation is empty"),
        (
            {"conversation": CONVERSATION + [{"role": "assistant", "content": "x"}]},
            "must end with the user turn",
        ),
        ({"conversation": [{"role": "bot", "content": "x"}]}, "not a {role, content}"),
        ({"texts": []}, "no texts"),
        ({"texts": ["a", None]}, "text 2 is not a string"),
    ],
)
def test_render_rejects_bad_input(kwargs: dict, message: str) -> None:
    args = {"aspect": "overall-rating", "conversation": CONVERSATION, "texts": TEXTS} | kwargs
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        render_judge_messages(**args, structured=False)


@pytest.mark.parametrize("missing", ["conversation", "texts", "structured", "max_rationale_chars"])
def test_strict_undefined_catches_missing_vars(missing: str) -> None:
    env = template_environment()
    assert env.undefined is jinja2.StrictUndefined
    context = {
        "conversation": CONVERSATION,
        "texts": TEXTS,
        "structured": missing == "max_rationale_chars",  # reach the JSON section's variable
        "max_rationale_chars": None,
    }
    del context[missing]
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("overall-rating.jinja").render(context)


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_schema_shape(n: int) -> None:
    schema = judge_json_schema(n, max_rationale_chars=200)
    assert schema["required"] == ["ratings"] and schema["additionalProperties"] is False
    arr = schema["properties"]["ratings"]
    assert arr["minItems"] == arr["maxItems"] == n
    assert len(arr["prefixItems"]) == n
    for i, item in enumerate(arr["prefixItems"], start=1):
        assert item["properties"]["text"]["const"] == i
        assert item["properties"]["rating"]["enum"] == [1, 2, 3, 4, 5]
        assert item["properties"]["rationale"]["maxLength"] == 200
        assert item["required"] == ["text", "rating", "rationale"]
        assert item["additionalProperties"] is False
    json.dumps(schema)  # serialisable


def test_schema_validates_answers() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = judge_json_schema(2, max_rationale_chars=10)
    good = {
        "ratings": [
            {"text": 1, "rating": 5, "rationale": "ok"},
            {"text": 2, "rating": 1, "rationale": "bad"},
        ]
    }
    jsonschema.validate(good, schema)
    bad_answers = [
        {"ratings": good["ratings"][:1]},  # missing item
        {"ratings": good["ratings"][::-1]},  # wrong order / numbering
        {"ratings": [good["ratings"][0], {"text": 2, "rating": 6, "rationale": "x"}]},
        {"ratings": [good["ratings"][0], {"text": 2, "rating": 3, "rationale": "x" * 11}]},
        {"ratings": [good["ratings"][0], {"text": 2, "rating": 3}]},
        {"ratings": good["ratings"], "extra": 1},
    ]
    for bad in bad_answers:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_schema_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        judge_json_schema(0)
    with pytest.raises(ValueError):
        judge_json_schema(2, max_rationale_chars=0)


@pytest.mark.parametrize("n", [1, 4, 16])
def test_schema_converts_to_llama_cpp_grammar(n: int) -> None:
    try:
        from llama_cpp.llama_grammar import LlamaGrammar
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed here"
        pytest.skip(f"llama_cpp not importable: {exc}")
    grammar = LlamaGrammar.from_json_schema(json.dumps(judge_json_schema(n)), verbose=False)
    assert grammar is not None
