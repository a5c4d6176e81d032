"""The worker under faults: a broker that goes away and comes back empty, a stop mid-stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.core.rules import Rules
from streams.local.broker import LocalBroker
from streams.local.generator import generate
from streams.local.processes import WorkerProcess as Worker
from tests.support.harness import Pipeline, difference, effective, replay_bytes
from tests.support.waiting import wait_for

STOP_BOUND = 30.0
"""Seconds a worker may take to stop on SIGTERM mid-stream (docs/operations.md)."""
CLIENT_LOG_MARKERS = ("Unable connect to node", "Unable to update metadata", "Failed fetch")


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def client_lines(log: Path) -> int:
    text = log.read_text(errors="replace")
    return sum(text.count(marker) for marker in CLIENT_LOG_MARKERS)


def test_a_broker_away_logs_a_line_per_interval_and_back_empty_stops_the_worker_clearly(
    tmp_path: Path, rules: Rules, workers: list[Worker]
) -> None:
    traffic = generate(100, seed=7)
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        pipeline = Pipeline(broker.bootstrap_servers, tmp_path)
        worker = pipeline.worker()
        workers.append(worker.start())
        worker.wait_assigned()
        pipeline.publish(traffic)
        reader = pipeline.reader(pipeline.settings.topics.stage_changes)
        expected = effective(replay_bytes(traffic, rules))
        wait_for(
            lambda: difference(effective(reader.values()), expected),
            lambda diff: diff is None,
            timeout=120,
            what="the stage changes before the broker goes away",
        )
        pipeline.close()
    # The broker is away: the clients fail several times a second; the log says so once per
    # kind per interval (10 s), so two intervals give a few lines, not hundreds.
    wait_for(
        lambda: client_lines(worker.log_path),
        lambda lines: lines > 0,
        timeout=30,
        what="the worker to log that the broker is away",
    )
    away_since = client_lines(worker.log_path)
    time.sleep(21)  # two whole intervals of the log's limit, with the broker away
    assert not worker.exited, "a broker away is a wait, not an exit"
    assert client_lines(worker.log_path) - away_since <= 3 * 2 * len(CLIENT_LOG_MARKERS)
    # Back on the same port, with none of the worker's data: the worker stops, and says why.
    with LocalBroker(port=broker.port, log_path=tmp_path / "broker-again.log"):
        assert worker.wait(timeout=120) == 1
    last_line = worker.log_path.read_text(errors="replace").strip().splitlines()[-1]
    assert last_line.startswith("error: a table's changelog on the broker ends before"), last_line
    assert "LEADFLOW_WORKER__DATA_DIR" in last_line


def test_a_worker_stopped_mid_stream_exits_0_in_bounded_time_and_hands_the_rest_on(
    pipeline: Pipeline, rules: Rules, workers: list[Worker]
) -> None:
    traffic = generate(1_000, seed=11)
    expected = effective(replay_bytes(traffic, rules))
    first = pipeline.worker()
    workers.append(first.start())
    first.wait_assigned()
    pipeline.publish(traffic)
    reader = pipeline.reader(pipeline.settings.topics.stage_changes)
    wait_for(
        reader.values,
        lambda values: len(values) >= len(expected) // 3,
        timeout=120,
        what="a third of the stage changes before the stop",
    )
    assert first.process is not None
    first.process.terminate()
    started = time.monotonic()
    assert first.wait(timeout=STOP_BOUND + 30) == 0
    stopped_in = time.monotonic() - started
    assert stopped_in < STOP_BOUND, f"the worker took {stopped_in:.1f}s to stop"
    assert len(reader.values()) < len(expected), "the stop must come mid-stream"
    second = pipeline.worker(label="b")
    workers.append(second.start())
    wait_for(
        lambda: difference(effective(reader.values()), expected),
        lambda diff: diff is None,
        timeout=180,
        what="the effective stage changes to equal replay after the stop",
    )
