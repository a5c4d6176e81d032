"""The handoff clock: when a lead's handoff deadline comes, put a record of it in the log.

The lead agent tells the `DeadlineIndex` the next deadline of every lead whose handoff it
moved; a timer asks it for the deadlines that came and writes one `HandoffClock` record per
lead to the events topic, on the lead's partition. The agent applies the record as it applies
an event (the core warns or breaches if nothing touched the lead by then), so the clock's
steps are in the log, and a replay of the log gives the same handoff events. After a
rebalance the index is rebuilt from the lead table of the partitions this worker holds.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from typing import Final

log = logging.getLogger(__name__)

RESEND_AFTER: Final = 60_000_000
"""Microseconds after which a clock record the agent has not answered yet is written again
(its batch may have failed): the core ignores a record that finds nothing due."""


class DeadlineIndex:
    """The next handoff deadline of each lead this worker holds, soonest first."""

    def __init__(self) -> None:
        self._deadlines: dict[bytes, int] = {}
        self._heap: list[tuple[int, int, bytes]] = []
        """(when to look, the deadline then, lead): stale entries are skipped when popped."""

    def __len__(self) -> int:
        return len(self._deadlines)

    def set(self, key: bytes, deadline: int | None) -> None:
        """The lead's next deadline (microseconds); None: it has none."""
        if deadline is None:
            self._deadlines.pop(key, None)
            return
        if self._deadlines.get(key) == deadline:
            return
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, deadline, key))
        if len(self._heap) > 4 * len(self._deadlines) + 1024:
            self._heap = [(d, d, k) for k, d in self._deadlines.items()]
            heapq.heapify(self._heap)

    def due(self, now: int) -> list[tuple[bytes, int]]:
        """The leads whose deadline came by `now`, with it; each is asked again after
        RESEND_AFTER until the agent sets the lead's next deadline."""
        came = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, deadline, key = heapq.heappop(heap)
            if self._deadlines.get(key) != deadline:
                continue
            came.append((key, deadline))
            heapq.heappush(heap, (now + RESEND_AFTER, deadline, key))
        return came

    def rebuild(self, deadlines: Iterable[tuple[bytes, int]]) -> None:
        """Forget everything; hold these deadlines (a worker's leads after a rebalance)."""
        self._deadlines = dict(deadlines)
        self._heap = [(d, d, k) for k, d in self._deadlines.items()]
        heapq.heapify(self._heap)
