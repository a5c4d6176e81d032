"""Events in event-time order, whatever the order of their lines.

History exports come one object type at a time (all profiles, then all web visits, then all sales
activities), each sorted by time, the file as a whole not. Sorting every valid event by
(occurred_at, event_id, bytes) gives one total order that does not depend on the order of the
input: any permutation of a log gives the same events in the same order, byte for byte, and
copies of one event sit together.

Memory stays bounded: runs of lines up to a byte budget are sorted in memory, each spilled to a
temporary file when the input does not fit in one run, and the runs are merged. Invalid lines are
reported with where they came from (file and line), never dropped silently and never in the
output.
"""

from __future__ import annotations

import hashlib
import heapq
import multiprocessing
import struct
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, NamedTuple, TypeVar, overload

from streams.common.events_codec import decode_event
from streams.common.forked import over_ranges
from streams.common.progress import terminal_progress
from streams.core.revisions import micros_of
from streams.errors import InvalidEventError

DEFAULT_RUN_BYTES = 64 * 1024 * 1024
"""How many bytes of lines are sorted in memory before a run is spilled to disk."""
# What a kept line costs beyond its bytes: the record tuple, its int, str and bytes objects.
_RECORD_OVERHEAD = 200
_FINGERPRINT_MODULUS = 2**128
# micros, event_id length, raw length, source index, line number
_SPILLED = struct.Struct(">qHIII")

_Record = tuple[int, str, bytes, int, int]
"""(occurred_at in UTC microseconds, event_id, raw line, source index, line number)"""


class Origin(NamedTuple):
    """Where a line came from: its file (or another source's name) and its line number."""

    source: str
    line: int


class RejectedLine(NamedTuple):
    """A line that is not a valid event, where it came from, and why."""

    origin: Origin
    reason: str


@dataclass
class SortedEvents:
    """The valid events of the input in event-time order (iterate once), and what was read."""

    sources: list[str] = field(default_factory=list)
    lines: int = 0
    """Lines read, blank ones included."""
    events: int = 0
    """Valid events (each copy of a repeated event counts)."""
    rejected: int = 0
    """Lines that were not valid events (each reported to `on_rejected`)."""
    spilled_runs: int = 0
    """Runs written to disk (0 when the input fitted in memory)."""
    _fingerprint: int = 0
    _merged: Iterator[_Record] = field(default_factory=lambda: iter(()))

    @property
    def fingerprint(self) -> str:
        """A digest of the valid events as a multiset: the same for any order of the same
        lines, different when an event is added, removed or changed."""
        return f"{self.events:x}-{self._fingerprint:032x}"

    def __iter__(self) -> Iterator[tuple[Origin, bytes]]:
        sources = self.sources
        for _, _, raw, source, line in self._merged:
            yield Origin(sources[source], line), raw

    def held(self) -> tuple[list[bytes], list[int]]:
        """The lines in order and their line numbers, in two lists (instead of iterating: one
        source, all of it in memory, without an `Origin` per line)."""
        records = list(self._merged)
        return [record[2] for record in records], [record[4] for record in records]


def numbered(source: str, lines: Iterable[bytes]) -> Iterator[tuple[str, int, bytes]]:
    """The lines of one source with their line numbers (from 1), as `sorted_by_event_time`
    reads them."""
    for number, raw in enumerate(lines, start=1):
        yield source, number, raw


