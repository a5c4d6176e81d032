"""Which offsets may be committed: a record counts as done once every webhook it goes to has
it delivered or dead-lettered, and a partition's commit stops at its first record not done, so
a crash loses nothing (what follows is delivered again, with the same idempotency keys)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass
class _Partition:
    next_offset: int
    order: deque[int] = field(default_factory=deque)
    waiting: dict[int, int] = field(default_factory=dict)


class PendingOffsets(Generic[P]):
    """The records read and not done yet, by partition (any hashable key)."""

    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}
        self.pending = 0
        """Records read and not done yet, over every partition."""

    def read(self, partition: P, offset: int, deliveries: int) -> None:
        """A record was read (in offset order within its partition) and goes to `deliveries`
        webhooks; with none it is done at once."""
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition(offset + 1)
        state.next_offset = offset + 1
        if deliveries > 0:
            state.order.append(offset)
            state.waiting[offset] = deliveries
            self.pending += 1

    def settle(self, partition: P, offset: int) -> None:
        """One webhook is done with the record: delivered or dead-lettered."""
        state = self._partitions[partition]
        left = state.waiting[offset] - 1
        if left:
            state.waiting[offset] = left
        else:
            del state.waiting[offset]
            self.pending -= 1

    def committable(self) -> dict[P, int]:
        """For each partition read, the offset to commit: its first record not done, or the
        one after the last read."""
        positions = {}
        for partition, state in self._partitions.items():
            while state.order and state.order[0] not in state.waiting:
                state.order.popleft()
            positions[partition] = state.order[0] if state.order else state.next_offset
        return positions
