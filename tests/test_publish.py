"""Export layout, dataset card, TRL format checks, and the push path.

No Hub is reachable from here: the upload path is exercised against a small local HTTP server
(stdlib, 127.0.0.1) that records the requests ``huggingface_hub`` makes and answers just enough
of the API (create repo, preupload, commit) for ``create_repo`` + ``upload_folder``. It checks our
calls and the requests they produce, not the Hub's behaviour.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.binarize import COLUMNS, BinarizeOptions, JudgedConversation, binarize
from pipelines.publish import CardContext, PublishError, export_local, push_to_hub
from pipelines.records import CandidateRow, Review
from pipelines.stats import compute_stats
from pipelines.types import Conversation
from tests.support.net import free_port

HF_TOKEN = "hf_" + "A" * 34
SK_KEY = "sk-" + "b" * 40


def make_rows(n: int = 6) -> list[JudgedConversation]:
    rows = []
    for i in range(n):
        messages = [{"role": "system", "content": "Be brief."}] if i % 2 else []
        for t in range(i % 3):
            messages += [
                {"role": "user", "content": f"earlier question {t} of {i}"},
                {"role": "assistant", "content": f"earlier answer {t}"},
            ]
        messages.append({"role": "user", "content": f"What is {i} + {i}? | <b>bold</b>"})
        rows.append(
            JudgedConversation(
                conversation=Conversation(
                    messages=messages, source="LDJnr/Capybara", original_response=f"{2 * i}"
                ),
                candidates=[
                    CandidateRow("original/0", "original", "original", f"It is {2 * i}."),
                    CandidateRow("small/0", "small", "SmolLM2-135M-Instruct", "I do not know"),
                    CandidateRow(
                        "big/0", "big", "big-model", f"{2 * i}, because {i} + {i} = {2 * i}."
                    ),
                ],
                ai_ratings=[4, 1 + (i % 2), 5],
                rationales=["ok", "wrong", "right"],
                judge_model="SmolLM2-135M-Instruct",
                reviews=[Review(conversation_id="", reviewer="h", ratings={"small/0": 2})]
                if i == 0
                else [],
            )
        )
    return rows


def make_card(rows: list[JudgedConversation], res: Any, **extra: Any) -> CardContext:
    return CardContext(
        dataset_name="capy-test",
        recipe={
            "generators": [
                {
                    "id": "big",
                    "backend": "openai",
                    "api_key_env": "OPENAI_API_KEY",
                    "api_key": SK_KEY,
                }
            ],
            "judge": {"id": "j", "backend": "embedded"},
            "hf_token": HF_TOKEN,
            "notes": f"pushed with {HF_TOKEN} by mistake",
        },
        load_reports=[
            {
                "load_id": "x",
                "source": "LDJnr/Capybara",
                "loaded": 8,
                "rejected": {"empty_turn": 1, "bad_role": 1},
            }
        ],
        stage_counts={"loaded": 8, "generated": 18, "judged": 6, "reviewed": 1},
        stats=compute_stats(rows, res.pairs),
        generator_models=["original", "SmolLM2-135M-Instruct", "big-model"],
        judge_model="SmolLM2-135M-Instruct",
        dropped=res.dropped,
        repo_id="me/capy-test",
        reviewed=1,
        **extra,
    )


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    rows = make_rows()
    res = binarize(rows, BinarizeOptions())
    out = export_local(res.pairs, tmp_path / "out", card=make_card(rows, res))
    return out, res.pairs


# -- layout and card -----------------------------------------------------------------------------
def test_export_layout_and_card_metadata(exported: tuple[Path, list[dict[str, Any]]]) -> None:
    out, pairs = exported
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/train-00000-of-00001.jsonl",
        "data/train-00000-of-00001.parquet",
    ]
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert {"dpo", "preference", "synthetic", "capyui"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["license"] == "apache-2.0"
    assert meta["configs"] == [
        {
            "config_name": "default",
            "data_files": [{"split": "train", "path": "data/train-*.parquet"}],
        }
    ]
    for text in (
        "LDJnr/Capybara",
        "openbmb/UltraFeedback",
        "distilabel-capybara-dpo-7k-binarized",
        "big-model",
        "carry little signal",
        "| loaded | 8 |",
        "| pairs kept | 6 |",
        "rejected.empty\\_turn",
        "| tie | 0 |",
        "| judged | 6 |",
    ):
        assert text in card, text
    lines = [line for line in card.splitlines() if line.startswith("| big-model |")]
    assert lines == ["| big-model | 6 | 0 | 0 | 0 | 0 | 6 | 0 | 5.00 | 6 | 0 | 100.0% |"]
    jsonl = [json.loads(line) for line in (out / "data/train-00000-of-00001.jsonl").open()]
    assert jsonl == pairs


def test_jsonl_only_export_points_configs_at_jsonl(tmp_path: Path) -> None:
    rows = make_rows(2)
    res = binarize(rows)
    out = tmp_path / "o"
    export_local(res.pairs, out, card=make_card(rows, res))
    export_local(res.pairs, out, formats=("jsonl",), card=make_card(rows, res))
    assert not (out / "data/train-00000-of-00001.parquet").exists()  # stale file removed
    meta = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*.jsonl"
    with pytest.raises(PublishError):
        export_local(res.pairs, out, formats=("csv",), card=make_card(rows, res))


def test_no_judge_note_for_a_real_judge(tmp_path: Path) -> None:
    rows = make_rows(2)
    res = binarize(rows)
    card = make_card(rows, res)
    card.judge_model, card.recipe = "Qwen2.5-72B-Instruct", {"judge": {"backend": "openai"}}
    text = (export_local(res.pairs, tmp_path, card=card) / "README.md").read_text()
    assert "carry little signal" not in text and "Qwen2.5-72B-Instruct" in text


def test_secrets_never_reach_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_secret = "my-very-secret-env-value-123"
    monkeypatch.setenv("OPENAI_API_KEY", env_secret)
    rows = make_rows(3)
    res = binarize(rows)
    card = make_card(rows, res)
    card.recipe["judge"]["base_url"] = f"http://x/?key={env_secret}"
    card.dataset_name = f"name {HF_TOKEN}"
    out = export_local(res.pairs, tmp_path / "o", card=card)
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in (HF_TOKEN, SK_KEY, env_secret):
        assert secret.encode() not in blob
    card_text = (out / "README.md").read_text()
    assert "api_key_env: OPENAI_API_KEY" in card_text  # the env var *name* is kept
    assert "hf_token" not in card_text  # secret-named keys are dropped


def test_user_text_is_escaped_in_the_card(tmp_path: Path) -> None:
    rows = make_rows(2)
    res = binarize(rows)
    card = make_card(rows, res)
    card.dataset_name = "Evil | name <script>alert(1)</script>\n# heading"
    card.generator_models = ["a|b", "*bold*", "<img src=x onerror=alert(1)>"]
    card.recipe = {"notes": "```\n# not a heading\n````"}
    text = (export_local(res.pairs, tmp_path, card=card) / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["pretty_name"] == card.dataset_name  # YAML stays valid and exact
    body = text.split("---\n", 2)[2]
    assert "<script>" not in body and "<img" not in body
    assert "# Evil \\| name &lt;script&gt;alert\\(1\\)&lt;/script&gt; \\# heading" in body
    assert "| generator | a\\|b |" in body and "| generator | \\*bold\\* |" in body
    # the recipe sits in a fence longer than any backtick run in it, and round-trips
    assert "`````yaml" in body
    fenced = body.split("`````yaml\n", 1)[1].split("`````", 1)[0]
    assert yaml.safe_load(fenced) == card.recipe


# -- datasets + TRL ------------------------------------------------------------------------------
def _tiny_tokenizer() -> Any:
    """A byte-level BPE trained here, wrapped as a fast tokenizer with a ChatML-like template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        ["What is 2 + 2? It is 4.", "earlier question, earlier answer"], trainer
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return fast


