"""``pipelines.binarize`` as a package (issue 9): the public names import from the package as
they did from the module, and the row-by-row reference path is an explicit choice of
``binarize`` (``fits_columns``), never an exception caught for control flow."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

import pipelines.binarize as package
from pipelines.binarize import columnar
from pipelines.records import CandidateRow
from pipelines.types import Conversation

MODULES = ("collect", "columnar", "config", "decontaminate", "reference", "rows", "rules", "trl")


def test_every_public_name_comes_from_a_submodule() -> None:
    owner: dict[str, str] = {}
    for name in package.__all__:
        obj = getattr(package, name)
        if callable(obj) and name != "Strategy":  # Strategy: a typing.Literal
            owner[name] = obj.__module__.removeprefix("pipelines.binarize.")
            assert owner[name] in MODULES, name
    assert owner["binarize"] == "columnar" and owner["binarize_reference"] == "reference"
    assert owner["BinarizeConfig"] == "config" and owner["decide"] == "rules"
    assert owner["to_trl_example"] == "trl" and owner["normalize_prompt"] == "decontaminate"
    assert owner["collect"] == "collect" and owner["JudgedConversation"] == "rows"
    assert package.BinarizeOptions is package.BinarizeConfig
    for name in MODULES:  # each module imports on its own
        importlib.import_module(f"pipelines.binarize.{name}")


def _row(ai: list[int | None]) -> Any:
    return package.JudgedConversation(
        conversation=Conversation(messages=[{"role": "user", "content": "hi"}]),
        candidates=[CandidateRow("a/0", "a", "A", "hello"), CandidateRow("b/0", "b", "B", "hey")],
        ai_ratings=ai,
        rationales=[None] * len(ai),
    )


def test_the_reference_path_is_taken_only_for_rows_the_columns_cannot_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    regular, surplus = _row([2, 4]), _row([2, 4, None])
    assert columnar.fits_columns([regular, _row([3])])
    assert not columnar.fits_columns([regular, surplus])
    calls: list[int] = []
    real = columnar.binarize_reference

    def spy(rows: list[Any], config: Any) -> Any:
        calls.append(len(rows))
        return real(rows, config)

    monkeypatch.setattr(columnar, "binarize_reference", spy)
    assert package.binarize([regular]).num_pairs == 1 and calls == []
    res = package.binarize([regular, surplus])
    assert calls == [2] and res.pairs[1]["ratings"] == [2.0, 4.0, None]
    assert not [
        n
        for n in dir(columnar)
        if isinstance(getattr(columnar, n), type) and issubclass(getattr(columnar, n), Exception)
    ]
