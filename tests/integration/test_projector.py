"""The projector end to end: real broker, real worker, embedded ClickHouse in its own process."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.generator import generate
from streams.local_broker import LocalBroker, free_port
from streams.local_pipeline import read_metrics
from streams.rules import Rules
from tests.funnel_reference import expected_metrics, normalised
from tests.integration.harness import Pipeline, difference, effective, replay_bytes
from tests.waiting import wait_for


@dataclass
class Streamed:
    """Topics filled by a real worker from generated traffic, and the funnel they must give."""

    pipeline: Pipeline
    stage_change_records: int
    events: int
    expected: dict[str, list[dict[str, Any]]]
    live_env: dict[str, str]


def report(env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """`leadflow report --json` in its own process (the embedded engine is one per process)."""
    done = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--json"],
        env=env_with_path(env),
        capture_output=True,
        timeout=120,
        check=True,
    )
    found: dict[str, list[dict[str, Any]]] = orjson.loads(done.stdout)
    return normalised(found)


def env_with_path(env: dict[str, str]) -> dict[str, str]:
    import os

    return {**os.environ, **env}


def projected_rows(port: int) -> float:
    try:
        samples = read_metrics(port)
    except OSError:
        return 0.0
    return sum(v for k, v in samples.items() if k.startswith("leadflow_projector_rows_total"))


@pytest.fixture(scope="module")
def streamed(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory, rules: Rules
) -> Iterator[Streamed]:
    """A worker and a live projector run while the traffic is published, then both stop."""
    pipeline = Pipeline(broker.bootstrap_servers, tmp_path_factory.mktemp("projected"))
    traffic = generate(1_000, seed=11)
    changes = effective(replay_bytes(traffic, rules))
    port = free_port()
    live_env = pipeline.projector_env("live", LEADFLOW_PROJECTOR__METRICS_PORT=str(port))
    worker = pipeline.worker().start()
    projector = pipeline.command(["project"], live_env, "projector-live").start()
    try:
        worker.wait_assigned()
        pipeline.publish(traffic)
        reader = pipeline.reader(pipeline.settings.topics.stage_changes)
        wait_for(
            lambda: difference(effective(reader.values()), changes),
            lambda diff: diff is None,
            timeout=240,
            what="the worker's stage changes to equal replay",
        )
        records = len(reader.values())
        wait_for(
            lambda: projected_rows(port),
            lambda rows: rows >= records + len(traffic),
            timeout=120,
            what="the live projector to write every record",
        )
        projector.stop()
        assert projector.process is not None and projector.process.returncode == 0
        yield Streamed(
            pipeline,
            records,
            len(traffic),
            normalised(expected_metrics(changes.values(), traffic)),
            live_env,
        )
    finally:
        worker.kill()
        projector.kill()
        pipeline.close()


def test_every_metric_view_equals_the_metric_computed_from_replay(streamed: Streamed) -> None:
    found = report(streamed.live_env)
    assert found == streamed.expected


def test_a_projector_killed_mid_batch_and_restarted_still_counts_exactly(
    streamed: Streamed,
) -> None:
    port = free_port()
    env = streamed.pipeline.projector_env(
        "crash", LEADFLOW_PROJECTOR__BATCH_SIZE="100", LEADFLOW_PROJECTOR__METRICS_PORT=str(port)
    )
    total = streamed.stage_change_records + streamed.events
    first = streamed.pipeline.command(["project"], env, "projector-crash").start()
    try:
        seen = wait_for(
            lambda: projected_rows(port),
            lambda rows: rows >= 2_000,
            timeout=120,
            what="the projector to write some batches",
        )
    finally:
        first.kill()
    assert seen < total, "the kill must come mid-stream"
    restarted = streamed.pipeline.command(
        ["project", "--until-caught-up"], env, "projector-crash"
    ).start()
    assert restarted.wait(timeout=180) == 0
    assert report(env) == streamed.expected


def test_rebuild_from_the_topics_equals_the_live_projection(
    streamed: Streamed, tmp_path: Path
) -> None:
    before = report(streamed.live_env)
    rebuild = streamed.pipeline.command(["rebuild"], streamed.live_env, "rebuild").start()
    assert rebuild.wait(timeout=180) == 0
    assert report(streamed.live_env) == before == streamed.expected


def test_clickhouse_holds_keyed_hashes_not_lead_ids(streamed: Streamed) -> None:
    script = (
        "from projections.clickhouse import connect\n"
        "from streams.settings import Settings\n"
        "s = Settings()\n"
        "c = connect(s.clickhouse)\n"
        "for table in ('stage_changes', 'events'):\n"
        "    print(c.query(f\"SELECT countIf(lead_id LIKE 'lead-%'), count(), "
        'min(length(lead_id)) FROM {s.clickhouse.database}.{table}").result_rows[0])\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env_with_path(streamed.live_env),
        capture_output=True,
        timeout=120,
        check=True,
        text=True,
    )
    for line in done.stdout.splitlines():
        in_clear, rows, shortest = ast.literal_eval(line)
        assert in_clear == 0 and rows > 0 and shortest == 32, line
