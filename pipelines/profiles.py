"""Export profiles and export filters.

Binarization keeps every strictly ordered pair its strategy picks; what a curator may want to
leave out (a low chosen rating, a small margin, long conversations) is an *export filter*,
applied here and recorded in the dataset card with its counts, so the same build can be
exported with and without them.

Profiles are the column layouts an export can take:

``capyui``        CapyUI's own columns (``binarize.COLUMNS``): every candidate, rating,
                  rationale, the rating source and the judge.
``capybara-dpo``  exactly the features of ``argilla/distilabel-capybara-dpo-7k-binarized``, so
                  ``datasets.concatenate_datasets`` mixes the two.
``capybara-kto``  exactly the features of ``argilla/distilabel-capybara-kto-15k-binarized``: one
                  row per rated answer of a pair, ``label`` True for the chosen answer and False
                  for the rejected one (the curated decision, human picks included).
``trl``           TRL's conversational preference format: ``prompt`` (messages up to the last
                  user turn), ``chosen`` / ``rejected`` holding the final answer alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

PROFILES: tuple[str, ...] = ("capyui", "capybara-dpo", "capybara-kto", "trl")
Profile = Literal["capyui", "capybara-dpo", "capybara-kto", "trl"]
ORIGINAL_MODEL = "original"  # the model label of the ``original`` backend's candidate

_MESSAGE_CR = pa.struct([("content", pa.string()), ("role", pa.string())])
_MESSAGE_RC = pa.struct([("role", pa.string()), ("content", pa.string())])


class ExportFilters(BaseModel):
    """Thresholds applied at export (never at build); each one's count goes into the card."""

    model_config = ConfigDict(extra="forbid")

    # in the order they are applied
    max_turns: int | None = Field(default=None, ge=1)
    min_chosen_rating: float | None = None
    min_margin: float | None = Field(default=None, ge=0)

    def active(self) -> dict[str, Any]:
        """The filters set, whole numbers as ints (how the card shows them)."""
        return {
            k: int(v) if isinstance(v, float) and v.is_integer() else v
            for k, v in self.model_dump().items()
            if v is not None
        }


def profile_schema(profile: str) -> pa.Schema:
    """The Arrow schema of a profile's rows."""
    from pipelines.binarize import arrow_schema

    if profile == "capyui":
        return arrow_schema()
    if profile == "capybara-dpo":
        turn = pa.struct([("input", pa.string()), ("output", pa.string())])
        return pa.schema(
            [
                ("source", pa.string()),
                ("conversation", pa.list_(turn)),
                ("original_response", pa.string()),
                ("generation_prompt", pa.list_(pa.string())),
                ("raw_generation_responses", pa.list_(pa.string())),
                ("new_generations", pa.list_(pa.string())),
                ("prompt", pa.string()),
                ("chosen", pa.list_(_MESSAGE_CR)),
                ("rejected", pa.list_(_MESSAGE_CR)),
                ("rating_chosen", pa.int64()),
                ("rating_rejected", pa.int64()),
                ("chosen_model", pa.string()),
                ("rejected_model", pa.string()),
            ]
        )
    if profile == "capybara-kto":
        return pa.schema(
            [
                ("prompt", pa.string()),
                ("completion", pa.list_(_MESSAGE_CR)),
                ("label", pa.bool_()),
                ("rating", pa.int64()),
                ("model", pa.string()),
                ("source", pa.string()),
            ]
        )
    if profile == "trl":
        return pa.schema(
            [
                ("prompt", pa.list_(_MESSAGE_RC)),
                ("chosen", pa.list_(_MESSAGE_RC)),
                ("rejected", pa.list_(_MESSAGE_RC)),
            ]
        )
    raise ValueError(f"unknown export profile {profile!r}; expected one of {', '.join(PROFILES)}")


