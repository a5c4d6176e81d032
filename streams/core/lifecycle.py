"""The lifecycle state machine: a pure, deterministic fold of a lead's events. No I/O.

A lead's state is the fold of its accepted events sorted by event time, then kind (profile facts
before engagement before sales activity, so a form and the profile it carries apply in a sensible
order), then `event_id`. `decide(state, event, rules)` returns the next state and the stage
changes to publish; it never reads a clock, a random source or anything but its arguments.

- An event in order (the usual case) extends the fold by one step.
- An event that arrives late is inserted at its own time and the lead is refolded. The changes
  whose content the refold alters are published again with a higher revision; those that no
  longer happen are published as retracted. Keyed by `change_id`, the latest revision of every
  change therefore equals the fold of the sorted log, whatever the arrival order.
- An event whose `event_id` was already accepted changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from typing import Any, Final, NamedTuple

from schemas.events import SALES_TYPES, Event
from streams.core.revisions import Identity, derived_id, identities, micros_of, rewrites
from streams.core.rules import Rules
from streams.core.scoring import (
    add_engagement,
    decay_factor,
    engagement_points,
    exclusion_of,
    fit_score,
)
from streams.core.stages import BEFORE_CUSTOMER, LOSABLE

PROFILE_FIELDS: Final = (
    "email",
    "job_title",
    "seniority",
    "company",
    "company_size",
    "industry",
    "country",
    "account_id",
)
_MAX_CHANGES_PER_EVENT: Final = 16


class Rank(IntEnum):
    """How events of one instant sort: a form's profile facts apply before the form, and sales
    activity after the engagement that led to it."""

    PROFILE = 0
    ENGAGEMENT = 1
    SALES = 2


class Entry(NamedTuple):
    """An accepted event, reduced to what the fold reads. Sorts by (at, rank, event_id)."""

    at: int
    """occurred_at in microseconds since the Unix epoch, UTC."""
    rank: int
    event_id: str
    type: str
    detail: Any
    """Type-specific, JSON-native (so a stored state reloads equal): content category, profile
    facts, BANT answers, a reason, {"amount", "currency"}..."""


class Attribution(NamedTuple):
    """The lead's first touch: its earliest event (by sort order) that named a source/campaign."""

    at: int
    rank: int
    event_id: str
    source: str | None
    campaign: str | None


class Transition(NamedTuple):
    """One stage change as the fold produced it (before ids and revisions are attached)."""

    from_stage: str | None
    to_stage: str
    at: int
    cause: str
    rule: str
    mql_kind: str | None
    reason: str | None
    fit_score: float
    engagement_score: float
    source: str | None
    campaign: str | None


class LeadStageChange(NamedTuple):
    """A lead's stage change to publish; the fields and order of `schemas.StageChange`
    (`occurred_at` in microseconds since the epoch)."""

    change_id: str
    lead_id: str
    from_stage: str | None
    to_stage: str
    occurred_at: int
    causation_event_id: str
    rule: str
    rules_version: str
    mql_kind: str | None
    reason: str | None
    fit_score: float
    engagement_score: float
    source: str | None
    campaign: str | None
    sequence: int
    revision: int
    retracted: bool


class Fold(NamedTuple):
    """Everything the rules read about a lead, after folding its sorted events."""

    stage: str | None
    profile: dict[str, Any]
    fit_score: float
    exclusion: str | None
    waived_exclusion: str | None
    has_contact: bool
    buckets: dict[str, float]
    engagement: float
    """Sum of the buckets, at `engagement_at`."""
    engagement_at: int
    bant: dict[str, bool | None] | None
    transitions: tuple[Transition, ...]


EMPTY_FOLD: Final = Fold(None, {}, 0.0, None, None, False, {}, 0.0, 0, None, ())


class LeadState(NamedTuple):
    """A lead's whole state: its sorted accepted events and their fold."""

    lead_id: str
    history: tuple[Entry, ...]
    event_ids: frozenset[str]
    attribution: Attribution | None
    fold: Fold


class Decision(NamedTuple):
    """What `decide` returns: the next state and the stage changes to publish, in order."""

    state: LeadState
    changes: tuple[LeadStageChange, ...]
    duplicate: bool


def new_lead(lead_id: str) -> LeadState:
    """The state of a lead leadflow has not seen yet."""
    return LeadState(lead_id, (), frozenset(), None, EMPTY_FOLD)


def decide(state: LeadState | None, event: Event, rules: Rules) -> Decision:
    """Apply one event to a lead's state. Pure and deterministic."""
    if state is None:
        state = new_lead(event.lead_id)
    elif event.event_id in state.event_ids:
        return Decision(state, (), True)
    entry = entry_of(event)
    attribution = _earlier_attribution(state.attribution, entry, event.source, event.campaign)
    history = state.history
    event_ids = state.event_ids | {entry.event_id}
    old = state.fold.transitions
    if not history or entry > history[-1]:
        history = (*history, entry)
        fold = fold_entry(state.fold, entry, attribution, rules)
        next_state = LeadState(state.lead_id, history, event_ids, attribution, fold)
        published = _publish(next_state, range(len(old), len(fold.transitions)), rules)
        return Decision(next_state, published, False)
    history = _insert_sorted(history, entry)
    fold = refold(history, attribution, rules)
    next_state = LeadState(state.lead_id, history, event_ids, attribution, fold)
    return Decision(next_state, _publish_rewrite(state, next_state, rules), False)


