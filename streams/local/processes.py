"""Running leadflow's processes on this machine: worker subprocesses and topic readers.

Used by `leadflow demo` and by the integration tests, so both drive the same real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson
from kafka import KafkaConsumer, TopicPartition

from streams.errors import LeadflowError


class NotReadyError(LeadflowError):
    """A process did not become ready in time."""


@dataclass
class LeadflowProcess:
    """`leadflow ARGS...` in a subprocess, configured by `LEADFLOW_*` variables in `env`."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    module: str = "streams"
    """The module run with `python -m` (the benchmarks run one of theirs)."""
    cwd: Path | None = None
    """Its working directory (relative paths in settings are relative to it); else this one's."""

    def start(self) -> Self:
        environment = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=environment,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; return its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise NotReadyError(
                f"leadflow {' '.join(self.args)} still running after {timeout}s "
                f"(log: {self.log_path})"
            ) from None

    def stop(self, timeout: float = 30) -> None:
        """Stop gracefully (SIGTERM), as an operator would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """kill -9: no flush, no commit, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def scrape_metrics(port: int) -> dict[str, float]:
    """leadflow_* samples served in Prometheus text format on 127.0.0.1:port, by name+labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("leadflow_"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@dataclass
class WorkerProcess(LeadflowProcess):
    """`leadflow worker`, with its web port for health and metrics."""

    args: list[str] = field(default_factory=lambda: ["worker", "--loglevel", "info"])
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path = Path("worker.log")
    port: int = 6066

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                result: dict[str, Any] = orjson.loads(r.read())
                return result
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        """leadflow_* samples from /metrics, by name with labels."""
        return scrape_metrics(self.port)

    def wait_assigned(self, timeout: float = 60) -> list[int]:
        """Wait until the worker owns partitions of the events topic; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited:
                raise NotReadyError(f"the worker exited (log: {self.log_path})")
            health = self.health()
            if health and health["partitions"]:
                partitions: list[int] = health["partitions"]
                return partitions
            time.sleep(0.25)
        raise NotReadyError(
            f"the worker owned no partition after {timeout}s (log: {self.log_path})"
        )


class TopicReader:
    """Reads a whole topic from the beginning, keeping every message seen so far.

    It never trusts end offsets (the local broker's high watermark can undercount): tests wait
    until what was read meets their condition."""

    def __init__(self, bootstrap_servers: str, topic: str, partitions: int) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self.consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        self.consumer.seek_to_beginning()
        self.messages: list[Any] = []

    def poll(self) -> list[Any]:
        for records in self.consumer.poll(timeout_ms=200, max_records=50_000).values():
            self.messages.extend(records)
        return self.messages

    def values(self) -> list[bytes]:
        return [m.value for m in self.poll()]

    def close(self) -> None:
        self.consumer.close()
