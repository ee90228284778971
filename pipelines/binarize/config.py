"""``BinarizeConfig``: the one validated form of the binarize options.

A recipe's ``binarize:`` section is a ``BinarizeConfig`` (``Recipe.binarize``), validated once
when the recipe loads; the stages, the Results tab's preview and the rules (``rules.Rules``)
all read it as it is. ``with_overrides`` makes the preview's variant (the tab's own thresholds
over the recipe's) as another validated ``BinarizeConfig``.

Serialised, a config keeps only the fields that were set (``model_dump`` leaves the defaults
out), so a recipe written back to YAML has the ``binarize:`` section its author wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

Strategy = Literal["best-vs-worst", "best-vs-random-lower", "all-pairs"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
DEFAULT_STRATEGY: Strategy = "best-vs-worst"


class BinarizeConfig(BaseModel):
    """How judged conversations become chosen / rejected pairs (see ``pipelines.binarize``).

    ``strategy`` picks the pairs of a conversation, ``seed`` the random picks (per conversation,
    whatever the order); ``min_margin``, ``min_chosen_rating`` and ``max_turns`` are thresholds
    (recipes keep them as export filters, the Results tab previews with them);
    ``drop_null_ratings`` drops a conversation with any unrated candidate instead of leaving
    that candidate out; ``decontaminate`` names prompt files (or ``"mtbench"``) whose prompts
    drop a conversation that asks one of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = DEFAULT_STRATEGY
    seed: int = 42
    min_margin: float = Field(default=0, ge=0)
    min_chosen_rating: float | None = None
    drop_null_ratings: bool = False
    max_turns: int | None = Field(default=None, ge=1)
    decontaminate: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}

    def with_overrides(self, overrides: Mapping[str, Any]) -> BinarizeConfig:
        """This config with ``overrides`` on top, validated (``pydantic.ValidationError``
        otherwise, a ``ValueError``)."""
        return BinarizeConfig.model_validate({**self.model_dump(), **overrides})


# The name the options had before they were the recipe's config.
BinarizeOptions = BinarizeConfig
