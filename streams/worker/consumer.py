"""Faust's aiokafka consumer, handing each fetched message to the streams without four tasks,
and seeking a partition never committed back to its start.

Faust's fetch loop (`Consumer._drain_messages`) hands every message to the streams through
`Service.wait_first(callback(message), suspend_flow.wait())`, so that a rebalance that stops
the flow can abandon a hand-over blocked on a full stream buffer. That call makes four tasks
(the hand-over, and waits for the flow, the stop and a crash) and cancels three, for every
message. Here the hand-over runs at once, in the loop's own task: almost always it finishes
without waiting (the buffer has room), and then nothing else happens. Only when it does wait,
or when the flow is already stopped, does it go through Faust's `wait_first` as before, with
the hand-over continued as a task. Below Faust's public API: faust-streaming 0.11-0.15 (the
range pyproject pins); tests/worker/test_consumer.py fails if Faust's loop changes.

Faust drops the records a fetch brought while its flow is stopped (a rebalance, a recovery) and
seeks every partition back to its committed offset to read them again. aiokafka's
`seek_to_committed` leaves a partition with no committed offset where it is, past the records
dropped: a worker that started, or took over, a partition nobody had committed yet lost them
for good (a link request on the identity topic, with every stage change its stitching makes).
Here such a partition goes back to its start, as the reset policy (`earliest`) would place it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Coroutine, Generator, Mapping
from typing import Any, cast

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP
from mode.services import WaitResults


class DirectHandOver:
    """A `mode.Service` with a `suspend_flow` event (Faust's consumer), whose `wait_first` of
    a hand-over and the flow's stop runs the hand-over at once (see the module)."""

    suspend_flow: Any
    _stopped: Any
    _crashed: Any

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if (
            len(coros) == 2
            and timeout is None
            and asyncio.iscoroutine(coros[0])
            and asyncio.iscoroutine(coros[1])
            and not self.suspend_flow.is_set()
            and not self._stopped.is_set()
            and not self._crashed.is_set()
        ):
            handed, flow_stopped = coros
            try:
                waiting_on = handed.send(None)
            except StopIteration as done:
                flow_stopped.close()
                return WaitResults([handed], [done.value], False)
            except BaseException:
                flow_stopped.close()
                raise
            rest = asyncio.ensure_future(_continue(handed, waiting_on))
            results: WaitResults = await super().wait_first(rest, flow_stopped)  # type: ignore[misc]
            return results
        results = await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc]
        return results


class DirectConsumer(DirectHandOver, Consumer):
    """Faust's aiokafka consumer with a hand-over that costs no task when it does not wait, and
    a fetch wait of `fetch_max_wait_ms`."""

    fetch_max_wait_ms = 1500

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return SeekingConsumerThread(self, loop=self.loop, beacon=self.beacon)


def consumer_class(fetch_max_wait: float) -> type[DirectConsumer]:
    """`DirectConsumer` whose fetches wait at most `fetch_max_wait` seconds for records."""
    return type(
        "DirectConsumer", (DirectConsumer,), {"fetch_max_wait_ms": round(fetch_max_wait * 1000)}
    )


class SeekingConsumerThread(AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, with the fetch wait of its consumer and a seek that
    sends a partition never committed to its start (`seek_to_committed_or_start`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka hands this to its fetcher when the consumer starts, before the first fetch.
        consumer._fetch_max_wait_ms = cast(DirectConsumer, self.consumer).fetch_max_wait_ms
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        changelogs = self.app.tables.changelog_topics
        found: Mapping[TP, int] = await self.call_thread(
            seek_to_committed_or_start, self._ensure_consumer(), changelogs
        )
        return found


async def seek_to_committed_or_start(
    consumer: AIOKafkaConsumer, except_topics: Container[str] = ()
) -> dict[TopicPartition, int | None]:
    """Seek each assigned partition to its committed offset, and one with none (or 0) to its
    start; the partitions of `except_topics` (changelogs, which the table recovery places)
    only to a committed offset. Returns the committed offsets, None where there is none."""
    committed: dict[TopicPartition, int | None] = await consumer.seek_to_committed()
    never = [
        tp
        for tp, offset in committed.items()
        if (offset is None or offset <= 0) and tp.topic not in except_topics
    ]
    if never:
        await consumer.seek_to_beginning(*never)
    return committed


async def _continue(started: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Finish a coroutine that was run up to its first wait (it yielded `waiting_on`)."""
    return await _Continued(started, waiting_on)


class _Continued:
    """Awaitable that drives `started` on from where it stopped, forwarding what the event
    loop sends or throws, as a task does for the coroutine it runs."""

    def __init__(self, started: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._started = started
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        started, waiting_on = self._started, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                started.close()
                raise
            except BaseException as exc:  # the task was cancelled, or the awaited failed
                try:
                    waiting_on = started.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting_on = started.send(sent)
                except StopIteration as done:
                    return done.value
