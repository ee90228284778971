"""Issue 10: safe to share. Every numbered reproduction of the issue (except the judge parser's,
item 6, owned elsewhere) as a test, on the engine here and against the real app in
``tests/test_security_app.py``. Servers are stdlib HTTP servers on 127.0.0.1 that record what
they receive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.recipe import RecipeError, load_recipe, parse_recipe, parse_recipe_yaml
from pipelines.secrets import mask_tokens, redact
from pipelines.store import Store
from tests.conftest import ROOT

# The key shapes of the issue (and the ones masked before it), all fake.
GSK = "gsk_" + "Q7wz" * 12
HEX64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
URL_CREDS = "https://curator:hunter2-Secret@data.example.org/v1"
SK = "sk-" + "live" * 10
HF = "hf_" + "Zq9" * 12
SECRETS = [GSK, HEX64, "hunter2-Secret", SK, HF]

GOOD = {
    "name": "t",
    "source": {"path": "x.jsonl"},
    "generators": [{"id": "smol", "backend": "embedded"}],
}


# -- recording servers ---------------------------------------------------------------------------
class Recorder(BaseHTTPRequestHandler):
    """Records every request's headers; answers what ``reply`` says (default: 500 echoing the
    request headers back, the way a misbehaving backend would)."""

    seen: list[dict[str, Any]]
    reply: Any = None

    def log_message(self, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.reply is not None:
            self.reply(self)
            return
        data = json.dumps({"error": {"message": f"bad request, headers {dict(self.headers)}"}})
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    do_GET = do_POST = do_PUT = do_HEAD = do_PATCH = do_DELETE = _handle


def serve(reply: Any = None) -> tuple[str, type[Recorder], ThreadingHTTPServer]:
    handler = type("H", (Recorder,), {"seen": [], "reply": staticmethod(reply) if reply else None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", handler, server


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[Recorder]]]:
    url, handler, server = serve()
    yield url, handler
    server.shutdown()
    server.server_close()


def received_bytes(handler: type[Recorder]) -> bytes:
    return json.dumps([{**r, "body": r["body"].decode("latin-1")} for r in handler.seen]).encode()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "SPACE_ID",
        "CAPYUI_AUTH",
        "CAPYUI_ENDPOINTS",
        "CAPYUI_STRICT_ENDPOINTS",
        "CAPYUI_BLOCK_PRIVATE_URLS",
        "CAPYUI_OWNERS",
        "CAPYUI_REVIEWERS",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- roles: the one authorization table ----------------------------------------------------------
def test_every_action_and_role_is_decided_by_the_table() -> None:
    from pipelines.workspace import ACTIONS, Actor, Forbidden, Role, authorize

    expected_owner_only = {a for a, r in ACTIONS.items() if r == Role.OWNER}
    assert {"load_data", "configure_models", "publish", "run_jobs", "export"} <= (
        expected_owner_only
    )
    for action, need in ACTIONS.items():
        for role in Role:
            actor = Actor("someone", role)
            if role >= need:
                authorize(actor, action)
            else:
                with pytest.raises(Forbidden, match="needs the"):
                    authorize(actor, action)
    with pytest.raises(KeyError):  # an undeclared action is never allowed by default
        authorize(Actor("x", Role.OWNER), "format_disk")


def test_roles_come_from_the_owners_settings() -> None:
    from pipelines.workspace import Policy, Role

    env = {"CAPYUI_AUTH": "olga:pw,rita:pw,eve:pw", "CAPYUI_OWNERS": "olga"}
    p = Policy.from_env("127.0.0.1", {**env, "CAPYUI_REVIEWERS": "rita"})
    assert p.actor("olga").role == Role.OWNER
    assert p.actor("rita").role == Role.REVIEWER
    assert p.actor("eve").role == Role.ANONYMOUS
    assert p.actor(None).role == Role.ANONYMOUS  # with sign-in configured, nobody is "local"
    anyone = Policy.from_env("127.0.0.1", {**env, "CAPYUI_ANY_SIGNED_IN_REVIEWS": "1"})
    assert anyone.actor("eve").role == Role.REVIEWER and anyone.actor(None).name is None
    # local use: no sign-in, loopback, not a Space -> the one local user owns it
    assert Policy.from_env("127.0.0.1", {}).actor(None).role == Role.OWNER
    # a public bind or a Space without sign-in: anonymous, nothing allowed but whoami
    assert Policy.from_env("0.0.0.0", {}).actor(None).role == Role.ANONYMOUS
    space = Policy.from_env("0.0.0.0", {"SPACE_ID": "o/s", "SPACE_AUTHOR_NAME": "o"})
    assert space.actor(None).role == Role.ANONYMOUS and space.actor("o").role == Role.OWNER
    assert space.actor("visitor").role == Role.ANONYMOUS
    demo = Policy.from_env("0.0.0.0", {"CAPYUI_DEMO": "1"})
    assert demo.allowed(demo.actor(None), "view") and not demo.allowed(demo.actor(None), "review")


# -- 3. pasted keys are never persisted; env var names; URLs with credentials ------------------
@pytest.mark.parametrize("bad", ["openai_key", "MY-KEY", GSK, "A" * 65, "1KEY", HEX64.upper()])
def test_env_name_fields_take_only_names(bad: str) -> None:
    gen = {"id": "g", "backend": "openai", "base_url": "http://x", "model": "m", "api_key_env": bad}
    with pytest.raises(RecipeError) as err:
        parse_recipe({**GOOD, "generators": [gen]})
    assert "NAME of an environment" in str(err.value) and bad not in str(err.value)
    with pytest.raises(RecipeError, match="token_env"):
        parse_recipe({**GOOD, "publish": {"token_env": bad}})
    with pytest.raises(RecipeError, match="api_key_env"):
        parse_recipe({**GOOD, "argilla": {"api_key_env": bad}})


def test_urls_with_credentials_are_refused() -> None:
    gen = {"id": "g", "backend": "openai", "base_url": URL_CREDS, "model": "m"}
    with pytest.raises(RecipeError) as err:
        parse_recipe({**GOOD, "generators": [gen]})
    assert "credentials" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(RecipeError, match="credentials"):
        parse_recipe({**GOOD, "argilla": {"api_url": URL_CREDS}})


def test_key_shapes_are_masked() -> None:
    text = (
        f"key {GSK} hex {HEX64} url {URL_CREDS} Authorization: Bearer abcdEFGH1234ijkl "
        f"X-Argilla-Api-Key: argilla.apikey.zzz {SK} {HF}"
    )
    masked = mask_tokens(text)
    for s in [*SECRETS, "abcdEFGH1234ijkl", "argilla.apikey.zzz"]:
        assert s not in masked
    assert "data.example.org" in masked  # the host stays: only the credentials go
    assert redact({"description": text})["description"] == masked


def test_pasted_keys_reach_no_byte_of_store_recipe_or_card(tmp_path: Path) -> None:
    """Repro 3: a gsk_ key, a 64-hex key and user:password@ pasted into free text of a recipe
    were stored verbatim in the workspace recipe, jobs.recipe and the dataset card."""
    from pipelines.binarize import BinarizeOptions, binarize
    from pipelines.publish import CardContext, export_local
    from pipelines.stats import compute_stats

    pasted = f"curated with {GSK} / {HEX64} via {URL_CREDS}"
    recipe = parse_recipe(
        {
            **GOOD,
            "description": pasted,
            "generators": [
                {"id": "smol", "backend": "embedded", "system_prompt": f"use {SK} {HF}"}
            ],
        }
    )
    store = Store(tmp_path / "ws")
    job = store.start_job("run", recipe.to_dict())
    store.update_job(job, status="failed", last_error=f"backend said: {pasted}")
    (tmp_path / "ws" / "recipe.yaml").write_text(recipe.to_yaml())
    res = binarize([], BinarizeOptions())
    card = CardContext(
        dataset_name="d",
        recipe=recipe.to_dict(),
        load_reports=[],
        stage_counts={},
        stats=compute_stats([], res.pairs),
        generator_models=["x"],
        judge_model=None,
        dropped=res.dropped,
    )
    export_local(res.pairs, tmp_path / "ws" / "export" / "t", card=card)
    blob = b"".join(p.read_bytes() for p in (tmp_path / "ws").rglob("*") if p.is_file())
    assert b"curated with" in blob  # the text is kept, its secrets are not
    for s in SECRETS:
        assert s.encode() not in blob, s


# -- 4. error text masked at the store and in progress -------------------------------------------
def test_backend_error_echoing_the_key_is_masked_everywhere(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, recorder: tuple[str, type[Recorder]]
) -> None:
    """Repro 4: a backend error echoing the request's Authorization header landed in
    candidates.error and the live progress messages."""
    from pipelines.run import run_recipe
    from tests.conftest_ui import write_jsonl

    url, handler = recorder
    clean_env.setenv("TEST_GROQ_KEY", GSK)
    clean_env.setenv(
        "CAPYUI_ENDPOINTS",
        yaml.safe_dump([{"id": "echo", "base_url": url + "/v1", "api_key_env": "TEST_GROQ_KEY"}]),
    )
    src = write_jsonl(
        tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in (1, 2)]
    )
    recipe = parse_recipe(
        {
            "name": "echo",
            "source": {"path": str(src)},
            "generators": [
                {
                    "id": "echo",
                    "backend": "openai",
                    "base_url": url + "/v1",
                    "model": "m",
                    "api_key_env": "TEST_GROQ_KEY",
                    "max_retries": 0,
                }
            ],
            "generation": {"max_attempts": 1},
        }
    )
    messages: list[str] = []
    store = Store(tmp_path / "ws")
    summary = run_recipe(
        recipe, store, stages=["load", "generate"], on_progress=lambda p: messages.append(p.message)
    )
    assert summary.results["load"]["loaded"] == 2, summary
    assert GSK.encode() in received_bytes(handler)  # the registered endpoint got its key
    rows = store.candidate_rows("echo")
    assert rows and all(r["status"] == "failed" and r["error"] for r in rows)
    assert all(GSK not in r["error"] for r in rows)
    assert all(GSK not in m for m in messages)
    store.close()
    blob = b"".join(p.read_bytes() for p in (tmp_path / "ws").glob("capyui.sqlite*"))
    assert GSK.encode() not in blob and b"Bearer" in blob  # the error is there, masked


# -- 1. keys only to registry URLs; redirects never carry a key -------------------------------
def test_a_key_goes_only_to_the_registry(
    clean_env: pytest.MonkeyPatch, recorder: tuple[str, type[Recorder]]
) -> None:
    from pipelines.backends.base import BackendError
    from pipelines.backends.openai_backend import resolve_api_key
    from pipelines.endpoints import EndpointError, check_urls

    url, _ = recorder
    clean_env.setenv("HF_TOKEN", HF)
    clean_env.setenv("OPENAI_API_KEY", SK)
    # no api_key_env: no key at all (there used to be an implicit $OPENAI_API_KEY)
    assert resolve_api_key(None, [url]) == "not-needed"
    # strict mode (here: a sign-in is configured): a recipe cannot aim HF_TOKEN anywhere
    clean_env.setenv("CAPYUI_AUTH", "o:pw")
    with pytest.raises(BackendError, match="registered") as err:
        resolve_api_key("HF_TOKEN", [url])
    assert HF not in str(err.value)
    clean_env.setenv(
        "CAPYUI_ENDPOINTS",
        yaml.safe_dump([{"id": "r", "base_url": url, "api_key_env": "HF_TOKEN", "models": ["m"]}]),
    )
    assert resolve_api_key("HF_TOKEN", [url + "/"], "m") == HF
    with pytest.raises(BackendError, match="not allowed"):
        resolve_api_key("HF_TOKEN", [url], "other-model")
    with pytest.raises(BackendError):  # same registry URL, another variable
        resolve_api_key("OPENAI_API_KEY", [url], "m")
    # on a Space: a non-registry URL into private/loopback space is refused outright
    clean_env.setenv("CAPYUI_BLOCK_PRIVATE_URLS", "1")
    for bad in ["http://127.0.0.1:9/v1", "http://10.1.2.3/v1", "http://169.254.169.254/latest"]:
        with pytest.raises(EndpointError, match="private"):
            check_urls([bad])
    check_urls([url])  # registered: fine


def _redirector(target: str) -> Any:
    def reply(h: BaseHTTPRequestHandler) -> None:
        h.send_response(307)
        h.send_header("Location", target + h.path)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return reply


def test_redirects_never_carry_a_key_to_another_host(clean_env: pytest.MonkeyPatch) -> None:
    """Verified: the openai client (httpx) drops Authorization on a cross-origin redirect.
    Reproduced and fixed: the Argilla queue followed redirects with X-Argilla-Api-Key."""
    import asyncio

    from pipelines.argilla_queue import ArgillaQueue
    from pipelines.backends import make_backend
    from pipelines.config import GeneratorConfig

    other_url, other, s1 = serve()
    first_url, first, s2 = serve(_redirector(other_url))
    try:
        clean_env.setenv("TEST_KEY", GSK)
        gen = GeneratorConfig(
            id="g",
            backend="openai",
            base_url=first_url + "/v1",
            model="m",
            api_key_env="TEST_KEY",
            max_retries=0,
        )

        async def ask() -> None:
            backend = make_backend(gen)
            try:
                await backend.check()
            except Exception:  # noqa: BLE001 - the 500 of the other host
                pass
            finally:
                await backend.aclose()

        asyncio.run(ask())
        assert GSK.encode() in received_bytes(first)  # the configured host got the key
        assert other.seen and GSK.encode() not in received_bytes(other)

        clean_env.setenv("ARGILLA_API_KEY", "argilla.apikey." + "k" * 20)
        queue = ArgillaQueue.from_config({"api_url": first_url})
        try:
            status = queue.status()
        finally:
            queue.close()
        assert not status.get("ok")
        assert b"argilla.apikey" not in received_bytes(other), other.seen
    finally:
        for s in (s1, s2):
            s.shutdown()
            s.server_close()


# -- 5. paths -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "patch",
    [
        {"export": {"out": "/tmp/anywhere"}},
        {"export": {"out": "../outside"}},
        {"name": "../../etc"},
        {"name": "a/b"},
        {"source": {"dataset": "/etc/passwd"}},
        {"source": {"dataset": "../secrets.csv"}},
    ],
)
def test_recipe_paths_stay_in_the_workspace(patch: dict[str, Any]) -> None:
    with pytest.raises(RecipeError):
        parse_recipe({**GOOD, **patch})


def test_export_dir_checked_after_resolve(tmp_path: Path) -> None:
    from pipelines.run import export_dir_for

    store = Store(tmp_path / "ws")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "ws" / "export").symlink_to(outside)
    recipe = parse_recipe(GOOD)
    with pytest.raises(RecipeError, match="leaves the workspace"):
        export_dir_for(recipe, store)


def test_a_hub_id_is_never_read_as_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.sources import SourceError, load_source

    local = "pipelines/recipes/data/quickstart.jsonl"
    assert (ROOT / local).is_file()
    monkeypatch.chdir(ROOT)
    with pytest.raises(SourceError, match="not a Hub dataset id"):
        load_source(local, hub=True)
    calls: list[dict[str, Any]] = []

    import datasets

    def fake(path: str, **kw: Any) -> Any:
        calls.append({"path": path, **kw})
        if kw.get("streaming"):
            if fail_streaming:
                raise ConnectionError("offline")
            return iter({"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(10**6))
        return [{"messages": [{"role": "user", "content": "q"}]}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    fail_streaming = False
    # the limit reaches the Hub load: 5 rows streamed out of a million, nothing else read
    assert len(load_source("someone/data", hub=True, limit=5).conversations) == 5
    assert calls == [{"path": "someone/data", "split": "train", "streaming": True}]
    calls.clear()
    fail_streaming = True  # offline: split slicing of the cached copy
    load_source("someone/data", hub=True, limit=5)
    assert calls[-1] == {"path": "someone/data", "split": "train[:5]"}


# -- 7. limits -------------------------------------------------------------------------------------
BOMB = """name: bomb
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
ENGINE_BOMB = """name: bomb
source: {path: SAMPLE}
generators:
  - id: g
    backend: vllm
    model: m
    engine:
      dtype: &a [x, x, x, x, x, x, x, x, x, x]
      seed: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      max_model_len: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      revision: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      quantization: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      swap_space: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
      kv_cache_dtype: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
""".replace("SAMPLE", str(ROOT / "pipelines/recipes/data/quickstart.jsonl"))


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_alias_bomb_refused_quickly() -> None:
    assert len(BOMB.encode()) <= 423
    baseline = min(_timed(lambda: load_recipe("quickstart")) for _ in range(3))
    for text in (BOMB, ENGINE_BOMB, "a: " + "[" * 200 + "]" * 200):
        took = _timed(lambda t=text: pytest.raises(RecipeError, parse_recipe_yaml, t))
        # the old code took ~55 s; the bound is the 1 s or 50 plain recipe loads
        assert took < max(1.0, 50 * baseline), took
    with pytest.raises(RecipeError, match="aliases|expands"):
        parse_recipe_yaml(BOMB)


