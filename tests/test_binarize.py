"""Binarization rules, one by one, on store fixtures built through ``Store`` methods."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipelines.binarize import (
    COLUMNS,
    DROP_REASONS,
    BinarizeOptions,
    JudgedConversation,
    binarize,
    collect,
    load_prompts,
    mtbench_prompts,
    mtbench_question_file,
    normalize_prompt,
    to_trl_example,
)
from pipelines.records import CandidateRow, Review
from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult

MODELS = {"gen-a": "model-A", "gen-b": "model-B", "gen-c": "model-C", "gen-d": "model-D"}


def add_row(
    store: Store,
    text: str,
    ratings: dict[str, int | None] | None,
    *,
    turns: int = 1,
    judge_id: str = "judge",
    judge_model: str = "judge-model",
    source: str = "test",
) -> str:
    """One conversation whose candidates are ``gen-x/0`` per key of ``ratings`` (judged with
    those ratings unless ``ratings`` is None, then the candidates are gen-a and gen-b, unjudged).
    """
    messages: list[dict[str, str]] = []
    for t in range(turns - 1):
        messages += [
            {"role": "user", "content": f"{text} (turn {t})"},
            {"role": "assistant", "content": f"answer {t}"},
        ]
    messages.append({"role": "user", "content": text})
    conv = Conversation(messages=messages, source=source, original_response="orig")
    store.add_conversations([conv])
    gens = list(ratings) if ratings is not None else ["gen-a", "gen-b"]
    for gen in gens:
        store.put_candidate(
            conv.conversation_id,
            gen,
            0,
            GenerationResult(key=None, text=f"{gen} says {text}", model=MODELS[gen]),
        )
    if ratings is not None:
        keys = [f"{g}/0" for g in gens]
        store.put_judgment(
            conv.conversation_id,
            judge_id,
            model=judge_model,
            candidate_keys=keys,
            ratings=list(ratings.values()),
            rationales=[f"why {g}" for g in gens],
            order_shown=list(range(len(keys))),
            seed=1,
            raw_output=None,
            error=None,
        )
    return conv.conversation_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ws")


def run(store: Store, **opts: Any) -> Any:
    return binarize(collect(store), BinarizeOptions(**opts))


# -- collect -------------------------------------------------------------------------------------
def test_collect_aligns_judgment_with_candidates(store: Store) -> None:
    cid = add_row(store, "q1", {"gen-b": 2, "gen-a": 5})  # judgment order != candidate order
    store.put_candidate(cid, "gen-c", 0, GenerationResult(key=None, error="boom"))  # failed
    rows = collect(store)
    assert len(rows) == 1
    row = rows[0]
    assert [c.key for c in row.candidates] == ["gen-a/0", "gen-b/0"]
    assert [c.model for c in row.candidates] == ["model-A", "model-B"]
    assert row.ai_ratings == [5, 2]
    assert row.rationales == ["why gen-a", "why gen-b"]
    assert row.judge_model == "judge-model" and row.judged


def test_collect_and_decide_pass_typed_records(store: Store) -> None:
    """Issue 9: binarize's inner loop carries ``records`` types, read by name, not tuples
    and dicts read by position or key."""
    from pipelines.binarize import Decided, Rules, decide

    cid = add_row(store, "typed", {"gen-a": 2, "gen-b": 4})
    store.put_review(cid, "alice", ratings={"gen-a/0": 5}, chosen="gen-a/0", rejected="gen-b/0")
    (row,) = collect(store)
    assert all(type(c) is CandidateRow for c in row.candidates)
    assert row.candidates[0] == CandidateRow("gen-a/0", "gen-a", "model-A", "gen-a says typed")
    (review,) = row.reviews
    assert isinstance(review, Review)
    assert (review.conversation_id, review.reviewer, review.ratings) == (
        cid,
        "alice",
        {"gen-a/0": 5},
    )
    assert (review.chosen, review.rejected, review.discard) == ("gen-a/0", "gen-b/0", False)
    decided = decide(row, Rules.of(BinarizeOptions()))
    assert isinstance(decided, Decided)
    assert (decided.ratings, decided.human, decided.pairs) == ([5.0, 4.0], True, [(0, 1)])


def test_collect_filters_generators_and_judge(store: Store) -> None:
    cid = add_row(store, "q1", {"gen-a": 5, "gen-b": 2, "gen-c": 1})
    store.put_judgment(
        cid,
        "other",
        model="other-model",
        candidate_keys=["gen-a/0"],
        ratings=[1],
        rationales=[None],
        order_shown=[0],
        seed=None,
        raw_output=None,
        error=None,
    )
    rows = collect(store, generator_ids=["gen-a", "gen-c"], judge_id="judge")
    assert [c.generator_id for c in rows[0].candidates] == ["gen-a", "gen-c"]
    assert rows[0].ai_ratings == [5, 1]
    rows = collect(store, judge_id="other")
    assert rows[0].judge_model == "other-model"
    assert rows[0].ai_ratings == [1, None, None]
    assert collect(store, judge_id="missing")[0].judged is False


def test_collect_uses_a_constant_number_of_queries(store: Store) -> None:
    def count_selects(n: int) -> int:
        for i in range(n):
            cid = add_row(store, f"n{n}-q{i}", {"gen-a": 5, "gen-b": 1})
            store.put_review(cid, "alice", ratings={"gen-a/0": 4})
        selects: list[str] = []
        db = store._connection()
        db.set_trace_callback(lambda sql: selects.append(sql) if "SELECT" in sql else None)
        try:
            rows = collect(store)
        finally:
            db.set_trace_callback(None)
        assert all(r.reviews for r in rows)
        return len(selects)

    assert count_selects(3) == count_selects(60) == 5  # + pairwise verdicts (issue 14)


def test_generators_sharing_a_model_name_get_distinct_labels(store: Store) -> None:
    """Like the quickstart: two generators of the same model (different temperature / system
    prompt) must stay distinguishable in generation_models / chosen_model / rejected_model."""
    conv = Conversation(messages=[{"role": "user", "content": "q"}], source="test")
    store.add_conversations([conv])
    cid = conv.conversation_id
    for gen, model in (
        ("smol-precise", "SmolLM2-135M-Instruct"),
        ("smol-creative", "SmolLM2-135M-Instruct"),
        ("original", "original"),
    ):
        store.put_candidate(cid, gen, 0, GenerationResult(key=None, text=f"{gen}!", model=model))
    store.put_judgment(
        cid,
        "judge",
        model="j",
        candidate_keys=["smol-precise/0", "smol-creative/0", "original/0"],
        ratings=[5, 1, 3],
        rationales=[None] * 3,
        order_shown=[0, 1, 2],
        seed=1,
        raw_output=None,
        error=None,
    )
    rows = collect(store)
    # candidates come in generator_id order
    assert [c.model for c in rows[0].candidates] == [
        "original",
        "SmolLM2-135M-Instruct (smol-creative)",
        "SmolLM2-135M-Instruct (smol-precise)",
    ]
    pair = binarize(rows).pairs[0]
    assert pair["chosen_model"] == "SmolLM2-135M-Instruct (smol-precise)"
    assert pair["rejected_model"] == "SmolLM2-135M-Instruct (smol-creative)"
    assert pair["generation_models"] == [c.model for c in rows[0].candidates]
    # restricted to one of the two generators, the plain model name is unique again
    rows = collect(store, generator_ids=["smol-precise", "original"])
    assert [c.model for c in rows[0].candidates] == ["original", "SmolLM2-135M-Instruct"]


# -- strategies ----------------------------------------------------------------------------------
def test_best_vs_worst_and_output_columns(store: Store) -> None:
    cid = add_row(store, "capital of France?", {"gen-a": 3, "gen-b": 5, "gen-c": 1}, turns=2)
    res = run(store)
    assert len(res.pairs) == 1
    pair = res.pairs[0]
    assert tuple(pair) == COLUMNS
    assert pair["conversation_id"] == cid and pair["source"] == "test"
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-B", "model-C")
    assert (pair["rating_chosen"], pair["rating_rejected"]) == (5.0, 1.0)
    assert pair["rating_source"] == "ai" and pair["judge_model"] == "judge-model"
    assert pair["ratings"] == [3.0, 5.0, 1.0]
    assert pair["generations"][1] == "gen-b says capital of France?"
    assert pair["prompt"] == pair["conversation"] and len(pair["prompt"]) == 3
    assert pair["prompt"][-1]["role"] == "user"
    assert pair["chosen"] == [
        *pair["prompt"],
        {"role": "assistant", "content": pair["generations"][1]},
    ]
    assert pair["rejected"][-1]["content"] == pair["generations"][2]
    trl = to_trl_example(pair)
    assert trl["chosen"] == [{"role": "assistant", "content": pair["generations"][1]}]
    assert res.dropped == Counter(dict.fromkeys(DROP_REASONS, 0))


def test_best_vs_random_lower_is_seeded_and_picks_only_lower(store: Store) -> None:
    for i in range(40):
        add_row(store, f"q{i}", {"gen-a": 5, "gen-b": 4, "gen-c": 2, "gen-d": 5})
    rows = collect(store)
    res = binarize(rows, BinarizeOptions(strategy="best-vs-random-lower", seed=7))
    again = binarize(rows, BinarizeOptions(strategy="best-vs-random-lower", seed=7))
    other = binarize(rows, BinarizeOptions(strategy="best-vs-random-lower", seed=8))
    assert res.pairs == again.pairs
    assert [p["rejected_model"] for p in res.pairs] != [p["rejected_model"] for p in other.pairs]
    assert {p["chosen_model"] for p in res.pairs} == {"model-A", "model-D"}  # ties at the top
    assert {p["rejected_model"] for p in res.pairs} == {"model-B", "model-C"}
    assert all(p["rating_chosen"] > p["rating_rejected"] for p in res.pairs)
    # with a margin, only candidates far enough below are eligible as rejected
    res = binarize(rows, BinarizeOptions(strategy="best-vs-random-lower", min_margin=2))
    assert {p["rejected_model"] for p in res.pairs} == {"model-C"}


def test_best_vs_worst_breaks_ties_by_seed_not_position(store: Store) -> None:
    for i in range(40):
        add_row(store, f"q{i}", {"gen-a": 5, "gen-b": 5, "gen-c": 1})
    res = run(store)
    assert {p["chosen_model"] for p in res.pairs} == {"model-A", "model-B"}


def test_all_pairs(store: Store) -> None:
    add_row(store, "q", {"gen-a": 5, "gen-b": 3, "gen-c": 3, "gen-d": 1})
    res = run(store, strategy="all-pairs")
    got = sorted((p["chosen_model"], p["rejected_model"]) for p in res.pairs)
    assert got == [
        ("model-A", "model-B"),
        ("model-A", "model-C"),
        ("model-A", "model-D"),
        ("model-B", "model-D"),
        ("model-C", "model-D"),
    ]
    assert res.rows_kept == 1
    res = run(store, strategy="all-pairs", min_margin=3)
    assert [(p["chosen_model"], p["rejected_model"]) for p in res.pairs] == [("model-A", "model-D")]
    res = run(store, strategy="all-pairs", min_chosen_rating=4)
    assert {p["chosen_model"] for p in res.pairs} == {"model-A"}


# -- filters -------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["best-vs-worst", "best-vs-random-lower", "all-pairs"])
def test_ties_are_always_dropped(store: Store, strategy: str) -> None:
    add_row(store, "q", {"gen-a": 4, "gen-b": 4})
    res = run(store, strategy=strategy, min_margin=0)
    assert res.pairs == [] and res.dropped["tie"] == 1


def test_min_margin(store: Store) -> None:
    add_row(store, "small", {"gen-a": 4, "gen-b": 3})
    add_row(store, "big", {"gen-a": 5, "gen-b": 2})
    res = run(store, min_margin=2)
    assert [p["rating_chosen"] - p["rating_rejected"] for p in res.pairs] == [3.0]
    assert res.dropped["below_margin"] == 1


def test_min_chosen_rating(store: Store) -> None:
    add_row(store, "weak", {"gen-a": 3, "gen-b": 1})
    add_row(store, "strong", {"gen-a": 5, "gen-b": 1})
    res = run(store, min_chosen_rating=4)
    assert [p["rating_chosen"] for p in res.pairs] == [5.0]
    assert res.dropped["below_min_chosen"] == 1


def test_null_ratings_are_ineligible_or_drop_the_row(store: Store) -> None:
    add_row(store, "three", {"gen-a": 5, "gen-b": None, "gen-c": 1})
    add_row(store, "two", {"gen-a": 5, "gen-b": None})
    res = run(store)
    assert len(res.pairs) == 1
    assert (res.pairs[0]["chosen_model"], res.pairs[0]["rejected_model"]) == ("model-A", "model-C")
    assert res.pairs[0]["ratings"] == [5.0, None, 1.0]
    assert res.dropped["null_rating"] == 1
    res = run(store, drop_null_ratings=True)
    assert res.pairs == [] and res.dropped["null_rating"] == 2


def test_max_turns(store: Store) -> None:
    add_row(store, "short", {"gen-a": 5, "gen-b": 1}, turns=2)
    add_row(store, "long", {"gen-a": 5, "gen-b": 1}, turns=3)
    res = run(store, max_turns=2)
    assert len(res.pairs) == 1 and res.dropped["too_many_turns"] == 1
    assert len(run(store).pairs) == 2


def test_no_judgment_and_too_few_candidates(store: Store) -> None:
    add_row(store, "unjudged", None)
    add_row(store, "single", {"gen-a": 5})
    store.add_conversations([Conversation(messages=[{"role": "user", "content": "bare"}])])
    res = run(store)
    assert res.pairs == []
    assert res.dropped["no_judgment"] == 1
    assert res.dropped["too_few_candidates"] == 2
    assert res.rows_in == 3


# -- human review --------------------------------------------------------------------------------
def test_human_ratings_override_ai_ratings(store: Store) -> None:
    cid = add_row(store, "q", {"gen-a": 5, "gen-b": 1, "gen-c": 3})
    store.put_review(cid, "alice", ratings={"gen-a/0": 1, "gen-b/0": 4})
    store.put_review(cid, "bob", ratings={"gen-b/0": 5})
    pair = run(store).pairs[0]
    assert pair["ratings"] == [1.0, 4.5, 3.0]  # mean human rating, else the AI rating
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-B", "model-A")
    assert (pair["rating_chosen"], pair["rating_rejected"]) == (4.5, 1.0)
    assert pair["rating_source"] == "human"


def test_human_ratings_alone_make_an_unjudged_row_usable(store: Store) -> None:
    cid = add_row(store, "q", None)
    store.put_review(cid, "alice", ratings={"gen-a/0": 2, "gen-b/0": 5})
    pair = run(store).pairs[0]
    assert pair["chosen_model"] == "model-B" and pair["rating_source"] == "human"
    assert pair["judge_model"] is None


def test_human_pick_overrides_ratings(store: Store) -> None:
    cid = add_row(store, "q", {"gen-a": 5, "gen-b": 1, "gen-c": 5})
    store.put_review(cid, "alice", chosen="gen-b/0", rejected="gen-a/0")
    pair = run(store, min_margin=3, min_chosen_rating=5).pairs[0]
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-B", "model-A")
    assert (pair["rating_chosen"], pair["rating_rejected"]) == (1.0, 5.0)
    assert pair["rating_source"] == "human"


def test_partial_human_pick_fills_the_other_side_from_ratings(store: Store) -> None:
    cid = add_row(store, "q", {"gen-a": 5, "gen-b": 2, "gen-c": 4})
    store.put_review(cid, "alice", chosen="gen-c/0")
    pair = run(store).pairs[0]
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-C", "model-B")
    store.put_review(cid, "alice", rejected="gen-a/0")
    pair = run(store).pairs[0]
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-C", "model-A")


def test_conflicting_picks_follow_the_majority(store: Store) -> None:
    cid = add_row(store, "q", {"gen-a": 3, "gen-b": 3, "gen-c": 3})
    store.put_review(cid, "r1", chosen="gen-a/0", rejected="gen-c/0")
    store.put_review(cid, "r2", chosen="gen-b/0", rejected="gen-c/0")
    store.put_review(cid, "r3", chosen="gen-b/0", rejected="gen-c/0")
    pair = run(store).pairs[0]
    assert (pair["chosen_model"], pair["rejected_model"]) == ("model-B", "model-C")


def test_discard_by_majority(store: Store) -> None:
    two_of_three = add_row(store, "q1", {"gen-a": 5, "gen-b": 1})
    one_of_two = add_row(store, "q2", {"gen-a": 5, "gen-b": 1})
    single = add_row(store, "q3", {"gen-a": 5, "gen-b": 1})
    store.put_review(two_of_three, "r1", discard=True)
    store.put_review(two_of_three, "r2", discard=True)
    store.put_review(two_of_three, "r3", ratings={"gen-a/0": 5})
    store.put_review(one_of_two, "r1", discard=True)
    store.put_review(one_of_two, "r2", source="argilla")
    store.put_review(single, "r1", discard=True)
    res = run(store)
    assert res.dropped["discarded"] == 2
    assert [p["conversation_id"] for p in res.pairs] == [one_of_two]


# -- decontamination -----------------------------------------------------------------------------
def test_normalize_prompt() -> None:
    assert normalize_prompt("  Hello,\n\tWORLD!!  ") == "hello, world"
    assert normalize_prompt("«¿Qué tal?»") == "qué tal"
    assert normalize_prompt("...") == ""


def test_mtbench_questions_are_the_real_file() -> None:
    path = mtbench_question_file()
    assert path.name == "question.jsonl" and "mt_bench" in str(path)
    questions = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(questions) == 80 and all(len(q["turns"]) == 2 for q in questions)
    assert len(mtbench_prompts()) == 160
    assert mtbench_prompts(first_turn_only=True) == [q["turns"][0] for q in questions]


def test_decontamination_with_the_real_mtbench_questions(store: Store, tmp_path: Path) -> None:
    first = json.loads(mtbench_question_file().read_text().splitlines()[0])["turns"][0]
    mangled = "  " + first.upper().replace(" ", "   \n") + " ?!"
    add_row(store, mangled, {"gen-a": 5, "gen-b": 1})
    add_row(store, mangled, {"gen-a": 5, "gen-b": 1}, turns=3)  # earlier user turns too
    add_row(store, "A clean prompt about capybaras", {"gen-a": 5, "gen-b": 1})
    for spec in (["mtbench"], [str(mtbench_question_file())]):
        res = run(store, decontaminate=spec)
        assert res.dropped["contaminated"] == 2, spec
        assert [p["prompt"][-1]["content"] for p in res.pairs] == ["A clean prompt about capybaras"]
    # a turn that only *contains* a benchmark prompt is not a match
    store2 = Store(tmp_path / "ws2")
    add_row(store2, "Please: " + first, {"gen-a": 5, "gen-b": 1})
    assert run(store2, decontaminate=["mtbench"]).dropped["contaminated"] == 0


def test_decontamination_file_formats(store: Store, tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("Alpha prompt\n\nbeta prompt.\n")
    (tmp_path / "p.json").write_text(json.dumps(["Gamma", {"instruction": "Delta"}]))
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"prompt": "Epsilon"})
        + "\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Zeta"},
                    {"role": "assistant", "content": "not a prompt"},
                ]
            }
        )
        + "\n"
        + json.dumps("Eta")
        + "\n"
    )
    assert load_prompts(tmp_path / "p.txt") == ["Alpha prompt", "beta prompt."]
    assert load_prompts(tmp_path / "p.json") == ["Gamma", "Delta"]
    assert load_prompts(tmp_path / "p.jsonl") == ["Epsilon", "Zeta", "Eta"]
    for text in (
        "alpha PROMPT!",
        "Beta prompt",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "not a prompt",
        "keep me",
    ):
        add_row(store, text, {"gen-a": 5, "gen-b": 1})
    res = run(store, decontaminate=[str(tmp_path / f"p.{ext}") for ext in ("txt", "json", "jsonl")])
    assert res.dropped["contaminated"] == 7
    assert sorted(p["prompt"][-1]["content"] for p in res.pairs) == ["keep me", "not a prompt"]
    with pytest.raises(ValueError, match="expected"):
        load_prompts(tmp_path / "p.csv")


def test_options_forbid_unknown_fields() -> None:
    with pytest.raises(ValueError):
        BinarizeOptions(stratgy="all-pairs")  # type: ignore[call-arg]


def test_binarize_accepts_plain_rows_without_a_store() -> None:
    row = JudgedConversation(
        conversation=Conversation(messages=[{"role": "user", "content": "hi"}]),
        candidates=[CandidateRow("a/0", "a", "A", "hello"), CandidateRow("b/0", "b", "B", "hey")],
        ai_ratings=[2, 4],
        rationales=[None, None],
        judge_model="j",
    )
    res = binarize(iter([row]))
    assert res.pairs[0]["chosen_model"] == "B"
    assert res.summary()["pairs"] == 1


def test_store_is_still_usable_after_collect(store: Store) -> None:
    add_row(store, "q", {"gen-a": 5, "gen-b": 1})
    collect(store)
    assert isinstance(store.query("SELECT * FROM conversations")[0], sqlite3.Row)


# -- columnar path == reference path -------------------------------------------------------------
def _random_rows(n: int, seed: int, prompts: list[str]) -> list[JudgedConversation]:
    """Rows that exercise every rule: 0-6 candidates, null / missing / fractional ratings,
    unjudged rows, reviews with ratings, picks and discards, multi-turn and system messages,
    prompts that do not end on a user turn, contaminated turns, shared model names."""
    import random

    rng = random.Random(seed)
    models = ["m-a", "m-b", "m-c", "m-a", "m-d", "m-e"]
    rows = []
    for i in range(n):
        messages: list[dict[str, str]] = []
        if rng.random() < 0.2:
            messages.append({"role": "system", "content": "sys"})
        for t in range(rng.randint(0, 3)):
            text = rng.choice(prompts) if rng.random() < 0.05 else f"q{i}.{t} {rng.random()}"
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": f"a{i}.{t}"})
        if rng.random() < 0.9:
            messages.append({"role": "user", "content": f"last {i}"})
        k = rng.choice([0, 1, 2, 2, 3, 4, 4, 4, 5, 6])
        cands = [CandidateRow(f"g{j}/0", f"g{j}", models[j], f"text {i}.{j}") for j in range(k)]
        scale = rng.choice([[1, 2, 3, 4, 5], [3, 4], [1, 5], [2.5, 4.0, 4.5]])
        ai: list[int | float | None] = [
            None if rng.random() < 0.1 else rng.choice(scale) for _ in range(k)
        ]
        if k and rng.random() < 0.05:
            ai = ai[: rng.randint(0, k - 1)]  # fewer ratings than candidates
        rationales: list[str | None] = [rng.choice([None, f"why {j}"]) for j in range(len(ai))]
        reviews: list[Review] = []
        if k and rng.random() < 0.15:
            for r in range(rng.randint(1, 3)):
                keys = [c.key for c in cands] + ["gone/0"]
                reviews.append(
                    Review(
                        conversation_id=f"c{seed}-{i}",
                        reviewer=f"r{r}",
                        ratings={
                            key: rng.choice([1, 2, 3, 4, 5, None])
                            for key in rng.sample(keys, rng.randint(0, len(keys)))
                        },
                        chosen=rng.choice([None, None, *keys]),
                        rejected=rng.choice([None, None, *keys]),
                        discard=rng.random() < 0.2,
                    )
                )
        judged = rng.random() > 0.05
        rows.append(
            JudgedConversation(
                conversation=Conversation(
                    messages=messages,
                    source=rng.choice(["s1", "s2"]),
                    original_response=rng.choice([None, f"orig {i}"]),
                    conversation_id=f"c{seed}-{i}",
                ),
                candidates=cands,
                ai_ratings=ai if judged else [None] * k,
                rationales=rationales if judged else [None] * k,
                judge_model="judge" if judged else None,
                reviews=reviews,
                judged=judged,
            )
        )
    return rows


OPTION_GRID = [
    {},
    {"strategy": "best-vs-random-lower", "seed": 3},
    {"strategy": "all-pairs"},
    {"min_margin": 1.5, "min_chosen_rating": 4},
    {"strategy": "best-vs-random-lower", "min_margin": 2, "drop_null_ratings": True},
    {"strategy": "all-pairs", "min_margin": 1, "min_chosen_rating": 3.5, "max_turns": 2},
    {"drop_null_ratings": True, "max_turns": 1, "decontaminate": ["P"]},
    {"strategy": "best-vs-random-lower", "decontaminate": ["P"], "seed": 11},
]


@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: ",".join(map(str, o.values())))
def test_columnar_path_matches_the_reference(tmp_path: Path, opts: dict[str, Any]) -> None:
    from pipelines.binarize import CHUNK_ROWS, binarize_reference

    prompts = ["Tell me about capybaras.", "What is 2+2?", "Write a haiku!"]
    (tmp_path / "p.txt").write_text("\n".join(p.upper() + " " for p in prompts))
    options = BinarizeOptions(
        **{
            **opts,
            "decontaminate": [str(tmp_path / "p.txt") for _ in opts.get("decontaminate", [])],
        }
    )
    rows = _random_rows(3000, seed=len(str(opts)), prompts=prompts)
    got = binarize(rows, options)
    want = binarize_reference(rows, options)
    assert got.dropped == want.dropped
    assert (got.rows_in, got.rows_kept, got.human_rows) == (
        want.rows_in,
        want.rows_kept,
        want.human_rows,
    )
    assert got.num_pairs == len(want.pairs) > 0
    assert got.table.equals(want.table)
    assert got.pairs == want.pairs
    assert sum(got.dropped.values()) + got.rows_kept == len(rows)
    # the interesting paths were all taken
    assert got.human_rows > 0 and any(r.reviews for r in rows)
    if opts.get("decontaminate"):
        assert got.dropped["contaminated"] > 0
    # chunking does not change anything
    import pipelines.binarize.columnar as b

    old = b.CHUNK_ROWS
    b.CHUNK_ROWS = 97
    try:
        assert binarize(rows, options).table.equals(want.table)
    finally:
        b.CHUNK_ROWS = old
    assert CHUNK_ROWS == old


def test_columnar_path_counts_every_drop_reason() -> None:
    rows = _random_rows(3000, seed=5, prompts=["x"])
    res = binarize(rows, BinarizeOptions(min_margin=1, min_chosen_rating=4, max_turns=2))
    for reason in (
        "discarded",
        "no_judgment",
        "too_few_candidates",
        "null_rating",
        "tie",
        "below_margin",
        "below_min_chosen",
        "too_many_turns",
    ):
        assert res.dropped[reason] > 0, reason


def test_more_ratings_than_candidates_falls_back_to_the_reference() -> None:
    from pipelines.binarize import binarize_reference

    row = JudgedConversation(
        conversation=Conversation(messages=[{"role": "user", "content": "hi"}]),
        candidates=[CandidateRow("a/0", "a", "A", "hello"), CandidateRow("b/0", "b", "B", "hey")],
        ai_ratings=[2, 4, None],
        rationales=[None, None, None],
    )
    res = binarize([row])
    assert res.pairs == binarize_reference([row]).pairs
    assert res.pairs[0]["ratings"] == [2.0, 4.0, None]


def test_empty_input_gives_an_empty_table() -> None:
    res = binarize([])
    assert res.pairs == [] and res.table.num_rows == 0
    assert res.table.column_names == list(COLUMNS)
