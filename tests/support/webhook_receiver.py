"""A real webhook receiver on 127.0.0.1 for the notifier's tests: it answers as the test says
and records every request it got."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Received:
    """One request as the receiver got it, with the status it answered."""

    key: str
    kind: str
    signature: str
    body: bytes
    status: int
    at: float
    """time.monotonic() when it came."""


@dataclass(frozen=True)
class Reply:
    """How to answer a request: status, headers, body, and how long to take first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


Answer = Callable[[int], Reply]
"""The reply to a request, given how many requests with its idempotency key came before it."""


def always(reply: Reply) -> Answer:
    return lambda seen: reply


class WebhookReceiver:
    """An HTTP/1.1 server in a thread; `answer` decides each reply."""

    def __init__(self, answer: Answer | None = None, port: int = 0) -> None:
        self.answer = answer or always(Reply())
        self.port = port
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get("Idempotency-Key", "")
                reply = receiver._reply_to(key)
                received = Received(
                    key=key,
                    kind=self.headers.get("X-Leadflow-Kind", ""),
                    signature=self.headers.get("X-Leadflow-Signature", ""),
                    body=body,
                    status=reply.status,
                    at=time.monotonic(),
                )
                with receiver._lock:
                    receiver._requests.append(received)
                if reply.delay:
                    time.sleep(reply.delay)  # the receiver is slow: that is the behaviour tested
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the notifier gave up waiting and closed the connection

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # socketserver's backlog of 5 drops the connections a notifier opens at once, and
            # a dropped SYN is sent again only after a second.
            request_queue_size = 128

        server = Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def _reply_to(self, key: str) -> Reply:
        with self._lock:
            seen = sum(1 for request in self._requests if request.key == key)
        return self.answer(seen)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def delivered(self) -> list[Received]:
        """The requests answered 2xx, in the order they came."""
        return [request for request in self.requests if 200 <= request.status < 300]

    def delivered_keys(self) -> set[str]:
        return {request.key for request in self.delivered()}
