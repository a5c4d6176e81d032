"""The consumer's hand-over of fetched messages (streams/worker/consumer.py), and what of Faust's
fetch loop it relies on."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode import Service
from mode.utils.locks import Event

from streams.worker.consumer import DirectHandOver, SeekingConsumerThread


class FetchLoop(DirectHandOver, Service):
    """A mode service with a flow that can stop, as Faust's consumer has."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


def test_faust_hands_messages_over_through_wait_first_of_the_callback_and_the_flow() -> None:
    source = inspect.getsource(FaustConsumer._drain_messages)
    assert "await self.wait_first(" in source
    assert "callback(message), self.suspend_flow.wait()" in " ".join(source.split())


def test_a_hand_over_that_does_not_wait_runs_at_once_and_makes_no_task() -> None:
    async def scenario() -> list[str]:
        loop = FetchLoop()
        handed: list[str] = []

        async def hand_over(value: str) -> str:
            handed.append(value)
            return value

        before = len(asyncio.all_tasks())
        results = await loop.wait_first(hand_over("m1"), loop.suspend_flow.wait())
        assert len(asyncio.all_tasks()) == before
        assert results.results == ["m1"] and not results.stopped
        return handed

    assert asyncio.run(scenario()) == ["m1"]


def test_a_hand_over_that_waits_finishes_as_a_task_and_the_flow_can_still_stop_it() -> None:
    async def scenario() -> tuple[list[Any], list[str]]:
        loop = FetchLoop()
        room = asyncio.Event()
        handed: list[str] = []

        async def hand_over(value: str) -> str:
            await asyncio.sleep(0)
            await room.wait()  # a full buffer
            handed.append(value)
            return value

        waiting = asyncio.ensure_future(loop.wait_first(hand_over("m1"), loop.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        room.set()
        first = await waiting
        # Once the flow is stopped, a blocked hand-over is abandoned, as in Faust's loop.
        room.clear()
        stopping = asyncio.ensure_future(loop.wait_first(hand_over("m2"), loop.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        loop.suspend_flow.set()
        await asyncio.wait_for(stopping, 5)
        return first.results, handed

    results, handed = asyncio.run(scenario())
    assert results == ["m1"] and handed == ["m1"]


def test_a_hand_over_that_fails_raises_in_the_loop() -> None:
    async def scenario() -> None:
        loop = FetchLoop()

        async def hand_over() -> None:
            raise RuntimeError("bad message")

        await loop.wait_first(hand_over(), loop.suspend_flow.wait())

    try:
        asyncio.run(scenario())
    except RuntimeError as exc:
        assert str(exc) == "bad message"
    else:
        raise AssertionError("the failure was swallowed")


def test_faust_seeks_back_through_the_consumer_threads_seek_to_committed() -> None:
    # streams/worker/consumer.py replaces the thread's seek_to_committed: Faust must still reach
    # it from perform_seek (after a recovery, and when records come while the flow is stopped).
    assert "await self.seek_to_committed()" in inspect.getsource(FaustConsumer.perform_seek)
    assert "self.perform_seek()" in inspect.getsource(FaustConsumer.getmany)
    seek = inspect.getsource(AIOKafkaConsumer.seek_to_committed)
    assert "self._thread.seek_to_committed()" in seek
    assert "seek_to_committed" in vars(AIOKafkaConsumerThread)
    assert "seek_to_committed" in vars(SeekingConsumerThread)