def test_parquet_loads_with_datasets_and_passes_trl_checks(
    exported: tuple[Path, list[dict[str, Any]]],
) -> None:
    from datasets import load_dataset
    from trl.data_utils import (
        apply_chat_template,
        extract_prompt,
        is_conversational,
        maybe_apply_chat_template,
        maybe_extract_prompt,
    )

    from pipelines.binarize import to_trl_example

    out, pairs = exported
    ds = load_dataset(
        "parquet", data_files=str(out / "data/train-00000-of-00001.parquet"), split="train"
    )
    assert ds.column_names == list(COLUMNS)
    assert len(ds) == len(pairs) == 6
    assert ds.to_list() == pairs
    tokenizer = _tiny_tokenizer()
    for row in ds:
        assert is_conversational(row)
        for key in ("prompt", "chosen", "rejected"):
            assert is_conversational({key: row[key]}), key
        assert is_conversational({"prompt": row["conversation"]})
        # TRL keeps an explicit conversational prompt as it is ...
        assert maybe_extract_prompt(row) is row
        # ... and, without it, extracts exactly our prompt from chosen/rejected.
        implicit = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
        assert implicit["prompt"] == row["prompt"]
        assert implicit["chosen"] == [row["chosen"][-1]]
        assert implicit["rejected"] == [row["rejected"][-1]]
        # The TRL training shape (prompt + completion-only chosen/rejected) renders to the
        # full conversations we export.
        trl_row = to_trl_example(row)
        assert trl_row == {
            "prompt": row["prompt"],
            **{k: implicit[k] for k in ("chosen", "rejected")},
        }
        rendered = maybe_apply_chat_template(trl_row, tokenizer)
        full_chosen = tokenizer.apply_chat_template(row["chosen"], tokenize=False)
        full_rejected = tokenizer.apply_chat_template(row["rejected"], tokenize=False)
        assert rendered["prompt"] + rendered["chosen"] == full_chosen
        assert rendered["prompt"] + rendered["rejected"] == full_rejected
        assert rendered["prompt"].endswith("<|im_start|>assistant\n")
        assert (
            apply_chat_template({"chosen": row["chosen"], "rejected": row["rejected"]}, tokenizer)[
                "chosen"
            ]
            == full_chosen
        )


