"""Editing a recipe's judge panel from a front end (the Models tab): what it shows and the
validated change it saves.

A front end shows the recipe's judges (``judge:`` then ``judges:``) and ``panel:`` as a
``JudgePanelView``, lets a curator add judges from ``panel_endpoints`` (the owner's endpoint
registry, the embedded model, or a URL without a key) and saves the whole list with its
aggregate, id and ``min_judges`` at once (``panel_change``). Keys are the registry's: a judge
added from a registry entry takes the entry's ``api_key_env`` (a variable's name, never its
value); a judge on any other URL gets none, and a saved judge whose variable is not the one
the owner registered for its URLs is refused (strict mode), as ``endpoints.api_key_for`` would
refuse it at request time.

A saved list of one judge is the recipe's ``judge:`` (no ``judges:``, no ``panel:``): the way
back from a panel to a single judge. A recipe saved as it was shown is the same recipe.

This module is part of the engine: it never imports gradio or capyui.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pipelines.config import JudgeConfig
from pipelines.endpoints import Endpoint, EndpointError, check_urls, entry_for, strict
from pipelines.panel import AGGREGATES, PanelConfig

if TYPE_CHECKING:
    from pipelines.recipe import Recipe

EMBEDDED = "embedded"  # the endpoint choice: the bundled CPU model (no URL, no key)
OTHER_URL = "url"  # the endpoint choice: an OpenAI-compatible URL typed by the owner, no key
MAX_PANEL_JUDGES = 16
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class PanelEditError(ValueError):
    """A panel that cannot be saved as given; the message is one line for the curator."""


@dataclass(frozen=True)
class PanelEndpoint:
    """One place a panel judge can be reached, as the picker offers it (no secret: the name
    of the key's variable, and for owners whether it is set)."""

    id: str  # a registry entry's id, or EMBEDDED / OTHER_URL
    label: str
    models: tuple[str, ...] = ()  # the models the entry allows (empty: any)
    api_key_env: str | None = None
    registered: bool = False


@dataclass
class PanelJudge:
    """One judge of the panel: its recipe entry (``config``, kept whole so a save changes
    nothing it does not mean to) and what a table shows of it."""

    config: dict[str, Any]
    endpoint: str | None = None  # the registry entry its URLs belong to (None: none / no URL)

    @property
    def id(self) -> str:
        return str(self.config["id"])

    @property
    def backend(self) -> str:
        return str(self.config.get("backend", ""))

    @property
    def model(self) -> str:
        m = str(self.config.get("model") or "")
        return m or ("SmolLM2-135M-Instruct" if self.backend == EMBEDDED else "")

    @property
    def urls(self) -> list[str]:
        return _urls_of(self.config)

    @property
    def api_key_env(self) -> str | None:
        return self.config.get("api_key_env") or None


@dataclass
class JudgePanelView:
    """The recipe's judges and panel settings, as the Models tab shows and edits them."""

    judges: list[PanelJudge] = field(default_factory=list)
    aggregate: str = "mean"
    panel_id: str = "panel"
    min_judges: int | None = None  # None: every judge
    single_judge: str | None = None  # the id under ``judge:`` (the first of ``judges``)

    @property
    def is_panel(self) -> bool:
        return len(self.judges) > 1


def _urls_of(config: dict[str, Any]) -> list[str]:
    return [u for u in [config.get("base_url"), *(config.get("base_urls") or [])] if u]


def _endpoint_of(config: dict[str, Any], registry: Sequence[Endpoint]) -> str | None:
    urls = _urls_of(config)
    entries = {e.id for u in urls if (e := entry_for(u, list(registry))) is not None}
    return next(iter(entries)) if len(entries) == 1 else None


def panel_view(recipe: Recipe, registry: Sequence[Endpoint] = ()) -> JudgePanelView:
    """The recipe's judges (``judge:`` first) and its ``panel:`` (defaults where absent)."""
    panel = recipe.panel or PanelConfig()
    judges = []
    for j in recipe.all_judges():
        config = j.model_dump(mode="json", exclude_none=True)
        judges.append(PanelJudge(config, _endpoint_of(config, registry)))
    return JudgePanelView(
        judges=judges,
        aggregate=panel.aggregate,
        panel_id=panel.id,
        min_judges=panel.min_judges,
        single_judge=recipe.judge.id if recipe.judge is not None else None,
    )


def panel_endpoints(registry: Sequence[Endpoint]) -> list[PanelEndpoint]:
    """What a panel judge may be: each registry entry (with its key variable), the embedded
    model, or another OpenAI-compatible URL without a key."""
    out = []
    for e in registry:
        urls = ", ".join(u for u in [e.base_url, *e.base_urls] if u) or "no URL"
        key = f"; key {e.api_key_env}" if e.api_key_env else ""
        out.append(
            PanelEndpoint(
                id=e.id,
                label=f"{e.id} ({urls}{key})",
                models=tuple(e.models),
                api_key_env=e.api_key_env,
                registered=True,
            )
        )
    out.append(PanelEndpoint(EMBEDDED, "Embedded SmolLM2-135M (CPU, demo only)"))
    out.append(PanelEndpoint(OTHER_URL, "Another OpenAI-compatible URL (no key)"))
    return out


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text.rsplit("/", 1)[-1]).strip("-._")
    return slug[:64]


