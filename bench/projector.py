"""Projector throughput into ClickHouse, and the lag from a stage change to visible in it.

On the local broker and the embedded engine. Replay output of generated traffic is published
to fresh topics, then:
- throughput: the projector reads both topics to their end (rows/s; without a consumer group,
  as `rebuild` does, so the group join is not counted), next to two baselines
  measured in the same run: kafka-python reading the same records with no processing, and the
  same rows inserted straight into ClickHouse with no Kafka;
- lag: the projector runs while stage changes are published at a steady rate; each row's
  `projected_at - published_at` (ClickHouse insert time minus Kafka timestamp) is the lag.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer

from bench import topics_named
from projections.clickhouse import connect, migrate, spool_inserts_into
from projections.projector import Projector
from projections.rows import event_row, stage_change_row
from projections.writer import ProjectionWriter
from streams.common.kafka_clients import connection_config, create_topics
from streams.common.publish import make_producer
from streams.common.settings import (
    DEFAULT_MAX_EVENT_BYTES,
    ClickHouseSettings,
    KafkaSettings,
    PrivacySettings,
    ProjectorSettings,
    Settings,
)
from streams.common.stage_changes_codec import encode_change
from streams.core.lead import LeadStageChange
from streams.core.rules import load_rules
from streams.local.broker import LocalBroker
from streams.local.generator import generate
from streams.offline.replay import Replayer

FULL_LEADS, QUICK_LEADS = 8_000, 1_500
LAG_RATE = 2_000  # stage changes per second
LAG_SECONDS = 10


def _settings(bootstrap: str, workdir: Path, database: str) -> Settings:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=topics_named(name),
        clickhouse=ClickHouseSettings(url=f"chdb://{workdir / 'clickhouse'}", database=database),
        projector=ProjectorSettings(group_id=f"{name}-projector", temp_dir=workdir / "tmp"),
        privacy=PrivacySettings(hash_key="bench"),
    )


def _publish(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = make_producer(settings, linger_ms=20, max_in_flight_requests_per_connection=5)
    for value in values:
        producer.send(topic, key=orjson.loads(value)["lead_id"].encode(), value=value)
    producer.flush()
    producer.close()


def _raw_read(settings: Settings, records: int) -> float:
    consumer = KafkaConsumer(
        *(settings.topics.stage_changes, settings.topics.events),
        **connection_config(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen, started = 0, time.perf_counter()
    while seen < records:
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def main(quick: bool = False) -> None:
    leads = QUICK_LEADS if quick else FULL_LEADS
    rules = load_rules()
    documents = generate(leads, seed=5)
    events = [orjson.dumps(d) for d in documents]
    changes = [
        encode_change(item)
        for item in Replayer(rules, DEFAULT_MAX_EVENT_BYTES).run(events)
        if isinstance(item, LeadStageChange)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    spool_inserts_into(workdir / "tmp")
    print(
        f"projector: {len(changes):,} stage changes and {len(events):,} events of {leads:,} leads"
    )
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = _settings(broker.bootstrap_servers, workdir, "bench_live")
        client = connect(settings.clickhouse)
        create_topics(settings)
        _publish(settings, settings.topics.stage_changes, changes)
        _publish(settings, settings.topics.events, events)
        rows = len(changes) + len(events)

        raw_seconds = _raw_read(settings, rows)

        migrate(client, "bench_direct")
        change_rows = [stage_change_row(value) for value in changes]
        event_rows = [event_row(value, DEFAULT_MAX_EVENT_BYTES) for value in events]
        started = time.perf_counter()
        ProjectionWriter(client, "bench_direct").write(change_rows, event_rows)
        direct_seconds = time.perf_counter() - started

        migrate(client, settings.clickhouse.database)
        projector = Projector(settings, client, from_beginning=True)
        started = time.perf_counter()
        stats = projector.run(until_caught_up=True)
        projector_seconds = time.perf_counter() - started

        print(f"  kafka-python read, no processing  {rows / raw_seconds:>9,.0f} rows/s  (1.00)")
        print(
            f"  ClickHouse insert, no Kafka       {rows / direct_seconds:>9,.0f} rows/s  "
            f"({raw_seconds / direct_seconds:.2f} of read)"
        )
        print(
            f"  projector (read+decode+insert)    {rows / projector_seconds:>9,.0f} rows/s  "
            f"({raw_seconds / projector_seconds:.2f} of read); "
            f"{stats.stage_changes / projector_seconds:,.0f} stage changes/s, "
            f"{stats.batches} batches"
        )
        _lag(broker.bootstrap_servers, workdir, client, changes)


def _lag(bootstrap: str, workdir: Path, client: Any, changes: list[bytes]) -> None:
    settings = _settings(bootstrap, workdir, "bench_lag")
    create_topics(settings)
    migrate(client, settings.clickhouse.database)
    stop = threading.Event()
    projector = Projector(settings, client)
    thread = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    thread.start()
    projector.assigned.wait(timeout=60)
    producer = make_producer(settings, linger_ms=0)
    total = min(len(changes), LAG_RATE * LAG_SECONDS)
    started = time.perf_counter()
    for index, value in enumerate(changes[:total]):
        # Paced: each change leaves at its slot, so the lag is not the backlog of a burst.
        delay = started + index / LAG_RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        producer.send(settings.topics.stage_changes, value=value)
    producer.flush()
    sent_rate = total / (time.perf_counter() - started)
    deadline = time.monotonic() + 60
    while projector.stats.stage_changes < total and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join()
    producer.close()
    p50, p99, worst = client.query(
        "SELECT quantilesExact(0.5, 0.99)(lag)[1], quantilesExact(0.5, 0.99)(lag)[2], max(lag) "
        "FROM (SELECT dateDiff('millisecond', published_at, projected_at) AS lag "
        f"FROM {settings.clickhouse.database}.stage_changes)"
    ).result_rows[0]
    print(
        f"  lag, stage change published -> visible in ClickHouse, at {sent_rate:,.0f}/s for "
        f"{total:,} changes: p50 {p50:,.0f} ms, p99 {p99:,.0f} ms, max {worst:,.0f} ms "
        f"(goal < 2,000 ms)"
    )
