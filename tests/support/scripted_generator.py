"""A scripted OpenAI-compatible chat server on 127.0.0.1 for generation-order tests.

Answers every chat completion with a deterministic text derived from the prompt and the
sampling parameters (so stored rows can be compared between runs), honours ``n`` when
``honour_n`` (as vLLM and OpenAI do) or ignores it (as llama.cpp does), waits ``delay_s`` per
request (threaded: requests overlap like on a real server), and logs every request (arrival
time, finish time, body) for assertions. When the prompt is a judge prompt (has ``Texts:``) it
answers as ``ScriptedJudge`` does.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.net import serve
from tests.support.scripted_judge import ScriptedJudge


@dataclass
class Logged:
    arrived: float
    finished: float
    body: dict[str, Any]

    @property
    def last_user(self) -> str:
        return [m for m in self.body["messages"] if m["role"] == "user"][-1]["content"]


@dataclass
class ScriptedGenerator:
    honour_n: bool = True
    delay_s: float = 0.0
    score: int = 4  # the [[score=N]] marker put in every answer (for a scripted judge)
    max_n: int | None = None  # honours n up to this many choices (a gateway's cap)
    fail_single: bool = False  # a request without n > 1 gets HTTP 500 (re-asks fail)
    log: list[Logged] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def text_for(body: dict[str, Any], choice: int) -> str:
        key = json.dumps(
            [body["messages"], body.get("temperature"), body.get("seed"), choice],
            sort_keys=True,
        )
        return "answer " + hashlib.sha256(key.encode()).hexdigest()[:16]

    def start(self) -> str:
        server = self
        judge = ScriptedJudge("text")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.delay_s:
                    time.sleep(server.delay_s)
                prompt = body["messages"][-1]["content"]
                if server.fail_single and int(body.get("n") or 1) <= 1:
                    with server._lock:
                        server.log.append(Logged(arrived, time.monotonic(), body))
                    data = b'{"error": {"message": "scripted failure", "code": 500}}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if "Texts:" in prompt:
                    texts = [judge.answer(prompt)]
                else:
                    n = int(body.get("n") or 1) if server.honour_n else 1
                    n = min(n, server.max_n or n)
                    texts = [
                        f"{self.server_text(body, i)} [[score={server.score}]]" for i in range(n)
                    ]
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": i,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": t},
                            }
                            for i, t in enumerate(texts)
                        ],
                        "usage": {
                            "prompt_tokens": 10,
                            "completion_tokens": 3 * len(texts),
                            "total_tokens": 10 + 3 * len(texts),
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with server._lock:
                    server.log.append(Logged(arrived, time.monotonic(), body))

            def server_text(self, body: dict[str, Any], i: int) -> str:
                return server.text_for(body, i)

        self._server, url = serve(Handler)
        return url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def generations(self) -> list[Logged]:
        return [r for r in self.log if "Texts:" not in r.body["messages"][-1]["content"]]

    def prefill_tokens(self) -> int:
        """Prompt tokens the server had to evaluate for the generations (one prefill per
        request, however many choices it returned; tokens counted as whitespace words)."""
        return sum(
            sum(len(str(m.get("content", "")).split()) for m in r.body["messages"])
            for r in self.generations()
        )

    def judgments(self) -> list[Logged]:
        return [r for r in self.log if "Texts:" in r.body["messages"][-1]["content"]]
