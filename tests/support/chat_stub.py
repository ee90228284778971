"""The one stub OpenAI-compatible chat server the scripted test servers build on: a threaded
HTTP server on 127.0.0.1 (port chosen by the OS) whose ``POST .../chat/completions`` answers
with ``reply(body)``, every request body kept in ``bodies``. A subclass only says what to
answer (``reply``); ``completion`` builds the OpenAI response around a text."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.net import serve


def completion(
    model: str,
    text: str,
    *,
    id: str = "x",
    finish_reason: str = "stop",
    prompt_tokens: int = 1,
    completion_tokens: int = 5,
) -> dict[str, Any]:
    """A ``chat.completion`` response with one choice holding ``text``, and its usage."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": text},
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class StubChatServer:
    """Start with ``start()`` (returns the ``/v1`` base URL), stop with ``stop()``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def reply(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        """The JSON answer to the ``n``-th request (1-based) whose body is ``body``."""
        raise NotImplementedError

    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    stub.bodies.append(body)
                    n = len(stub.bodies)
                data = json.dumps(stub.reply(body, n)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server, url = serve(Handler)
        return url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