def entry_of(event: Event) -> Entry:
    """Reduce a validated event to the entry the fold reads."""
    at = micros_of(event.occurred_at)
    event_type = event.type
    detail: Any = None
    if event_type == "profile_updated":
        facts = event.properties
        detail = {
            name: getattr(facts, name)
            for name in PROFILE_FIELDS
            if getattr(facts, name) is not None
        }
        return Entry(at, Rank.PROFILE, event.event_id, event_type, detail)
    if event_type not in SALES_TYPES:
        return Entry(
            at,
            Rank.ENGAGEMENT,
            event.event_id,
            event_type,
            getattr(event.properties, "content_category", None),
        )
    properties = event.properties
    if event_type == "sales_contacted":
        bant = getattr(properties, "bant", None)
        detail = bant.model_dump() if bant is not None else None
    elif event_type in ("sales_disqualified", "deal_lost"):
        detail = getattr(properties, "reason", None)
    elif event_type == "deal_won":
        detail = {
            "amount": getattr(properties, "amount", None),
            "currency": getattr(properties, "currency", None),
        }
    elif event_type == "advocacy":
        detail = getattr(properties, "kind", None)
    return Entry(at, Rank.SALES, event.event_id, event_type, detail)


def refold(history: tuple[Entry, ...], attribution: Attribution | None, rules: Rules) -> Fold:
    """The fold of a whole sorted history."""
    fold = EMPTY_FOLD
    for entry in history:
        fold = fold_entry(fold, entry, attribution, rules)
    return fold


def trace(state: LeadState, rules: Rules) -> Iterator[tuple[Entry, Fold]]:
    """Each entry of the lead's sorted history with the fold right after it (for `explain`)."""
    fold = EMPTY_FOLD
    for entry in state.history:
        fold = fold_entry(fold, entry, state.attribution, rules)
        yield entry, fold


def engagement_at(fold: Fold, at: int, rules: Rules) -> float:
    """The lead's engagement score at event time `at` (>= its last engagement)."""
    if at <= fold.engagement_at or not fold.buckets:
        return fold.engagement
    return fold.engagement * decay_factor(at - fold.engagement_at, rules.engagement)


def fold_entry(fold: Fold, entry: Entry, attribution: Attribution | None, rules: Rules) -> Fold:
    """Fold one entry (the latest in sort order) into the lead's fold."""
    (
        stage,
        profile,
        fit,
        exclusion,
        waived,
        has_contact,
        buckets,
        engagement,
        engaged_at,
        bant,
        transitions,
    ) = fold
    event_type = entry.type
    lifecycle = rules.lifecycle
    if entry.rank == Rank.ENGAGEMENT:
        factor = decay_factor(entry.at - engaged_at, rules.engagement) if buckets else 1.0
        points = engagement_points(event_type, entry.detail, rules.engagement)
        buckets = add_engagement(buckets, factor, event_type, points, rules.engagement)
        engagement = sum(buckets.values())
        engaged_at = entry.at
        if event_type in lifecycle.contact_event_types:
            has_contact = True
    elif entry.rank == Rank.PROFILE:
        profile = {**profile, **entry.detail}
        fit = fit_score(profile, rules.fit)
        exclusion = exclusion_of(profile, rules.exclusions, rules.fit)
        if "email" in entry.detail or event_type in lifecycle.contact_event_types:
            has_contact = True
    elif event_type == "sales_contacted" and entry.detail is not None:
        bant = entry.detail
    fold = Fold(
        stage,
        profile,
        fit,
        exclusion,
        waived,
        has_contact,
        buckets,
        engagement,
        engaged_at,
        bant,
        transitions,
    )

    pending = True
    """The event's own trigger (a sales action, a high-intent form) has not fired yet."""
    for _ in range(_MAX_CHANGES_PER_EVENT):
        found = _next_transition(fold, entry, pending, rules)
        if found is None:
            return fold
        to_stage, rule, mql_kind, reason, triggered_by_event = found
        pending = pending and not triggered_by_event
        if rule == "recycled.sales":
            fold = fold._replace(waived_exclusion=fold.exclusion)
            if lifecycle.reset_engagement_on_recycle:
                fold = fold._replace(buckets={}, engagement=0.0, engagement_at=entry.at)
        source, campaign = (
            (attribution.source, attribution.campaign)
            if attribution is not None and attribution[:3] <= entry[:3]
            else (None, None)
        )
        transition = Transition(
            fold.stage,
            to_stage,
            entry.at,
            entry.event_id,
            rule,
            mql_kind,
            reason,
            fold.fit_score,
            engagement_at(fold, entry.at, rules),
            source,
            campaign,
        )
        fold = Fold(to_stage, *fold[1:-1], (*fold.transitions, transition))
    raise AssertionError(f"rules loop on event {entry.event_id}")  # pragma: no cover


