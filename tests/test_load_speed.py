"""Issue 13, load speed: the fast paths of a bulk load keep every stored row and every counted
rejection exactly as the reference path made them (orjson before the lenient json reader, the
per-format fast normaliser before ``normalise_row``, INSERT OR IGNORE with rowid ranges instead
of a per-row dedup query, 16 KiB pages for a new workspace)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import sources
from pipelines.sources import Rejected, _FastNormaliser, load_source, normalise_row
from pipelines.store import Store

TEXTS = st.one_of(
    st.sampled_from(["", " ", "\n\t", "hi", " spaced ", "é ü", "\u3000", "a\x00b"]),
    st.text(max_size=12),
    st.none(),
    st.integers(-3, 3),
    st.lists(st.just("x"), max_size=2),
)
ROLES = st.one_of(
    st.sampled_from(
        ["user", "assistant", "system", "human", "gpt", " GPT ", "User", "bing", "tool", ""]
    ),
    st.none(),
    st.integers(0, 2),
)


def _capybara_rows() -> st.SearchStrategy[Any]:
    pair = st.one_of(
        st.fixed_dictionaries({"input": TEXTS, "output": TEXTS}),
        st.fixed_dictionaries({"input": TEXTS}),
        st.fixed_dictionaries({"output": TEXTS}),
        st.just("not a dict"),
    )
    value = st.one_of(st.lists(pair, max_size=4), st.just('[{"input": "json text"}]'), st.none())
    return st.fixed_dictionaries({"conversation": value}, optional={"id": st.integers(0, 9)})


def _dict_rows(col: str, role_key: str, content_key: str) -> st.SearchStrategy[Any]:
    item = st.one_of(
        st.fixed_dictionaries({role_key: ROLES, content_key: TEXTS}),
        st.fixed_dictionaries({content_key: TEXTS}),
        st.just(3),
    )
    # mostly well-formed alternations so the fast path is exercised, plus arbitrary ones
    good = st.integers(1, 5).map(
        lambda n: [
            {role_key: ("human" if i % 2 == 0 else "gpt"), content_key: f"m{i}"} for i in range(n)
        ]
    )
    value = st.one_of(good, st.lists(item, max_size=5), st.just([]))
    return st.fixed_dictionaries({col: value}, optional={"source": st.text(max_size=3)})


def _reference(row: Any, fmt: str) -> Any:
    try:
        conv = normalise_row(row, fmt)
    except Rejected as rej:
        return ("rejected", rej.reason, rej.detail)
    return (conv.conversation_id, conv.messages, conv.original_response)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        _capybara_rows().map(lambda r: ("capybara", r)),
        _dict_rows("conversations", "from", "value").map(lambda r: ("sharegpt", r)),
        _dict_rows("messages", "role", "content").map(lambda r: ("messages", r)),
    )
)
def test_fast_normaliser_agrees_with_normalise_row(case: tuple[str, Any]) -> None:
    fmt, row = case
    fast = _FastNormaliser(fmt, None)(row)
    want = _reference(row, fmt)
    if fast is not None:  # it only answers when normalise_row keeps the row, identically
        assert want == (fast.conversation_id, fast.messages, fast.original_response)
        assert _FastNormaliser(fmt, None).metadata(row) == sources._metadata(row, None)


def test_fast_normaliser_honours_column_mapping() -> None:
    row = {"chat": [{"q": "hello", "a": "hi"}, {"q": "more", "a": "sure"}], "tag": "x"}
    columns = {"conversation": "chat", "input": "q", "output": "a"}
    fast = _FastNormaliser("capybara", columns)(row)
    ref = normalise_row(row, "capybara", columns)
    assert fast is not None and fast == ref
    assert _FastNormaliser("capybara", columns).metadata(row) == {"tag": "x"}


def test_jsonl_rows_orjson_refuses_are_read_as_before(tmp_path: Path) -> None:
    """orjson reads strict JSON only: control characters in strings, NaN, numbers past 64 bits
    and lone surrogate escapes fall back to the lenient reader, which keeps them as before."""
    conv = [{"input": "q", "output": "a"}]
    lines = [
        json.dumps({"conversation": [{"input": "tab\tinside", "output": "x"}]}).replace(
            "\\t", "\t"
        ),
        json.dumps({"conversation": conv, "score": float("nan")}),
        json.dumps({"conversation": [{"input": "big", "output": "y"}], "n": 2**70}),
        json.dumps({"conversation": [{"input": "plain", "output": "z"}], "f": 1.5e300}),
        '{"conversation": [{"input": "broken"',
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    result = load_source(str(path))
    assert result.rejected == {"malformed_json": 1}
    got = {c.messages[0]["content"]: c.metadata for c in result.conversations}
    assert set(got) == {"tab\tinside", "q", "big", "plain"}
    assert got["q"]["score"] != got["q"]["score"]  # NaN kept, as json reads it
    assert got["big"]["n"] == 2**70 and got["plain"]["f"] == 1.5e300
    # the streamed load into the store keeps the same rows
    store = Store(tmp_path / "ws")
    sink = store.conversation_sink()
    streamed = load_source(str(path), sink=sink)
    assert streamed.summary() == result.summary() and sink.added == 4


def _rows(path: Path, n: int, start: int = 0) -> None:
    with path.open("w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"conversation": [{"input": f"q{i}", "output": f"a{i}"}]}) + "\n")


def test_sink_tells_duplicates_of_this_load_from_rows_stored_before(tmp_path: Path) -> None:
    store = Store(tmp_path / "ws")
    first = tmp_path / "first.jsonl"
    _rows(first, 10)  # q0..q9 stored by an earlier load
    load_source(str(first), sink=store.conversation_sink())
    second = tmp_path / "second.jsonl"
    with second.open("w") as f:  # q5..q14, then q5..q14 again (every row a repeat)
        for _ in range(2):
            for i in range(5, 15):
                f.write(json.dumps({"conversation": [{"input": f"q{i}", "output": f"a{i}"}]}))
                f.write("\n")
    sink = store.conversation_sink()
    result = load_source(str(second), sink=sink, chunk_size=3)
    assert (sink.added, sink.existing, result.duplicates) == (5, 5, 10)
    assert result.loaded == 10 and store.count_conversations() == 15
    assert result.summary() == load_source(str(second)).summary()


def test_rows_another_writer_adds_between_chunks_count_as_stored_before(tmp_path: Path) -> None:
    """Each chunk is one transaction: a row another process commits between two chunks is
    'already in the store' when this load meets it, never a duplicate of this load."""
    store = Store(tmp_path / "ws")
    other = Store(tmp_path / "ws")
    path = tmp_path / "rows.jsonl"
    _rows(path, 6)
    sink = store.conversation_sink()
    calls = 0

    def interleaved(chunk: list[Any]) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the first chunk (q0, q1): another writer stores q0..q4
            load_source(str(path), sink=other.conversation_sink(), limit=5)
        return sink(chunk)

    result = load_source(str(path), sink=interleaved, chunk_size=2)
    # q0, q1 and q5 are this load's; q2, q3, q4 (rowids after this load began) were stored by
    # the other writer: none of them is a duplicate of this load
    assert (sink.added, sink.existing, result.duplicates) == (3, 3, 0)
    assert store.count_conversations() == 6


def test_new_workspace_has_16k_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    store = Store(tmp_path / "new")
    assert store.query("PRAGMA page_size")[0][0] == 16384
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / "capyui.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    again = Store(old)
    assert again.query("PRAGMA page_size")[0][0] == 4096
    path = tmp_path / "rows.jsonl"
    _rows(path, 20)
    sink = again.conversation_sink()
    load_source(str(path), sink=sink)
    assert sink.added == again.count_conversations() == 20


def test_stored_rows_are_those_of_the_reference_path(tmp_path: Path) -> None:
    """The streamed load stores what ``add_conversations`` stores for ``normalise_row``'s output
    (messages and metadata JSON, original response, turns)."""
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"conversations": [{"from": "human", "value": "héllo"}, {"from": "gpt", "value": "hi"}]},
        {
            "conversations": [
                {"from": "system", "value": "be nice"},
                {"from": "human", "value": "q"},
            ]
        },
        {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
        {"conversations": [{"from": "human", "value": "x\u2028y"}], "id": 7, "nested": {"a": 1}},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    fast = Store(tmp_path / "fast")
    result = load_source(str(path), sink=fast.conversation_sink())
    assert result.rejected == {"non_alternating_roles": 1}
    ref = Store(tmp_path / "ref")
    reference = []
    for i, row in enumerate(rows, 1):
        try:
            conv = normalise_row(row, "sharegpt")
        except Rejected:
            continue
        conv.source = path.name
        conv.metadata = {**sources._metadata(row, None), "source_row": f"line {i}"}
        reference.append(conv)
    ref.add_conversations(reference)
    cols = "conversation_id, source, messages, original_response, metadata, num_turns"
    got = [tuple(r) for r in fast.query(f"SELECT {cols} FROM conversations ORDER BY rowid")]
    want = [tuple(r) for r in ref.query(f"SELECT {cols} FROM conversations ORDER BY rowid")]
    assert [json.loads(g[2]) for g in got] == [json.loads(w[2]) for w in want]
    assert [(g[0], g[1], g[3], json.loads(g[4]), g[5]) for g in got] == [
        (w[0], w[1], w[3], json.loads(w[4]), w[5]) for w in want
    ]


@pytest.mark.parametrize("chunk", [1, 7, 2000])
def test_chunked_sink_commits_one_transaction_per_chunk(tmp_path: Path, chunk: int) -> None:
    """No per-row or per-id dedup query: a chunk without repeats is one INSERT statement."""
    store = Store(tmp_path / "ws")
    path = tmp_path / "rows.jsonl"
    _rows(path, 50)
    sink = store.conversation_sink()
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    load_source(str(path), sink=sink, chunk_size=chunk)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 50  # executemany traces each row's step of the one statement
    assert not [s for s in statements if "load_seen" in s or " IN (" in s]
    assert sink.chunks == -(-50 // chunk)


def test_store_load_commits_large_chunks_and_checkpoints_rarely(tmp_path: Path) -> None:
    """Issue 13 (load time grew faster than N): every commit rewrites the id index pages its
    random ids dirtied, and the default 1,000-page WAL was checkpointed after every commit.
    A streamed load now commits LOAD_CHUNK_ROWS rows at a time and the loading connection
    checkpoints every LOAD_WAL_PAGES pages; each chunk is still committed as it is made."""
    from pipelines.sources import LOAD_CHUNK_ROWS
    from pipelines.store import LOAD_WAL_PAGES

    n = 2 * LOAD_CHUNK_ROWS + 5
    path = tmp_path / "rows.jsonl"
    _rows(path, n)
    store = Store(tmp_path / "ws")
    sink = store.conversation_sink()
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    seen_by_another: list[int] = []
    interval: list[int] = []

    class Watched:
        def __call__(self, chunk: list[Any]) -> int:
            dups = sink(chunk)
            # another connection sees each chunk as soon as the sink returns (committed)
            seen_by_another.append(Store(tmp_path / "ws").count_conversations())
            interval.append(store.query("PRAGMA wal_autocheckpoint")[0][0])
            return dups

        def finish(self) -> None:
            sink.finish()

    result = load_source(str(path), sink=Watched())
    assert result.loaded == sink.added == n and sink.chunks == 3
    assert seen_by_another == [LOAD_CHUNK_ROWS, 2 * LOAD_CHUNK_ROWS, n]
    assert len([s for s in statements if s.strip().upper() == "COMMIT"]) == 3
    assert interval == [LOAD_WAL_PAGES] * 3 and LOAD_WAL_PAGES > 1000
    # the load ends with SQLite's interval back and its WAL checkpointed into the database
    assert store.query("PRAGMA wal_autocheckpoint")[0][0] == 1000
    pages = store.query("PRAGMA page_count")[0][0] * store.query("PRAGMA page_size")[0][0]
    assert store.path.stat().st_size == pages  # every page is in the file, not only the WAL
