"""Why a lead is where it is: its score history and the rule behind each stage change."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import NamedTuple

from streams.core.lifecycle import Attribution, Entry, Rank, Transition, engagement_at, trace
from streams.core.revisions import instant_of
from streams.core.rules import Rules
from streams.core.scoring import engagement_points


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
