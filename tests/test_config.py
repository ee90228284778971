"""Model configs are one pydantic model per backend (a discriminated union on ``backend``,
registered in ``pipelines.backends.BACKENDS``) and ``Recipe.binarize`` is one validated
``BinarizeConfig`` (issue 9)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.backends import BACKENDS, make_backend
from pipelines.binarize import BinarizeConfig, BinarizeOptions, binarize
from pipelines.config import (
    EmbeddedConfig,
    GeneratorConfig,
    JudgeConfig,
    ModelConfig,
    OpenAIConfig,
    OriginalConfig,
    VLLMConfig,
)
from pipelines.recipe import (
    RECIPES_DIR,
    Recipe,
    RecipeError,
    load_recipe,
    parse_recipe,
    parse_recipe_yaml,
)

ROOT = Path(__file__).resolve().parents[1]
BASE: dict[str, Any] = {"name": "r", "source": {"path": "x.jsonl"}}
V0_DIR = ROOT / "tests" / "fixtures" / "recipes-v0"  # Recipe.to_yaml of today's main


def _readme_yaml_blocks() -> list[tuple[str, Any]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)
    return [(f"README.md yaml block {i + 1}", yaml.safe_load(b)) for i, b in enumerate(blocks)]


def _repo_recipes() -> list[tuple[str, dict[str, Any]]]:
    """Every recipe in the repository: the bundled ones, and the README's examples (whole
    recipes, or sections completed with a minimal recipe around them)."""
    files = [*sorted(RECIPES_DIR.glob("*.yaml")), *sorted(V0_DIR.glob("*.yaml"))]
    out = [(f"{p.parent.name}/{p.name}", yaml.safe_load(p.read_text())) for p in files]
    for name, data in _readme_yaml_blocks():
        if not isinstance(data, dict) or not set(data) <= set(Recipe.model_fields):
            continue  # endpoints.yaml (a list) is not a recipe
        if "name" in data:
            out.append((name, data))
        else:
            filler = {"generators": [{"id": "original", "backend": "original"}]}
            out.append((name, {**BASE, **filler, **data}))
    return out


RECIPES = _repo_recipes()


def test_the_repository_has_recipes_of_every_backend() -> None:
    assert len(RECIPES) >= 6, [n for n, _ in RECIPES]
    backends = {
        m["backend"]
        for _, data in RECIPES
        for m in [*data.get("generators", []), *([data["judge"]] if data.get("judge") else [])]
    }
    assert backends == set(BACKENDS) == {"embedded", "openai", "vllm", "original"}


@pytest.mark.parametrize(("name", "data"), RECIPES, ids=[n for n, _ in RECIPES])
def test_every_recipe_in_the_repository_validates(name: str, data: dict[str, Any]) -> None:
    recipe = parse_recipe(data, name=name)
    for cfg, raw in zip(recipe.generators, data["generators"], strict=True):
        assert isinstance(cfg, GeneratorConfig)
        assert isinstance(cfg, BACKENDS[raw["backend"]].config)
    if data.get("judge"):
        assert isinstance(recipe.judge, JudgeConfig)
        assert isinstance(recipe.judge, BACKENDS[data["judge"]["backend"]].config)
    # the YAML shape does not change: what a recipe writes back reads the same
    again = parse_recipe_yaml(recipe.to_yaml(), name=name)
    assert again.to_dict() == recipe.to_dict()
    written = recipe.to_dict()
    for key, value in (data.get("binarize") or {}).items():
        if key not in ("min_chosen_rating", "min_margin", "max_turns"):  # export filters now
            assert written["binarize"][key] == value
    assert set(written["binarize"]) <= set(data.get("binarize") or {})


def test_bundled_recipes_load_by_name() -> None:
    quick = load_recipe("quickstart")
    kinds = (EmbeddedConfig, EmbeddedConfig, OriginalConfig)
    assert all(isinstance(g, k) for g, k in zip(quick.generators, kinds, strict=True))
    assert isinstance(quick.judge, EmbeddedConfig) and quick.judge.uses_structured_output()
    seed = load_recipe("capybara-dpo")
    assert isinstance(seed.judge, OpenAIConfig) and seed.judge.urls == ["https://api.openai.com/v1"]


@pytest.mark.parametrize("name", ["quickstart", "capybara-dpo", "multi-gpu"])
def test_a_recipe_written_by_the_flat_config_loads_as_it_did(name: str) -> None:
    # every model of those files has every backend's fields at their defaults
    old = load_recipe(V0_DIR / f"{name}.yaml")
    assert "timeout_s: 120.0" in (V0_DIR / f"{name}.yaml").read_text()
    assert old.to_dict() == load_recipe(name).to_dict()


def test_a_value_set_on_another_backends_field_is_an_error() -> None:
    data = yaml.safe_load((V0_DIR / "quickstart.yaml").read_text())
    data["generators"][0]["timeout_s"] = 60.0  # the flat default was 120.0
    with pytest.raises(RecipeError) as err:
        parse_recipe(data)
    assert "generators.0.timeout_s: not an option of backend embedded (an option of openai)" in (
        str(err.value)
    )


def test_constructing_a_role_gives_the_backend_config() -> None:
    gen = GeneratorConfig(id="g", backend="openai", base_url="http://127.0.0.1:1/v1", model="m")
    assert isinstance(gen, OpenAIConfig) and isinstance(gen, GeneratorConfig)
    assert gen.urls == ["http://127.0.0.1:1/v1"] and gen.samples == 1
    judge = JudgeConfig(id="j", backend="vllm", model="some/model", engine={"dtype": "float16"})
    assert isinstance(judge, VLLMConfig) and judge.temperature == 0.0  # the judge's default
    assert judge.uses_structured_output()
    plain = ModelConfig(id="e", backend="embedded", n_ctx=1024)
    assert type(plain) is EmbeddedConfig and plain.urls == []
    assert JudgeConfig.model_validate({"id": "o", "backend": "original"}).display_name() == (
        "original"
    )
    # copies keep their class
    assert type(gen.model_copy(update={"base_url": "http://127.0.0.1:2/v1"})) is type(gen)


BAD_MODELS = [
    (
        {"generators": [{"id": "g", "backend": "embedded", "base_url": "http://127.0.0.1/v1"}]},
        "generators.0.base_url: not an option of backend embedded (an option of openai)",
    ),
    (
        {
            "generators": [{"id": "g", "backend": "original"}],
            "judge": {"id": "j", "backend": "vllm", "model": "m", "n_ctx": 2048},
        },
        "judge.n_ctx: not an option of backend vllm (an option of embedded)",
    ),
    (
        {
            "generators": [
                {
                    "id": "g",
                    "backend": "openai",
                    "model": "m",
                    "base_url": "http://127.0.0.1:1/v1",
                    "engine": {"dtype": "float16"},
                }
            ]
        },
        "generators.0.engine: not an option of backend openai (an option of vllm)",
    ),
    (
        {"generators": [{"id": "g", "backend": "gpt5"}]},
        "generators.0.backend: unknown backend 'gpt5' (one of: embedded, openai, vllm, original)",
    ),
    ({"generators": [{"id": "g"}]}, "generators.0.backend: missing"),
    (
        {"generators": [{"id": "g", "backend": "openai", "model": "m"}]},
        "backend openai needs base_url (or base_urls)",
    ),
    (
        {"generators": [{"id": "g", "backend": "embedded", "n_ctx": 5}]},
        "generators.0.n_ctx: Input should be greater than or equal to 256 (backend embedded)",
    ),
    (
        {
            "generators": [{"id": "g", "backend": "original"}],
            "judge": {"id": "j", "backend": "embedded", "samples": 2},
        },
        "judge.samples: a generator's option (not the judge's)",
    ),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_MODELS)
def test_a_bad_model_field_is_one_line_naming_the_backend(
    fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe({**BASE, **fields})
    message = str(err.value)
    assert expected in message and "\n" not in message, message


def test_the_models_own_validators_still_apply() -> None:
    with pytest.raises(RecipeError, match="must not carry credentials"):
        parse_recipe(
            {
                **BASE,
                "generators": [
                    {"id": "g", "backend": "openai", "model": "m", "base_url": "http://u:p@h/v1"}
                ],
            }
        )
    with pytest.raises(RecipeError, match="trust_remote_code only through"):
        parse_recipe(
            {
                **BASE,
                "generators": [
                    {
                        "id": "g",
                        "backend": "vllm",
                        "model": "m",
                        "engine": {"trust_remote_code": True},
                    }
                ],
            }
        )


ECHO = """
import asyncio, json, sys
import pipelines.backends as backends
from tests.support.echo_backend import EchoConfig

