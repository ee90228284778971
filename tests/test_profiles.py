"""Issue 11: export profiles interoperable with the published Capybara data and TRL; export
filters recorded in the card with their counts; the card's loading snippet runs."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.binarize import BinarizeOptions, binarize
from pipelines.profiles import ExportFilters, row_sources_of
from pipelines.publish import export_local
from pipelines.recipe import parse_recipe
from tests.test_publish import _tiny_tokenizer, make_card, make_rows


def published_features(kind: str) -> Any:
    """The features of argilla/distilabel-capybara-{dpo-7k,kto-15k}-binarized."""
    from datasets import Features, Value

    message = [{"content": Value("string"), "role": Value("string")}]
    if kind == "dpo":
        return Features(
            {
                "source": Value("string"),
                "conversation": [{"input": Value("string"), "output": Value("string")}],
                "original_response": Value("string"),
                "generation_prompt": [Value("string")],
                "raw_generation_responses": [Value("string")],
                "new_generations": [Value("string")],
                "prompt": Value("string"),
                "chosen": message,
                "rejected": message,
                "rating_chosen": Value("int64"),
                "rating_rejected": Value("int64"),
                "chosen_model": Value("string"),
                "rejected_model": Value("string"),
            }
        )
    return Features(
        {
            "prompt": Value("string"),
            "completion": message,
            "label": Value("bool"),
            "rating": Value("int64"),
            "model": Value("string"),
            "source": Value("string"),
        }
    )


PUBLISHED_ROW = {
    "dpo": {
        "source": "Know-Logic",
        "conversation": [{"input": "Hi?", "output": "Hello."}],
        "original_response": "Hello.",
        "generation_prompt": ["<|system|>\n</s>\n<|user|>\nHi?</s>\n<|assistant|>\n"],
        "raw_generation_responses": ["Hey."],
        "new_generations": ["Hey.", "Hi there."],
        "prompt": "Hi?",
        "chosen": [{"content": "Hi?", "role": "user"}, {"content": "Hello.", "role": "assistant"}],
        "rejected": [{"content": "Hi?", "role": "user"}, {"content": "Hey.", "role": "assistant"}],
        "rating_chosen": 5,
        "rating_rejected": 3,
        "chosen_model": "gpt-4-1106-preview",
        "rejected_model": "argilla/notus-7b-v1",
    },
    "kto": {
        "prompt": "Hi?",
        "completion": [
            {"content": "Hi?", "role": "user"},
            {"content": "Hello.", "role": "assistant"},
        ],
        "label": True,
        "rating": 5,
        "model": "gpt-4-1106-preview",
        "source": "Know-Logic",
    },
}


def _rows_with_capybara_sources() -> list:
    rows = make_rows()
    for i, row in enumerate(rows):
        row.conversation.metadata = {"source": ["Know-Logic", "Airoboros"][i % 2]}
    return rows


def _export(tmp_path: Path, profile: str, **kwargs: Any) -> tuple[Path, Any]:
    rows = _rows_with_capybara_sources()
    res = binarize(rows, BinarizeOptions(strategy="best-vs-worst"))
    card = make_card(rows, res)
    out = export_local(
        res,
        tmp_path / profile,
        card=card,
        profile=profile,
        row_sources=row_sources_of(rows),
        **kwargs,
    )
    return out, res


def _load(out: Path) -> Any:
    from datasets import load_dataset

    return load_dataset(
        "parquet", data_files=str(out / "data/train-00000-of-00001.parquet"), split="train"
    )


@pytest.mark.parametrize("profile, kind", [("capybara-dpo", "dpo"), ("capybara-kto", "kto")])
def test_capybara_exports_concatenate_with_the_published_data(
    tmp_path: Path, profile: str, kind: str
) -> None:
    from datasets import Dataset, concatenate_datasets

    out, res = _export(tmp_path, profile)
    ours = _load(out)
    published = Dataset.from_list([PUBLISHED_ROW[kind]], features=published_features(kind))
    assert ours.features == published.features
    mixed = concatenate_datasets([published, ours])
    assert len(mixed) == 1 + len(ours)
    rows = ours.to_list()
    if kind == "dpo":
        assert len(ours) == res.num_pairs
        assert {r["source"] for r in rows} == {"Know-Logic", "Airoboros"}  # per-row source
        for r, pair in zip(rows, res.pairs, strict=True):
            assert r["prompt"] == pair["prompt"][-1]["content"]
            assert r["new_generations"] == pair["generations"]  # candidate order
            assert r["raw_generation_responses"] == [
                t
                for m, t in zip(pair["generation_models"], pair["generations"], strict=True)
                if m != "original"
            ]
            assert isinstance(r["rating_chosen"], int)
            assert r["conversation"][-1] == {
                "input": pair["prompt"][-1]["content"],
                "output": pair["original_response"],
            }
    else:
        assert len(ours) == 2 * res.num_pairs
        assert sum(r["label"] for r in rows) == res.num_pairs
        for r in rows:
            assert r["completion"][-1]["role"] == "assistant"


def test_trl_profile_passes_dpo_data_preparation(tmp_path: Path) -> None:
    from trl import DPOConfig, DPOTrainer

    out, res = _export(tmp_path, "trl")
    ds = _load(out)
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    for r, pair in zip(ds, res.pairs, strict=True):
        assert r["prompt"] == pair["prompt"]
        assert r["chosen"] == pair["chosen"][len(pair["prompt"]) :]
    tok = _tiny_tokenizer()
    args = DPOConfig(
        output_dir=str(tmp_path / "trl-out"),
        report_to=[],
        dataset_num_proc=None,
        use_cpu=True,
        bf16=False,
    )
    fake = SimpleNamespace(processing_class=tok, _tokenizer=tok, args=args)
    fake.__dict__.update({k: getattr(args, k) for k in ("max_length",) if hasattr(args, k)})
    prepared = DPOTrainer._prepare_dataset(fake, ds, tok, args, "train")
    assert len(prepared) == len(ds)
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(prepared.column_names) or {
        "prompt_input_ids",
        "chosen_input_ids",
    } <= set(prepared.column_names)


def _card_snippet(out: Path) -> str:
    card = (out / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert blocks, "the card has a loading snippet"
    return blocks[0]


def _run_snippet(out: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import datasets

    local = str(out / "data/train-00000-of-00001.parquet")
    real = datasets.load_dataset
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda repo, split=None, **kw: real("parquet", data_files=local, split=split),
    )
    scope: dict[str, Any] = {}
    exec(_card_snippet(out), scope)  # noqa: S102 - the card's own snippet, on the export
    return scope["ds"]


def test_kto_profile_snippet_feeds_trl_kto_preparation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trl import KTOConfig, KTOTrainer
    from trl.data_utils import is_conversational

    out, res = _export(tmp_path, "capybara-kto")
    ds = _run_snippet(out, monkeypatch)
    assert len(ds) == 2 * res.num_pairs and is_conversational(ds[0])
    tok = _tiny_tokenizer()
    args = KTOConfig(
        output_dir=str(tmp_path / "kto-out"),
        report_to=[],
        dataset_num_proc=None,
        use_cpu=True,
        bf16=False,
    )
    fake = SimpleNamespace(processing_class=tok, _tokenizer=tok, args=args, calculate_KL=False)
    prepared = KTOTrainer._prepare_dataset(fake, ds, tok, args, "train")
    assert len(prepared) == len(ds)
    assert {"prompt_ids", "completion_ids", "label"} <= set(prepared.column_names)


@pytest.mark.parametrize("profile", ["capyui", "capybara-dpo", "trl"])
def test_card_loading_snippet_runs_on_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    out, res = _export(tmp_path, profile)
    ds = _run_snippet(out, monkeypatch)
    assert 0 < len(ds) <= res.num_pairs
    assert f"profile **{profile}**" in (out / "README.md").read_text() or profile == "capyui"


def test_export_filters_are_counted_in_the_card(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    filters = ExportFilters(min_chosen_rating=5, min_margin=4, max_turns=2)
    out, res = _export(tmp_path, "capyui", filters=filters)
    ds = pq.read_table(out / "data/train-00000-of-00001.parquet")
    pairs = res.pairs
    turns = [sum(m["role"] == "user" for m in p["prompt"]) for p in pairs]
    n_turns = sum(t > 2 for t in turns)
    after_turns = [p for p, t in zip(pairs, turns, strict=True) if t <= 2]
    n_min = sum(p["rating_chosen"] < 5 for p in after_turns)
    after_min = [p for p in after_turns if p["rating_chosen"] >= 5]
    n_margin = sum(p["rating_chosen"] - p["rating_rejected"] < 4 for p in after_min)
    assert ds.num_rows == len(pairs) - n_turns - n_min - n_margin > 0
    assert n_turns > 0 and n_margin > 0
    card = (out / "README.md").read_text()
    assert "### Export filters" in card
    assert f"| max\\_turns | 2 | {n_turns} |" in card
    assert f"| min\\_chosen\\_rating | 5 | {n_min} |" in card
    assert f"| min\\_margin | 4 | {n_margin} |" in card


def test_build_thresholds_in_a_recipe_become_export_filters() -> None:
    recipe = parse_recipe(
        {
            "name": "r",
            "source": {"path": "x.jsonl"},
            "generators": [{"id": "o", "backend": "original"}],
            "binarize": {"strategy": "best-vs-worst", "min_chosen_rating": 4, "max_turns": 3},
        }
    )
    assert recipe.binarize.model_dump() == {"strategy": "best-vs-worst"}
    assert recipe.export.filters.active() == {"max_turns": 3, "min_chosen_rating": 4}