# -- push ----------------------------------------------------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]]
    status: int = 200

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }
        )
        if self.status != 200:
            self._reply(self.status, {"error": "Invalid credentials in Authorization header"})
            return
        path = self.path.split("?")[0]
        host = f"http://{self.headers['Host']}"
        if self.command == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            name = f"{payload.get('organization') or 'me'}/{payload['name']}"
            self._reply(200, {"url": f"{host}/datasets/{name}"})
        elif self.command == "POST" and path == "/api/validate-yaml":
            self._reply(200, {"errors": [], "warnings": []})
        elif self.command == "POST" and "/preupload/" in path:
            files = json.loads(body)["files"]
            self._reply(
                200,
                {
                    "files": [
                        {
                            "path": f["path"],
                            "uploadMode": "regular",
                            "shouldIgnore": False,
                            "oid": None,
                        }
                        for f in files
                    ]
                },
            )
        elif self.command == "POST" and "/commit/" in path:
            repo = path.split("/api/datasets/", 1)[1].split("/commit/", 1)[0]
            self._reply(
                200,
                {
                    "commitUrl": f"{host}/datasets/{repo}/commit/{'a' * 40}",
                    "commitOid": "a" * 40,
                    "pullRequestUrl": None,
                },
            )
        else:
            self._reply(404, {"error": f"not served by the recorder: {self.command} {path}"})

    do_GET = do_POST = do_PUT = do_HEAD = _handle


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"requests": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_upload_requests_against_recording_server(
    exported: tuple[Path, list[dict[str, Any]]], recorder: tuple[str, type[_Recorder]]
) -> None:
    out, _ = exported
    endpoint, handler = recorder
    url = push_to_hub(out, "me/capy-test", token=HF_TOKEN, endpoint=endpoint)
    assert url == f"{endpoint}/datasets/me/capy-test"
    calls = [(r["method"], r["path"].split("?")[0]) for r in handler.requests]
    assert calls == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),  # huggingface_hub checks the card's YAML metadata
        ("POST", "/api/datasets/me/capy-test/preupload/main"),
        ("POST", "/api/datasets/me/capy-test/commit/main"),
    ]
    assert all(r["authorization"] == f"Bearer {HF_TOKEN}" for r in handler.requests)
    validated = json.loads(handler.requests[1]["body"])
    assert validated["repoType"] == "dataset"
    assert validated["content"] == (out / "README.md").read_text()
    create = json.loads(handler.requests[0]["body"])
    assert create["type"] == "dataset" and create["visibility"] == "private"
    assert create["name"] == "capy-test" and create.get("organization") == "me"
    preupload = json.loads(handler.requests[2]["body"])
    assert sorted(f["path"] for f in preupload["files"]) == [
        "README.md",
        "data/train-00000-of-00001.jsonl",
        "data/train-00000-of-00001.parquet",
    ]
    lines = [json.loads(x) for x in handler.requests[3]["body"].splitlines() if x.strip()]
    assert lines[0]["key"] == "header"
    files = {ln["value"]["path"]: base64.b64decode(ln["value"]["content"]) for ln in lines[1:]}
    for name, content in files.items():
        assert content == (out / name).read_bytes(), name
    assert len(files) == 3


