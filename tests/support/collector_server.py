"""The collector as a real process on 127.0.0.1, started for a test, and requests to it."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from streams.local.broker import free_port
from streams.local.processes import LeadflowProcess
from tests.support.harness import Pipeline
from tests.support.waiting import wait_for

WRITE_KEY = "test-write-key"
WEBHOOK_SECRET = "test-webhook-secret"


@dataclass
class Server:
    """A running collector of a test's pipeline, and the events it published."""

    pipeline: Pipeline
    url: str
    process: LeadflowProcess

    def post(
        self,
        path: str,
        body: bytes | dict[str, Any] | list[Any],
        headers: dict[str, str] | None = None,
        write_key: str | None = WRITE_KEY,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        if write_key is not None:
            token = base64.b64encode(f"{write_key}:".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, orjson.loads(response.read()), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read() or b"{}"), dict(error.headers)

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for v in self.reader.values()]

    @property
    def reader(self) -> Any:
        if not hasattr(self, "_reader"):
            self._reader = self.pipeline.reader(self.pipeline.settings.topics.events)
        return self._reader


def start_collector(pipeline: Pipeline, **extra: str) -> Server:
    """Start a collector for `pipeline` (with `extra` variables) and wait until it answers."""
    port = free_port()
    env = pipeline.env(
        LEADFLOW_COLLECTOR__PORT=str(port),
        LEADFLOW_COLLECTOR__WRITE_KEYS=json.dumps([WRITE_KEY, "another-key"]),
        LEADFLOW_COLLECTOR__WEBHOOK_SECRET=WEBHOOK_SECRET,
        **extra,
    )
    process = pipeline.command(["collect"], env, f"collector-{port}").start()
    server = Server(pipeline, f"http://127.0.0.1:{port}", process)

    def healthy() -> bool:
        assert not process.exited, f"the collector exited (log: {process.log_path})"
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2):
                return True
        except OSError:
            return False

    wait_for(healthy, bool, timeout=60, what="the collector to answer")
    return server


def segment_message(kind: str, lead: str, **fields: Any) -> dict[str, Any]:
    """A Segment message of `kind` for `lead`, with a fresh message id."""
    return {
        "type": kind,
        "messageId": str(uuid.uuid4()),
        "userId": lead,
        "timestamp": "2026-03-01T12:00:00Z",
        **fields,
    }
