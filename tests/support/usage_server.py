"""A local OpenAI-compatible chat server that reports token usage (issue 14's budget tests).

Every answer is ``answer <n>``; ``usage.completion_tokens`` is the request's ``max_tokens`` and
``usage.prompt_tokens`` a fixed number, so the cost of every row is known in advance. Every
request body is kept, so a test can count what was sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class UsageServer:
    def __init__(self, prompt_tokens: int = 10, hold_after: int | None = None) -> None:
        self.prompt_tokens = prompt_tokens
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # requests after the first ``hold_after`` wait for ``release`` (a job caught mid-run)
        self.hold_after = hold_after
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def start(self) -> str:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with srv._lock:
                    srv.bodies.append(body)
                    n = len(srv.bodies)
                if srv.hold_after is not None and n > srv.hold_after:
                    srv.gate.wait(120)
                completion = int(body.get("max_tokens") or body.get("max_completion_tokens") or 1)
                data = json.dumps(
                    {
                        "id": f"x{n}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "length",
                                # the marker lets tests/support/scripted_judge.py rate it
                                "message": {
                                    "role": "assistant",
                                    "content": f"answer {n} [[score=3]]",
                                },
                            }
                        ],
                        "usage": {
                            "prompt_tokens": srv.prompt_tokens,
                            "completion_tokens": completion,
                            "total_tokens": srv.prompt_tokens + completion,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