# ---------------------------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------------------------
def apply_filters(
    table: pa.Table, filters: ExportFilters | None
) -> tuple[pa.Table, dict[str, int]]:
    """``table`` (CapyUI columns) without the pairs the filters drop, and how many pairs each
    filter dropped (applied in order: max_turns, min_chosen_rating, min_margin)."""
    counts: dict[str, int] = {}
    if filters is None or not filters.active():
        return table, counts
    if filters.max_turns is not None:
        roles = pc.list_flatten(table.column("prompt")).combine_chunks().field("role")
        parents = pc.list_parent_indices(table.column("prompt"))
        is_user = pc.equal(roles, "user").to_numpy(zero_copy_only=False)
        import numpy as np

        users = np.bincount(
            np.asarray(parents.to_numpy(zero_copy_only=False))[is_user], minlength=table.num_rows
        )
        keep = pa.array(users <= filters.max_turns)
        counts["max_turns"] = table.num_rows - int(pc.sum(keep).as_py() or 0)
        table = table.filter(keep)
    if filters.min_chosen_rating is not None:
        keep = pc.fill_null(
            pc.greater_equal(table.column("rating_chosen"), filters.min_chosen_rating), False
        )
        counts["min_chosen_rating"] = table.num_rows - int(pc.sum(keep).as_py() or 0)
        table = table.filter(keep)
    if filters.min_margin is not None:
        margin = pc.subtract(table.column("rating_chosen"), table.column("rating_rejected"))
        keep = pc.fill_null(pc.greater_equal(margin, filters.min_margin), False)
        counts["min_margin"] = table.num_rows - int(pc.sum(keep).as_py() or 0)
        table = table.filter(keep)
    return table, counts


# ---------------------------------------------------------------------------------------------
# profiles
# ---------------------------------------------------------------------------------------------
def _int_rating(value: float | None) -> int | None:
    """A rating as the published int64: whole ratings as they are, a mean (several reviewers,
    a reverse pass) rounded half up."""
    if value is None or not math.isfinite(value):
        return None
    return int(math.floor(value + 0.5))


def _cr(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"content": m["content"], "role": m["role"]} for m in messages]


def _capybara_turns(prompt: list[dict[str, str]], original: str | None) -> list[dict[str, str]]:
    """The conversation as Capybara's ``[{input, output}]``: each user turn with the assistant
    answer that follows it; the last user turn with the dataset's own answer (``""`` when the
    source had none). System messages have no place in this format and are left out."""
    turns: list[dict[str, str]] = []
    for m in prompt:
        if m["role"] == "user":
            turns.append({"input": m["content"], "output": ""})
        elif m["role"] == "assistant" and turns:
            turns[-1]["output"] = m["content"]
    if turns:
        turns[-1]["output"] = original or ""
    return turns


def _prompt_text(prompt: list[dict[str, str]]) -> str:
    """The prompt a generator was sent, as text (role-tagged turns)."""
    return "\n\n".join(f"[{m['role']}]: {m['content']}" for m in prompt)