def test_push_without_token(
    exported: tuple[Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PublishError, match="no Hugging Face token"):
        push_to_hub(exported[0], "me/capy-test", endpoint="http://127.0.0.1:9")


def test_push_uses_hf_token_env(
    exported: tuple[Path, list[dict[str, Any]]],
    recorder: tuple[str, type[_Recorder]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint, handler = recorder
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    push_to_hub(exported[0], "me/capy-test", endpoint=endpoint, private=False)
    assert handler.requests[0]["authorization"] == f"Bearer {HF_TOKEN}"
    assert json.loads(handler.requests[0]["body"])["visibility"] == "public"


@pytest.mark.parametrize("status,expected", [(401, "rejected the token"), (403, "no write access")])
def test_push_auth_errors_are_one_line_without_token(
    exported: tuple[Path, list[dict[str, Any]]],
    recorder: tuple[str, type[_Recorder]],
    status: int,
    expected: str,
) -> None:
    endpoint, handler = recorder
    handler.status = status
    with pytest.raises(PublishError) as info:
        push_to_hub(exported[0], "me/capy-test", token=HF_TOKEN, endpoint=endpoint)
    msg = str(info.value)
    assert expected in msg and f"HTTP {status}" in msg
    assert "\n" not in msg and HF_TOKEN not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_push_connection_refused_is_one_line_without_token(
    exported: tuple[Path, list[dict[str, Any]]],
) -> None:
    port = free_port()  # a port nothing listens on
    with pytest.raises(PublishError) as info:
        push_to_hub(
            exported[0], "me/capy-test", token=HF_TOKEN, endpoint=f"http://127.0.0.1:{port}"
        )
    msg = str(info.value)
    assert msg.startswith(f"cannot reach http://127.0.0.1:{port}")
    assert "\n" not in msg and HF_TOKEN not in msg


def test_push_requires_an_export(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="export the dataset first"):
        push_to_hub(tmp_path, "me/x", token=HF_TOKEN)
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(PublishError, match="invalid repo id"):
        push_to_hub(tmp_path, "not a repo", token=HF_TOKEN)


def test_export_from_result_table_or_dicts_is_identical(tmp_path: Path) -> None:
    """The columnar result, its table and the materialised dicts export the same data."""
    import pyarrow.parquet as pq

    rows = make_rows(6)
    res = binarize(rows, BinarizeOptions(strategy="all-pairs"))
    outs = {}
    for name, given in (("result", res), ("table", res.table), ("dicts", list(res.pairs))):
        out = export_local(given, tmp_path / name, card=make_card(rows, res))
        outs[name] = out
    data = "data/train-00000-of-00001"
    for name in ("table", "dicts"):
        assert (outs[name] / f"{data}.jsonl").read_bytes() == (
            outs["result"] / f"{data}.jsonl"
        ).read_bytes()
        assert (outs[name] / "README.md").read_text() == (outs["result"] / "README.md").read_text()
        assert pq.read_table(outs[name] / f"{data}.parquet").equals(
            pq.read_table(outs["result"] / f"{data}.parquet")
        )
    table = pq.read_table(outs["result"] / f"{data}.parquet")
    assert table.column_names == list(COLUMNS) and table.to_pylist() == res.pairs
    assert res.summary()["pairs"] == table.num_rows == len(res.pairs) > 6
