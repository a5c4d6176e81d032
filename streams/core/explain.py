"""Why a lead is where it is: its score history and the rule behind each stage change."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from streams.core.fold import lead_engagement, step_at, trace
from streams.core.lead import (
    EMPTY_FOLD,
    LINK_ENTRY,
    Attribution,
    Entry,
    Fold,
    Rank,
    Step,
    Summary,
    Transition,
)
from streams.core.revisions import instant_of
from streams.core.rules import Rules
from streams.core.scoring import PRUNE_BELOW, engagement_points, fit_ledger, type_decay

Visitors = Mapping[str, Sequence[Entry]]
"""Each linked identity's own accepted entries, sorted (its snapshot's, then its tail), by id."""


class ExplainedEvent(NamedTuple):
    """One event of the lead, in event-time order, with the scores and stage right after it."""

    occurred_at: datetime
    event_id: str
    type: str
    detail: str
    points: float | None
    engagement_score: float
    """The lead's engagement as its stage rules read it: its linked identities' included."""
    fit_score: float
    stage: str | None
    changes: tuple[Transition, ...]
    identity: str | None = None
    """The anonymous id (or merged duplicate) the event was seen under, when it is a linked
    identity's; None for the lead's own."""


def explain(
    entries: Sequence[Entry],
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...] = (),
    visitors: Visitors | None = None,
) -> Iterator[ExplainedEvent]:
    """A lead's history as the rules saw it: `entries` are every event it accepted, sorted
    (those a replay folded into its snapshot, then its tail), `linked` the summaries of its
    identities and `visitors` their own entries. A linked identity's engagement events are
    shown at their own times, with the lead's scores as they were right after them."""
    pending = sorted(
        (entry, identity)
        for identity, own in (visitors or {}).items()
        if any(summary.from_id == identity for summary in linked)
        for entry in own
        if entry.rank == Rank.ENGAGEMENT and entry.type != LINK_ENTRY
    )
    seen = 0
    before = EMPTY_FOLD
    for entry, fold in trace(entries, attribution, rules, linked=linked):
        key = entry[:3]
        while pending and pending[0][0][:3] < key:
            visit, identity = pending.pop(0)
            yield _visit(visit, before, rules, linked, identity)
        if entry.type == LINK_ENTRY and entry.detail:
            # A linked identity's step: shown as the identity's event it stands for.
            identity = entry.detail
            if pending and pending[0][0][:3] == key and pending[0][1] == identity:
                shown = pending.pop(0)[0]
            else:
                shown = _event_of(entry, linked)
            row = _row(shown, fold, entry, rules, linked, fold.transitions[seen:], identity)
        else:
            row = _row(entry, fold, entry, rules, linked, fold.transitions[seen:], None)
        yield row
        seen = len(fold.transitions)
        before = fold
    for visit, identity in pending:
        yield _visit(visit, before, rules, linked, identity)


def _visit(
    visit: Entry, fold: Fold, rules: Rules, linked: tuple[Summary, ...], identity: str
) -> ExplainedEvent:
    """A linked identity's event that is no step of the lead's history: older than the
    identity's oldest step (which holds it, and counts from its own time on), or older than
    the lead's snapshot."""
    row = _row(visit, fold, visit, rules, linked, (), identity)
    summary = next((s for s in linked if s.from_id == identity), None)
    if summary is not None and summary.steps and summary.steps[0][:3] > visit[:3]:
        since = instant_of(summary.steps[0].at).isoformat().replace("+00:00", "Z")
        counted = f"counts from {since} on"
        row = row._replace(detail=f"{row.detail}; {counted}" if row.detail else counted)
    return row


def _row(
    shown: Entry,
    fold: Fold,
    at: Entry,
    rules: Rules,
    linked: tuple[Summary, ...],
    changes: tuple[Transition, ...],
    identity: str | None,
) -> ExplainedEvent:
    points = None
    if shown.rank == Rank.ENGAGEMENT and shown.type not in (LINK_ENTRY, ""):
        points = engagement_points(shown.type, shown.detail, rules.engagement)
    return ExplainedEvent(
        occurred_at=instant_of(shown.at),
        event_id=shown.event_id,
        type=shown.type or "(earlier events)",
        detail=_describe(shown.detail),
        points=points,
        engagement_score=lead_engagement(fold, at, rules, linked),
        fit_score=fold.fit_score,
        stage=fold.stage,
        changes=changes,
        identity=identity,
    )


