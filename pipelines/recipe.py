"""Recipes: the whole configuration of a run as one YAML file, validated with clear errors.

The UI exports and imports the same file that ``capyui run`` takes. A recipe never holds a
secret: keys are referenced by the name of the environment variable that holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipelines.argilla_queue import ArgillaConfig
from pipelines.config import GeneratorConfig, JudgeConfig, StrictModel
from pipelines.cost import Budget, Price
from pipelines.secrets import redact

RECIPES_DIR = Path(__file__).parent / "recipes"
STAGES = (
    "load",
    "generate",
    "judge",
    "push-argilla",
    "pull-argilla",
    "binarize",
    "export",
    "publish",
)


class RecipeError(Exception):
    """A recipe that cannot be used; the message is one line."""


class SourceConfig(StrictModel):
    path: str | None = None
    dataset: str | None = None
    split: str = "train"
    format: Literal["auto", "capybara", "messages", "sharegpt"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> SourceConfig:
        if bool(self.path) == bool(self.dataset):
            raise ValueError("give exactly one of 'path' (a local file) or 'dataset' (a Hub id)")
        return self

    @property
    def location(self) -> str:
        return self.path or self.dataset or ""


class GenerationOptions(StrictModel):
    max_attempts: int = Field(default=3, ge=1, le=20)


class ExportConfig(StrictModel):
    out: str = "export"
    formats: list[Literal["parquet", "jsonl"]] = Field(default_factory=lambda: ["parquet", "jsonl"])
    dataset_name: str | None = None


class PublishConfig(StrictModel):
    repo_id: str | None = None
    private: bool = True
    token_env: str = "HF_TOKEN"


class Recipe(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    source: SourceConfig
    generators: list[GeneratorConfig] = Field(min_length=1)
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    judge: JudgeConfig | None = None
    binarize: dict[str, Any] = Field(default_factory=dict)
    export: ExportConfig = Field(default_factory=ExportConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    # human review in Argilla: the push-argilla / pull-argilla stages
    argilla: ArgillaConfig | None = None
    # issue 14: USD per million tokens per generator/judge id or model; a budget pauses the job
    prices: dict[str, Price] = Field(default_factory=dict)
    budget: Budget | None = None
    # Where the recipe file lives: relative source paths resolve against it. Not serialised.
    base_dir: str | None = Field(default=None, exclude=True)

    @field_validator("generators")
    @classmethod
    def _unique_ids(cls, gens: list[GeneratorConfig]) -> list[GeneratorConfig]:
        seen: set[str] = set()
        for g in gens:
            if g.id in seen:
                raise ValueError(f"generator id '{g.id}' is used twice")
            seen.add(g.id)
        return gens

    @field_validator("binarize")
    @classmethod
    def _binarize_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from pipelines.binarize import BinarizeOptions

        BinarizeOptions.model_validate(value)
        return value

    def source_path(self) -> str:
        """The source location, with a relative file path resolved against the recipe."""
        if self.source.path and self.base_dir and not Path(self.source.path).is_absolute():
            return str(Path(self.base_dir) / self.source.path)
        return self.source.location

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, secret-free form (what the store and the dataset card keep)."""
        return redact(self.model_dump(mode="json", exclude_none=True))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "recipe"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "missing"
        parts.append(f"{where}: {msg}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_recipe(data: Any, *, name: str = "recipe", base_dir: str | None = None) -> Recipe:
    """Validate a recipe dict; raise RecipeError with a one-line reason."""
    if not isinstance(data, dict):
        raise RecipeError(f"{name}: a recipe is a YAML mapping, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"{name}: {_format_errors(exc)}") from None
    recipe.base_dir = base_dir
    return recipe


def parse_recipe_yaml(text: str, *, name: str = "recipe", base_dir: str | None = None) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{name}: not valid YAML{where}") from None
    return parse_recipe(data, name=name, base_dir=base_dir)


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe file. A bare name like ``quickstart`` means a bundled recipe."""
    p = Path(path)
    if not p.exists() and (RECIPES_DIR / f"{p.name}.yaml").exists():
        p = RECIPES_DIR / f"{p.name}.yaml"
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    return parse_recipe_yaml(text, name=p.name, base_dir=str(p.parent))
