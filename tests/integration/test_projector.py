"""The projector end to end: real broker, real worker, embedded ClickHouse in its own process."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from projections.privacy import lead_id_for_storage
from projections.report import ACCOUNT_VIEWS, HANDOFF_VIEWS
from streams.common.kafka_clients import create_topics
from streams.core.rules import Rules
from streams.local.broker import LocalBroker, free_port
from streams.local.generator import generate
from tests.support.account_records import account_log
from tests.support.account_reference import expected_account_metrics
from tests.support.funnel_reference import expected_metrics, normalised
from tests.support.handoff_records import handoff_log
from tests.support.handoff_reference import expected_handoff_metrics
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
    settings_from,
)
from tests.support.waiting import wait_for


@dataclass
class Streamed:
    """Topics filled by a real worker from generated traffic, and the funnel they must give."""

    pipeline: Pipeline
    stage_change_records: int
    events: int
    account_records: int
    expected: dict[str, list[dict[str, Any]]]
    live_env: dict[str, str]


@pytest.fixture(scope="module")
def streamed(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory, rules: Rules
) -> Iterator[Streamed]:
    """A worker and a live projector run while the traffic is published, then both stop."""
    pipeline = Pipeline(broker.bootstrap_servers, tmp_path_factory.mktemp("projected"))
    traffic = generate(1_000, seed=11)
    changes = effective(replay_bytes(traffic, rules))
    replayed = replayed_account_records(traffic, rules)
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
        signals = pipeline.reader(pipeline.settings.topics.account_signals)
        account_changes = pipeline.reader(pipeline.settings.topics.account_changes)
        wait_for(
            lambda: set(signals.values()),
            lambda found: found == set(replayed.signals),
            timeout=120,
            what="the worker's account signals to equal replay",
        )
        expected_accounts = replay_accounts(traffic, rules)
        wait_for(
            lambda: effective_accounts(account_changes.values()),
            lambda found: found == expected_accounts,
            timeout=120,
            what="the account changes in effect to equal replay --accounts",
        )
        accounts = normalised(expected_account_metrics(account_changes.values(), signals.values()))
        assert all(accounts[view] for view in ACCOUNT_VIEWS), "want every account view exercised"
        records = len(reader.values())
        account_records = len(signals.values()) + len(account_changes.values())
        wait_for(
            lambda: projected_rows(port),
            lambda rows: rows >= records + len(traffic) + account_records,
            timeout=120,
            what="the live projector to write every record",
        )
        projector.stop()
        assert projector.process is not None and projector.process.returncode == 0
        yield Streamed(
            pipeline,
            records,
            len(traffic),
            account_records,
            {**normalised(expected_metrics(changes.values(), traffic)), **account_views(accounts)},
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
        "crash",
        LEADFLOW_PROJECTOR__BATCH_SIZE="100",
        LEADFLOW_PROJECTOR__METRICS_PORT=str(port),
    )
    total = streamed.stage_change_records + streamed.events + streamed.account_records
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
        "from streams.common.settings import Settings\n"
        "s = Settings()\n"
        "c = connect(s.clickhouse)\n"
        "for table, column in (('stage_changes', 'lead_id'), ('events', 'lead_id'), "
        "('account_members', 'lead_id'), ('account_changes', 'causation_lead_id')):\n"
        "    print(c.query(f\"SELECT countIf({column} LIKE 'lead-%'), count(), "
        'min(length({column})) FROM {s.clickhouse.database}.{table}").result_rows[0])\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env_with_path(streamed.live_env),
        capture_output=True,
        timeout=120,
        check=True,
        text=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:
        in_clear, rows, shortest = ast.literal_eval(line)
        assert in_clear == 0 and rows > 0 and shortest == 32, line


def test_unreadable_account_records_go_to_the_dead_letter_topic_and_the_rest_counts(
    pipeline: Pipeline,
) -> None:
    env = pipeline.projector_env("accounts")
    settings = pipeline.settings
    topics = {
        "signals": settings.topics.account_signals,
        "changes": settings.topics.account_changes,
    }
    create_topics(settings)
    log = account_log(accounts=12, seed=3)
    bad = {"signals": b'{"account_id": "acme.com"}', "changes": b"not json"}
    producer = KafkaProducer(bootstrap_servers=pipeline.bootstrap_servers, acks="all")
    try:
        # Everything twice (a redelivery), with one unreadable record on each topic.
        for _ in range(2):
            for value in log.signals:
                producer.send(
                    topics["signals"], key=orjson.loads(value)["account_id"].encode(), value=value
                )
            for value in log.changes:
                producer.send(
                    topics["changes"], key=orjson.loads(value)["account_id"].encode(), value=value
                )
        for kind, value in bad.items():
            producer.send(topics[kind], key=b"acme.com", value=value)
        producer.flush()
    finally:
        producer.close()
    dead = pipeline.reader(settings.topics.dead_letter)
    projector = pipeline.command(["project", "--until-caught-up"], env, "projector-accounts")
    assert projector.start().wait(timeout=180) == 0
    letters = wait_for(
        dead.poll, lambda found: len(found) >= 2, timeout=30, what="two dead letters"
    )
    reasons = {
        dict(letter.headers)["leadflow-topic"].decode(): dict(letter.headers)[
            "leadflow-reason"
        ].decode()
        for letter in letters
    }
    assert reasons[topics["signals"]].startswith("not an account signal: missing field")
    assert reasons[topics["changes"]].startswith("not an account change: not JSON")
    assert {letter.value for letter in letters} == set(bad.values())
    expected = normalised(expected_account_metrics(log.changes, log.signals))
    assert account_views(report(env)) == account_views(expected)


def test_handoff_events_are_projected_once_and_an_unreadable_one_is_dead_lettered(
    pipeline: Pipeline, rules: Rules
) -> None:
    env = pipeline.projector_env("handoff", handoffs=True)
    settings = settings_from(env)
    create_topics(settings)
    handoffs = handoff_log(effective(replay_bytes(generate(150, seed=9), rules)).values())
    bad = handoffs[0].replace(b'"assigned"', b'"forgotten"')
    producer = KafkaProducer(bootstrap_servers=pipeline.bootstrap_servers, acks="all")
    try:
        for _ in range(2):  # everything twice: a redelivery
            for value in handoffs:
                key = orjson.loads(value)["lead_id"].encode()
                producer.send(settings.topics.handoff, key=key, value=value)
        producer.send(settings.topics.handoff, key=b"lead-x", value=bad)
        producer.flush()
    finally:
        producer.close()
    dead = pipeline.reader(settings.topics.dead_letter)
    projector = pipeline.command(["project", "--until-caught-up"], env, "projector-handoff")
    assert projector.start().wait(timeout=180) == 0
    letters = wait_for(dead.poll, lambda found: len(found) >= 1, timeout=30, what="a dead letter")
    headers = dict(letters[0].headers)
    assert headers["leadflow-topic"].decode() == settings.topics.handoff
    assert headers["leadflow-reason"].decode().startswith("not a handoff event: kind")
    assert [letter.value for letter in letters] == [bad]
    found = report(env)
    # The lead ids are hashed in ClickHouse: the reference's are too, by the same key.
    stored = lead_id_for_storage(settings.privacy)
    hashed = [
        orjson.dumps({**orjson.loads(v), "lead_id": stored(orjson.loads(v)["lead_id"])})
        for v in handoffs
    ]
    expected = normalised(expected_handoff_metrics(hashed, [], datetime.now(UTC)))
    assert found["speed_to_lead"] and found["response_time_conversion"]
    for row in found["handoff_open_breaches"]:  # JSON times as normalised() gives them: days
        for column in ("oldest_due_at", "oldest_mql_at"):
            row[column] = row[column][:10]
    assert {view: found[view] for view in HANDOFF_VIEWS} == expected
