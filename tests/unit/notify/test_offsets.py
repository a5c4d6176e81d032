"""The notifier commits a partition up to its first record not delivered everywhere."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.notify.offsets import PendingOffsets


def test_the_commit_stops_at_the_first_record_not_done() -> None:
    offsets: PendingOffsets[str] = PendingOffsets()
    offsets.read("p0", 10, 2)
    offsets.read("p0", 11, 1)
    offsets.read("p0", 12, 0)  # alerts nobody: done at once
    offsets.read("p1", 5, 1)
    assert offsets.committable() == {"p0": 10, "p1": 5}
    assert offsets.pending == 3
    offsets.settle("p0", 11)  # a later record done first moves nothing
    offsets.settle("p0", 10)  # one of its two webhooks
    assert offsets.committable() == {"p0": 10, "p1": 5}
    offsets.settle("p0", 10)
    assert offsets.committable() == {"p0": 13, "p1": 5}
    offsets.settle("p1", 5)
    assert offsets.committable() == {"p0": 13, "p1": 6}
    assert offsets.pending == 0


def test_a_partition_of_records_that_alert_nobody_commits_past_them() -> None:
    offsets: PendingOffsets[str] = PendingOffsets()
    for offset in range(3):
        offsets.read("p0", offset, 0)
    assert offsets.committable() == {"p0": 3}
    assert offsets.pending == 0


@given(
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
    st.integers(min_value=0, max_value=60),
)
def test_the_commit_never_passes_a_record_not_done(
    deliveries: list[int], random: object, settled_count: int
) -> None:
    offsets: PendingOffsets[int] = PendingOffsets()
    first = 100
    for n, count in enumerate(deliveries):
        offsets.read(0, first + n, count)
    settles = [first + n for n, count in enumerate(deliveries) for _ in range(count)]
    random.shuffle(settles)  # type: ignore[attr-defined]
    done = settles[:settled_count]
    for offset in done:
        offsets.settle(0, offset)
    not_done = [first + n for n, count in enumerate(deliveries) if done.count(first + n) < count]
    expected = min(not_done) if not_done else first + len(deliveries)
    assert offsets.committable() == {0: expected}
    assert offsets.pending == len(not_done)