_Found = tuple[str, str, str | None, str | None, bool]


def _next_transition(fold: Fold, entry: Entry, pending: bool, rules: Rules) -> _Found | None:
    stage = fold.stage
    lifecycle = rules.lifecycle
    if (
        stage in BEFORE_CUSTOMER
        and fold.exclusion is not None
        and fold.exclusion != fold.waived_exclusion
        and lifecycle.disqualify_on_exclusion
    ):
        return "disqualified", "disqualified.exclusion", None, fold.exclusion, False
    if pending:
        found = _event_transition(fold, entry, rules)
        if found is not None:
            return found
    if stage is None and fold.has_contact:
        return "subscriber", "subscriber.contact", None, None, False
    if stage == "subscriber" and _fits(fold, rules):
        return "lead", "lead.fit", None, None, False
    if stage == "lead" and engagement_at(fold, entry.at, rules) >= rules.engagement.mql_threshold:
        return "mql", "mql.passive_score", "passive", None, False
    return None


def _event_transition(fold: Fold, entry: Entry, rules: Rules) -> _Found | None:
    stage = fold.stage
    event_type = entry.type
    if event_type == "sales_disqualified":
        if stage is None or stage in BEFORE_CUSTOMER:
            return "disqualified", "disqualified.sales", None, entry.detail, True
    elif event_type == "deal_lost":
        if stage in LOSABLE:
            return "disqualified", "disqualified.deal_lost", None, "deal_lost", True
    elif event_type == "deal_won":
        if stage == "customer":
            return "evangelist", "evangelist.repeat_purchase", None, None, True
        if stage != "evangelist":
            return "customer", "customer.deal_won", None, None, True
    elif event_type == "advocacy":
        if stage == "customer":
            return "evangelist", "evangelist.advocacy", None, None, True
    elif event_type == "lead_recycled":
        if stage == "disqualified":
            back_to = "lead" if _fits(fold, rules) else "subscriber"
            return back_to, "recycled.sales", None, None, True
    elif event_type == "sales_contacted":
        if stage == "mql":
            return "sql", "sql.sales_contacted", None, None, True
    elif event_type == "quote_requested":
        if stage == "sql":
            return "opportunity", "opportunity.quote_requested", None, None, True
    elif stage == "lead" and event_type in rules.lifecycle.high_intent_event_types:
        return "mql", "mql.active_form", "active", None, True
    return None


def _fits(fold: Fold, rules: Rules) -> bool:
    return fold.exclusion is None and fold.fit_score >= rules.fit.lead_threshold


def _earlier_attribution(
    current: Attribution | None, entry: Entry, source: str | None, campaign: str | None
) -> Attribution | None:
    if source is None and campaign is None:
        return current
    if current is not None and current[:3] <= entry[:3]:
        return current
    return Attribution(entry.at, entry.rank, entry.event_id, source, campaign)


def _insert_sorted(history: tuple[Entry, ...], entry: Entry) -> tuple[Entry, ...]:
    low, high = 0, len(history)
    while low < high:
        middle = (low + high) // 2
        if history[middle] < entry:
            low = middle + 1
        else:
            high = middle
    return (*history[:low], entry, *history[low:])


# Publishing: turn fold transitions into stage changes with ids and revisions.


def change_id(lead_id: str, from_stage: str | None, to_stage: str, occurrence: int) -> str:
    """The deterministic id of a lead's `occurrence`-th change from `from_stage` to `to_stage`."""
    return derived_id(lead_id, from_stage or "", to_stage, str(occurrence))


def _publish(state: LeadState, sequences: range, rules: Rules) -> tuple[LeadStageChange, ...]:
    if not sequences:
        return ()
    transitions = state.fold.transitions
    found = identities(transitions)
    revision = len(state.history)
    return tuple(
        _stage_change(state.lead_id, found[seq], seq, transitions[seq], revision, False, rules)
        for seq in sequences
    )


def _publish_rewrite(
    before: LeadState, after: LeadState, rules: Rules
) -> tuple[LeadStageChange, ...]:
    """Changes to publish after a refold: retractions first, then new or altered changes."""
    revision = len(after.history)
    return tuple(
        _stage_change(after.lead_id, identity, seq, transition, revision, retracted, rules)
        for identity, seq, transition, retracted in rewrites(
            before.fold.transitions, after.fold.transitions
        )
    )


def _stage_change(
    lead_id: str,
    identity: Identity,
    sequence: int,
    transition: Transition,
    revision: int,
    retracted: bool,
    rules: Rules,
) -> LeadStageChange:
    return LeadStageChange(
        change_id(lead_id, *identity),
        lead_id,
        transition.from_stage,
        transition.to_stage,
        transition.at,
        transition.cause,
        transition.rule,
        rules.rules_version,
        transition.mql_kind,
        transition.reason,
        round(transition.fit_score, 3),
        round(transition.engagement_score, 3),
        transition.source,
        transition.campaign,
        sequence,
        revision,
        retracted,
    )
