"""Judge panels (issue 14, section 2): two scripted judges on local stub servers with a known
position bias; the measured bias and agreement must be what the stubs were built to produce.
The expected numbers are derived here from the construction (the markers in the candidate
texts and what each stub does with them), never from the code under test."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from capyui.render import panel_html
from pipelines.argilla_queue import ArgillaQueue, Selection
from pipelines.panel import aggregate, disagreement, panel_report, refresh_panel
from pipelines.recipe import RecipeError, parse_recipe
from pipelines.review import queue_count, queue_ids
from pipelines.run import binarize_stage, export_stage, run_recipe
from pipelines.store import Store
from pipelines.types import Conversation, GenerationResult
from tests.support.net import free_port
from tests.support.panel_judges import ContentJudge, PositionalJudge

ROOT = Path(__file__).resolve().parent.parent

# conversation i: the positional judge's markers (a) and the content judge's (b) of g1, g2
A = [(4, 2), (1, 3), (4, 1), (2, 4), (3, 1), (2, 1), (1, 4), (3, 2)]
B: list[tuple[int, int | None]] = [
    (5, 3),
    (2, 4),
    (1, 5),
    (4, 2),
    (4, 4),
    (5, 1),
    (2, 5),
    (4, None),
]
N = len(A)
GENS = ("g1", "g2")
# human picks: conversation -> chosen generator
HUMAN = {0: "g1", 2: "g2", 3: "g1", 4: "g1"}


def combined_a(i: int) -> list[float]:
    """Judge A with a reverse pass over two candidates: each is shown first in one pass (5)
    and second in the other (its marker), and the passes are averaged."""
    return [(5 + a) / 2 for a in A[i]]


def combined_b(i: int) -> list[float | None]:
    return [None if b is None else float(b) for b in B[i]]


def best(ratings: list[float | None]) -> int | None:
    rated = [(r, k) for k, r in enumerate(ratings) if r is not None]
    top = max(r for r, _ in rated)
    winners = [k for r, k in rated if r == top]
    return winners[0] if len(winners) == 1 else None


def seed(data_dir: Path) -> tuple[Store, list[str]]:
    store = Store(data_dir)
    ids = []
    for i in range(N):
        conv = Conversation(
            messages=[{"role": "user", "content": f"Question number {i}: which answer is best?"}],
            source="t",
        )
        store.add_conversations([conv])
        ids.append(conv.conversation_id)
        for g, (a, b) in zip(GENS, zip(A[i], B[i], strict=True), strict=True):
            text = f"answer {g} {i} [[a={a}]] [[b={'null' if b is None else b}]]"
            store.put_candidate(
                conv.conversation_id, g, 0, GenerationResult(key=None, text=text, model=g)
            )
    return store, ids


def recipe_for(url_a: str, url_b: str, aggregate_name: str = "mean", **extra: Any) -> Any:
    judge = {
        "backend": "openai",
        "model": "m",
        "structured": False,
        "reverse_pass": True,
        "max_retries": 0,
        "timeout_s": 60,
    }
    return parse_recipe(
        {
            "name": "panel-test",
            "source": {"path": "unused.jsonl"},
            "generators": [{"id": g, "backend": "original"} for g in GENS],
            "judges": [
                {**judge, "id": "a", "base_url": url_a},
                {**judge, "id": "b", "base_url": url_b},
            ],
            "panel": {"aggregate": aggregate_name},
            **extra,
        }
    )


@pytest.fixture
def judges() -> Any:
    a, b = PositionalJudge(), ContentJudge()
    urls = a.start(), b.start()
    yield a, b, urls
    a.stop()
    b.stop()


def interval_alpha(units: list[list[float]]) -> float:
    """Krippendorff's alpha (interval), straight from its definition: units are the lists of
    values given to one item; only items with two or more values are pairable."""
    units = [u for u in units if len(u) >= 2]
    n = sum(len(u) for u in units)
    d_o = sum(
        sum((x - y) ** 2 for i, x in enumerate(u) for j, y in enumerate(u) if i != j) / (len(u) - 1)
        for u in units
    )
    values = [v for u in units for v in u]
    d_e = sum((x - y) ** 2 for i, x in enumerate(values) for j, y in enumerate(values) if i != j)
    return 1 - (n - 1) * d_o / d_e


def test_panel_measures_the_bias_and_agreement_the_stubs_were_built_with(
    data_dir: Path, judges: Any
) -> None:
    server_a, server_b, (url_a, url_b) = judges
    store, ids = seed(data_dir)
    for i, g in HUMAN.items():
        store.put_review(ids[i], "ann", ratings={}, chosen=f"{g}/0")
    recipe = recipe_for(url_a, url_b)
    summary = run_recipe(recipe, store, stages=["judge", "binarize", "export"])
    assert summary.status == "done", summary.error

    # every judge's judgment is kept, per (conversation, judge)
    a_rows = {j["conversation_id"]: j for j in store.judgments("a")}
    b_rows = {j["conversation_id"]: j for j in store.judgments("b")}
    for i, cid in enumerate(ids):
        assert a_rows[cid]["ratings"] == combined_a(i)
        assert b_rows[cid]["ratings"] == combined_b(i)
        # the reverse pass keeps each pass: A's forward best is the text it saw first
        fwd, rev = a_rows[cid]["pass_ratings"]
        assert fwd[a_rows[cid]["order_shown"][0]] == 5 and rev[a_rows[cid]["order_shown"][-1]] == 5

    # the aggregate (mean) is the panel's judgment, with the disagreement fact
    expected_disagree = set()
    for i, cid in enumerate(ids):
        panel = store.judgment(cid, "panel")
        assert panel is not None
        a, b = combined_a(i), combined_b(i)
        mean = [(x + y) / 2 if y is not None else x for x, y in zip(a, b, strict=True)]
        assert panel["ratings"] == pytest.approx(mean)
        assert panel["status"] == ("partial" if None in b else "done")
        spread = max(abs(x - y) for x, y in zip(a, b, strict=True) if y is not None)
        bests = {k for k in (best(list(a)), best(b)) if k is not None}
        if spread >= 2 or len(bests) > 1:
            expected_disagree.add(cid)
    assert len(expected_disagree) == 3  # conversations 2, 3 and 5 by construction

    report = panel_report(store, ["a", "b"], panel_id="panel", aggregate_name="mean")
    by = {j["judge_id"]: j for j in report.judges}
    # position bias: A's best always changes when the order is reversed, B's never does
    assert by["a"]["reverse_changed"] == 1.0 and by["a"]["reverse_conversations"] == N
    assert by["b"]["reverse_changed"] == 0.0 and by["b"]["reverse_conversations"] == N
    # A's best (forward pass) is always the text shown first; a blind judge: 1 in 2
    assert by["a"]["first_shown_best"] == 1.0
    assert by["a"]["first_shown_expected"] == 0.5
    # B's: the share of its conversations with a unique best where that best was shown first
    # in the pass the stub saw first for that conversation... read from what B's server saw
    forward_first = {}
    for shown in server_b.shown:
        i = int(shown[0].split()[2])
        forward_first.setdefault(i, [])
        forward_first[i].append(shown[0].split()[1])
    eligible = [i for i in range(N) if best(combined_b(i)) is not None]
    hits = 0
    for i in eligible:
        first_gen = GENS[b_rows[ids[i]]["order_shown"][0]]
        assert first_gen in forward_first[i]  # the stored order is one B was really shown
        hits += first_gen == GENS[best(combined_b(i))]  # type: ignore[index]
    assert by["b"]["first_shown_best"] == pytest.approx(round(hits / len(eligible), 4))
    # null ratings: none from A; B could not rate one candidate of sixteen
    assert by["a"]["null_share"] == 0.0
    assert by["b"]["null_share"] == pytest.approx(1 / (2 * N))
    # rating distribution (rounded half up)
    hist_a = {k: 0 for k in range(1, 6)}
    for i in range(N):
        for v in combined_a(i):
            hist_a[min(5, int(v + 0.5))] += 1
    assert by["a"]["histogram"] == hist_a
    # agreement with the humans' chosen answers
    a_hits = sum(best(list(combined_a(i))) == GENS.index(g) for i, g in HUMAN.items())
    b_hits = sum(best(combined_b(i)) == GENS.index(g) for i, g in HUMAN.items())
    assert (a_hits, b_hits) == (2, 3)  # the construction's numbers, for the reader
    assert by["a"]["human_agreement"] == a_hits / len(HUMAN)
    assert by["b"]["human_agreement"] == b_hits / len(HUMAN)
    # between the judges: Krippendorff's alpha and Spearman over the candidates both rated
    units = []
    xs, ys = [], []
    for i in range(N):
        for x, y in zip(combined_a(i), combined_b(i), strict=True):
            units.append([x] if y is None else [x, y])
            if y is not None:
                xs.append(x)
                ys.append(y)
    assert report.alpha == pytest.approx(interval_alpha(units), abs=1e-4)
    pair = report.pairs[0]
    assert pair["judges"] == ["a", "b"] and pair["rated_by_both"] == 2 * N - 1
    assert pair["spearman"] == pytest.approx(spearmanr(xs, ys).statistic, abs=1e-4)
    same = [best(list(combined_a(i))) == best(combined_b(i)) for i in eligible]
    assert pair["same_best"] == pytest.approx(round(sum(same) / len(same), 4))
    assert report.disagree == len(expected_disagree)

    # the review queue filter and the Argilla selection read the stored fact
    assert queue_ids(store, "judges_disagree", judge_id="panel") == [
        cid for cid in ids if cid in expected_disagree
    ]
    assert queue_count(store, "judges_disagree", judge_id="panel") == 3
    assert queue_count(store, "judges_disagree") == 3
    assert queue_ids(store, "judges_disagree", judge_id="a") == []  # a single judge: none
    queue = ArgillaQueue.from_config({"select": "judges_disagree"})
    items, skipped = queue._plan(store, "panel", list(GENS), Selection.parse("judges_disagree"))
    assert sorted(item.conversation_id for item in items) == sorted(expected_disagree)
    assert skipped["not_selected"] == N - 3

    # the export keeps every judge's ratings beside the aggregate it binarized on
    out = Path(summary.export_dir or "")
    table = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert len(table) == N - 1  # conversation 7 is partial (B gave a null); 4: B's tie is fine
    for row in table:
        i = ids.index(row["conversation_id"])
        got = {e["judge_id"]: e["ratings"] for e in row["judge_ratings"]}
        assert got == {"a": combined_a(i), "b": combined_b(i)}
        assert row["judge_model"].startswith("panel:mean")
    lines = (out / "data" / "train-00000-of-00001.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["judge_ratings"][0]["judge_id"] == "a"
    card = (out / "README.md").read_text()
    assert "### Judge panel: biases and agreement" in card
    assert "| a | 8 | 0 | 0.0% |" in card
    assert "| b | 8 | 0 | 6.2% |" in card  # one null rating in sixteen
    assert "(panel) |" not in card  # the aggregate sent no request: no tokens row
    assert "| judge | m (a) | 8 |" in card and "| judge | m (b) | 8 |" in card
    # "judges disagree" is read from the partial index, driven by the few matches
    plan = " ".join(store.explain_review_queue("judges_disagree", judge_id="panel"))
    assert "judgments_disagree" in plan, plan

    # the in-memory export (the Results tab's) writes the same per-judge column
    binarized, _ = binarize_stage(recipe, store)
    out2 = export_stage(recipe.model_copy(update={"name": "panel-test-2"}), store, binarized)
    rows2 = pq.read_table(out2 / "data" / "train-00000-of-00001.parquet").to_pylist()
    assert [r["judge_ratings"] for r in rows2] == [r["judge_ratings"] for r in table]

    # the Results tab's section: one row per judge and the aggregate, and the judge pair
    html = panel_html(report.as_dict())
    assert html.count("<tr>") == 1 + 3 + 1 + 1  # head + a, b, panel; head + the pair
    assert "100% of 8" in html and "0% of 8" in html  # A flips every time, B never
    assert panel_html(None) == ""


def test_single_judge_recipe_is_unchanged(data_dir: Path) -> None:
    r = parse_recipe(
        {
            "name": "one",
            "source": {"path": "x.jsonl"},
            "generators": [{"id": "g", "backend": "original"}],
            "judge": {"id": "j", "backend": "embedded"},
        }
    )
    assert r.rating_judge_id() == "j" and [j.id for j in r.all_judges()] == ["j"]
    assert "judges" not in r.to_dict() and "panel" not in r.to_dict()
    with pytest.raises(RecipeError, match="used twice"):
        parse_recipe(
            {
                "name": "two",
                "source": {"path": "x.jsonl"},
                "generators": [{"id": "g", "backend": "original"}],
                "judge": {"id": "j", "backend": "embedded"},
                "judges": [{"id": "j", "backend": "embedded"}],
            }
        )
    with pytest.raises(RecipeError, match="panel.aggregate"):
        parse_recipe(
            {
                "name": "three",
                "source": {"path": "x.jsonl"},
                "generators": [{"id": "g", "backend": "original"}],
                "judges": [{"id": "j", "backend": "embedded"}, {"id": "k", "backend": "embedded"}],
                "panel": {"aggregate": "vibes"},
            }
        )


def test_mean_aggregate() -> None:
    assert aggregate("mean", [[5, 1, None], [3, 2, None], [4, None, None]]) == [4.0, 1.5, None]


def test_median_aggregate() -> None:
    # odd count: the middle value; even count: the mean of the middle two; nulls skipped
    assert aggregate("median", [[5, 1, 2], [1, 2, 2], [4, 5, None]]) == [4.0, 2.0, 2.0]
    assert aggregate("median", [[5, 1], [2, 2], [4, 5], [3, None]]) == [3.5, 2.0]


def test_majority_aggregate_keeps_the_vote_winner_on_top() -> None:
    # votes: judges 1 and 2 pick candidate 0, judge 3 picks candidate 1: candidate 0 wins, and
    # the stored ratings are the mean of judges 1 and 2, even though the mean of all three
    # would put candidate 1 on top
    per_judge = [[4, 3, 1], [4, 3, 1], [1, 5, 1]]
    assert aggregate("mean", per_judge) == [3.0, pytest.approx(3.6667), 1.0]
    assert aggregate("majority", per_judge) == [4.0, 3.0, 1.0]


def test_majority_aggregate_ties_fall_back_to_the_mean() -> None:
    # a tie of votes (one each): the mean of every judge
    assert aggregate("majority", [[5, 1], [2, 4]]) == [3.5, 2.5]
    # a judge whose top is tied votes for nobody: the other judge's vote wins alone
    assert aggregate("majority", [[5, 5, 1], [2, 4, 1]]) == [2.0, 4.0, 1.0]
    # no votes at all: the mean
    assert aggregate("majority", [[3, 3], [4, 4]]) == [3.5, 3.5]


def test_disagreement_rules() -> None:
    assert disagreement([[5, 3], [4, 2]]) == (1.0, False)  # same best, close ratings
    assert disagreement([[5, 3], [3, 3]]) == (2.0, True)  # a spread of 2 on candidate 0
    assert disagreement([[4, 3], [3, 4]]) == (1.0, True)  # different best answers
    assert disagreement([[4, 4], [3, 4]]) == (1.0, False)  # a tied top names no best
    # no candidate rated twice (no spread), but each judge names a different best answer
    assert disagreement([[4, None], [None, 3]]) == (None, True)
    assert disagreement([[4, None]]) == (None, False)


@pytest.mark.parametrize("method", ["median", "majority"])
def test_aggregate_chosen_in_the_recipe_is_what_binarization_reads(
    data_dir: Path, judges: Any, method: str
) -> None:
    _, _, (url_a, url_b) = judges
    store, ids = seed(data_dir)
    summary = run_recipe(recipe_for(url_a, url_b, method), store, stages=["judge"])
    assert summary.status == "done", summary.error
    for i, cid in enumerate(ids):
        a, b = combined_a(i), combined_b(i)
        per_judge = [a, b]
        panel = store.judgment(cid, "panel")
        assert panel is not None and panel["model"].startswith(f"panel:{method}(")
        if method == "median":  # two judges: the mean of the two
            expected = [(x + y) / 2 if y is not None else x for x, y in zip(a, b, strict=True)]
        else:  # two judges: a strict majority only when they name the same best
            ba, bb = best(list(a)), best(b)
            if ba is not None and (bb is None or ba == bb):
                voters = [a] if bb is None else per_judge
                expected = [
                    sum(v[k] for v in voters) / len(voters)  # type: ignore[misc]
                    if all(v[k] is not None for v in voters)
                    else a[k]
                    for k in range(2)
                ]
            else:
                expected = [(x + y) / 2 if y is not None else x for x, y in zip(a, b, strict=True)]
        assert panel["ratings"] == pytest.approx(expected), (i, method)


def test_a_killed_panel_job_redoes_only_the_missing_pairs(data_dir: Path, judges: Any) -> None:
    server_a, server_b, (url_a, _) = judges
    store, ids = seed(data_dir)
    dead = f"http://127.0.0.1:{free_port()}/v1"  # judge B's server is down on the first run
    first = run_recipe(recipe_for(url_a, dead), store, stages=["judge"])
    assert first.status == "done", first.error  # half the rows failed, not all: goes on
    assert all(j["status"] == "done" for j in store.judgments("a"))
    assert all(j["status"] == "failed" for j in store.judgments("b"))
    # the aggregate exists from judge A alone, not usable for binarization yet
    assert {store.judgment(c, "panel")["status"] for c in ids} == {"partial"}  # type: ignore[index]
    sent_a = len(server_a.bodies)
    assert sent_a == 2 * N  # two passes per conversation

    # B's server is back (the same stub, now at the recipe's URL): only B's pairs are redone
    _, url_b = judges[2]
    second = run_recipe(recipe_for(url_a, url_b), store, stages=["judge"])
    assert second.status == "done", second.error
    assert len(server_a.bodies) == sent_a  # A: nothing re-sent
    asked_b = {int(s[0].split()[2]) for s in server_b.shown}
    assert asked_b == set(range(N))
    assert sum(1 for s in server_b.shown) >= 2 * N
    statuses = [store.judgment(c, "panel")["status"] for c in ids]  # type: ignore[index]
    assert statuses == ["done"] * (N - 1) + ["partial"]  # conversation 7: B's null rating

    # only B's partial conversation is left: no other request, no other aggregate rewritten
    before = {c: store.judgment(c, "panel")["updated_at"] for c in ids}  # type: ignore[index]
    shown_b = len(server_b.shown)
    third = run_recipe(recipe_for(url_a, url_b), store, stages=["judge"])
    # the one row left (B's null rating, attempts left) is retried and fails again: as with a
    # single judge, a stage whose every row failed ends failed, naming the judge and why
    assert third.status == "failed"
    assert "(b: last failure: unreadable ratings" in (third.error or "")
    # B retries its partial conversation (attempts left), nothing else
    assert {int(s[0].split()[2]) for s in server_b.shown[shown_b:]} <= {7}
    assert len(server_a.bodies) == sent_a
    for c in ids[:-1]:
        assert store.judgment(c, "panel")["updated_at"] == before[c]  # type: ignore[index]


def test_refresh_panel_skips_up_to_date_aggregates(data_dir: Path) -> None:
    from pipelines.config import JudgeConfig
    from pipelines.panel import PanelConfig

    store, ids = seed(data_dir)
    for jid, rows in (("a", A), ("b", [(5, 1)] * N)):
        for cid, r in zip(ids, rows, strict=True):
            store.put_judgment(
                cid,
                jid,
                model=jid,
                candidate_keys=["g1/0", "g2/0"],
                ratings=[float(r[0]), float(r[1])],
                rationales=[None, None],
                order_shown=[0, 1],
                seed=0,
                raw_output=None,
                error=None,
            )
    judges_cfg = [JudgeConfig(id="a", backend="embedded"), JudgeConfig(id="b", backend="embedded")]
    panel = PanelConfig()
    assert refresh_panel(store, panel, judges_cfg, ids) == N
    assert refresh_panel(store, panel, judges_cfg, ids) == 0
    # a judge re-rates one conversation: only that aggregate is rewritten
    store.put_judgment(
        ids[0],
        "b",
        model="b",
        candidate_keys=["g1/0", "g2/0"],
        ratings=[1.0, 5.0],
        rationales=[None, None],
        order_shown=[0, 1],
        seed=0,
        raw_output=None,
        error=None,
    )
    assert refresh_panel(store, panel, judges_cfg, ids) == 1
    j = store.judgment(ids[0], "panel")
    assert j is not None and j["ratings"] == [2.5, 3.5]
    assert store.count_judges_disagree("panel") >= 1
    assert not math.isnan(j["ratings"][0])


def test_pipelined_generate_and_judge_runs_every_judge_of_the_panel(
    data_dir: Path, judges: Any
) -> None:
    """generate + judge together (pipelined): the panel's judges rate each conversation as its
    candidates are finished, and the aggregate follows."""
    _, _, (url_a, url_b) = judges
    store = Store(data_dir)
    ids = []
    for i in range(N):
        conv = Conversation(
            messages=[{"role": "user", "content": f"Question number {i}: which answer is best?"}],
            source="t",
            original_response=f"answer g2 {i} [[a={A[i][1]}]] [[b={B[i][1] or 'null'}]]",
        )
        store.add_conversations([conv])
        ids.append(conv.conversation_id)
        text = f"answer g1 {i} [[a={A[i][0]}]] [[b={B[i][0]}]]"
        store.put_candidate(
            conv.conversation_id, "g1", 0, GenerationResult(key=None, text=text, model="g1")
        )
    recipe = recipe_for(url_a, url_b)  # g2 is the ``original`` backend: the stored answer
    summary = run_recipe(recipe, store, stages=["generate", "judge"])
    assert summary.status == "done", summary.error
    assert summary.results["judge"]["done"] == 2 * N - 1  # B: conversation 7 stays partial
    for i, cid in enumerate(ids):
        assert store.judgment(cid, "a")["ratings"] == combined_a(i)  # type: ignore[index]
        assert store.judgment(cid, "b")["ratings"] == combined_b(i)  # type: ignore[index]
        panel = store.judgment(cid, "panel")
        assert panel is not None
        assert panel["status"] == ("partial" if i == 7 else "done")


def test_sigkilled_panel_job_resumes_with_only_the_missing_pairs(data_dir: Path) -> None:
    """``capyui run`` killed with SIGKILL part-way through a panel's judging: the re-run asks
    each judge only for the conversations it had not judged (at most the requests that were in
    flight are asked again), and every (conversation, judge) ends judged once."""
    import yaml

    server_a, server_b = PositionalJudge(delay_s=0.15), ContentJudge(delay_s=0.15)
    url_a, url_b = server_a.start(), server_b.start()
    try:
        store, ids = seed(data_dir)
        recipe = recipe_for(url_a, url_b).to_dict()
        for j in recipe["judges"]:
            j["concurrency"] = 1
        path = data_dir / "panel.yaml"
        path.write_text(yaml.safe_dump(recipe))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "capyui.cli", "run", str(path), "--stages", "judge"]
        cmd += ["--data-dir", str(data_dir)]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            # wait (bounded by the work itself: 2 passes x 8 conversations per judge) until
            # each judge has stored some judgments, then kill without warning
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                done = {j: len(store.judgments(j)) for j in ("a", "b")}
                if min(done.values()) >= 2:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        judged_before = {j: {r["conversation_id"] for r in store.judgments(j)} for j in "ab"}
        assert all(0 < len(v) < N for v in judged_before.values()), judged_before
        seen_before = {"a": len(server_a.shown), "b": len(server_b.shown)}

        rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
        for jid, server in (("a", server_a), ("b", server_b)):
            asked = {int(s[0].split()[2]) for s in server.shown[seen_before[jid] :]}
            already = {ids.index(c) for c in judged_before[jid]}
            # nothing judged is asked again (but B's partial conversation 7, attempts left)
            assert not (asked & already) - {7}, (jid, asked, already)
            assert asked | already == set(range(N))
            rows = store.judgments(jid)
            assert len(rows) == N
            assert all(r["attempts"] == 1 for r in rows if ids.index(r["conversation_id"]) != 7)
        panel = [store.judgment(c, "panel") for c in ids]
        assert [p["status"] for p in panel if p] == ["done"] * (N - 1) + ["partial"]
        for i, p in enumerate(panel):
            assert p is not None
            pairs = zip(combined_a(i), combined_b(i), strict=True)
            mean = [(x + y) / 2 if y is not None else x for x, y in pairs]
            assert p["ratings"] == pytest.approx(mean)
    finally:
        server_a.stop()
        server_b.stop()
