"""Table recovery that reads each changelog partition to its real end.

Faust rebuilds a table by reading its changelog partitions up to the high watermark the broker
reports. The local broker (Tansu 0.6.0) reports it as if the last record batch of a partition
held one record, so a recovery would stop short by the rest of that batch and keep stale lead
states. Here the target is checked against the log itself: a fetch at the reported last offset
returns the whole batch that holds it, and the batch's last record is the real end. On Apache
Kafka the reported offset is the last record already, and nothing changes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from streams.common.kafka_clients import aiokafka_config
from streams.common.settings import KafkaSettings

log = logging.getLogger(__name__)


async def last_offsets(
    kafka: KafkaSettings, reported: Mapping[TP, int], timeout: float = 10.0
) -> dict[TP, int]:
    """The offset of the last record of each partition, from the offset the broker reports as
    its last (high watermark - 1). Partitions reported empty (-1) keep that value; so does one
    whose fetch brings nothing within `timeout` seconds, with a warning."""
    found = dict(reported)
    wanted = {TopicPartition(tp.topic, tp.partition): tp for tp, at in reported.items() if at >= 0}
    if not wanted:
        return found
    consumer = AIOKafkaConsumer(**aiokafka_config(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for partition, tp in wanted.items():
            consumer.seek(partition, reported[tp])
        pending = set(wanted)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for partition, records in batches.items():
                if records:
                    tp = wanted[partition]
                    found[tp] = max(found[tp], records[-1].offset)
                    pending.discard(partition)
        for partition in pending:
            log.warning("no record at the reported end of %s; keeping it", partition)
    finally:
        await consumer.stop()
    return found


def table_manager_for(kafka: KafkaSettings) -> type[TableManager]:
    """Faust's table manager, with a recovery that reads changelogs to their real end."""

    class EndCheckingRecovery(Recovery):
        async def _build_highwaters(
            self, consumer: Any, tps: set[TP], destination: Counter[TP], title: str
        ) -> None:
            await super()._build_highwaters(consumer, tps, destination, title)
            ends = await last_offsets(kafka, {tp: destination[tp] for tp in tps})
            moved = {tp: end for tp, end in ends.items() if end > destination[tp]}
            if moved:
                log.info("%s changelog ends are past the reported high watermark: %s", title, moved)
                for tp, end in moved.items():  # a Counter's update() would add
                    destination[tp] = end

    class EndCheckingTableManager(TableManager):
        @property
        def recovery(self) -> Recovery:
            if self._recovery is None:
                self._recovery = EndCheckingRecovery(
                    self.app, self, beacon=self.beacon, loop=self.loop
                )
            return self._recovery

    return EndCheckingTableManager
