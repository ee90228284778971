"""Conversion of exported rows to the shape TRL (>= 1.x) trains on."""

from __future__ import annotations

from typing import Any


def to_trl_example(pair: dict[str, Any]) -> dict[str, Any]:
    """The row as TRL (>= 1.x) trains on it with an explicit prompt: ``prompt`` is the
    conversation up to the last user turn and ``chosen`` / ``rejected`` hold only the final
    assistant message. TRL renders ``prompt + chosen``, so the exported full-conversation
    ``chosen`` / ``rejected`` must not be combined with ``prompt`` as they are; either map the
    dataset with this function or drop the ``prompt`` column (TRL then extracts it itself)."""
    k = len(pair["prompt"])
    return {
        "prompt": pair["prompt"],
        "chosen": pair["chosen"][k:],
        "rejected": pair["rejected"][k:],
    }