def _event_of(entry: Entry, linked: tuple[Summary, ...]) -> Entry:
    """The identity's event behind a step of the lead's history, as far as its summary says."""
    for summary in linked:
        if summary.from_id == entry.detail:
            for step in summary.steps:
                if step[:3] == entry[:3]:
                    return Entry(*entry[:3], step.type, step.detail)
    return entry


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
    identity: str | None = None
    """The linked identity (anonymous id, merged duplicate) the event was seen under; None for
    the lead's own. A row with an empty `event_id` is what a cap on the lead's and its
    identities' sum takes away at the moment shown (`type` names the cap, `decayed_to` < 0)."""


class Ledger(NamedTuple):
    """The fit and engagement scores at one moment, and what makes each of them."""

    at: datetime
    fit_score: float
    fit: tuple[tuple[str, str, float], ...]
    """(fact, value, points): sums to `fit_score`."""
    engagement_score: float
    engagement: tuple[Contribution, ...]
    """Each engagement event up to the moment, the linked identities' included, and what caps
    on their sum take away: their `decayed_to` sum to the score."""


def ledger(
    entries: Sequence[Entry],
    attribution: Attribution | None,
    rules: Rules,
    upto: int,
    linked: tuple[Summary, ...] = (),
    visitors: Visitors | None = None,
) -> Ledger:
    """The ledger of the lead right after `entries[upto]` (sorted, as for `explain`, with the
    same `linked` and `visitors`).

    Each event's net addition to its type's bucket is read off the fold itself, so caps, resets
    at recycling and pruned buckets are those the scores had; decayed to the moment, the parts
    sum to the score (to far below the printed precision). A linked identity's events count as
    its summary's step in force at the moment says (its latest at or before it), and the caps
    its engagement and the lead's reach together are rows of their own."""
    moment = entries[upto]
    shown = moment.at
    rows, fold = _own_rows(entries[: upto + 1], attribution, rules, linked)
    in_force = [
        (summary.from_id, step)
        for summary in linked
        if (step := step_at(summary, moment)) is not None and step.buckets
    ]
    if not in_force:
        contributions = [
            _contribution(entry, points, net, shown, rules) if alive else _gone(entry, points, net)
            for entry, points, net, alive in rows
        ]
    else:
        # As `lead_engagement`: each part's buckets decayed to the moment (those that fell
        # below pruning dropped), summed per type, then the caps apply to the sums.
        own_kept = _kept(fold.buckets, shown - fold.engagement_at, rules)
        contributions = [
            _contribution(entry, points, net, shown, rules)
            if alive and entry.type in own_kept
            else _gone(entry, points, net)
            for entry, points, net, alive in rows
        ]
        for identity, step in in_force:
            kept = _kept(step.buckets, shown - step.anchor, rules)
            own = (visitors or {}).get(identity)
            contributions += _identity_rows(identity, step, own, kept, shown, rules)
    contributions.sort(key=lambda c: (c.occurred_at, c.event_id, c.identity or ""))
    if in_force:
        totals: dict[str, float] = {}
        for contribution in contributions:
            if contribution.decayed_to:
                kind = contribution.type
                totals[kind] = totals.get(kind, 0.0) + contribution.decayed_to
        moment_at = instant_of(shown)
        contributions += [
            Contribution(moment_at, "", f"cap: {scope}", 0.0, taken, -taken)
            for scope, taken in _caps_on_the_sum(totals, rules)
        ]
    return Ledger(
        at=instant_of(shown),
        fit_score=fold.fit_score,
        fit=tuple(fit_ledger(fold.profile, rules.fit)),
        engagement_score=lead_engagement(fold, moment, rules, linked),
        engagement=tuple(contributions),
    )


_Row = tuple[Entry, float, float, bool]
"""An engagement entry, its points, its net addition to its type's bucket, whether that
bucket still holds it."""