# the one registry line
spec = backends.BackendSpec(EchoConfig, "tests.support.echo_backend:EchoBackend")
backends.BACKENDS["echo"] = spec

from pipelines.recipe import RecipeError, parse_recipe
from pipelines.types import GenerationRequest, SamplingParams

base = {"name": "r", "source": {"path": "x.jsonl"}}
recipe = parse_recipe({**base, "generators": [{"id": "e", "backend": "echo", "repeat": 2}]})
gen = recipe.generators[0]

async def one():
    req = GenerationRequest(key=1, messages=[{"role": "user", "content": "hi"}],
                            params=SamplingParams())
    return [r.text async for r in make_backend(gen).generate([req])]

from pipelines.backends import make_backend
out = {"class": type(gen).__name__, "texts": asyncio.run(one())}
try:
    parse_recipe({**base, "generators": [{"id": "e", "backend": "echo", "n_ctx": 512}]})
except RecipeError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def test_a_new_backend_is_one_module_plus_one_registry_line() -> None:
    cp = subprocess.run(
        [sys.executable, "-c", ECHO],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr[-2000:]
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    assert out["class"] == "EchoGeneratorConfig"
    assert out["texts"] == ["hi hi"]
    assert (
        "generators.0.n_ctx: not an option of backend echo (an option of embedded)"
        in (out["error"])
    )


def test_make_backend_names_a_missing_install_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from pipelines.backends import BackendError

    real = importlib.import_module

    def no_vllm(name: str, *args: Any) -> Any:
        if name == "pipelines.backends.vllm_backend":
            raise ImportError("no vllm here")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_vllm)
    with pytest.raises(BackendError, match="requirements-vllm.txt"):
        make_backend(GeneratorConfig(id="v", backend="vllm", model="m"))


