"""Load conversations from local files or the Hugging Face Hub and normalise them.

Every source ends up as a list of :class:`pipelines.types.Conversation`: OpenAI-style messages
that end with the last user turn, plus the dataset's own answer to it (``original_response``).

Supported inputs (the README's "Sources" section shows each shape):

* files: ``.jsonl``, ``.json`` (an array, ``{"data": [...]}``-style objects, or JSON Lines saved
  as ``.json``), ``.parquet``, ``.csv`` (a column holding the conversation as JSON text);
* a Hub dataset id, loaded with ``datasets.load_dataset(id, split=split)`` when reachable or
  cached (also a local directory that ``datasets`` understands).

Row formats: Capybara (``conversation: [{input, output}]``), OpenAI/TRL (``messages:
[{role, content}]``, also under ``conversations``) and ShareGPT (``conversations:
[{from, value}]``). A row that cannot be normalised is counted under a reason (``REASONS``)
with a few examples; it never stops the valid rows. Input that cannot be used at all (missing,
empty, not UTF-8, not JSON, unknown format, Hub unreachable) raises :class:`SourceError` with a
one-line message. A JSON array file that is cut off part-way is streamed with
``json.JSONDecoder.raw_decode`` and every complete record before the cut is loaded.
"""

from __future__ import annotations

import codecs
import collections
import csv
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pipelines.types import Conversation, Message

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - installed with gradio, pinned in requirements.txt
    _orjson = None  # type: ignore[assignment]

FORMATS = ("capybara", "messages", "sharegpt")
FORMAT_ALIASES = {
    "capybara": "capybara",
    "messages": "messages",
    "openai": "messages",
    "trl": "messages",
    "chatml": "messages",
    "sharegpt": "sharegpt",
}
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")

# Every reason a row can be rejected for.
REASONS = (
    "malformed_json",  # a JSON Lines line (or CSV cell) that is not valid JSON
    "invalid_utf8",  # a JSON Lines line with bytes that are not UTF-8
    "malformed_row",  # not the expected shape at all (not an object, missing column, ...)
    "empty_conversation",
    "no_user_turn",
    "empty_message",  # blank (whitespace-only) content
    "non_alternating_roles",
    "unknown_role",
    "content_not_text",  # content is not a string (list, dict, number, null)
)

# Roles seen in real ShareGPT / OpenAI / TRL data, lower-cased.
ROLE_MAP = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
}

MAX_EXAMPLES = 3
_EXAMPLE_CHARS = 160
_CHUNK_BYTES = 1 << 22  # 4 MiB per read when streaming JSON
# conversations per sink chunk (one transaction each): each commit rewrites the id index's
# dirtied pages, so fewer, larger chunks write far less (issue 13: at 1M rows, 2,000 -> 10,000
# with store.LOAD_WAL_PAGES took the commits from 21.8 s to 7.8 s, 13.1 s with that alone);
# the chunk is what the load holds in memory (~45 MB more than 2,000 rows); up to 100k rows
# the load is ~10% slower than with 2,000 (README, Scale: third round)
LOAD_CHUNK_ROWS = 10000
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class SourceError(Exception):
    """Input that cannot be used at all. The message is one human-readable line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class Rejected(ValueError):
    """A row that cannot be normalised: ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class LoadResult:
    conversations: list[Conversation]
    format: str
    total_rows: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    duplicates: int = 0
    truncated: str | None = None
    loaded: int = 0  # conversations kept (held in ``conversations`` unless streamed to a sink)

    def reject(self, reason: str, example: str) -> None:
        self.rejected[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            if len(example) > _EXAMPLE_CHARS:
                example = example[: _EXAMPLE_CHARS - 1] + "…"
            shown.append(example)

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "total_rows": self.total_rows,
            "loaded": self.loaded,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected.most_common()),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "truncated": self.truncated,
        }


# --------------------------------------------------------------------------------------------
# Row normalisation
# --------------------------------------------------------------------------------------------
def _cols(columns: dict[str, str] | None) -> dict[str, str]:
    return dict(columns or {})


def _canonical_format(format: str) -> str:
    fmt = FORMAT_ALIASES.get(str(format).strip().lower())
    if fmt is None:
        raise SourceError(
            f"unknown format {format!r}: use auto, capybara, messages (OpenAI/TRL) or sharegpt"
        )
    return fmt


