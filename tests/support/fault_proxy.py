"""A small HTTP proxy on 127.0.0.1 that forwards to a real server and injects faults.

Faults are chosen per request by a schedule ``(n, path) -> fault | None`` where ``n`` counts
requests from 1. Every request is logged (time, path, fault) so tests can assert what was
sent. Faults: ``500``; ``429`` with ``Retry-After``; ``stall`` (hold the connection past the
client's timeout, then close); ``reset`` (abort the TCP connection, no response).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Schedule = Callable[[int, str], "str | None"]


@dataclass
class LoggedRequest:
    n: int
    at: float
    path: str
    fault: str | None


@dataclass
class FaultProxy:
    upstream: str  # e.g. http://127.0.0.1:8080
    schedule: Schedule = lambda n, path: None  # noqa: E731
    retry_after_s: int = 1
    stall_s: float = 3.0
    log: list[LoggedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    n = len(proxy.log) + 1
                    fault = proxy.schedule(n, self.path) if self.command == "POST" else None
                    proxy.log.append(LoggedRequest(n, time.monotonic(), self.path, fault))
                if fault == "500":
                    self._reply(500, b'{"error": {"message": "injected server error"}}')
                elif fault == "429":
                    self._reply(
                        429,
                        b'{"error": {"message": "injected rate limit"}}',
                        {"Retry-After": str(proxy.retry_after_s)},
                    )
                elif fault == "stall":
                    time.sleep(proxy.stall_s)
                    self.close_connection = True
                elif fault == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                else:
                    self._forward(body)

            def _reply(self, code: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes) -> None:
                up = urlsplit(proxy.upstream)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def completions(self) -> list[LoggedRequest]:
        return [r for r in self.log if r.path.endswith("/chat/completions")]
