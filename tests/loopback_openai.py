"""A scripted OpenAI-compatible server on loopback for tests: a real HTTP server and the real client, answers
chosen by the test's handler."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def send_json(handler: http.server.BaseHTTPRequestHandler, payload: dict) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def chat_reply(handler: http.server.BaseHTTPRequestHandler, texts: list[str]) -> None:
    """Answer a /v1/chat/completions request with one choice per text."""
    send_json(handler, {"choices": [{"index": i, "message": {"role": "assistant", "content": t},
                                     "finish_reason": "stop"} for i, t in enumerate(texts)]})


@contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free loopback port; yields the base URL (`http://127.0.0.1:<port>/v1`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        httpd.shutdown()