def _validated(config: dict[str, Any]) -> dict[str, Any]:
    """The judge entry as the recipe keeps it; PanelEditError (one line) when invalid."""
    try:
        judge = JudgeConfig.model_validate(config)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if p not in ("openai", EMBEDDED))
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = f"{where}: " if where else ""
        raise PanelEditError(f"judge '{config.get('id')}': {where}{msg}") from None
    return judge.model_dump(mode="json", exclude_none=True)


def new_judge(
    endpoint: str,
    model: str,
    judge_id: str,
    registry: Sequence[Endpoint],
    *,
    base_url: str = "",
    taken: Sequence[str] = (),
) -> PanelJudge:
    """A judge on ``endpoint`` (a registry entry's id, EMBEDDED or OTHER_URL) running
    ``model``; its id defaults to the model's name. PanelEditError (one line) otherwise."""
    endpoint, model, judge_id = (endpoint or "").strip(), (model or "").strip(), judge_id or ""
    judge_id = judge_id.strip() or _slug(model) or (endpoint if endpoint != OTHER_URL else "")
    config: dict[str, Any]
    entry: str | None = None
    if not endpoint:
        raise PanelEditError("Pick where the judge runs (an endpoint).")
    if endpoint == EMBEDDED:
        config = {"id": judge_id, "backend": EMBEDDED}
    elif endpoint == OTHER_URL:
        url = (base_url or "").strip()
        if not url:
            raise PanelEditError("Give the judge's base URL (an OpenAI-compatible server).")
        try:
            check_urls([url], list(registry))
        except EndpointError as exc:
            raise PanelEditError(str(exc)) from None
        if not model:
            raise PanelEditError("Give the model name the server serves.")
        config = {"id": judge_id, "backend": "openai", "base_url": url, "model": model}
        entry = _endpoint_of(config, registry)
    else:
        ep = next((e for e in registry if e.id == endpoint), None)
        if ep is None:
            raise PanelEditError(f"'{endpoint[:64]}' is not an endpoint of the owner's registry.")
        if not model:
            raise PanelEditError(f"Pick the model the judge uses on {ep.id}.")
        if not ep.allows_model(model):
            raise PanelEditError(
                f"model '{model[:100]}' is not allowed on endpoint {ep.id} "
                f"(allowed: {', '.join(ep.models)})"
            )
        raw = [u for u in [ep.base_url, *ep.base_urls] if u]
        if not raw:
            raise PanelEditError(f"endpoint {ep.id} has no URL in the registry.")
        config = {"id": judge_id, "backend": "openai", "model": model}
        if len(raw) == 1:
            config["base_url"] = raw[0]
        else:
            config["base_urls"] = raw
        if ep.api_key_env:
            config["api_key_env"] = ep.api_key_env
        entry = ep.id
    if not judge_id or not _ID.match(judge_id):
        raise PanelEditError(
            "Give the judge an id: letters, digits, '.', '_' or '-' (e.g. gpt4o-judge)."
        )
    if judge_id in taken:
        raise PanelEditError(
            f"judge id '{judge_id}' is already in the panel: give this one another id."
        )
    return PanelJudge(_validated(config), entry)


