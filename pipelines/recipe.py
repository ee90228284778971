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
from pipelines.binarize.config import BinarizeConfig
from pipelines.config import GeneratorConfig, JudgeConfig, StrictModel
from pipelines.cost import Budget, Price
from pipelines.panel import PanelConfig
from pipelines.profiles import ExportFilters, Profile
from pipelines.secrets import check_env_name, redact

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


HUB_ID_PATTERN = r"^[A-Za-z0-9][\w\-]*(\.[\w\-]+)*(/[\w\-]+(\.[\w\-]+)*)?$"


class SourceConfig(StrictModel):
    path: str | None = None
    # a Hub id (owner/name), never a path (issue 10)
    dataset: str | None = Field(default=None, max_length=200, pattern=HUB_ID_PATTERN)
    split: str = Field(default="train", max_length=100, pattern=r"^[\w.\-\[\]:%+]+$")
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


ExportFormat = Literal["parquet", "jsonl"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("parquet", "jsonl")


class ExportConfig(StrictModel):
    out: str = "export"
    formats: list[ExportFormat] = Field(default_factory=lambda: list(EXPORT_FORMATS))
    dataset_name: str | None = None
    # columns: capyui | capybara-dpo | capybara-kto | trl (pipelines/profiles.py)
    profile: Profile = "capyui"
    # thresholds applied at export, recorded in the card with their counts
    filters: ExportFilters = Field(default_factory=ExportFilters)

    @field_validator("out")
    @classmethod
    def _inside_workspace(cls, v: str) -> str:
        # issue 10: exports live under the workspace (a relative folder without '..')
        p = Path(v)
        if not v.strip() or p.is_absolute() or ".." in p.parts or v.startswith("~"):
            raise ValueError("export.out is a folder inside the workspace (relative, no '..')")
        return v


# Thresholds that older recipes set under ``binarize:``: they are export filters now (the build
# keeps every strictly ordered pair, as the Capybara-DPO seed did).
MOVED_TO_EXPORT_FILTERS = ("min_chosen_rating", "min_margin", "max_turns")


class PublishConfig(StrictModel):
    repo_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")
    private: bool = True
    token_env: str = "HF_TOKEN"

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        return check_env_name(v, "token_env")


class Recipe(StrictModel):
    # a slug: it names the export folder (issue 10: never a path)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    source: SourceConfig
    generators: list[GeneratorConfig] = Field(min_length=1)
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    judge: JudgeConfig | None = None
    # issue 14: a panel of judges (beside or instead of ``judge:``); ``panel:`` says how their
    # ratings become the one AI rating (pipelines/panel.py)
    judges: list[JudgeConfig] | None = None
    panel: PanelConfig | None = None
    binarize: BinarizeConfig = Field(default_factory=BinarizeConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    # human review in Argilla: the push-argilla / pull-argilla stages
    argilla: ArgillaConfig | None = None
    # issue 14: USD per million tokens per generator/judge id or model; a budget pauses the job
    prices: dict[str, Price] = Field(default_factory=dict)
    budget: Budget | None = None
    # Where the recipe file lives: relative source paths resolve against it. Not serialised.
    base_dir: str | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _thresholds_are_export_filters(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("binarize"), dict):
            return data
        moved = {k: data["binarize"][k] for k in MOVED_TO_EXPORT_FILTERS if k in data["binarize"]}
        if not moved:
            return data
        data = dict(data)
        data["binarize"] = {
            k: v for k, v in data["binarize"].items() if k not in MOVED_TO_EXPORT_FILTERS
        }
        export = dict(data.get("export") or {})
        filters = dict(export.get("filters") or {})
        for k, v in moved.items():
            if v is not None and k != "min_margin" or v:  # min_margin 0 filters nothing
                filters.setdefault(k, v)
        export["filters"] = filters
        data["export"] = export
        return data

    @field_validator("generators")
    @classmethod
    def _unique_ids(cls, gens: list[GeneratorConfig]) -> list[GeneratorConfig]:
        seen: set[str] = set()
        for g in gens:
            if g.id in seen:
                raise ValueError(f"generator id '{g.id}' is used twice")
            seen.add(g.id)
        return gens

    @model_validator(mode="after")
    def _judge_ids(self) -> Recipe:
        seen: set[str] = set()
        for j in self.all_judges():
            if j.id in seen:
                raise ValueError(f"judge id '{j.id}' is used twice")
            seen.add(j.id)
        if self.panel is not None and len(seen) > 1 and self.panel.id in seen:
            raise ValueError(f"panel id '{self.panel.id}' is also a judge's id")
        if self.panel is not None and self.panel.min_judges and self.panel.min_judges > len(seen):
            raise ValueError(
                f"panel.min_judges is {self.panel.min_judges} but the recipe has {len(seen)} judges"
            )
        return self

    def all_judges(self) -> list[JudgeConfig]:
        """Every judge: ``judge:`` (if any) then ``judges:``."""
        return ([self.judge] if self.judge is not None else []) + list(self.judges or [])

    def has_judge(self) -> bool:
        return bool(self.judge is not None or self.judges)

    def rating_judge_id(self) -> str | None:
        """The judge_id whose judgments are "the AI rating": the panel's aggregate with several
        judges, else the one judge's (None without a judge)."""
        judges = self.all_judges()
        if len(judges) > 1:
            return (self.panel or PanelConfig()).id
        return judges[0].id if judges else None

    def rating_judge_name(self) -> str | None:
        """What the card calls the judge: its model, or the panel's aggregate of its models."""
        judges = self.all_judges()
        if len(judges) > 1:
            agg = (self.panel or PanelConfig()).aggregate
            return f"panel ({agg}) of " + ", ".join(j.display_name() for j in judges)
        return judges[0].display_name() if judges else None

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
        loc, backend = _untagged(err["loc"])
        where = ".".join(str(p) for p in loc) or "recipe"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            if backend is not None:
                msg = _not_an_option(str(loc[-1]), backend)
        elif err["type"] == "missing":
            msg = "missing"
        elif err["type"] == "union_tag_invalid":  # a model's backend: that no backend has
            where, msg = f"{where}.backend", _unknown_backend(err.get("ctx", {}).get("tag"))
        elif err["type"] == "union_tag_not_found":
            where, msg = f"{where}.backend", "missing"
        elif backend is not None and backend not in msg:
            msg = f"{msg} (backend {backend})"
        parts.append(f"{where}: {msg}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _untagged(loc: tuple[int | str, ...]) -> tuple[list[int | str], str | None]:
    """A model's error location without the backend tag pydantic puts in for the union
    (``generators.0.embedded.base_url``), and that backend."""
    from pipelines.config import backend_names

    names = backend_names()
    for i in range(1, len(loc)):
        prev, part = loc[i - 1], loc[i]
        if part in names and (isinstance(prev, int) or prev == "judge"):
            return [*loc[:i], *loc[i + 1 :]], str(part)
    return list(loc), None


def _not_an_option(key: str, backend: str) -> str:
    from pipelines.config import GeneratorConfig, JudgeConfig, backend_configs

    if key in GeneratorConfig.model_fields:
        return "a generator's option (not the judge's)"
    if key in JudgeConfig.model_fields:
        return "the judge's option (not a generator's)"
    owners = [name for name, cfg in backend_configs().items() if key in cfg.model_fields]
    where = f" (an option of {', '.join(owners)})" if owners else ""
    return f"not an option of backend {backend}{where}"


def _unknown_backend(tag: Any) -> str:
    from pipelines.config import backend_names

    return f"unknown backend '{str(tag)[:40]}' (one of: {', '.join(backend_names())})"


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


# issue 10: a recipe is small. Aliases let 400 bytes of YAML expand to millions of values (the
# expansion happens in whatever walks the result: validation, dumping), so the loader bounds the
# size of the text, the number of aliases, the nesting depth and the expanded size.
MAX_RECIPE_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_DEPTH = 32
MAX_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses alias bombs and deep nesting while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise RecipeError(f"more than {MAX_ALIASES} YAML aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise RecipeError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(data: Any) -> None:
    """Walk ``data`` as validation would (aliases expanded), stopping past ``MAX_NODES``."""
    budget = MAX_NODES
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise RecipeError(f"expands to more than {MAX_NODES} values (YAML aliases?)")
        if depth > MAX_DEPTH:
            raise RecipeError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def safe_load_yaml(text: str, *, name: str = "recipe") -> Any:
    """Parse recipe YAML within the bounds above; RecipeError (one line) otherwise."""
    if len(text.encode("utf-8", errors="replace")) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{name}: larger than {MAX_RECIPE_BYTES >> 20} MiB")
    loader = _BoundedLoader(text)
    try:
        data = loader.get_single_data()
        _expanded_size(data)
    except RecipeError as exc:
        raise RecipeError(f"{name}: refused: {exc}") from None
    finally:
        loader.dispose()
    return data


def parse_recipe_yaml(text: str, *, name: str = "recipe", base_dir: str | None = None) -> Recipe:
    try:
        data = safe_load_yaml(text, name=name)
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
        if p.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{p.name}: larger than {MAX_RECIPE_BYTES >> 20} MiB")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    return parse_recipe_yaml(text, name=p.name, base_dir=str(p.parent))
