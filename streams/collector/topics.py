"""Whether the broker answers and the collector's topics exist, asked without creating them.

A Kafka broker with `auto.create.topics.enable` (the default, and the local broker) creates a
topic that a metadata request names, with the broker's defaults: after a local broker restart,
which loses every topic, a collector that named its topic would recreate it with the wrong
partitions and settings and answer 200 as if nothing had happened. So the producer never names
a topic: its client asks for the metadata of every topic (aiokafka does when it tracks none,
and it tracks none as long as nothing is sent to a topic its metadata does not list), and the
collector sends only to a topic that metadata lists.

The local broker also acknowledges records sent to a topic it does not have (Apache Kafka
refuses them), so a restart between a check and a send could lose acknowledged events; the
collector therefore checks again after the acks and answers 200 only if its topics are still
there (`confirmed`). Concurrent requests share one check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


class TopicWatch:
    """Checks every `interval` seconds, and on demand, with the producer's `client`."""

    def __init__(self, client: Any, topics: tuple[str, ...], interval: float) -> None:
        self._client = client
        self._topics = topics
        self._interval = interval
        self.problem: str | None = "the broker has not been asked yet"
        """Why requests get 503 now, or None when the broker answers and every topic exists."""
        self._wake = asyncio.Event()
        self._next: asyncio.Future[str | None] | None = None

    def sendable(self, topic: str) -> bool:
        """Whether a send to `topic` goes out without the producer asking for it by name."""
        return self._client.cluster.partitions_for_topic(topic) is not None

    async def confirmed(self) -> str | None:
        """The outcome of a check that starts after this call: None when every topic exists."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._wake.set()
        return await asyncio.shield(self._next)

    async def run(self) -> None:
        """Check until cancelled."""
        while True:
            waiting, self._next = self._next, None
            problem = await self.check()
            if waiting is not None:
                waiting.set_result(problem)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()

    async def check(self) -> str | None:
        """Ask the broker now; keep and return what is wrong (None when nothing is)."""
        problem = await self._check()
        if problem != self.problem:
            if problem:
                log.warning("refusing requests (503): %s", problem)
            else:
                log.info("accepting requests: the broker answers and the topics exist")
        self.problem = problem
        return problem

    async def _check(self) -> str | None:
        try:
            cluster = await asyncio.wait_for(
                self._client.fetch_all_metadata(), timeout=max(self._interval, 5.0)
            )
        except Exception:  # no broker answered (aiokafka says why in its own log)
            return "the broker does not answer"
        missing = [topic for topic in self._topics if cluster.partitions_for_topic(topic) is None]
        if missing:
            names = ", ".join(missing)
            return f"topic {names} does not exist on the broker (leadflow topics create)"
        if not all(self.sendable(topic) for topic in self._topics):
            # The producer's own metadata lags behind: refresh it (every topic, none named).
            await self._client.force_metadata_update()
        return None
