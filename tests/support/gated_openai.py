"""A minimal OpenAI-compatible chat server on 127.0.0.1 whose answers wait on a gate.

A test opens the gate when it has seen what it wanted while requests were in flight (a
heartbeat, a disabled button), so nothing depends on how fast the machine is: no sleep has to
be "long enough". ``requests`` counts the requests received.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class GatedOpenAI:
    def __init__(self, max_wait_s: float = 600.0) -> None:
        self.gate = threading.Event()
        self.requests = 0
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # /v1/models
                self._send({"object": "list", "data": [{"id": "gated-model", "object": "model"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with outer._lock:
                    outer.requests += 1
                outer.gate.wait(outer.max_wait_s)
                self._send(
                    {
                        "id": "chatcmpl-gated",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": "gated-model",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "A gated answer."},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
                    }
                )

            def _send(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> GatedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