# -- Recipe.binarize ----------------------------------------------------------------------------
def test_recipe_binarize_is_the_validated_config() -> None:
    recipe = parse_recipe(
        {
            **BASE,
            "generators": [{"id": "o", "backend": "original"}],
            "binarize": {"strategy": "all-pairs", "seed": 7, "decontaminate": ["mtbench"]},
        }
    )
    assert isinstance(recipe.binarize, BinarizeConfig)
    assert recipe.binarize.strategy == "all-pairs" and recipe.binarize.seed == 7
    assert BinarizeOptions is BinarizeConfig
    # written back as written: no defaults added to the recipe
    assert recipe.to_dict()["binarize"] == {
        "strategy": "all-pairs",
        "seed": 7,
        "decontaminate": ["mtbench"],
    }
    default = parse_recipe({**BASE, "generators": [{"id": "o", "backend": "original"}]})
    assert default.binarize == BinarizeConfig() and default.to_dict()["binarize"] == {}
    # the config is read by attribute only: no dict-style access to fall back on
    assert recipe.binarize.max_turns is None and recipe.binarize.decontaminate == ["mtbench"]
    for dict_api in ("get", "keys", "__getitem__", "__contains__"):
        assert not hasattr(recipe.binarize, dict_api), dict_api
    assert recipe.binarize != {"strategy": "all-pairs", "seed": 7, "decontaminate": ["mtbench"]}


def test_a_bad_binarize_section_is_one_line() -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(
            {
                **BASE,
                "generators": [{"id": "o", "backend": "original"}],
                "binarize": {"strategy": "best-vs-best"},
            }
        )
    assert "binarize.strategy" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RecipeError, match="binarize.tie_break: unknown key"):
        parse_recipe(
            {
                **BASE,
                "generators": [{"id": "o", "backend": "original"}],
                "binarize": {"tie_break": "random"},
            }
        )


def test_overrides_are_validated_and_leave_the_recipe_alone() -> None:
    config = BinarizeConfig(strategy="best-vs-random-lower", seed=3)
    preview = config.with_overrides({"min_margin": 1.5, "max_turns": 2})
    assert preview.strategy == "best-vs-random-lower" and preview.seed == 3
    assert (preview.min_margin, preview.max_turns) == (1.5, 2)
    assert config.min_margin == 0 and config.max_turns is None
    with pytest.raises(ValueError, match="min_margin"):
        config.with_overrides({"min_margin": -1})
    with pytest.raises(ValueError):
        config.strategy = "all-pairs"  # type: ignore[misc]  # frozen: one config, one meaning


def test_binarize_takes_the_recipe_config_as_it_is() -> None:
    from tests.test_publish import make_rows

    rows = make_rows()
    recipe = parse_recipe(
        {
            **BASE,
            "generators": [{"id": "o", "backend": "original"}],
            "binarize": {"strategy": "all-pairs"},
        }
    )
    got = binarize(rows, recipe.binarize)
    assert got.table.equals(binarize(rows, BinarizeConfig(strategy="all-pairs")).table)
    assert got.num_pairs > binarize(rows).num_pairs