def _check_keys(judges: Sequence[PanelJudge], registry: Sequence[Endpoint]) -> None:
    """Every URL is allowed, and a key variable goes only where the owner registered it."""
    reg = list(registry)
    for j in judges:
        try:
            check_urls(j.urls, reg)
        except EndpointError as exc:
            raise PanelEditError(f"judge '{j.id}': {exc}") from None
        key = j.api_key_env
        if not key or not strict(reg):
            continue
        for url in j.urls:
            ep = entry_for(url, reg)
            if ep is None or ep.api_key_env != key:
                raise PanelEditError(
                    f"judge '{j.id}': {key} is sent only to the endpoints the owner registered "
                    "for it: pick the judge's endpoint from the registry"
                )


def _min_judges(value: Any, n: int) -> int | None:
    if value is None or value == "" or value == 0:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        shown = str(value)[:20]
        raise PanelEditError(f"min judges must be a whole number, got {shown!r}") from None
    if number != int(number) or number < 1:
        raise PanelEditError(f"min judges must be a whole number of 1 or more, got {value}")
    if int(number) > n:
        raise PanelEditError(
            f"min judges is {int(number)} but the panel has {n} judge{'s' if n != 1 else ''}"
        )
    return int(number)


def panel_change(
    recipe: Recipe,
    judges: Sequence[PanelJudge | dict[str, Any]],
    *,
    aggregate: str,
    panel_id: str,
    min_judges: Any,
    registry: Sequence[Endpoint] = (),
) -> dict[str, Any]:
    """Check a panel as a curator gave it; returns the recipe sections to write (``judge``,
    ``judges``, ``panel``: a value, or None to remove the section). PanelEditError (one line)
    for no judges, two judges with one id, ``min_judges`` above the number of judges, an
    unknown aggregate, a bad panel id, or a URL / key the registry does not allow."""
    items = [j if isinstance(j, PanelJudge) else PanelJudge(dict(j)) for j in judges]
    if not items:
        raise PanelEditError("The panel has no judges: add at least one, then save.")
    if len(items) > MAX_PANEL_JUDGES:
        raise PanelEditError(f"a panel has at most {MAX_PANEL_JUDGES} judges")
    seen: set[str] = set()
    for j in items:
        if j.id in seen:
            raise PanelEditError(f"judge id '{j.id}' is used twice: give each judge its own id")
        seen.add(j.id)
    configs = [_validated(j.config) for j in items]
    _check_keys(items, registry)
    if len(items) == 1:  # one judge: the recipe's judge, no panel
        return {"judge": configs[0], "judges": None, "panel": None}
    if aggregate not in AGGREGATES:
        raise PanelEditError(
            f"unknown aggregate {str(aggregate)[:20]!r} (one of: {', '.join(AGGREGATES)})"
        )
    pid = (panel_id or "").strip() or "panel"
    if not _ID.match(pid) or len(pid) > 64:
        raise PanelEditError(
            f"panel id {pid[:64]!r}: letters, digits, '.', '_' or '-' (e.g. panel)"
        )
    if pid in seen:
        raise PanelEditError(f"panel id '{pid}' is also a judge's id: give the panel another id")
    need = _min_judges(min_judges, len(items))
    panel: dict[str, Any] | None = {"id": pid, "aggregate": aggregate}
    if need is not None:
        panel = {**(panel or {}), "min_judges": need}
    if recipe.panel is None and PanelConfig.model_validate(panel) == PanelConfig():
        panel = None  # the defaults, as the recipe had them: nothing to write
    keep_single = recipe.judge is not None and configs[0]["id"] == recipe.judge.id
    return {
        "judge": configs[0] if keep_single else None,
        "judges": configs[1:] if keep_single else configs,
        "panel": panel,
    }


def apply_change(data: dict[str, Any], sections: dict[str, Any]) -> None:
    """Write ``panel_change``'s sections into a recipe dict (None removes one)."""
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value


def key_state(var: str | None, registry: Sequence[Endpoint]) -> bool | None:
    """Whether a key variable is set, for owners: registry variables (or any, without a
    registry off a Space); None when it is not theirs to see."""
    if not var:
        return None
    reg = list(registry)
    if strict(reg) and not any(e.api_key_env == var for e in reg):
        return None
    return bool(os.environ.get(var))