def _maybe_json(value: Any) -> Any:
    """A conversation column stored as JSON text (CSV, some parquet files) is parsed."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("[", "{"):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise Rejected(
                    "malformed_json", f"conversation column is not JSON text: {exc}"
                ) from None
        if not text:
            return []
    return value


def _shape(value: Any, cols: dict[str, str]) -> str | None:
    """The format a conversation value looks like, judged by the keys of its messages."""
    if not isinstance(value, list):
        return None
    for item in value[:8]:
        if not isinstance(item, dict):
            continue
        if cols.get("input", "input") in item or cols.get("output", "output") in item:
            return "capybara"
        if cols.get("from", "from") in item or cols.get("value", "value") in item:
            return "sharegpt"
        if cols.get("role", "role") in item or cols.get("content", "content") in item:
            return "messages"
    return None


_LOGICAL = (("conversation", "capybara"), ("messages", "messages"), ("conversations", "sharegpt"))


def _detect(row: Any, columns: dict[str, str] | None) -> tuple[str | None, bool]:
    """``(format, decisive)``; decisive when the messages' keys settle it."""
    if not isinstance(row, dict):
        return None, False
    cols = _cols(columns)
    logical = sorted(_LOGICAL, key=lambda lf: lf[0] not in cols)  # mapped names first
    for name, default in logical:
        col = cols.get(name, name)
        if col in row:
            try:
                value = _maybe_json(row[col])
            except Rejected:
                return default, False
            shape = _shape(value, cols)
            return (shape, True) if shape else (default, False)
    return None, False


def detect_format(row: dict, columns: dict[str, str] | None = None) -> str:
    """``capybara``, ``messages`` or ``sharegpt`` for one row.

    Raises :class:`Rejected` (``malformed_row``) when the row has no conversation column.
    """
    fmt, _ = _detect(row, columns)
    if fmt is None:
        raise Rejected("malformed_row", _missing_column_detail(row, columns))
    return fmt


def _missing_column_detail(row: Any, columns: dict[str, str] | None) -> str:
    if not isinstance(row, dict):
        return f"expected an object, got {_type_name(row)}"
    cols = _cols(columns)
    wanted = ", ".join(repr(cols.get(n, n)) for n, _ in _LOGICAL)
    have = ", ".join(repr(k) for k in list(row)[:8]) or "none"
    return f"no conversation column ({wanted}); columns: {have}"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _conversation_columns(fmt: str, cols: dict[str, str]) -> list[str]:
    """The columns that may hold a row's conversation, in the order they are tried: the
    format's own names (as ``columns`` maps them), then any other mapped logical column."""
    names = {
        "capybara": ("conversation",),
        "messages": ("messages", "conversations"),
        "sharegpt": ("conversations",),
    }[fmt]
    mapped = [c for n, c in cols.items() if n in dict(_LOGICAL)]
    return list(dict.fromkeys([cols.get(n, n) for n in names] + mapped))


