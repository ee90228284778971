"""Editing a judge panel through the workspace service (what the Models tab calls): the view of
the recipe's judges and ``panel:``, judges built from the owner's endpoint registry, the
validated save (``judges:`` + ``panel:``), its one-line errors and its role check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.panel_edit import EMBEDDED, OTHER_URL
from pipelines.recipe import load_recipe
from pipelines.service import ServiceError, WorkspaceService
from pipelines.workspace import Actor, Forbidden, Policy, Role

OWNER = Actor("olga", Role.OWNER)
REVIEWER = Actor("rita", Role.REVIEWER)
NOBODY = Actor(None, Role.ANONYMOUS)
SECRET = "sk-panel-0123456789abcdef0123456789"
REGISTRY = [
    {
        "id": "alpha",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "PANEL_ALPHA_KEY",
        "models": ["judge-a", "judge-a2"],
    },
    {"id": "beta", "base_urls": ["http://127.0.0.1:10/v1", "http://127.0.0.1:11/v1"]},
]


def _judge(jid: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": jid,
        "backend": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "model": f"m-{jid}",
        **extra,
    }


def _recipe(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "panel-edit",
        "source": {"path": "none.jsonl"},
        "generators": [{"id": "g1", "backend": "original"}],
    }
    data.update(sections)
    return data


def _service(tmp_path: Path, recipe: dict[str, Any], registry: bool = True) -> WorkspaceService:
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    if registry:
        (tmp_path / "endpoints.yaml").write_text(yaml.safe_dump(REGISTRY))
    return WorkspaceService(tmp_path, Policy(frozenset({"olga"}), frozenset({"rita"})))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAPYUI_ENDPOINTS", "SPACE_ID", "CAPYUI_AUTH", "CAPYUI_STRICT_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PANEL_ALPHA_KEY", SECRET)


def _saved(svc: WorkspaceService) -> dict[str, Any]:
    return yaml.safe_load(svc.recipe_path.read_text())


def _save_as_shown(svc: WorkspaceService) -> None:
    view = svc.judge_panel(OWNER)
    svc.save_judge_panel(
        OWNER,
        view.judges,
        aggregate=view.aggregate,
        panel_id=view.panel_id,
        min_judges=view.min_judges,
    )


@pytest.mark.parametrize(
    "sections",
    [
        # judge: beside judges:, every panel setting
        {
            "judge": _judge("first", 9),
            "judges": [_judge("second", 10, reverse_pass=True), _judge("third", 11)],
            "panel": {"aggregate": "majority", "id": "jury", "min_judges": 2},
        },
        # judges: only, no panel: section (its defaults)
        {"judges": [_judge("a", 9), _judge("b", 10, temperature=0.3, template="capyui")]},
        # one judge: the single-judge recipe as before
        {"judge": _judge("only", 9, max_tokens=2048)},
    ],
    ids=["judge-and-judges", "judges-only", "single-judge"],
)
def test_panel_round_trips_through_the_view(tmp_path: Path, sections: dict[str, Any]) -> None:
    svc = _service(tmp_path, _recipe(**sections), registry=False)
    before = svc.recipe.to_dict()
    view = svc.judge_panel(OWNER)
    ids = [j["id"] for j in [*([sections["judge"]] if "judge" in sections else [])]]
    ids += [j["id"] for j in sections.get("judges", [])]
    assert [j.id for j in view.judges] == ids
    panel = sections.get("panel", {})
    assert view.aggregate == panel.get("aggregate", "mean")
    assert view.panel_id == panel.get("id", "panel")
    assert view.min_judges == panel.get("min_judges")
    assert view.is_panel == (len(ids) > 1)
    _save_as_shown(svc)
    assert svc.recipe.to_dict() == before
    reread = load_recipe(svc.recipe_path).to_dict()  # what the next start reads
    assert {**reread, "source": None} == {**before, "source": None}  # (its path: absolute)
    saved = _saved(svc)
    assert ("judge" in saved) == ("judge" in sections)
    assert ("judges" in saved) == ("judges" in sections)
    assert ("panel" in saved) == ("panel" in sections)


def test_a_panel_built_from_the_registry_is_saved_as_judges_and_panel(tmp_path: Path) -> None:
    svc = _service(tmp_path, _recipe(judge=_judge("old", 12)))
    eps = {e.id: e for e in svc.panel_endpoints(OWNER)}
    assert set(eps) == {"alpha", "beta", EMBEDDED, OTHER_URL}
    assert eps["alpha"].api_key_env == "PANEL_ALPHA_KEY" and eps["alpha"].models == (
        "judge-a",
        "judge-a2",
    )
    assert all(SECRET not in repr(e) for e in eps.values())
    a = svc.new_panel_judge(OWNER, "alpha", "judge-a")  # id: the model's name
    b = svc.new_panel_judge(OWNER, "beta", "org/Qwen2.5-72B", "qwen", taken=[a.id])
    assert a.id == "judge-a" and a.endpoint == "alpha" and a.api_key_env == "PANEL_ALPHA_KEY"
    assert b.urls == ["http://127.0.0.1:10/v1", "http://127.0.0.1:11/v1"]
    assert b.api_key_env is None
    view = svc.save_judge_panel(OWNER, [a, b], aggregate="median", panel_id="jury", min_judges=1)
    assert [j.id for j in view.judges] == ["judge-a", "qwen"] and view.is_panel
    saved = _saved(svc)
    assert "judge" not in saved  # the old single judge is not in the saved list
    assert [j["id"] for j in saved["judges"]] == ["judge-a", "qwen"]
    assert saved["judges"][0]["api_key_env"] == "PANEL_ALPHA_KEY"
    assert saved["panel"] == {"id": "jury", "aggregate": "median", "min_judges": 1}
    assert SECRET not in svc.recipe_path.read_text()
    assert svc.recipe.rating_judge_id() == "jury"
    # back to one judge: the recipe's judge, no panel
    view = svc.save_judge_panel(OWNER, [b], aggregate="median", panel_id="jury")
    assert not view.is_panel
    saved = _saved(svc)
    assert saved["judge"]["id"] == "qwen" and "judges" not in saved and "panel" not in saved


def test_new_judges_come_only_from_the_registry(tmp_path: Path) -> None:
    svc = _service(tmp_path, _recipe(judge=_judge("old", 12)))
    cases = {
        ("nowhere", "m", ""): "not an endpoint of the owner's registry",
        ("alpha", "other-model", ""): "not allowed on endpoint alpha",
        ("alpha", "", ""): "Pick the model",
        ("", "m", ""): "Pick where the judge runs",
        ("beta", "m", "bad id!"): "Give the judge an id",
        ("alpha", "judge-a", "old"): "already in the panel",
    }
    for (endpoint, model, jid), message in cases.items():
        with pytest.raises(ServiceError, match=message) as exc:
            svc.new_panel_judge(OWNER, endpoint, model, jid, taken=["old"])
        assert "\n" not in str(exc.value)
    # another URL never carries a key; the embedded model needs none
    other = svc.new_panel_judge(OWNER, OTHER_URL, "m", "mine", base_url="http://127.0.0.1:13/v1")
    assert other.api_key_env is None and other.endpoint is None
    with pytest.raises(ServiceError, match="credentials"):
        svc.new_panel_judge(OWNER, OTHER_URL, "m", "x", base_url="http://u:p@127.0.0.1:13/v1")
    assert svc.new_panel_judge(OWNER, EMBEDDED, "", "").config["backend"] == "embedded"
    # a judge naming a key for a URL the owner did not register for it is refused on save
    rogue = _judge("rogue", 13, api_key_env="PANEL_ALPHA_KEY")
    with pytest.raises(ServiceError, match="sent only to the endpoints the owner registered"):
        svc.save_judge_panel(OWNER, [other.config, rogue], aggregate="mean")
    assert _saved(svc)["judge"]["id"] == "old"


def test_invalid_panels_are_one_line_errors_and_change_nothing(tmp_path: Path) -> None:
    svc = _service(tmp_path, _recipe(judge=_judge("one", 9), judges=[_judge("two", 10)]))
    before = svc.recipe_path.read_text()
    one, two = svc.judge_panel(OWNER).judges
    cases: list[tuple[list[Any], dict[str, Any], str]] = [
        ([], {}, "The panel has no judges"),
        ([one, two], {"min_judges": 3}, "min judges is 3 but the panel has 2 judges"),
        ([one, two], {"min_judges": 1.5}, "whole number"),
        ([one, two], {"min_judges": "x"}, "whole number"),
        ([one, one], {}, "judge id 'one' is used twice"),
        ([one, two], {"aggregate": "vote"}, "unknown aggregate 'vote'"),
        ([one, two], {"panel_id": "two"}, "panel id 'two' is also a judge's id"),
        ([one, two], {"panel_id": "../x"}, "panel id"),
        ([one, {**two.config, "temperature": 9}], {}, "judge 'two': temperature"),
    ]
    for judges, options, message in cases:
        kwargs = {"aggregate": "mean", **options}
        with pytest.raises(ServiceError, match=message) as exc:
            svc.save_judge_panel(OWNER, judges, **kwargs)
        assert "\n" not in str(exc.value) and "Traceback" not in str(exc.value)
    assert svc.recipe_path.read_text() == before


def test_only_an_owner_changes_the_panel(tmp_path: Path) -> None:
    svc = _service(tmp_path, _recipe(judge=_judge("one", 9), judges=[_judge("two", 10)]))
    before = svc.recipe_path.read_text()
    judges = svc.judge_panel(REVIEWER).judges  # a reviewer may look
    assert [j.id for j in judges] == ["one", "two"]
    with pytest.raises(Forbidden):
        svc.judge_panel(NOBODY)
    for actor in (REVIEWER, NOBODY):
        for op in (
            lambda a: svc.save_judge_panel(a, judges[:1], aggregate="mean"),
            lambda a: svc.save_judge_panel(a, judges, aggregate="median", min_judges=2),
            lambda a: svc.new_panel_judge(a, "alpha", "judge-a"),
            lambda a: svc.panel_endpoints(a),
        ):
            with pytest.raises(Forbidden, match="owner role|Sign in"):
                op(actor)
    assert svc.recipe_path.read_text() == before
