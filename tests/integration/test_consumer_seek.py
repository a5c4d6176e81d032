"""The worker's consumer seeks back to what was committed, and a partition never committed to its
start (streams/worker/consumer.py), against the real broker.

Faust drops the records a fetch brought while its flow was stopped and seeks back to read them
again; before this, a partition with no committed offset stayed past them: the stitching worker
killed mid-stream lost the link requests its successor had fetched during its recovery.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streams.local.broker import LocalBroker
from streams.worker.consumer import seek_to_committed_or_start
from tests.support.harness import unique


def test_a_partition_never_committed_is_read_again_from_its_start(broker: LocalBroker) -> None:
    servers = broker.bootstrap_servers
    topic, changelog = unique("seek"), unique("seek-changelog")
    admin = KafkaAdminClient(bootstrap_servers=servers)
    admin.create_topics([NewTopic(topic, 3, 1), NewTopic(changelog, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=servers)
    for name, partitions in ((topic, 3), (changelog, 1)):
        for partition in range(partitions):
            for n in range(5):
                producer.send(name, b"record-%d" % n, partition=partition)
    producer.flush()
    producer.close()
    never, committed, zero = (TopicPartition(topic, p) for p in range(3))
    table = TopicPartition(changelog, 0)

    async def positions_after_the_seek() -> tuple[dict[TopicPartition, int], dict[str, object]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=unique("group"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            assigned = [never, committed, zero, table]
            consumer.assign(assigned)
            fetched = 0
            async with asyncio.timeout(20):
                while fetched < 20:  # fetched, then dropped: as Faust does while its flow stops
                    batches = await consumer.getmany(timeout_ms=500)
                    fetched += sum(len(records) for records in batches.values())
            await consumer.commit({committed: 3, zero: 0})
            found = await seek_to_committed_or_start(consumer, except_topics={changelog})
            return (
                {tp: await consumer.position(tp) for tp in assigned},
                {f"{tp.topic == topic}-{tp.partition}": at for tp, at in found.items()},
            )
        finally:
            await consumer.stop()

    positions, found = asyncio.run(positions_after_the_seek())
    assert positions == {never: 0, committed: 3, zero: 0, table: 5}
    assert found == {"True-0": None, "True-1": 3, "True-2": 0, "False-0": None}