@contextmanager
def sorted_by_event_time(
    lines: Iterable[tuple[str, int, bytes]],
    max_event_bytes: int,
    on_rejected: Callable[[RejectedLine], None],
    run_bytes: int = DEFAULT_RUN_BYTES,
    temp_dir: Path | None = None,
    on_read: Callable[[int], None] | None = None,
    jobs: int = 1,
    checked: Iterable[Checked] | None = None,
) -> Iterator[SortedEvents]:
    """Read every (source, line number, raw line), validate it as the workers do, and give the
    valid events in event-time order; temporary files (in `temp_dir`, else TMPDIR) are removed
    on exit.

    A blank line is skipped; an invalid one goes to `on_rejected` during the read, in input
    order. `on_read` is told the bytes of each line read (for a progress bar). The lines are
    given without their line ending. With `jobs` above 1, the lines are validated in that
    many processes, a chunk of lines at a time (same result, same order of rejections);
    `checked` gives what validating each line found, when that is known already
    (`check_lines`: the lines are in memory, and are sorted there, in one run).
    """
    result = SortedEvents()
    source_index: dict[str, int] = {}
    if checked is not None:
        # The lines were checked beforehand, so they are all in memory already: spilling
        # their records would only slow the sort, not bound what it holds.
        run_bytes = sys.maxsize
    with ExitStack() as cleanup:
        spill_dir: Path | None = None
        spilled: list[Path] = []
        run: list[_Record] = []
        run_size = 0
        found = (
            _checked(lines, max_event_bytes, jobs)
            if checked is None
            else (
                (source, number, raw, line_checked)
                for (source, number, raw), line_checked in zip(lines, checked, strict=True)
            )
        )
        for source, number, raw, line_checked in found:
            result.lines += 1
            if on_read is not None:
                on_read(len(raw))
            if line_checked is None:
                continue
            index = source_index.get(source)
            if index is None:
                index = source_index[source] = len(result.sources)
                result.sources.append(source)
            if isinstance(line_checked, str):
                result.rejected += 1
                on_rejected(RejectedLine(Origin(source, number), line_checked))
                continue
            micros, event_id, digest = line_checked
            kept = raw.rstrip(b"\r\n")
            result.events += 1
            result._fingerprint = (result._fingerprint + digest) % _FINGERPRINT_MODULUS
            run.append((micros, event_id, kept, index, number))
            run_size += len(kept) + len(event_id) + _RECORD_OVERHEAD
            if run_size >= run_bytes:
                if spill_dir is None:
                    spill_dir = Path(
                        cleanup.enter_context(
                            tempfile.TemporaryDirectory(prefix="leadflow-sort-", dir=temp_dir)
                        )
                    )
                spilled.append(_spill(sorted(run), spill_dir / f"run-{len(spilled)}"))
                run = []
                run_size = 0
        run.sort()
        result.spilled_runs = len(spilled)
        if spilled:
            readers = [_read_run(cleanup.enter_context(path.open("rb"))) for path in spilled]
            result._merged = heapq.merge(*readers, iter(run))
        else:
            result._merged = iter(run)
        yield result


Checked = tuple[int, str, int] | str | None
"""A line's (occurred_at in UTC microseconds, event_id, digest of its bytes), or why it is not
an event, or None for a blank line."""
_CHUNK_LINES = 2_000
"""Lines validated by one process at a time (`jobs`)."""


def _checked(
    lines: Iterable[tuple[str, int, bytes]], max_event_bytes: int, jobs: int
) -> Iterator[tuple[str, int, bytes, Checked]]:
    """Each (source, line number, raw line) with what validating it found, in input order."""
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for source, number, raw in lines:
            yield source, number, raw, _check(raw, max_event_bytes)
        return
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"))
    try:
        # A few chunks per process in flight: the processes stay busy, the memory bounded.
        pending: deque[tuple[list[tuple[str, int, bytes]], Future[list[Checked]]]] = deque()
        reading = iter(lines)
        while True:
            chunk: list[tuple[str, int, bytes]] = []
            failure: Exception | None = None
            try:
                for item in reading:
                    chunk.append(item)
                    if len(chunk) == _CHUNK_LINES:
                        break
            except Exception as exc:
                failure = exc
            if chunk:
                raws = [raw for _, _, raw in chunk]
                pending.append((chunk, pool.submit(_check_all, raws, max_event_bytes)))
            # At the end, or at a read error, what was read before is handled first.
            ending = failure is not None or not chunk
            while pending and (ending or len(pending) >= 3 * jobs):
                yield from _joined(*pending.popleft())
            if failure is not None:
                raise failure
            if ending:
                return
    finally:
        pool.shutdown(cancel_futures=True)


_K = TypeVar("_K")


@overload
def check_lines(lines: Sequence[bytes], max_event_bytes: int, jobs: int) -> list[Checked]: ...


