"""Ranges of lines in forked processes: in order, each line in exactly one range."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streams.common.forked import over_ranges


def _numbers(lines: Sequence[bytes]) -> list[int]:
    return [int(raw) for raw in lines]


@pytest.mark.parametrize("count", [0, 1, 7, 100])
@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_every_line_is_worked_once_in_order(count: int, jobs: int) -> None:
    lines = [str(number).encode() for number in range(count)]
    parts = over_ranges(lines, jobs, _numbers)
    assert [number for part in parts for number in part] == list(range(count))
    assert len(parts) <= max(1, 4 * jobs)