def _own_rows(
    entries: Sequence[Entry],
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...],
) -> tuple[list[_Row], Fold]:
    """The lead's own engagement entries with what each added, and the fold after the last."""
    fold = EMPTY_FOLD
    added: dict[str, list[list[Any]]] = {}
    """Per type, [entry, points, net added, still in the bucket]."""
    for entry, after in trace(entries, attribution, rules, linked=linked):
        if entry.rank == Rank.ENGAGEMENT and entry.type != LINK_ENTRY:
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
    return [(e, p, n, alive) for rows in added.values() for e, p, n, alive in rows], fold


def _contribution(
    entry: Entry, points: float, net: float, shown: int, rules: Rules, identity: str | None = None
) -> Contribution:
    decayed = net * type_decay(entry.type, shown - entry.at, rules.engagement)
    return Contribution(
        instant_of(entry.at), entry.event_id, entry.type, points, points - net, decayed, identity
    )


def _gone(entry: Entry, points: float, net: float, identity: str | None = None) -> Contribution:
    return Contribution(
        instant_of(entry.at), entry.event_id, entry.type, points, points - net, 0.0, identity
    )


def _kept(buckets: dict[str, float], elapsed: int, rules: Rules) -> set[str]:
    """The types whose bucket is still counted `elapsed` later (as `combined_engagement`
    decays them: one that fell below pruning is dropped)."""
    if elapsed == 0:
        return set(buckets)
    return {
        kind
        for kind, value in buckets.items()
        if abs(value * type_decay(kind, elapsed, rules.engagement)) >= PRUNE_BELOW
    }


def _identity_rows(
    identity: str,
    step: Step,
    own: Sequence[Entry] | None,
    kept: set[str],
    shown: int,
    rules: Rules,
) -> list[Contribution]:
    """A linked identity's engagement events as its step in force counts them at `shown`: from
    its own entries when they are at hand and agree with the step, else one row per type of
    the step's buckets."""
    index = next((i for i, e in enumerate(own or ()) if e[:3] == step[:3]), None)
    if own is not None and index is not None:
        theirs = ledger(own, None, rules, index)
        # Decayed further from the step's own moment (the identity's ledger stops there).
        rows = [
            c._replace(
                decayed_to=c.decayed_to
                * type_decay(c.type, shown - step.at, rules.engagement)
                * (c.type in kept),
                identity=identity,
            )
            for c in theirs.engagement
        ]
        if all(
            abs(sum(r.decayed_to for r in rows if r.type == kind) - value) < 1e-6
            for kind, value in _decayed_buckets(step, kept, shown, rules).items()
        ):
            return rows
    at = instant_of(step.at)
    return [
        Contribution(at, step.cause, kind, value, 0.0, decayed, identity)
        for kind, value in sorted(step.buckets.items())
        for decayed in [_decayed_buckets(step, kept, shown, rules).get(kind, 0.0)]
    ]


def _decayed_buckets(step: Step, kept: set[str], shown: int, rules: Rules) -> dict[str, float]:
    elapsed = shown - step.anchor
    return {
        kind: value * type_decay(kind, elapsed, rules.engagement) if kind in kept else 0.0
        for kind, value in step.buckets.items()
    }


def _caps_on_the_sum(totals: dict[str, float], rules: Rules) -> list[tuple[str, float]]:
    """What each cap takes away from the lead's and its identities' engagement together, in
    the order `combined_engagement` applies them: (the cap's name, the amount)."""
    engagement = rules.engagement
    names = {kind: name for name, group in engagement.groups.items() for kind in group.types}
    taken: list[tuple[str, float]] = []
    grouped: dict[str, float] = {}
    total = 0.0
    for kind in sorted(totals):
        value = totals[kind]
        cap = engagement.caps.get(kind)
        if cap is not None and abs(value) > cap:
            bound = cap if value > 0 else -cap
            taken.append((kind, value - bound))
            value = bound
        group = engagement.group_of.get(kind)
        if group is not None and group.cap is not None:
            grouped[names[kind]] = grouped.get(names[kind], 0.0) + value
            continue
        total += value
    for name, value in sorted(grouped.items()):
        cap = engagement.groups[name].cap
        assert cap is not None
        if abs(value) > cap:
            bound = cap if value > 0 else -cap
            taken.append((f"{name} group", value - bound))
            value = bound
        total += value
    if engagement.total_cap is not None and total > engagement.total_cap:
        taken.append(("total", total - engagement.total_cap))
    return taken


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