def _last_user(prompt: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def to_profile(
    table: pa.Table, profile: str, *, row_sources: Mapping[str, str] | None = None
) -> pa.Table:
    """``table`` (CapyUI columns, ``binarize.arrow_schema()``) in ``profile``'s layout.

    ``row_sources`` maps a conversation id to the row's own source (Capybara's ``source``
    column, e.g. "Know-Logic"); without an entry the conversation's load source is used."""
    schema = profile_schema(profile)
    if profile == "capyui":
        return table
    sources = row_sources or {}
    rows: list[dict[str, Any]] = []
    for r in table.to_pylist():
        prompt = r["prompt"]
        chosen_answer = r["chosen"][len(prompt) :]
        rejected_answer = r["rejected"][len(prompt) :]
        source = sources.get(r["conversation_id"]) or r["source"]
        if profile == "trl":
            rows.append({"prompt": prompt, "chosen": chosen_answer, "rejected": rejected_answer})
        elif profile == "capybara-dpo":
            generated = [
                (m, t)
                for m, t in zip(r["generation_models"], r["generations"], strict=True)
                if m != ORIGINAL_MODEL
            ]
            rows.append(
                {
                    "source": source,
                    "conversation": _capybara_turns(prompt, r["original_response"]),
                    "original_response": r["original_response"],
                    "generation_prompt": [_prompt_text(prompt)] * len(generated),
                    "raw_generation_responses": [t for _, t in generated],
                    "new_generations": list(r["generations"]),
                    "prompt": _last_user(prompt),
                    "chosen": _cr(r["chosen"]),
                    "rejected": _cr(r["rejected"]),
                    "rating_chosen": _int_rating(r["rating_chosen"]),
                    "rating_rejected": _int_rating(r["rating_rejected"]),
                    "chosen_model": r["chosen_model"],
                    "rejected_model": r["rejected_model"],
                }
            )
        else:  # capybara-kto: the chosen answer labelled True, the rejected one False
            for side, label in (("chosen", True), ("rejected", False)):
                rows.append(
                    {
                        "prompt": _last_user(prompt),
                        "completion": _cr(r[side]),
                        "label": label,
                        "rating": _int_rating(r[f"rating_{side}"]),
                        "model": r[f"{side}_model"],
                        "source": source,
                    }
                )
    if profile == "capybara-kto":  # a pair-wise strategy repeats an answer: keep it once
        seen: set[tuple[Any, ...]] = set()
        unique = []
        for row in rows:
            key: tuple[Any, ...] = (
                row["prompt"],
                row["completion"][-1]["content"],
                row["label"],
                row["model"],
                repr(row["completion"]),
            )
            if key not in seen:
                seen.add(key)
                unique.append(row)
        rows = unique
    return pa.Table.from_pylist(rows, schema=schema)


def row_sources_of(rows: list[Any]) -> dict[str, str]:
    """conversation id -> the row's own ``source`` column (kept in the conversation's metadata
    when the loaded data had one), for the ``capybara-*`` profiles."""
    out: dict[str, str] = {}
    for row in rows:
        conv = getattr(row, "conversation", row)
        value = (conv.metadata or {}).get("source")
        if isinstance(value, str) and value:
            out[conv.conversation_id] = value
    return out


LOADING_SNIPPETS: dict[str, str] = {
    "capyui": """from datasets import load_dataset

ds = load_dataset("{repo}", split="train")
# TRL: drop the prompt column (TRL extracts it) or keep only the final answers
ds = ds.map(lambda r: {{"chosen": r["chosen"][len(r["prompt"]):],
                       "rejected": r["rejected"][len(r["prompt"]):]}})
""",
    "capybara-dpo": """from datasets import load_dataset

ds = load_dataset("{repo}", split="train")
# as on the argilla/distilabel-capybara-dpo-7k-binarized card: keep what you trust
ds = ds.filter(lambda r: r["rating_chosen"] >= 4 and r["rating_chosen"] > r["rating_rejected"])
# TRL's conversational format: the shared prompt, then the final answers alone
ds = ds.map(lambda r: {{"prompt": [{{"role": m["role"], "content": m["content"]}}
                                  for m in r["chosen"][:-1]],
                       "chosen": r["chosen"][-1:], "rejected": r["rejected"][-1:]}},
            remove_columns=ds.column_names)
""",
    "capybara-kto": """from datasets import load_dataset

ds = load_dataset("{repo}", split="train")
# TRL's conversational unpaired format (KTOTrainer): the conversation, then the answer alone
ds = ds.map(lambda r: {{"prompt": [{{"role": m["role"], "content": m["content"]}}
                                  for m in r["completion"][:-1]],
                       "completion": r["completion"][-1:], "label": r["label"]}},
            remove_columns=ds.column_names)
""",
    "trl": """from datasets import load_dataset

ds = load_dataset("{repo}", split="train")  # ready for trl.DPOTrainer as it is
""",
}
