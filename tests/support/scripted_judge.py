"""A scripted OpenAI-compatible judge on 127.0.0.1, for checking rating *alignment*.

A real small model's ratings carry no signal, so alignment through shuffling cannot be checked
with it. This server reads the texts from the real judge prompt (``<text i> ...`` blocks under
the last ``Texts:``) and rates each by a marker it contains (``[[score=N]]``), answering in the
text format or JSON as asked. Every request body is kept for assertions.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT_BLOCK = re.compile(r"^<text (\d+)> (.*?)(?=^<text \d+> |\n### Output|\Z)", re.S | re.M)
SCORE = re.compile(r"\[\[score=(\d)\]\]")


class ScriptedJudge:
    def __init__(self, style: str = "text") -> None:
        self.style = style  # text | json | preamble | hostile
        self.bodies: list[dict[str, Any]] = []

    def answer(self, prompt: str) -> str:
        texts_part = prompt.rsplit("Texts:", 1)[-1]
        blocks = TEXT_BLOCK.findall(texts_part)
        items = []
        for idx, text in blocks:
            m = SCORE.search(text)
            items.append((int(idx), int(m.group(1)) if m else None))
        if self.style == "hostile":  # numbers no rating can be (issue 10, item 6)
            bad = ["NaN", "Infinity", "1e400", "-Infinity", "9" * 400]
            rated = ", ".join(
                f'{{"text": {i}, "rating": {bad[k % len(bad)]}, "rationale": "x"}}'
                for k, (i, _) in enumerate(items)
            )
            return '{"ratings": [' + rated + "]}"
        if self.style == "json":
            return json.dumps(
                {
                    "ratings": [
                        {"text": i, "rating": r, "rationale": f"scored {r}"}
                        for i, r in reversed(items)
                    ]
                }
            )
        out = ["Sure! Here is my evaluation.\n"] if self.style == "preamble" else []
        for i, r in items:
            out.append(
                f"#### Output for Text {i}\nRating: {r if r else 'N/A'}\n"
                f"Rationale: scored {r}.\n\nIt has a blank line inside.\n"
            )
        return "\n".join(out)

    def start(self) -> str:
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.bodies.append(body)
                text = judge.answer(body["messages"][-1]["content"])
                data = json.dumps(
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
