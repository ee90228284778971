"""A strict OpenAI-compatible chat server on 127.0.0.1 that validates requests like the OpenAI
API does: an unknown request key (top level or inside ``response_format``) is a 400
"Unrecognized request argument supplied: ...", ``json_schema`` is a 400 for the models it marks
as not supporting structured outputs, ``json_object`` a 400 for those without JSON mode, and an
unknown model a 404. Answers come from a ``ScriptedJudge`` (JSON when a JSON format was asked,
else the text format). Every request body and status is kept for assertions."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.net import serve
from tests.support.scripted_judge import ScriptedJudge

CHAT_KEYS = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "service_tier",
    "store",
    "metadata",
    "modalities",
    "reasoning_effort",
}
FORMAT_KEYS = {"text": {"type"}, "json_object": {"type"}, "json_schema": {"type", "json_schema"}}


class StrictOpenAI:
    def __init__(
        self,
        models: set[str],
        *,
        no_json_schema: set[str] = frozenset(),
        no_json_mode: set[str] = frozenset(),
        judge_style: str = "json",
    ) -> None:
        self.models = set(models)
        self.no_json_schema = set(no_json_schema)
        self.no_json_mode = set(no_json_mode)
        self.json_judge = ScriptedJudge(judge_style)
        self.text_judge = ScriptedJudge("text")
        self.requests: list[tuple[int, dict[str, Any]]] = []  # (status, body)
        self._lock = threading.Lock()

    def check(self, body: dict[str, Any]) -> tuple[int, str] | None:
        """(status, message) of a refusal, or None for a valid request."""
        unknown = sorted(set(body) - CHAT_KEYS)
        if unknown:
            return 400, f"Unrecognized request argument supplied: {unknown[0]}"
        model = body.get("model")
        if model not in self.models:
            return 404, f"The model `{model}` does not exist or you do not have access to it."
        fmt = body.get("response_format")
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind not in FORMAT_KEYS:
                return (
                    400,
                    f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema'"
                    " and 'text'.",
                )
            extra = sorted(set(fmt) - FORMAT_KEYS[kind])
            if extra:
                return 400, f"Unrecognized request argument supplied: response_format.{extra[0]}"
            if kind == "json_schema" and model in self.no_json_schema:
                return 400, (
                    "Invalid parameter: 'response_format' of type 'json_schema' is not supported"
                    " with this model."
                )
            if kind == "json_object" and model in self.no_json_mode:
                return 400, (
                    "Invalid parameter: 'response_format' of type 'json_object' is not supported"
                    " with this model."
                )
        return None

    def statuses(self) -> list[int]:
        with self._lock:
            return [s for s, _ in self.requests]

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                refusal = server.check(body)
                with server._lock:
                    server.requests.append((refusal[0] if refusal else 200, body))
                if refusal:
                    status, message = refusal
                    self._send(
                        status,
                        {"error": {"message": message, "type": "invalid_request_error"}},
                    )
                    return
                fmt = (body.get("response_format") or {}).get("type", "text")
                judge = server.text_judge if fmt == "text" else server.json_judge
                text = judge.answer(body["messages"][-1]["content"])
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
                    },
                )

        self._server, url = serve(Handler)
        return url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
