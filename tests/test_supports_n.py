"""Issue 13: a recipe declares whether an OpenAI-compatible endpoint honours ``n``
(``supports_n: auto | true | false``), overriding the detection; stored rows are the same either
way, a resumed job asks only for the missing samples, and choices missing from an answer are
asked again (or recorded as failed), never dropped. Scripted OpenAI-compatible servers on
127.0.0.1 count the requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import GeneratorConfig
from pipelines.generate import run_generation
from pipelines.recipe import RecipeError, parse_recipe, parse_recipe_yaml
from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult
from tests.support.scripted_generator import ScriptedGenerator


def convs(n: int) -> list[Conversation]:
    return [
        Conversation(
            messages=[
                {"role": "user", "content": f"Tell me about subject {i}."},
                {"role": "assistant", "content": "Gladly."},
                {"role": "user", "content": f"And a detail of subject {i}?"},
            ],
            source="t",
        )
        for i in range(n)
    ]


def gen(url: str, supports_n: Any, **kw: Any) -> GeneratorConfig:
    return GeneratorConfig(
        id="g",
        backend="openai",
        base_url=url,
        model="m",
        max_retries=0,
        temperature=0.8,
        samples=3,
        concurrency=1,
        supports_n=supports_n,
        **kw,
    )


def rows(store: Store) -> list[tuple[Any, ...]]:
    keep = ("conversation_id", "generator_id", "sample_index", "model", "params", "status")
    keep += ("prompt_tokens", "completion_tokens", "finish_reason", "error", "attempts")
    return sorted(tuple(r[k] for k in keep) for r in store.candidate_rows())


def run(tmp_path: Path, name: str, server: ScriptedGenerator, supports_n: Any, n: int = 4) -> Any:
    url = server.start()
    try:
        store = Store(tmp_path / name)
        cs = convs(n)
        store.add_conversations(cs)
        progress = run_generation(store, [gen(url, supports_n)], cs)
        return store, progress, server.generations(), cs
    finally:
        server.stop()


def asked_n(body: dict[str, Any]) -> int:
    return int(body.get("n") or 1)


def test_true_sends_one_request_with_n_per_conversation_even_where_auto_gives_up(
    tmp_path: Path,
) -> None:
    # a gateway that answers at most 2 choices: "auto" takes the first short answer as "n is
    # ignored" and asks one by one from then on; "true" keeps sending n, re-asking the rest
    store, p, sent, cs = run(tmp_path, "true", ScriptedGenerator(max_n=2), True)
    assert p.done == 12 and p.failed == 0
    with_n = [r for r in sent if asked_n(r.body) == 3]
    assert len(with_n) == 4  # one request with n per conversation
    assert sorted(r.last_user for r in with_n) == sorted(c.messages[-1]["content"] for c in cs)
    assert len(sent) == 8  # and one re-ask each for the third sample
    want = {(c.conversation_id, i) for c in cs for i in (0, 1, 2)}
    assert {(r[0], r[2]) for r in rows(store)} == want

    store_auto, p_auto, sent_auto, _ = run(tmp_path, "auto", ScriptedGenerator(max_n=2), "auto")
    assert p_auto.done == 12
    assert sum(1 for r in sent_auto if asked_n(r.body) > 1) == 1  # learnt: one by one after
    assert rows(store) == rows(store_auto)


def test_true_sends_n_on_a_server_that_honours_it(tmp_path: Path) -> None:
    store, p, sent, cs = run(tmp_path, "true", ScriptedGenerator(honour_n=True), True, n=5)
    assert p.done == 15 and p.failed == 0
    assert len(sent) == 5 and all(asked_n(r.body) == 3 for r in sent)
    assert len({r["text"] for r in store.candidate_rows()}) == 15  # three distinct choices each


def test_false_sends_one_request_per_sample(tmp_path: Path) -> None:
    # the server would honour n ("auto" sends 4 requests): false never asks for it
    store, p, sent, cs = run(tmp_path, "false", ScriptedGenerator(honour_n=True), False)
    assert p.done == 12 and p.failed == 0
    assert len(sent) == 12 and all("n" not in r.body for r in sent)
    store_n, _, sent_n, _ = run(tmp_path, "n", ScriptedGenerator(honour_n=True), "auto")
    assert len(sent_n) == 4
    assert rows(store) == rows(store_n)  # the same rows either way


def test_true_on_a_server_that_ignores_n_stores_every_sample(tmp_path: Path) -> None:
    # a proxy that drops n: each answer has one choice; the missing two are asked again
    store, p, sent, cs = run(tmp_path, "true", ScriptedGenerator(honour_n=False), True)
    assert p.done == 12 and p.failed == 0
    assert sum(1 for r in sent if asked_n(r.body) == 3) == 4  # still one n request each
    assert len(sent) == 4 + 4 * 2
    assert all(r["status"] == "done" for r in store.candidate_rows())
    store_f, _, _, _ = run(tmp_path, "false", ScriptedGenerator(honour_n=False), False)
    assert rows(store) == rows(store_f)


def test_missing_choices_that_fail_again_are_recorded_as_failed(tmp_path: Path) -> None:
    # two choices back, and the re-ask of the third fails: stored as a failed row with its
    # error (a later run retries it), never silently missing
    server = ScriptedGenerator(max_n=2, fail_single=True)
    store, p, sent, cs = run(tmp_path, "ws", server, True, n=2)
    assert p.done == 4 and p.failed == 2
    got = {(r["conversation_id"], r["sample_index"]): r for r in store.candidate_rows()}
    assert len(got) == 6
    for c in cs:
        assert got[c.conversation_id, 2]["status"] == "failed"
        assert "500" in got[c.conversation_id, 2]["error"]


def test_a_resumed_job_asks_only_for_the_missing_samples(tmp_path: Path) -> None:
    server = ScriptedGenerator(honour_n=True)
    url = server.start()
    try:
        store = Store(tmp_path / "ws")
        cs = convs(4)
        store.add_conversations(cs)
        # what a job killed midway leaves: some samples of some conversations committed
        kept = [(cs[0], 0), (cs[0], 1), (cs[0], 2), (cs[1], 0), (cs[2], 1)]
        for c, idx in kept:
            store.put_candidate(
                c.conversation_id, "g", idx, GenerationResult(key=c.conversation_id, text="kept")
            )
        p = run_generation(store, [gen(url, True)], cs)
        assert p.done == 12 and p.skipped == 5 and p.failed == 0
        sent = server.generations()
        by_user = {r.last_user: asked_n(r.body) for r in sent}
        assert cs[0].messages[-1]["content"] not in by_user  # nothing left to ask
        assert by_user[cs[1].messages[-1]["content"]] == 2
        assert by_user[cs[2].messages[-1]["content"]] == 2
        assert by_user[cs[3].messages[-1]["content"]] == 3
        assert len(sent) == 3 and sum(asked_n(r.body) for r in sent) == 12 - len(kept)
        got = {(r["conversation_id"], r["sample_index"]): r for r in store.candidate_rows()}
        assert set(got) == {(c.conversation_id, i) for c in cs for i in (0, 1, 2)}
        for c, idx in kept:  # committed rows are never asked for again nor overwritten
            assert got[c.conversation_id, idx]["text"] == "kept"
            assert got[c.conversation_id, idx]["attempts"] == 1
    finally:
        server.stop()


def test_seeded_samples_go_one_by_one_even_when_declared(tmp_path: Path) -> None:
    server = ScriptedGenerator(honour_n=True)
    url = server.start()
    try:
        store = Store(tmp_path / "ws")
        cs = convs(2)
        store.add_conversations(cs)
        p = run_generation(store, [gen(url, True, seed=7)], cs)
        assert p.done == 6
        seeds = sorted(r.body.get("seed") for r in server.generations())
        assert seeds == [7, 7, 8, 8, 9, 9] and all("n" not in r.body for r in server.generations())
    finally:
        server.stop()


def _recipe(**extra: Any) -> dict[str, Any]:
    model = {"id": "g", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    return {"name": "r", "source": {"path": "a.jsonl"}, "generators": [{**model, **extra}]}


def test_recipe_validates_supports_n() -> None:
    assert parse_recipe(_recipe()).generators[0].supports_n == "auto"
    for given, want in ((True, True), (False, False), ("true", True), ("auto", "auto")):
        recipe = parse_recipe(_recipe(supports_n=given))
        assert recipe.generators[0].supports_n == want
        # written back and read again: the same setting
        again = parse_recipe_yaml(recipe.to_yaml())
        assert again.generators[0].supports_n == want
    with pytest.raises(RecipeError) as err:
        parse_recipe(_recipe(supports_n="sometimes"))
    assert "generators.0.supports_n" in str(err.value) and "auto, true or false" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(RecipeError, match="supports_n: not an option of backend embedded"):
        parse_recipe(
            {
                "name": "r",
                "source": {"path": "a.jsonl"},
                "generators": [{"id": "g", "backend": "embedded", "supports_n": True}],
            }
        )


@pytest.fixture
def as_owner() -> Iterator[None]:
    """Calls outside any event act as an owner's event (an app built by an earlier test may
    have installed a policy in which such a caller is anonymous)."""
    from capyui import guard
    from pipelines.workspace import Actor, Role

    token = guard._actor.set(Actor("o", Role.OWNER))
    try:
        yield
    finally:
        guard._actor.reset(token)


def test_models_tab_shows_and_edits_supports_n(tmp_path: Path, as_owner: None) -> None:
    from capyui.app import Workspace
    from capyui.tabs.models import load_form, models_html, save_model

    ws = Workspace(tmp_path)
    url = "http://127.0.0.1:9/v1"
    out = save_model(ws, "generator", "openai", "gw", "m", url, "", 0.7, 64, 3, "true")
    assert "Saved generator" in out[1]
    assert ws.recipe.generators[-1].supports_n is True
    assert load_form(ws, "generator:gw")[-1] == "true"
    assert "n in one request" in models_html(ws) and "<td>yes</td>" in models_html(ws)
    save_model(ws, "generator", "openai", "gw", "m", url, "", 0.7, 64, 3, "false")
    assert ws.recipe.generators[-1].supports_n is False
    assert "<td>no</td>" in models_html(ws)
    # a client that does not send the field (an older API call): auto
    save_model(ws, "generator", "openai", "gw", "m", url, "", 0.7, 64, 3)
    assert ws.recipe.generators[-1].supports_n == "auto"
    assert "<td>auto</td>" in models_html(ws)
    # a backend without the setting: nothing saved, "—" in the table
    save_model(ws, "generator", "embedded", "local", "", "", "", 0.7, 64, 1, "true")
    assert not hasattr(ws.recipe.generators[-1], "supports_n")
    assert load_form(ws, "generator:local")[-1] == "auto"
