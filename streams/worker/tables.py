"""Faust's topic and table, each with one change: where leadflow goes below Faust's public API.

Both override private methods of faust-streaming 0.11-0.15 (the range pyproject pins);
`tests/worker/test_tables.py` fails if an upgrade changes what they rely on.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import faust
import faust.streams as faust_streams
from faust.types import TP, FutureMessage, ProducerT

from streams.worker.agents import Consumed


class DirectTopic(faust.Topic):
    """Faust's topic, without three turns of the event loop for every message it sends.

    Faust finds the producer for each message through a stampede guard that yields to the
    event loop three times (`asyncio.sleep(0)`) even when the producer is long started. A Faust
    agent copying 12k messages spent 2.2 s in `Topic.send`, against 0.34 s in the aiokafka
    `send` underneath; changelog records take the same path. The guard is kept for the start-up
    case and for transactions."""

    async def _get_producer(self) -> ProducerT:
        producer = self.app.producer
        if producer.started and not self.app.in_transaction:
            return producer
        return await super()._get_producer()


class AckedTable(faust.Table[bytes, bytes]):
    """Faust's table, with `put`: store a value and get the acknowledgement of its changelog
    record (Faust sends it from a buffer and does not hand it back to the writer); and a
    recovery that cannot skip events (below)."""

    _last_changelog_record: FutureMessage | None = None

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        # After recovery, Faust resumes the stream partitions and only then seeks them to their
        # committed offsets. Records fetched in between moved its read offsets on, so records
        # fetched again after the seek were dropped: a new worker skipped dozens of events
        # (test_a_new_worker_recovers_every_lead_state_from_the_changelog; faust-streaming #216
        # and #221 describe the same race). Faust calls this hook before it resumes the
        # partitions: stop the flow of records here, and the recovery starts it again only
        # once the seek is done.
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(active_tps, standby_tps)

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        record: FutureMessage = super().send_changelog(*args, **kwargs)
        self._last_changelog_record = record
        return record

    def get_for(self, consumed: Consumed, key: bytes) -> bytes | None:
        with _current(consumed):
            value: bytes | None = self.get(key)
            return value

    def put_for(self, consumed: Consumed, key: bytes, value: bytes) -> FutureMessage:
        with _current(consumed):
            self[key] = value
        record = self._last_changelog_record
        assert record is not None
        return record


@contextmanager
def _current(consumed: Consumed) -> Iterator[None]:
    # Faust's table and RocksDB store find a key's partition (its changelog partition and its
    # database) from the stream's current event; in a batch, that is the batch's last event,
    # not necessarily the one the key belongs to.
    token = faust_streams._current_event.set(weakref.ref(cast(faust.EventT[bytes], consumed)))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)