def _conversation_value(row: Any, fmt: str, cols: dict[str, str]) -> tuple[str, Any]:
    if not isinstance(row, dict):
        raise Rejected("malformed_row", f"expected an object, got {_type_name(row)}")
    candidates = _conversation_columns(fmt, cols)
    for col in candidates:
        if col in row:
            return col, _maybe_json(row[col])
    wanted = " or ".join(repr(c) for c in candidates)
    have = ", ".join(repr(k) for k in list(row)[:8]) or "none"
    raise Rejected("malformed_row", f"missing column {wanted} ({fmt} format); columns: {have}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise Rejected("content_not_text", f"{where} content is {_type_name(value)}, not text")
    if not value.strip():
        raise Rejected("empty_message", f"{where} is blank")
    return value


def _role(raw: Any, where: str) -> str:
    role = ROLE_MAP.get(raw.strip().lower()) if isinstance(raw, str) else None
    if role is None:
        shown = repr(raw) if isinstance(raw, str) else _type_name(raw)
        raise Rejected("unknown_role", f"{where} has role {shown[:40]}")
    return role


def _messages_from_dicts(value: list[Any], role_key: str, content_key: str) -> list[Message]:
    out: list[Message] = []
    for i, item in enumerate(value, 1):
        where = f"message {i}"
        if not isinstance(item, dict):
            raise Rejected("malformed_row", f"{where} is {_type_name(item)}, not an object")
        if role_key not in item:
            raise Rejected("unknown_role", f"{where} has no {role_key!r}")
        role = _role(item[role_key], where)
        content = _text(item.get(content_key), f"{where} ({role})")
        out.append({"role": role, "content": content})
    return out


def _messages_from_capybara(value: list[Any], cols: dict[str, str]) -> tuple[list[Message], bool]:
    """Messages and whether the last pair's output was empty (no original response)."""
    in_key, out_key = cols.get("input", "input"), cols.get("output", "output")
    out: list[Message] = []
    last_empty = False
    for i, pair in enumerate(value, 1):
        where = f"turn {i}"
        if not isinstance(pair, dict):
            raise Rejected("malformed_row", f"{where} is {_type_name(pair)}, not an object")
        if in_key not in pair:
            raise Rejected("malformed_row", f"{where} has no {in_key!r}")
        out.append({"role": "user", "content": _text(pair[in_key], f"{where} input")})
        answer = pair.get(out_key)
        is_last = i == len(value)
        if is_last and (answer is None or (isinstance(answer, str) and not answer.strip())):
            last_empty = True
            continue
        if answer is None:
            raise Rejected("empty_message", f"{where} has no output")
        out.append({"role": "assistant", "content": _text(answer, f"{where} output")})
    return out, last_empty


def _check_structure(messages: list[Message]) -> None:
    if not any(m["role"] == "user" for m in messages):
        raise Rejected("no_user_turn", "no user message")
    previous = None
    for i, m in enumerate(messages, 1):
        role = m["role"]
        if role == "system":
            if i != 1:
                raise Rejected("non_alternating_roles", f"system message at position {i}")
        elif role == previous:
            raise Rejected("non_alternating_roles", f"two {role} messages in a row ({i - 1}, {i})")
        previous = role


def normalise_row(row: dict, format: str, columns: dict[str, str] | None = None) -> Conversation:
    """One row in ``format`` as a Conversation (source and metadata left empty).

    ``format`` may be ``"auto"`` to detect it from this row alone. Raises :class:`Rejected`
    with the reason when the row cannot be normalised, SourceError for an unknown format.
    """
    if format in (None, "", "auto"):
        format = detect_format(row, columns)
    fmt = _canonical_format(format)
    cols = _cols(columns)
    col, value = _conversation_value(row, fmt, cols)
    if value is None or (isinstance(value, list) and not value):
        raise Rejected("empty_conversation", f"column {col!r} is empty")
    if not isinstance(value, list):
        raise Rejected("malformed_row", f"column {col!r} is {_type_name(value)}, not a list")
    original: str | None = None
    if fmt == "capybara":
        messages, _ = _messages_from_capybara(value, cols)
    elif fmt == "sharegpt":
        messages = _messages_from_dicts(value, cols.get("from", "from"), cols.get("value", "value"))
    else:
        messages = _messages_from_dicts(
            value, cols.get("role", "role"), cols.get("content", "content")
        )
    _check_structure(messages)
    if messages[-1]["role"] == "assistant":
        original = messages.pop()["content"]
    return Conversation(messages=messages, original_response=original)


class _FastNormaliser:
    """The common case of ``normalise_row`` without its per-row set-up (issue 13: a bulk load
    spent most of its Python time there): for one format and column mapping, a row whose
    conversation is a plain list of well-formed messages becomes the same Conversation
    ``normalise_row`` makes. Anything unusual (a missing column, JSON text in a cell, a blank
    or non-text message, an unknown role, roles out of order) returns None and
    ``normalise_row`` decides, so every rejection keeps its reason and detail."""

    def __init__(self, fmt: str, columns: dict[str, str] | None) -> None:
        cols = _cols(columns)
        self.fmt = fmt
        self.candidates = _conversation_columns(fmt, cols)
        if fmt == "capybara":
            self.keys = (cols.get("input", "input"), cols.get("output", "output"))
        elif fmt == "sharegpt":
            self.keys = (cols.get("from", "from"), cols.get("value", "value"))
        else:
            self.keys = (cols.get("role", "role"), cols.get("content", "content"))
        skip = {cols.get(n, n) for n, _ in _LOGICAL} | {n for n, _ in _LOGICAL}
        self.metadata_skip = frozenset(skip)

    def __call__(self, row: Any) -> Conversation | None:
        if type(row) is not dict:
            return None
        for col in self.candidates:
            if col in row:
                value = row[col]
                break
        else:
            return None
        if type(value) is not list or not value:
            return None
        messages = self._capybara(value) if self.fmt == "capybara" else self._dicts(value)
        if messages is None:
            return None
        original = messages.pop()["content"] if messages[-1]["role"] == "assistant" else None
        return Conversation(messages=messages, original_response=original)

    def _capybara(self, value: list[Any]) -> list[Message] | None:
        in_key, out_key = self.keys
        out: list[Message] = []
        last = len(value) - 1
        for i, pair in enumerate(value):
            if type(pair) is not dict:
                return None
            question = pair.get(in_key)
            if type(question) is not str or not question or question.isspace():
                return None
            out.append({"role": "user", "content": question})
            answer = pair.get(out_key)
            if type(answer) is not str or not answer or answer.isspace():
                if i == last and (answer is None or type(answer) is str):
                    break  # no original response
                return None
            out.append({"role": "assistant", "content": answer})
        return out

    def _dicts(self, value: list[Any]) -> list[Message] | None:
        role_key, content_key = self.keys
        out: list[Message] = []
        previous = None
        users = False
        for i, item in enumerate(value):
            if type(item) is not dict:
                return None
            raw = item.get(role_key)
            role = ROLE_MAP.get(raw.strip().lower()) if type(raw) is str else None
            content = item.get(content_key)
            if role is None or type(content) is not str or not content or content.isspace():
                return None
            if role == "system":
                if i:
                    return None
            elif role == previous:
                return None
            users = users or role == "user"
            previous = role
            out.append({"role": role, "content": content})
        return out if users else None

    def metadata(self, row: dict) -> dict[str, Any]:
        skip = self.metadata_skip
        return {
            k: v
            for k, v in row.items()
            if k not in skip and (v is None or isinstance(v, (str, int, float, bool)))
        }


def _metadata(row: dict, columns: dict[str, str] | None) -> dict[str, Any]:
    """The row's other scalar columns (id, source, category, ...)."""
    cols = _cols(columns)
    skip = {cols.get(n, n) for n, _ in _LOGICAL} | {n for n, _ in _LOGICAL}
    return {
        k: v
        for k, v in row.items()
        if k not in skip and (v is None or isinstance(v, (str, int, float, bool)))
    }


# --------------------------------------------------------------------------------------------
# Readers: each yields (label, row) where row may be a Rejected for unreadable records
# --------------------------------------------------------------------------------------------
class _Utf8Chunks:
    """Strict incremental UTF-8 decoding of a binary file, with byte offsets in errors."""

    def __init__(self, f: BinaryIO, name: str, first: bytes = b"") -> None:
        self.f, self.name = f, name
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.bytes_read = 0
        self.eof = False
        self.cut_in_character = False
        self._pending = first

    def read(self) -> str:
        if self.eof:
            return ""
        data = self._pending or self.f.read(_CHUNK_BYTES)
        self._pending = b""
        if not data:
            self.eof = True
            try:
                return self.decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self.cut_in_character = True  # the file ends inside a multi-byte character
                return ""
        held = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(data)
        except UnicodeDecodeError as exc:
            offset = self.bytes_read - held + exc.start
            bad = (self.decoder.getstate()[0] + data)[exc.start : exc.start + 1]
            raise SourceError(_not_utf8(self.name, bad, offset)) from None
        self.bytes_read += len(data)
        return text


def _not_utf8(name: str, bad: bytes, offset: int) -> str:
    shown = f"0x{bad[0]:02x}" if bad else "a byte"
    return f"{name} is not UTF-8 text (invalid byte {shown} at byte {offset}); save it as UTF-8"


def _open_checked(path: Path) -> tuple[BinaryIO, bytes]:
    """Open a file, refuse empty / UTF-16 files, skip a UTF-8 BOM; returns the first bytes."""
    f = path.open("rb")
    head = f.read(4)
    if not head.strip():
        rest = f.read(1 << 16)
        if not (head + rest).strip():
            f.close()
            raise SourceError(f"{path.name} is empty")
        head += rest
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        f.close()
        raise SourceError(f"{path.name} is UTF-16 encoded; save it as UTF-8")
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    return f, head


_WS = re.compile(r"[ \t\n\r]*")
# Raw control characters inside strings (common in scraped data) are accepted everywhere.
_LENIENT = json.JSONDecoder(strict=False)


_PARTIAL_TOKEN = re.compile(r"(t(r(ue?)?)?|f(a(l(se?)?)?)?|n(u(ll?)?)?|-?[0-9.eE+\-]*)")


def _ends_inside_value(exc: json.JSONDecodeError, buf: str) -> bool:
    """At end of file: did the decoder fail only because the text stops mid-value?"""
    if exc.msg.startswith("Unterminated string"):
        return True
    tail = buf[exc.pos :].rstrip()
    if exc.msg.startswith("Invalid \\uXXXX escape"):
        return len(tail) < 6
    return _PARTIAL_TOKEN.fullmatch(tail) is not None


class _JsonStream:
    """Stream the elements of a top-level JSON array with ``raw_decode``, chunk by chunk.

    A file cut off part-way yields every complete element before the cut and sets
    ``truncated``. Anything else that is not JSON raises SourceError with line and column.
    """

    def __init__(self, path: Path, f: BinaryIO, head: bytes) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.reader = _Utf8Chunks(f, path.name, head)
        self.decoder = _LENIENT
        self.buf = ""
        self.pos = 0  # index into buf
        self.consumed_chars = 0  # chars dropped from the front of buf
        self.consumed_lines = 0
        self.truncated: str | None = None
        self.records = 0

    def _more(self) -> bool:
        """Append the next chunk (dropping what is already parsed); False at end of file."""
        text = self.reader.read()
        while not text and not self.reader.eof:
            text = self.reader.read()
        if not text:
            return False
        self.consumed_chars += self.pos
        self.consumed_lines += self.buf.count("\n", 0, self.pos)
        self.buf = self.buf[self.pos :] + text if self.pos < len(self.buf) else text
        self.pos = 0
        return True

    def _skip_ws(self) -> bool:
        """Skip whitespace; False when the file ends."""
        while True:
            ws = _WS.match(self.buf, self.pos)
            assert ws is not None  # a whitespace run, possibly empty: it always matches
            self.pos = ws.end()
            if self.pos < len(self.buf):
                return True
            if not self._more():
                return False

    def _where(self, pos: int) -> str:
        before = self.buf[:pos]
        line = self.consumed_lines + before.count("\n") + 1
        col = pos - (before.rfind("\n") + 1) + 1
        return f"line {line} column {col}"

    def _malformed(self, pos: int, msg: str) -> SourceError:
        return SourceError(f"{self.path.name} is not valid JSON: {msg} at {self._where(pos)}")

    def _cut(self) -> None:
        cut = f"{self.path.name} is cut off at byte {self.size}"
        if self.records == 0:
            raise SourceError(f"{cut} before its first complete record")
        self.truncated = f"file cut off at byte {self.size} after {self.records} complete records"

    def _decode(self) -> Any | None:
        """The next value at ``pos``; None (and ``truncated`` set) when the file is cut off."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                incomplete = (
                    exc.msg.startswith("Unterminated string")
                    or exc.pos >= len(self.buf.rstrip()) - 8
                )
                if not incomplete:
                    raise self._malformed(exc.pos, exc.msg) from None
                if self._more():
                    continue
                if not _ends_inside_value(exc, self.buf):
                    raise self._malformed(exc.pos, exc.msg) from None
                self._cut()
                return None
            if end == len(self.buf) and not self.reader.eof:
                # A number or literal could continue in the next chunk: re-read with more data.
                if not isinstance(value, (dict, list, str)) and self._more():
                    continue
            self.pos = end
            return value

    def rows(self) -> Iterator[tuple[str, Any]]:
        if not self._skip_ws():
            raise SourceError(f"{self.path.name} is empty")
        if self.buf[self.pos] != "[":
            raise self._malformed(self.pos, "expected a JSON array")
        self.pos += 1
        expect_value = True
        first = True
        while True:
            if not self._skip_ws():
                self._cut()
                return
            ch = self.buf[self.pos]
            if ch == "]" and expect_value and not first:
                raise self._malformed(self.pos, "trailing comma before ']'")
            if ch == "]":
                self.pos += 1
                if self._skip_ws():
                    raise self._malformed(self.pos, "extra data after the closing ']'")
                if self.reader.cut_in_character:
                    self._cut()
                return
            if not expect_value:
                if ch != ",":
                    raise self._malformed(self.pos, "expected ',' or ']'")
                self.pos += 1
                expect_value = True
                continue
            value = self._decode()
            if value is None and self.truncated is not None:
                return
            self.records += 1
            first = False
            expect_value = False
            yield f"row {self.records}", value


def _lines(head: bytes, f: BinaryIO) -> Iterator[bytes]:
    """The file's lines (keeping their ``\\n``), ``head`` being bytes already read from it."""
    first = head + f.readline()
    parts = first.split(b"\n")
    for part in parts[:-1]:
        yield part + b"\n"
    if parts[-1]:
        yield parts[-1]
    yield from f


def _first_line(head: bytes, f: BinaryIO) -> bytes:
    return next(_lines(head, f), b"")


def _jsonl_lines(
    path: Path, f: BinaryIO, head: bytes, result: LoadResult
) -> Iterator[tuple[str, Any]]:
    decoded = 0
    undecodable = 0
    last_label = ""
    last_raw = b""
    for lineno, raw in enumerate(_lines(head, f), 1):
        if not raw.strip():
            continue
        label = f"line {lineno}"
        last_label, last_raw = label, raw
        if _orjson is not None:
            # orjson first (issue 13: a bulk load spent much of its time in json): it accepts
            # strict RFC 8259 JSON in valid UTF-8 only, which the json module reads to the same
            # value; anything else (control characters in strings, NaN, huge numbers, bad
            # bytes) falls through to the lenient reader below, which decides as before
            try:
                row = _orjson.loads(raw)
            except _orjson.JSONDecodeError:
                pass
            else:
                decoded += 1
                yield label, row
                continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            undecodable += 1
            bad = raw[exc.start : exc.start + 1]
            yield (
                label,
                Rejected("invalid_utf8", f"invalid byte 0x{bad[0]:02x} at column {exc.start + 1}"),
            )
            continue
        decoded += 1
        try:
            row = _LENIENT.decode(text)
        except json.JSONDecodeError as exc:
            yield label, Rejected("malformed_json", f"{exc.msg} (column {exc.colno})")
            continue
        except ValueError as exc:  # e.g. numbers too long to convert
            yield label, Rejected("malformed_json", str(exc))
            continue
        yield label, row
    if undecodable and not decoded:
        raise SourceError(
            f"{path.name} is not UTF-8 text (no line could be read); save it as UTF-8"
        )
    if last_raw and not last_raw.endswith(b"\n") and result.rejected.get("malformed_json"):
        try:
            json.loads(last_raw)
        except ValueError:
            result.truncated = f"file cut off: the last line ({last_label}) is incomplete"


def _json_rows(path: Path, result: LoadResult) -> Iterator[tuple[str, Any]]:
    f, head = _open_checked(path)
    with f:
        lead = head.lstrip()[:1]
        if lead == b"[":
            stream = _JsonStream(path, f, head)
            yield from stream.rows()
            result.truncated = stream.truncated
            return
        if lead != b"{":
            shown = lead.decode("latin-1")
            raise SourceError(
                f"{path.name} is not valid JSON: starts with {shown!r}, expected '[' or '{{'"
            )
        # An object: JSON Lines saved as .json, or one object holding the rows.
        first_line = _first_line(head, f)
        try:
            text = first_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(_not_utf8(path.name, first_line[exc.start :], exc.start)) from None
        try:
            json.loads(text)
            one_line_object = True
        except ValueError:
            one_line_object = False
        if one_line_object and f.read(1):
            fh, h = _open_checked(path)
            with fh:
                yield from _jsonl_lines(path, fh, h, result)
            return
        f.seek(0)
        data = f.read()
    yield from _object_rows(path, data)


def _object_rows(path: Path, data: bytes) -> Iterator[tuple[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(_not_utf8(path.name, data[exc.start :], exc.start)) from None
    try:
        obj = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if _detect(obj, None)[0] is not None:
        yield "row 1", obj  # a single conversation
        return
    lists = [(k, v) for k, v in obj.items() if isinstance(v, list)]
    rows = next((v for k, v in lists if k in ("data", "rows", "train", "examples")), None)
    if rows is None:
        rows = next((v for k, v in lists if v and isinstance(v[0], dict)), None)
    if rows is None:
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise SourceError(f"{path.name} holds an object with no list of rows (keys: {keys})")
    for i, row in enumerate(rows, 1):
        yield f"row {i}", row


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    f, _ = _open_checked(path)
    f.close()
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            for i, row in enumerate(reader, 1):
                row.pop(None, None)  # cells beyond the header
                yield f"row {i}", row
    except UnicodeDecodeError as exc:
        raise SourceError(_not_utf8(path.name, exc.object[exc.start :], exc.start)) from None
    except csv.Error as exc:
        raise SourceError(f"{path.name} is not a readable CSV file: {exc}") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a requirement
        raise SourceError("reading parquet needs the pyarrow package") from None
    if path.stat().st_size == 0:
        raise SourceError(f"{path.name} is empty")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError variants
        raise SourceError(f"{path.name} is not a readable parquet file: {exc}") from None
    i = 0
    batches = pf.iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # noqa: BLE001 - a corrupt page part-way through the file
            raise SourceError(f"{path.name}: parquet read failed after row {i}: {exc}") from None
        if batch is None:
            return
        for row in batch.to_pylist():
            i += 1
            yield f"row {i}", row


def _hub_rows(source: str, split: str, limit: int | None = None) -> Iterator[tuple[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise SourceError(
            f"{source!r} is not a local file and the `datasets` package (for Hub datasets) "
            "is not installed"
        ) from None
    ds: Any = None
    if limit:
        # issue 10: a limit reads only that many rows: streamed (nothing else downloaded) where
        # the Hub is reachable, else split slicing of what is cached
        try:
            ds = itertools.islice(
                datasets.load_dataset(source, split=split, streaming=True), int(limit)
            )
        except Exception:  # noqa: BLE001 - offline / no streaming: the sliced split below
            ds = None
    if ds is None:
        try:
            ds = datasets.load_dataset(
                source, split=f"{split}[:{int(limit)}]" if limit and "[" not in split else split
            )
        except Exception as exc:  # noqa: BLE001 - datasets/hub raise many unrelated types
            raise SourceError(_hub_message(source, split, exc)) from None
    for i, row in enumerate(ds, 1):
        yield f"row {i}", row


def _hub_message(source: str, split: str, exc: Exception) -> str:
    name = type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    if "split" in first.lower() and split in first:
        return f"dataset {source!r} has no split {split!r}: {first}"
    if name in ("DatasetNotFoundError", "RepositoryNotFoundError", "FileNotFoundError"):
        return (
            f"dataset {source!r} was not found on the Hugging Face Hub or in the local cache "
            f"(or the Hub could not be reached): {first}"
        )
    return (
        f"could not load {source!r} from the Hugging Face Hub: the Hub could not be reached or "
        f"the dataset was not found ({name}: {first})"
    )


# --------------------------------------------------------------------------------------------
# load_source
# --------------------------------------------------------------------------------------------
def _rows_for(
    source: str, split: str, result: LoadResult, limit: int | None = None, hub: bool = False
) -> tuple[Iterator[tuple[str, Any]], str]:
    if hub:  # a Hub id only: never a local path (issue 10)
        if not _HUB_ID.match(source) or ".." in source or Path(source).exists():
            # (datasets would read a local folder of that name: a Hub id only)
            raise SourceError(f"{source!r} is not a Hub dataset id (owner/name)")
        return _hub_rows(source, split, limit), source
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".jsonl":
            return _jsonl_rows_lead(path, result), path.name
        if suffix == ".json":
            return _json_rows(path, result), path.name
        if suffix == ".csv":
            return _csv_rows(path), path.name
        if suffix == ".parquet":
            return _parquet_rows(path), path.name
        raise SourceError(
            f"{path.name}: unknown file type {suffix or '(none)'!r}; "
            f"use {', '.join(FILE_TYPES)} or a Hub dataset id"
        )
    if path.is_dir():
        return _hub_rows(str(path), split), path.name
    if suffix in FILE_TYPES or source.startswith((".", "/", "~")) or os.sep in source[:1]:
        raise SourceError(f"file not found: {source}")
    if not _HUB_ID.match(source):
        raise SourceError(f"{source!r} is neither an existing file nor a Hub dataset id")
    return _hub_rows(source, split, limit), source


def _jsonl_rows_lead(path: Path, result: LoadResult) -> Iterator[tuple[str, Any]]:
    """JSON Lines; a pretty-printed JSON array saved as .jsonl is read as an array."""
    f, head = _open_checked(path)
    with f:
        if head.lstrip()[:1] == b"[":
            try:
                json.loads(_first_line(head, f))
                array = False  # a one-line array is just a (malformed) row
            except ValueError:
                array = True
            if array:
                yield from _json_rows(path, result)
                return
    f, head = _open_checked(path)
    with f:
        yield from _jsonl_lines(path, f, head, result)


def load_source(
    source: str,
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    split: str = "train",
    limit: int | None = None,
    source_name: str | None = None,
    sink: Callable[[list[Conversation]], int] | None = None,
    chunk_size: int = LOAD_CHUNK_ROWS,
    hub: bool = False,
) -> LoadResult:
    """Load and normalise ``source`` (a local file or a Hub dataset id); see the module doc.

    With ``sink``, rows are streamed in bounded memory: every ``chunk_size`` kept conversations
    (de-duplicated within the chunk) are handed to ``sink`` and dropped; ``sink`` commits them
    and returns how many it found already seen earlier in this load (counted as duplicates),
    so de-duplication across chunks lives where the rows are, not in a growing set here.
    ``result.conversations`` then stays empty and ``result.loaded`` counts what was kept."""
    source = str(source).strip()
    if not source:
        raise SourceError("no source given: pass a file path or a Hub dataset id")
    forced = None if format in (None, "", "auto") else _canonical_format(format)
    if limit is not None and limit < 0:
        raise SourceError(f"limit must be >= 0, got {limit}")
    result = LoadResult(conversations=[], format=forced or "")
    rows, default_name = _rows_for(source, split, result, limit, hub)
    name = source_name or default_name
    seen: set[str] = set()
    chunk: list[Conversation] = []
    fmt, decided = forced, forced is not None
    seen_columns: set[str] = set()
    chunk_size = max(1, int(chunk_size))
    fast: _FastNormaliser | None = None

    def flush() -> None:
        if not chunk:
            return
        dups = int(sink(list(chunk))) if sink is not None else 0
        result.duplicates += dups
        result.loaded += len(chunk) - dups
        chunk.clear()
        seen.clear()

    def full() -> bool:
        if limit is None:
            return False
        if result.loaded + len(chunk) < limit:
            return False
        flush()  # cross-chunk duplicates may leave room for more
        return result.loaded >= limit

    try:
        for label, row in rows:
            if full():
                break
            result.total_rows += 1
            if isinstance(row, Rejected):
                result.reject(row.reason, f"{label}: {row.detail}")
                continue
            if fmt is None and isinstance(row, dict) and len(seen_columns) < 64:
                seen_columns.update(str(k) for k in list(row)[:16])
            row_fmt = fmt
            conv: Conversation | None = None
            if decided:  # the common case, without the per-row set-up of normalise_row
                if fast is None or fast.fmt != fmt:
                    fast = _FastNormaliser(str(fmt), columns)
                conv = fast(row)
            if conv is not None:
                assert fast is not None
                metadata = fast.metadata(row)
            else:
                if not decided:
                    guess, decisive = _detect(row, columns)
                    if guess is not None:
                        row_fmt = guess
                        if decisive:
                            fmt, decided = guess, True
                            result.format = guess
                        elif fmt is None:
                            fmt = guess
                if row_fmt is None:
                    detail = _missing_column_detail(row, columns)
                    result.reject("malformed_row", f"{label}: {detail}")
                    continue
                try:
                    conv = normalise_row(row, row_fmt, columns)
                except Rejected as rej:
                    result.reject(rej.reason, f"{label}: {rej.detail}")
                    continue
                except (SourceError, RecursionError):
                    raise
                except Exception as exc:  # noqa: BLE001 - never a traceback for one odd row
                    result.reject("malformed_row", f"{label}: {type(exc).__name__}: {exc}")
                    continue
                metadata = _metadata(row, columns)
            if conv.conversation_id in seen:
                result.duplicates += 1
                continue
            seen.add(conv.conversation_id)
            conv.source = name
            conv.metadata = metadata
            metadata["source_row"] = label
            if sink is None:
                result.conversations.append(conv)
                result.loaded += 1
                continue
            chunk.append(conv)
            if len(chunk) >= chunk_size or (
                limit is not None and result.loaded + len(chunk) >= limit
            ):
                flush()
        flush()
        finish = getattr(sink, "finish", None)
        if callable(finish):
            finish()
    except RecursionError:
        raise SourceError(f"{name}: a record is nested too deeply to read") from None
    except MemoryError:
        raise SourceError(f"{name}: out of memory while reading; use limit=") from None
    except OSError as exc:
        raise SourceError(f"{name}: could not read: {exc.strerror or exc}") from None
    if result.total_rows == 0 and limit != 0:
        raise SourceError(f"{name} contains no records")
    if fmt is None and not seen_columns and result.rejected:
        first = next(iter(result.examples.values()))[0]
        raise SourceError(
            f"{name} has no readable records: {result.total_rows} rejected (first: {first})"
        )
    if fmt is None and limit != 0:
        have = ", ".join(repr(c) for c in sorted(seen_columns)[:12]) or "none"
        raise SourceError(
            f"{name}: could not detect the format: no 'conversation', 'messages' or "
            f"'conversations' column (columns: {have}); pass columns= to map one"
        )
    result.format = fmt or ""
    return result
