"""Work over ranges of lines held in memory, in forked processes that inherit them."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from typing import Any, TypeVar

R = TypeVar("R")
RANGES_PER_PROCESS = 4
"""Ranges per process: a slow range delays the end less than one range per process would."""


def over_ranges(lines: Sequence[bytes], jobs: int, work: Callable[[Sequence[bytes]], R]) -> list[R]:
    """`work` of consecutive ranges of `lines`, in order, computed in `jobs` processes: they
    are forked, so they inherit the lines and `work`, and only the results are pickled. In this
    process (one range) when `jobs` is 1 or the platform cannot fork."""
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [work(lines)]
    step = max(1, -(-len(lines) // (RANGES_PER_PROCESS * jobs)))
    with ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_inherit,
        initargs=(lines, work),
    ) as pool:
        return list(pool.map(_range, range(0, len(lines), step), repeat(step)))


_inherited: list[tuple[Sequence[bytes], Callable[[Sequence[bytes]], Any]]] = []
"""In a forked process: the lines and the work (set once, by `_inherit`)."""


def _inherit(lines: Sequence[bytes], work: Callable[[Sequence[bytes]], Any]) -> None:
    _inherited.append((lines, work))


def _range(start: int, count: int) -> Any:
    lines, work = _inherited[-1]
    return work(lines[start : start + count])
