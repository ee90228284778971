"""Recipes validate with one-line errors; the CLI never shows a traceback for bad input; the
quickstart runs end to end with the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.recipe import RecipeError, load_recipe, parse_recipe, parse_recipe_yaml
from tests.conftest import ROOT
from tests.support.cli import cli

GOOD = {
    "name": "t",
    "source": {"path": "x.jsonl"},
    "generators": [{"id": "smol", "backend": "embedded"}],
}


def test_bundled_recipes_validate() -> None:
    quick = load_recipe("quickstart")
    assert [g.backend for g in quick.generators] == ["embedded", "embedded", "original"]
    assert Path(quick.source_path()).is_file()
    seed = load_recipe(ROOT / "pipelines/recipes/capybara-dpo.yaml")
    assert len(seed.generators) == 4 and seed.judge is not None
    assert all(g.temperature == 1.0 and g.max_tokens == 1024 for g in seed.generators[:3])
    # the seed recipe names the key's env var, never a key
    assert seed.judge.api_key_env == "OPENAI_API_KEY"


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"colour": "red"}, "colour: unknown key"),
        (
            {"generators": [{"id": "g", "backend": "openai", "base_url": "http://x"}]},
            "needs 'model'",
        ),
        (
            {"generators": [{"id": "g", "backend": "embedded", "temperature": "hot"}]},
            "generators.0.temperature",
        ),
        (
            {"generators": [{"id": "g", "backend": "embedded", "max_tokens": -5}]},
            "generators.0.max_tokens",
        ),
        ({"generators": [{"id": "g", "backend": "gpt5"}]}, "generators.0.backend"),
        ({"generators": []}, "generators"),
        ({"source": {}}, "exactly one of 'path'"),
        (
            {
                "generators": [
                    {"id": "a", "backend": "embedded"},
                    {"id": "a", "backend": "original"},
                ]
            },
            "used twice",
        ),
        (
            {
                "generators": [
                    {
                        "id": "g",
                        "backend": "openai",
                        "base_url": "http://x",
                        "model": "m",
                        "api_key_env": "sk-abc123 secret",
                    }
                ]
            },
            "NAME of an environment",
        ),
        ({"binarize": {"strategy": "coin-flip"}}, "binarize"),
    ],
)
def test_recipe_errors_are_one_line(patch: dict, expected: str) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe({**GOOD, **patch}, name="r.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("r.yaml: ")
    assert expected in msg


def test_recipe_yaml_round_trip_drops_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = parse_recipe(GOOD)
    text = recipe.to_yaml()
    assert parse_recipe_yaml(text).model_dump() == recipe.model_dump()
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        parse_recipe_yaml("name: [unclosed\n")
    with pytest.raises(RecipeError, match="a recipe is a YAML mapping"):
        parse_recipe_yaml("- just\n- a list\n")


def test_cli_bad_input_one_line_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "generators": [{"id": "g", "backend": "nope"}]}))
    cases = [
        ("run", str(bad), "--data-dir", str(tmp_path / "ws")),
        ("run", str(tmp_path / "missing.yaml")),
        ("load", str(tmp_path / "missing.jsonl"), "--data-dir", str(tmp_path / "ws")),
        ("run", "quickstart", "--stages", "load,dance", "--data-dir", str(tmp_path / "ws")),
        ("run", "quickstart", "--limit", "0"),
    ]
    for args in cases:
        out = cli(*args, timeout=120)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr


def test_cli_load_and_status_json(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    out = cli(
        "load", str(ROOT / "pipelines/recipes/data/quickstart.jsonl"), "--data-dir", ws, "--json"
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["format"] == "capybara" and report["loaded"] >= 15 and report["added"] > 0
    status = json.loads(cli("status", "--data-dir", ws, "--json").stdout)
    assert status["conversations"] == report["loaded"]


@pytest.mark.slow
def test_quickstart_end_to_end_with_embedded_model(tmp_path: Path) -> None:
    """load → generate → judge → binarize → export on the CPU, no network, no keys."""
    ws = tmp_path / "ws"
    out = cli("run", "quickstart", "--data-dir", str(ws), "--limit", "3", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["status"] == "done"
    assert summary["stages"] == ["load", "generate", "judge", "binarize", "export"]
    gen = summary["results"]["generate"]
    assert gen["total"] == 9 and gen["done"] == 9  # 3 conversations × (2 embedded + original)
    judge = summary["results"]["judge"]
    assert judge["total"] == 3 and judge["done"] + judge["failed"] == 3
    export = Path(summary["export_dir"])
    assert (export / "README.md").is_file()
    assert list(export.rglob("*.parquet")) and list(export.rglob("*.jsonl"))
    # progress events came row by row
    assert sum(1 for e in events if e.get("stage") == "generate") >= 9
    # a re-run resumes: nothing left to generate or judge
    again = json.loads(
        cli(
            "run", "quickstart", "--data-dir", str(ws), "--limit", "3", "--json"
        ).stdout.splitlines()[-1]
    )
    assert again["results"]["generate"]["skipped"] == 9
    assert again["results"]["judge"]["skipped"] == judge["done"]


def test_a_token_pasted_as_env_var_name_is_refused_and_never_echoed() -> None:
    token = "hf_" + "a1B2c3D4e5" * 3
    gen = {
        "id": "g",
        "backend": "openai",
        "base_url": "http://x",
        "model": "m",
        "api_key_env": token,
    }
    with pytest.raises(RecipeError) as err:
        parse_recipe({**GOOD, "generators": [gen]})
    assert "NAME of an environment" in str(err.value) and token not in str(err.value)


def test_job_errors_are_stored_masked(tmp_path: Path) -> None:
    from pipelines.store import Store

    store = Store(tmp_path)
    job = store.start_job("run", {"api_key": "sk-" + "x" * 30, "name": "r"})
    store.update_job(job, status="failed", last_error="bad key sk-" + "y" * 30)
    row = store.jobs()[0]
    assert "sk-" not in row["last_error"] and "api_key" not in row["recipe"]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("capyui.sqlite*"))
    assert b"bad key" in on_disk and b"sk-yyyy" not in on_disk
