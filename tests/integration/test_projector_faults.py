"""The projector under faults: kill -9 at random moments, quick kills, SIGTERM, no ClickHouse.

Every comparison is of whole views against the references computed from `replay`: the local
broker's high watermark can undercount, so no test trusts an offset count alone.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.common.publish import make_producer, publish_events
from streams.core.rules import Rules
from streams.local.broker import LocalBroker, free_port
from streams.local.generator import generate
from streams.local.processes import LeadflowProcess
from tests.support.account_reference import expected_account_metrics
from tests.support.funnel_reference import expected_metrics, normalised
from tests.support.harness import (
    Pipeline,
    account_views,
    difference,
    effective,
    effective_accounts,
    env_with_path,
    projected_rows,
    replay_accounts,
    replay_bytes,
    replayed_account_records,
    report,
)
from tests.support.waiting import wait_for

STOP_BOUND = 10.0
"""Seconds the projector may take to exit after SIGTERM (docs/operations.md)."""
CATCH_UP_BOUND = 45.0
"""Seconds `project --until-caught-up` may take over these few thousand records."""


@dataclass
class Expected:
    """What the topics of a pipeline hold, and the views they must give."""

    views: dict[str, list[dict[str, Any]]]
    records: int


def expected_views(traffic: list[dict[str, Any]], rules: Rules) -> dict[str, list[dict[str, Any]]]:
    """Every view the report shows, computed from `replay` of the traffic."""
    changes = effective(replay_bytes(traffic, rules))
    accounts = replayed_account_records(traffic, rules)
    return {
        **normalised(expected_metrics(changes.values(), traffic)),
        **account_views(normalised(expected_account_metrics(accounts.changes, accounts.signals))),
    }


def wait_for_the_worker(pipeline: Pipeline, traffic: list[dict[str, Any]], rules: Rules) -> int:
    """Wait until the worker's topics equal `replay` of the traffic; return how many records
    the four topics the projector reads hold."""
    topics = pipeline.settings.topics
    changes = pipeline.reader(topics.stage_changes)
    signals = pipeline.reader(topics.account_signals)
    account_changes = pipeline.reader(topics.account_changes)
    expected_changes = effective(replay_bytes(traffic, rules))
    wait_for(
        lambda: difference(effective(changes.values()), expected_changes),
        lambda diff: diff is None,
        timeout=120,
        what="the worker's stage changes to equal replay",
    )
    expected_signals = set(replayed_account_records(traffic, rules).signals)
    wait_for(
        lambda: set(signals.values()),
        lambda found: found == expected_signals,
        timeout=60,
        what="the worker's account signals to equal replay",
    )
    expected_accounts = replay_accounts(traffic, rules)
    wait_for(
        lambda: effective_accounts(account_changes.values()),
        lambda found: found == expected_accounts,
        timeout=60,
        what="the account changes in effect to equal replay --accounts",
    )
    events = pipeline.reader(topics.events)
    wait_for(
        events.values,
        lambda found: len(found) >= len(traffic),
        timeout=30,
        what="every event on the events topic",
    )
    return (
        len(changes.values())
        + len(signals.values())
        + len(account_changes.values())
        + len(events.values())
    )


@pytest.fixture(scope="module")
def filled(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory, rules: Rules
) -> Iterator[tuple[Pipeline, Expected]]:
    """Topics a worker filled from generated traffic (then stopped), and what they must give."""
    pipeline = Pipeline(broker.bootstrap_servers, tmp_path_factory.mktemp("filled"))
    traffic = generate(200, seed=29)
    worker = pipeline.worker().start()
    try:
        worker.wait_assigned()
        pipeline.publish(traffic)
        records = wait_for_the_worker(pipeline, traffic, rules)
        worker.stop()
        yield pipeline, Expected(expected_views(traffic, rules), records)
    finally:
        worker.kill()
        pipeline.close()


@pytest.fixture
def processes() -> Iterator[list[LeadflowProcess]]:
    started: list[LeadflowProcess] = []
    yield started
    for process in started:
        process.kill()


def publish_slowly(pipeline: Pipeline, traffic: list[dict[str, Any]], per_second: int) -> None:
    """Publish the traffic in small chunks at about `per_second` events a second."""
    settings = pipeline.settings
    producer = make_producer(settings)
    chunk = max(1, per_second // 10)
    try:
        for start in range(0, len(traffic), chunk):
            began = time.monotonic()
            publish_events(traffic[start : start + chunk], settings, producer)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
    finally:
        producer.close()


def catch_up(pipeline: Pipeline, env: dict[str, str], log: str) -> float:
    """Run `project --until-caught-up` to its end; return the seconds it took."""
    started = time.monotonic()
    final = pipeline.command(["project", "--until-caught-up"], env, log).start()
    try:
        assert final.wait(timeout=CATCH_UP_BOUND) == 0
    finally:
        final.kill()
    return time.monotonic() - started


def test_until_caught_up_after_random_kills_of_worker_and_projector_equals_the_references(
    pipeline: Pipeline, rules: Rules, processes: list[LeadflowProcess]
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    chaos = random.Random(seed)
    traffic = generate(200, seed=seed % 1000)
    env = pipeline.projector_env("kills", LEADFLOW_PROJECTOR__BATCH_SIZE="200")
    worker = pipeline.worker()
    processes.append(worker.start())
    worker.wait_assigned()

    def projector() -> LeadflowProcess:
        started = pipeline.command(["project"], env, "projector-kills").start()
        processes.append(started)
        return started

    publisher = threading.Thread(target=publish_slowly, args=(pipeline, traffic, 250))
    publisher.start()
    live = projector()
    projector_kills = worker_kills = 0
    while publisher.is_alive() or projector_kills < 3 or worker_kills < 1:
        time.sleep(chaos.uniform(0.3, 2.5))  # a random moment, not a wait for something
        if worker_kills < 2 and chaos.random() < 0.3:
            worker.kill()
            worker = pipeline.worker()  # the same disk
            processes.append(worker.start())
            worker_kills += 1
        else:
            live.kill()
            live = projector()
            projector_kills += 1
    publisher.join()
    wait_for_the_worker(pipeline, traffic, rules)
    time.sleep(chaos.uniform(0.0, 2.0))
    live.kill()
    catch_up(pipeline, env, "projector-kills-final")
    found = report(env)
    expected = expected_views(traffic, rules)
    differing = [view for view in expected if found.get(view) != expected[view]]
    assert not differing, (
        f"views differ after {projector_kills} projector and {worker_kills} worker kills "
        f"(seed {seed}): {differing}"
    )


def test_a_projector_killed_four_times_quickly_then_catches_up_exactly(
    filled: tuple[Pipeline, Expected], processes: list[LeadflowProcess]
) -> None:
    pipeline, expected = filled
    env = pipeline.projector_env("quick-kills")
    chaos = random.Random(4)
    for _ in range(4):
        started = pipeline.command(["project"], env, "projector-quick-kills").start()
        processes.append(started)
        time.sleep(chaos.uniform(0.5, 3.0))  # a random moment of its start
        started.kill()
    took = catch_up(pipeline, env, "projector-quick-kills-final")
    assert report(env) == expected.views, f"caught up in {took:.1f}s but the views differ"


def committed_records(pipeline: Pipeline, group_id: str) -> int:
    """The sum of a group's committed offsets over the projector's topics (records it
    committed, when it started from the first offset)."""
    topics = pipeline.settings.topics
    consumer = KafkaConsumer(
        bootstrap_servers=pipeline.bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in (
                topics.stage_changes,
                topics.events,
                topics.account_changes,
                topics.account_signals,
            )
            for partition in range(pipeline.partitions)
        ]
        return sum(consumer.committed(tp) or 0 for tp in partitions)
    finally:
        consumer.close()


def records_read(log: Path) -> int:
    """What the projector's last line says it read: every count but the batches (written
    records of each topic, the worker's clock records, unreadable messages)."""
    last = log.read_text(errors="replace").strip().splitlines()[-1]
    assert last.startswith("projected "), last
    counts = re.findall(r"(\d+) ([a-z ]+?)(?=,| and | in |\)|$)", last)
    assert len(counts) >= 8, last
    return sum(int(number) for number, what in counts if what != "batches")