@overload
def check_lines(
    lines: Sequence[bytes], max_event_bytes: int, jobs: int, key: Callable[[bytes], _K]
) -> tuple[list[Checked], list[_K]]: ...


def check_lines(
    lines: Sequence[bytes],
    max_event_bytes: int,
    jobs: int,
    key: Callable[[bytes], _K] | None = None,
) -> list[Checked] | tuple[list[Checked], list[_K]]:
    """What validating each line finds (`sorted_by_event_time`'s `checked`), in `jobs`
    processes that inherit the lines (forked), each given a range of them. With `key`, also
    each line's `key(raw)`, found in the same pass (`replay --jobs`: the states it touches)."""
    parts = over_ranges(
        lines, jobs, partial(_check_range, max_event_bytes=max_event_bytes, key=key)
    )
    checked = [found for part, _ in parts for found in part]
    if key is None:
        return checked
    return checked, [line_key for _, keys in parts for line_key in keys]


def _check_range(
    lines: Sequence[bytes], max_event_bytes: int, key: Callable[[bytes], _K] | None
) -> tuple[list[Checked], list[_K]]:
    checked = [_check(raw, max_event_bytes) for raw in lines]
    return checked, [] if key is None else [key(raw) for raw in lines]


def _joined(
    chunk: list[tuple[str, int, bytes]], checking: Future[list[Checked]]
) -> Iterator[tuple[str, int, bytes, Checked]]:
    for (source, number, raw), checked in zip(chunk, checking.result(), strict=True):
        yield source, number, raw, checked


def _check_all(raws: list[bytes], max_event_bytes: int) -> list[Checked]:
    return [_check(raw, max_event_bytes) for raw in raws]


def _check(raw: bytes, max_event_bytes: int) -> Checked:
    if not raw.strip():
        return None
    try:
        # The same bytes as a worker would get them: the line ending included, as
        # `leadflow publish` sends it.
        event = decode_event(raw, max_event_bytes)
    except InvalidEventError as exc:
        return exc.reason
    return micros_of(event.occurred_at), event.event_id, _digest(raw.rstrip(b"\r\n"))


def _digest(raw: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(raw, digest_size=16).digest(), "big")


def _spill(run: list[_Record], path: Path) -> Path:
    with path.open("wb", buffering=1024 * 1024) as out:
        for micros, event_id, raw, source, line in run:
            encoded_id = event_id.encode()
            out.write(_SPILLED.pack(micros, len(encoded_id), len(raw), source, line))
            out.write(encoded_id)
            out.write(raw)
    return path


def _read_run(handle: IO[bytes]) -> Iterator[_Record]:
    size = _SPILLED.size
    while header := handle.read(size):
        micros, id_length, raw_length, source, line = _SPILLED.unpack(header)
        event_id = handle.read(id_length).decode()
        raw = handle.read(raw_length)
        yield micros, event_id, raw, source, line


class FollowedLines:
    """The raw lines of sorted events, remembering where the last one given came from: a
    consumer that reports something about the line it just took (the replay's bad lines) can
    name its original file and line."""

    def __init__(self, events: Iterable[tuple[Origin, bytes]]) -> None:
        self._events = events
        self.current = Origin("", 0)

    def __iter__(self) -> Iterator[bytes]:
        for origin, raw in self._events:
            self.current = origin
            yield raw


@contextmanager
def lines_in_event_time_order(
    source: str,
    lines: Iterable[bytes],
    max_event_bytes: int,
    on_rejected: Callable[[RejectedLine], None],
    total_bytes: int | None = None,
    jobs: int = 1,
    checked: Iterable[Checked] | None = None,
) -> Iterator[SortedEvents]:
    """`sorted_by_event_time` of one source's lines (validated in `jobs` processes), with a
    progress bar while they are read when stderr is a terminal (`total_bytes`, when known,
    sizes it)."""
    with ExitStack() as stack:
        with terminal_progress("sorting", total_bytes, unit_is_bytes=True) as read:
            ordered = stack.enter_context(
                sorted_by_event_time(
                    numbered(source, lines),
                    max_event_bytes,
                    on_rejected,
                    on_read=read,
                    jobs=jobs,
                    checked=checked,
                )
            )
        yield ordered
