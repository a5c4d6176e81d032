"""A progress bar on stderr, only when stderr is a terminal (never in pipes, logs or tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Progress is shown in steps: updating the bar for every line would cost more than the line.
_STEP = 1000


@contextmanager
def terminal_progress(
    description: str, total: int | None, unit_is_bytes: bool = False
) -> Iterator[Callable[[int], None]]:
    """A function that advances a bar by n (lines, events or bytes); a no-op off a terminal."""
    if not sys.stderr.isatty():
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    amount = DownloadColumn() if unit_is_bytes else MofNCompleteColumn()
    columns = (TextColumn("{task.description}"), BarColumn(), amount, TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        pending = [0, 0]  # amount not shown yet, calls since the last update

        def advance(amount: int) -> None:
            pending[0] += amount
            pending[1] += 1
            if pending[1] >= _STEP:
                bar.advance(task, pending[0])
                pending[0] = pending[1] = 0

        try:
            yield advance
        finally:
            bar.advance(task, pending[0])


def _ignore(amount: int) -> None:
    """No bar: nothing to advance."""
