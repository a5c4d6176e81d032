"""What leads and accounts share: event time as integers, derived ids, and revisions.

Both folds publish their stage changes to an upsert log keyed by `change_id`: the record with the
highest `revision` of a `change_id` is the truth about that change, and a record with
`retracted: true` says it no longer happens. A change's id derives from what it is (its owner,
its stages and how many times that pair happened before), never from a clock or a random source,
so a replay gives the same ids and a late event republishes the changes it alters under the ids
they already had.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple, Protocol, TypeVar

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def micros_of(instant: datetime) -> int:
    """An aware datetime as microseconds since the Unix epoch: how the folds keep event time."""
    return (instant - EPOCH) // _MICROSECOND


def instant_of(micros: int) -> datetime:
    """Microseconds since the Unix epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def derived_id(*parts: str) -> str:
    """32 hex digits of BLAKE2b over `parts`: the same parts, the same id, on every replay."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


class Transitioned(Protocol):
    """A stage change as a fold produced it: what its key is made of."""

    @property
    def from_stage(self) -> str | None: ...
    @property
    def to_stage(self) -> str: ...


ChangeKey = tuple[str | None, str, int]
"""(from_stage, to_stage, occurrence): what a change is, whatever its time or cause; its
`change_id` derives from it."""

_T = TypeVar("_T", bound=Transitioned)
_R = TypeVar("_R")


class Published(NamedTuple):
    """The transitions a snapshot holds only as a count: how many, and how many of each pair
    of stages, so that the changes after it keep their sequences and ids."""

    changes: int
    pairs: dict[tuple[str | None, str], int]


NOTHING_PUBLISHED: Final = Published(0, {})


def summarize(start: Published, transitions: Sequence[Transitioned]) -> Published:
    """`start` with `transitions` folded in."""
    if not transitions:
        return start
    pairs = dict(start.pairs)
    for transition in transitions:
        pair = (transition.from_stage, transition.to_stage)
        pairs[pair] = pairs.get(pair, 0) + 1
    return Published(start.changes + len(transitions), pairs)


def change_keys(
    transitions: Sequence[Transitioned], start: Published = NOTHING_PUBLISHED
) -> list[ChangeKey]:
    """The key of each transition after `start`: its stages, and how many times that pair came
    before."""
    seen = start.pairs
    counted: dict[tuple[str | None, str], int] = {}
    found = []
    for transition in transitions:
        pair = (transition.from_stage, transition.to_stage)
        occurrence = counted.get(pair)
        if occurrence is None:
            occurrence = seen.get(pair, 0)
        counted[pair] = occurrence + 1
        found.append((*pair, occurrence))
    return found


def rewrites(
    old: Sequence[_T], new: Sequence[_T], start: Published = NOTHING_PUBLISHED
) -> list[tuple[ChangeKey, int, _T, bool]]:
    """What to publish after a refold turned the transitions after `start` from `old` into
    `new`: (key, sequence, transition, retracted), retractions first, then the new or
    altered transitions."""
    first = start.changes
    before = {
        key: (first + seq, transition)
        for seq, (key, transition) in enumerate(zip(change_keys(old, start), old, strict=True))
    }
    after = change_keys(new, start)
    still_there = set(after)
    published = [
        (key, seq, transition, True)
        for key, (seq, transition) in before.items()
        if key not in still_there
    ]
    for seq, (key, transition) in enumerate(zip(after, new, strict=True), start=first):
        if before.get(key) != (seq, transition):
            published.append((key, seq, transition, False))
    return published


def latest_revisions(records: Iterable[_R], key: Callable[[_R], tuple[str, int]]) -> dict[str, _R]:
    """The record with the highest revision of each change id (`key` gives both): what a
    consumer of an upsert log keeps. Of equal revisions, the later record wins."""
    latest: dict[str, tuple[int, _R]] = {}
    for record in records:
        change_id, revision = key(record)
        current = latest.get(change_id)
        if current is None or revision >= current[0]:
            latest[change_id] = (revision, record)
    return {change_id: record for change_id, (_, record) in latest.items()}