def test_alias_bomb_from_the_cli_exits_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bomb.yaml"
    bad.write_text(ENGINE_BOMB)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: [unclosed\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
        t = time.perf_counter()
        cp = subprocess.run(
            [sys.executable, "-m", "capyui.cli", "run", str(path), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
        )
        return cp, time.perf_counter() - t

    base, base_s = run(plain)
    cp, took = run(bad)
    assert base.returncode == cp.returncode == 2, cp.stderr
    assert "refused" in cp.stderr and "Traceback" not in cp.stderr
    assert took < 3 * base_s + 1.0, (took, base_s)  # side by side with a plain bad recipe


def test_engine_options_allow_list_and_embedded_bounds(clean_env: pytest.MonkeyPatch) -> None:
    from pipelines.backends.vllm_backend import engine_options
    from pipelines.config import GeneratorConfig

    gen = {"id": "v", "backend": "vllm", "model": "org/model"}
    with pytest.raises(RecipeError, match="trust_remote_code"):
        parse_recipe({**GOOD, "generators": [{**gen, "engine": {"trust_remote_code": True}}]})
    with pytest.raises(RecipeError, match="not allowed"):
        parse_recipe({**GOOD, "generators": [{**gen, "engine": {"worker_cls": "evil.Worker"}}]})
    for field, value in (("n_ctx", 10**6), ("n_threads", 4096)):
        with pytest.raises(RecipeError, match=field):
            parse_recipe({**GOOD, "generators": [{"id": "e", "backend": "embedded", field: value}]})
    cfg = GeneratorConfig(**gen, engine={"dtype": "bfloat16"})
    assert "trust_remote_code" not in engine_options(cfg)
    clean_env.setenv(
        "CAPYUI_ENDPOINTS",
        yaml.safe_dump([{"id": "gpu", "models": ["org/model"], "trust_remote_code": True}]),
    )
    assert engine_options(cfg)["trust_remote_code"] is True  # only the owner's registry


# -- 8. jobs: a restart with the same pid ----------------------------------------------------------
def test_restart_with_the_same_pid_offers_the_job_for_resume(tmp_path: Path) -> None:
    """Repro 8: liveness was ``pid == os.getpid()``; a container restarts with the same pid."""
    store = Store(tmp_path)
    live = store.start_job("ui:generate", {})
    dead = store.start_job("ui:generate,judge", {})
    # the same pid, written by a process that started at another time (the previous boot)
    store.query(
        "UPDATE jobs SET proc = ? WHERE job_id = ?",
        (f"previous-boot:{os.getpid()}:123", dead),
    )
    legacy = store.start_job("ui:judge", {})
    store.query("UPDATE jobs SET proc = NULL, pid = ? WHERE job_id = ?", (os.getpid(), legacy))
    status = {j["job_id"]: j["status"] for j in store.jobs()}
    assert status == {live: "running", dead: "interrupted", legacy: "interrupted"}


# -- stale tab -------------------------------------------------------------------------------------
def test_a_stale_view_cannot_overwrite_a_newer_review(tmp_path: Path) -> None:
    from pipelines.review import ReviewError, submit_review
    from pipelines.types import Conversation, GenerationResult

    store = Store(tmp_path)
    conv = Conversation(messages=[{"role": "user", "content": "hi"}], source="t")
    store.add_conversations([conv])
    cid = conv.conversation_id
    for gen in ("a", "b"):
        store.put_candidate(cid, gen, 0, GenerationResult(key="k", text=f"from {gen}", model=gen))
    keys = ["a/0", "b/0"]
    seen_by_tab1 = store.review_version(cid, "alice")
    seen_by_tab2 = store.review_version(cid, "alice")
    submit_review(
        store, cid, "alice", candidate_keys=keys, chosen="b/0", expected_version=seen_by_tab2
    )
    with pytest.raises(ReviewError, match="changed since you opened it"):
        submit_review(
            store, cid, "alice", candidate_keys=keys, chosen="a/0", expected_version=seen_by_tab1
        )
    assert [r["chosen"] for r in store.reviews(cid)] == ["b/0"]
    # another reviewer's review does not make alice's view stale
    submit_review(store, cid, "bob", candidate_keys=keys, chosen="a/0")
    submit_review(
        store,
        cid,
        "alice",
        candidate_keys=keys,
        chosen="a/0",
        expected_version=store.review_version(cid, "alice"),
    )


# -- publishing ------------------------------------------------------------------------------------
def _hub_reply(existing: list[str]) -> Any:
    def reply(h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        if h.command == "GET" and path.startswith("/api/datasets/") and existing:
            body: Any = {"id": "me/d", "siblings": [{"rfilename": f} for f in existing]}
            code = 200
        elif h.command == "GET":
            body, code = {"error": "Repository not found"}, 404
        else:
            body, code = {"error": "not served"}, 500
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return reply


def test_overwriting_a_dataset_needs_confirmation(tmp_path: Path) -> None:
    from pipelines.publish import PublishError, push_to_hub

    (tmp_path / "README.md").write_text("card")
    url, handler, server = serve(
        _hub_reply(["README.md", "data/train-00000-of-00001.parquet", ".gitattributes"])
    )
    try:
        with pytest.raises(PublishError) as err:
            push_to_hub(tmp_path, "me/d", token=HF, endpoint=url, overwrite=False)
        msg = str(err.value)
        assert "already exists" in msg and "data/train-00000-of-00001.parquet" in msg
        assert "confirm" in msg and HF not in msg
        assert [r["path"].split("?")[0] for r in handler.seen] == ["/api/datasets/me/d"]
    finally:
        server.shutdown()
        server.server_close()


def test_the_servers_hf_token_is_never_used_on_a_space(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipelines.publish import PublishError, push_to_hub

    (tmp_path / "README.md").write_text("card")
    clean_env.setenv("HF_TOKEN", HF)
    clean_env.setenv("SPACE_ID", "owner/space")
    url, handler, server = serve(_hub_reply([]))
    try:
        with pytest.raises(PublishError, match="no Hugging Face token"):
            push_to_hub(tmp_path, "visitor/d", endpoint=url)
        assert handler.seen == []
    finally:
        server.shutdown()
        server.server_close()


# -- the Gradio layer: identity, every event guarded, owner-only views -------------------------
def test_identity_is_the_servers_never_the_browsers() -> None:
    from types import SimpleNamespace

    from capyui.guard import username_of

    future, past = time.time() + 3600, time.time() - 1
    oauth = {"userinfo": {"preferred_username": "alice"}, "expires_at": future}
    assert username_of(SimpleNamespace(username="bob", session={})) == ("bob", "web")
    assert username_of(SimpleNamespace(username=None, session={"oauth_info": oauth})) == (
        "alice",
        "oauth",
    )
    expired = {**oauth, "expires_at": past}
    assert username_of(SimpleNamespace(username=None, session={"oauth_info": expired})) == (
        None,
        "web",
    )
    # headers, query and body are never read: a claimed name in them changes nothing
    spoof = SimpleNamespace(
        username=None, session={}, headers={"x-user": "olga"}, query_params={"user": "olga"}
    )
    assert username_of(spoof) == (None, "web")


def test_a_named_event_without_an_action_stops_the_app() -> None:
    import gradio as gr

    from capyui.guard import protect
    from pipelines.workspace import Policy

    with gr.Blocks() as demo:
        btn = gr.Button()
        out = gr.Textbox()
        btn.click(lambda: "x", None, out, api_name="sneaky_new_endpoint")
    with pytest.raises(RuntimeError, match="sneaky_new_endpoint"):
        protect(demo, Policy.from_env("127.0.0.1", {}))


def test_models_table_shows_key_state_only_to_owners(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from capyui import guard
    from capyui.app import Workspace
    from capyui.tabs.models import models_html
    from pipelines.workspace import Actor, Role

    clean_env.setenv("CAPYUI_AUTH", "o:pw")
    clean_env.setenv("OPENAI_API_KEY", SK)
    clean_env.setenv(
        "CAPYUI_ENDPOINTS",
        yaml.safe_dump([{"id": "oa", "base_url": "https://api.example/v1", "api_key_env": "REG"}]),
    )
    ws = Workspace(tmp_path)

    def add(data: dict[str, Any]) -> None:
        data["generators"].append(
            {
                "id": "a",
                "backend": "openai",
                "base_url": "https://x/v1",
                "model": "m",
                "api_key_env": "OPENAI_API_KEY",
            }
        )
        data["generators"].append(
            {
                "id": "b",
                "backend": "openai",
                "base_url": "https://api.example/v1",
                "model": "m",
                "api_key_env": "REG",
            }
        )

    ws.update_recipe(add)
    for role, expect in ((Role.OWNER, True), (Role.REVIEWER, False)):
        token = guard._actor.set(Actor("u", role))
        try:
            html = models_html(ws)
        finally:
            guard._actor.reset(token)
        assert ("REG (NOT set)" in html) == expect
        assert "OPENAI_API_KEY (" not in html  # not a registry variable: never said


def test_publish_on_a_space_uses_only_the_signed_in_users_token(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from capyui.app import Workspace
    from capyui.tabs.results import publish
    from pipelines.run import export_dir_for

    url, handler, server = serve(_hub_reply([]))
    try:
        clean_env.setenv("SPACE_ID", "owner/space")
        clean_env.setenv("HF_TOKEN", HF)
        clean_env.setenv("HF_ENDPOINT", url)
        import huggingface_hub.constants as hc

        clean_env.setattr(hc, "ENDPOINT", url)
        ws = Workspace(tmp_path)
        out = export_dir_for(ws.recipe, ws.store)
        out.mkdir(parents=True)
        (out / "README.md").write_text("card")
        assert "Sign in with Hugging Face" in publish(ws, "visitor/d", True, None)
        assert handler.seen == []
        visitor = "hf_" + "V1s" * 12
        publish(ws, "visitor/d", True, SimpleNamespace(token=visitor))
        sent = received_bytes(handler)
        assert handler.seen and visitor.encode() in sent and HF.encode() not in sent
    finally:
        server.shutdown()
        server.server_close()


def test_the_public_page_carries_nothing_of_the_workspace(tmp_path: Path) -> None:
    """The page config is served to anyone who can open the page (a Space's visitors): outside
    local use, its initial values hold nothing of the workspace (recipe, tables, jobs)."""
    from capyui.app import build_app
    from pipelines.workspace import Policy

    store = Store(tmp_path / "ws")
    store.start_job("ui:generate", {})
    local = build_app(tmp_path / "ws")
    public = build_app(tmp_path / "ws", policy=Policy.from_env("0.0.0.0", {}))
    local_cfg = json.dumps(local.get_config_file(), default=str)
    public_cfg = json.dumps(public.get_config_file(), default=str)
    for text in ("name: quickstart", "ui:generate", "The workspace holds"):
        assert text in local_cfg and text not in public_cfg, text