@pytest.mark.parametrize("moment", ["mid-stream", "before-reading"])
def test_sigterm_writes_and_commits_what_was_read_and_exits_0_in_bounded_time(
    filled: tuple[Pipeline, Expected], processes: list[LeadflowProcess], moment: str
) -> None:
    pipeline, expected = filled
    port = free_port()
    env = pipeline.projector_env(
        f"sigterm-{moment}",
        LEADFLOW_PROJECTOR__BATCH_SIZE="100",
        LEADFLOW_PROJECTOR__METRICS_PORT=str(port),
    )
    projector = pipeline.command(["project"], env, f"projector-sigterm-{moment}").start()
    processes.append(projector)
    if moment == "mid-stream":
        wait_for(
            lambda: projected_rows(port),
            lambda rows: rows >= 1_000,
            timeout=60,
            what="the projector to write some batches",
        )
    else:
        wait_for(
            lambda: projector.log_path.read_text(errors="replace"),
            lambda text: "projecting into" in text,
            timeout=60,
            what="the projector to start",
        )
    assert projector.process is not None
    projector.process.terminate()
    signalled = time.monotonic()
    assert projector.wait(timeout=STOP_BOUND + 30) == 0
    took = time.monotonic() - signalled
    assert took < STOP_BOUND, f"the projector took {took:.1f}s to stop"
    read = records_read(projector.log_path)
    assert read < expected.records, "the stop must come before the end"
    group = env["LEADFLOW_PROJECTOR__GROUP_ID"]
    assert committed_records(pipeline, group) == read, "everything read is committed"
    # What it did not read, the next run does; together they give the whole funnel.
    catch_up(pipeline, env, f"projector-sigterm-{moment}-after")
    assert report(env) == expected.views


def run_project(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "project", "--until-caught-up"],
        env=env_with_path(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_a_clickhouse_server_that_does_not_answer_is_one_line_naming_the_setting(
    pipeline: Pipeline,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**pipeline.projector_env("unreachable"), "LEADFLOW_CLICKHOUSE__URL": url}
    line = one_error_line(run_project(env))
    assert url in line and "LEADFLOW_CLICKHOUSE__URL" in line, line
    assert "Traceback" not in line


def test_a_chdb_path_held_by_another_process_is_one_line_naming_that_process(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    env = pipeline.projector_env("locked")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from projections.clickhouse import connect\n"
            "from streams.common.settings import Settings\n"
            "client = connect(Settings().clickhouse)\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        env=env_with_path(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        line = one_error_line(run_project(env))
    finally:
        holder.kill()
        holder.wait()
    assert env["LEADFLOW_CLICKHOUSE__URL"] in line and "LEADFLOW_CLICKHOUSE__URL" in line, line
    assert f"process {holder.pid}" in line, line
