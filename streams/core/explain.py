"""Why a lead is where it is: its score history and the rule behind each stage change."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from streams.core.lifecycle import (
    EMPTY_FOLD,
    Attribution,
    Entry,
    Rank,
    Transition,
    engagement_at,
    trace,
)
from streams.core.revisions import instant_of
from streams.core.rules import Rules
from streams.core.scoring import engagement_points, fit_ledger, type_decay


class ExplainedEvent(NamedTuple):
    """One event of the lead, in event-time order, with the scores and stage right after it."""

    occurred_at: datetime
    event_id: str
    type: str
    detail: str
    points: float | None
    engagement_score: float
    fit_score: float
    stage: str | None
    changes: tuple[Transition, ...]


def explain(
    entries: Sequence[Entry], attribution: Attribution | None, rules: Rules
) -> Iterator[ExplainedEvent]:
    """A lead's history as the rules saw it: `entries` are every event it accepted, sorted
    (those a replay folded into its snapshot, then its tail)."""
    seen = 0
    for entry, fold in trace(entries, attribution, rules):
        points = None
        if entry.rank == Rank.ENGAGEMENT:
            points = engagement_points(entry.type, entry.detail, rules.engagement)
        yield ExplainedEvent(
            occurred_at=instant_of(entry.at),
            event_id=entry.event_id,
            type=entry.type,
            detail=_describe(entry.detail),
            points=points,
            engagement_score=engagement_at(fold, entry.at, rules),
            fit_score=fold.fit_score,
            stage=fold.stage,
            changes=fold.transitions[seen:],
        )
        seen = len(fold.transitions)


def _describe(detail: object) -> str:
    if detail is None:
        return ""
    if isinstance(detail, dict):
        return ", ".join(f"{key}={value}" for key, value in detail.items())
    if isinstance(detail, list | tuple):
        return " ".join(str(part) for part in detail)
    return str(detail)


class Contribution(NamedTuple):
    """What one engagement event gives the score at the moment shown."""

    occurred_at: datetime
    event_id: str
    type: str
    points: float
    """The event's points, as the rules give them."""
    clipped: float
    """What its type's, its group's or the total cap took away when it was added (0 when
    under them)."""
    decayed_to: float
    """What is left of points minus clipped at the moment shown (0 once reset or pruned)."""


class Ledger(NamedTuple):
    """The fit and engagement scores at one moment, and what makes each of them."""

    at: datetime
    fit_score: float
    fit: tuple[tuple[str, str, float], ...]
    """(fact, value, points): sums to `fit_score`."""
    engagement_score: float
    engagement: tuple[Contribution, ...]
    """Each engagement event up to the moment: their `decayed_to` sum to the score."""


def ledger(
    entries: Sequence[Entry], attribution: Attribution | None, rules: Rules, upto: int
) -> Ledger:
    """The ledger of the lead right after `entries[upto]` (sorted, as for `explain`).

    Each event's net addition to its type's bucket is read off the fold itself, so caps, resets
    at recycling and pruned buckets are those the scores had; decayed to the moment, the parts
    sum to the score (to far below the printed precision)."""
    shown = entries[upto].at
    fold = EMPTY_FOLD
    added: dict[str, list[list[Any]]] = {}
    """Per type, [entry, points, net added, still in the bucket]."""
    for entry, after in trace(entries[: upto + 1], attribution, rules):
        if entry.rank == Rank.ENGAGEMENT:
            before = fold.buckets
            elapsed = entry.at - fold.engagement_at if before else 0
            factor = type_decay(entry.type, elapsed, rules.engagement)
            points = engagement_points(entry.type, entry.detail, rules.engagement)
            net = after.buckets.get(entry.type, 0.0) - before.get(entry.type, 0.0) * factor
            added.setdefault(entry.type, []).append([entry, points, net, True])
        for event_type, rows in added.items():
            if event_type not in after.buckets:  # reset at recycling, or decayed below pruning
                for row in rows:
                    row[3] = False
        fold = after
    contributions = [
        Contribution(
            instant_of(entry.at),
            entry.event_id,
            entry.type,
            points,
            points - net,
            net * type_decay(entry.type, shown - entry.at, rules.engagement) if alive else 0.0,
        )
        for rows in added.values()
        for entry, points, net, alive in rows
    ]
    contributions.sort(key=lambda c: (c.occurred_at, c.event_id))
    return Ledger(
        at=instant_of(shown),
        fit_score=fold.fit_score,
        fit=tuple(fit_ledger(fold.profile, rules.fit)),
        engagement_score=engagement_at(fold, shown, rules),
        engagement=tuple(contributions),
    )


def rounded_parts(parts: Sequence[float], total: float, places: int = 3) -> list[float]:
    """`parts` rounded to `places` so that they add up to `total` rounded, as a printed ledger
    must (`total` is their exact sum, up to float error): the units that rounding each part
    lost or gained go to the parts rounded furthest."""
    scale = 10**places
    exact = [part * scale for part in parts]
    rounded = [round(value) for value in exact]
    short = round(total * scale) - sum(rounded)
    step = 1 if short > 0 else -1
    furthest = sorted(range(len(exact)), key=lambda i: (exact[i] - rounded[i]) * step)
    for index in furthest[len(furthest) - abs(short) :] if short else ():
        rounded[index] += step
    return [value / scale for value in rounded]
