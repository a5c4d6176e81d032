"""The lifecycle state machine: a pure, deterministic fold of a lead's events. No I/O.

A lead's state is the fold of its accepted events sorted by event time, then kind (profile facts
before engagement before sales activity, so a form and the profile it carries apply in a sensible
order), then `event_id`. `decide(state, event, rules)` returns the next state and the stage
changes to publish; it never reads a clock, a random source or anything but its arguments.

- An event in order (the usual case) extends the fold by one step.
- An event that arrives late is inserted at its own time and the lead's recent past is
  refolded. The changes whose content the refold alters are published again with a higher
  revision; those that no longer happen are published as retracted. Keyed by `change_id`, the
  latest revision of every change therefore equals the fold of the sorted log, whatever the
  arrival order, for every event within the bound below.
- An event whose `event_id` was already accepted changes nothing.

The state stays small whatever the lead's history: it keeps in detail (its `tail`) only its
events of the last `state.allowed_lateness_days` of event time, counted back from its second
newest event, and at most `state.lead_events` of them; the older ones are folded into a snapshot
(`base`, with `published` counting the stage changes they made). An event that sorts at or
before the newest event in the snapshot (the `horizon`) cannot be applied at its own time any
more: the decision says `too_late` and nothing changes (the worker dead-letters it). That is
also what becomes of a duplicate of an event already folded into the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import Any, Final, NamedTuple

from schemas.events import LINK_TYPES, SALES_TYPES, Event
from streams.core.revisions import (
    NOTHING_PUBLISHED,
    Identity,
    Published,
    derived_id,
    identities,
    micros_of,
    rewrites,
    summarize,
)
from streams.core.rules import IntentPattern, Rules
from streams.core.scoring import (
    add_engagement,
    combined_engagement,
    decay_factor,
    decayed_sum,
    engagement_points,
    exclusion_of,
    fit_score,
    grade_of,
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
    grade: str | None
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
    intent: dict[str, tuple[int, ...]]
    """Per intent pattern, the times of its latest counting events within its window (at most
    its `count`): bounded, whatever the lead did."""
    transitions: tuple[Transition, ...]
    """The stage changes made by the events in detail (a snapshot's are only counted)."""


EMPTY_FOLD: Final = Fold(None, {}, 0.0, None, None, False, {}, 0.0, 0, None, {}, ())

Key = tuple[int, int, str]
"""How entries sort: (at, rank, event_id)."""


class Link(NamedTuple):
    """The link that made an identity (an anonymous id, a merged duplicate) a known lead's:
    the earliest by (at, rank, event_id) wins."""

    at: int
    rank: int
    event_id: str
    to_lead_id: str


class Step(NamedTuple):
    """A linked identity's engagement right after one of its events (or its snapshot): from
    that event's sort key on, these buckets (at `anchor`) and intent times count for the lead."""

    at: int
    rank: int
    cause: str
    """The identity's event: what a stage change that this step makes cites."""
    type: str
    detail: Any
    """The event's type and detail (as in its `Entry`): what it triggers (a high-intent form,
    an intent pattern's last look)."""
    anchor: int
    buckets: dict[str, float]
    intent: dict[str, tuple[int, ...]]
    """Per intent pattern, the identity's latest counting event times (as in `Fold.intent`)."""


class Summary(NamedTuple):
    """What a linked identity tells its known lead of itself: its engagement after each of its
    latest events (`steps`, sorted, at most `state.linked_steps`; the oldest one kept also
    holds all before it), and its first touch. Each counts from its own event time, as the
    lead's own events do. The highest `revision` of an identity supersedes the lower ones;
    `withdrawn` says the identity no longer belongs to this lead."""

    from_id: str
    to_id: str
    revision: int
    steps: tuple[Step, ...]
    attribution: Attribution | None
    withdrawn: bool = False


class LinkRequest(NamedTuple):
    """A known lead asks an identity to count for it: sent to the identity's state when the
    lead first sees it (an event with another `anonymous_id`, `identity_linked`,
    `leads_merged`), or sees it at an earlier moment than before. (at, rank, event_id) is the
    link's sort key: the earliest wins."""

    identity: str
    to_id: str
    at: int
    rank: int
    event_id: str


LINK_ENTRY: Final = "identity_linked"
"""The type of the entry a summary puts in its known lead's tail (its detail: the identity;
an `identity_linked` event's own entry has "")."""


class LeadState(NamedTuple):
    """A lead's state: a snapshot of its older events, its recent ones in detail, their fold."""

    lead_id: str
    accepted: int
    """Events accepted, all time: the revision of the changes the last one published."""
    horizon: Key | None
    """The sort key of the newest event folded into `base`; None while every event is kept."""
    base: Fold
    """The fold of the events up to the horizon; its transitions are in `published`."""
    published: Published
    attribution: Attribution | None
    tail: tuple[Entry, ...]
    """The events after the horizon, sorted."""
    tail_ids: frozenset[str]
    fold: Fold
    """`base` folded with `tail`: what the rules read now."""
    told: tuple[float, int] | None = None
    """The engagement (and its time) the lead last told its account(s), if it told any."""
    anonymous: bool = False
    """An event said this id is a visitor not identified yet: it publishes no stage changes."""
    link: Link | None = None
    """The known lead this identity belongs to: it publishes no stage changes of its own."""
    linked: tuple[Summary, ...] = ()
    """The latest summary of each identity linked to this lead, sorted by identity."""
    links: tuple[tuple[str, Key], ...] = ()
    """The identities this lead asked to count for it, each with its earliest link's sort key
    (sorted): the lead keeps its events since the first in detail (see `past_bound`)."""

    @property
    def silent(self) -> bool:
        """Whether the lead's changes stay unpublished (an anonymous or a linked identity)."""
        return self.anonymous or self.link is not None


class Decision(NamedTuple):
    """What `decide` returns: the next state and the stage changes to publish, in order."""

    state: LeadState
    changes: tuple[LeadStageChange, ...]
    duplicate: bool
    too_late: bool = False
    """The event sorts before the lead's horizon: not applied (a duplicate of a snapshot
    event, or later than the bound)."""
    compacted: tuple[Entry, ...] = ()
    """Entries this decision folded into the snapshot, in order (for `explain`)."""
    summaries: tuple[Summary, ...] = ()
    """What this identity tells the known lead(s) it is linked to (or no longer)."""
    refused: tuple[str, str] | None = None
    """(dead-letter kind, reason) of a link that is not applied."""
    conflict: bool = False
    """The link disagrees with another link of the same identity (counted)."""
    requests: tuple[LinkRequest, ...] = ()
    """Identities this lead asks to count for it (to route to each identity's state)."""


def new_lead(lead_id: str) -> LeadState:
    """The state of a lead leadflow has not seen yet."""
    return LeadState(
        lead_id, 0, None, EMPTY_FOLD, NOTHING_PUBLISHED, None, (), frozenset(), EMPTY_FOLD
    )


def decide(state: LeadState | None, event: Event, rules: Rules) -> Decision:
    """Apply one event to a lead's state. Pure and deterministic."""
    if state is None:
        state = new_lead(event.lead_id)
    entry = entry_of(event)
    tail = state.tail
    if tail and entry[:3] <= tail[-1][:3]:
        horizon = horizon_of(state, rules)
        if horizon is not None and entry[:3] <= horizon:
            return Decision(state, (), False, too_late=True)
    if event.event_id in state.tail_ids:
        return Decision(state, (), True)
    links = state.links
    requests: tuple[LinkRequest, ...] = ()
    identity = linked_identity(event)
    if identity is not None:
        known = next((key for linked_id, key in links if linked_id == identity), None)
        if known is None and len(links) >= rules.state.linked_ids:
            if event.type in LINK_TYPES:
                return Decision(state, (), False, refused=too_many_links(state, identity))
        elif known is None or entry[:3] < known:
            links = tuple(sorted([*(p for p in links if p[0] != identity), (identity, entry[:3])]))
            requests = (LinkRequest(identity, state.lead_id, *entry[:3]),)
    attribution = _earlier_attribution(state.attribution, entry, event.source, event.campaign)
    accepted = state.accepted + 1
    tail_ids = state.tail_ids | {entry.event_id}
    old = state.fold.transitions
    linked = state.linked
    if not tail or entry > tail[-1]:
        fold = fold_entry(state.fold, entry, attribution, rules, linked)
        after = _applied(state, accepted, attribution, (*tail, entry), tail_ids, fold)
        changes = _publish(after, len(old), rules)
    else:
        tail = _insert_sorted(tail, entry)
        fold = refold(state.base, tail, attribution, rules, linked)
        after = _applied(state, accepted, attribution, tail, tail_ids, fold)
        changes = _publish_rewrite(state, after, rules)
    if after.silent or event.anonymous_id == event.lead_id:
        # A visitor not identified, or an identity linked to a known lead, is no lead of its
        # own: what it had published before it turned out to be one is retracted.
        changes = withdrawn(state, accepted, rules)
        if not after.anonymous and event.anonymous_id == event.lead_id:
            after = after._replace(anonymous=True)
    compacted: tuple[Entry, ...] = ()
    if requests:
        if not state.links:
            # From its first link on, the lead compacts only by count (see `past_bound`):
            # what the lateness bound had already left behind goes into the snapshot now.
            compacted, after = compact(after, rules)
        after = after._replace(links=links)
    if past_bound(after, rules) >= _COMPACT_AT_ONCE:
        more, after = compact(after, rules)
        compacted += more
    return Decision(after, changes, False, False, compacted, requests=requests)


def linked_identity(event: Event) -> str | None:
    """The identity an event of a lead links to it: another `anonymous_id` it was seen
    under, or the duplicate a CRM merge names."""
    if event.type == "leads_merged":
        merged: str = getattr(event.properties, "merged_lead_id")  # noqa: B009
        return merged
    anonymous_id = event.anonymous_id
    return anonymous_id if anonymous_id is not None and anonymous_id != event.lead_id else None


def too_many_links(state: LeadState, identity: str) -> tuple[str, str]:
    """The dead letter of a link past `state.linked_ids`."""
    return (
        "too_many_links",
        f"too_many_links: {len(state.links)} identities count for lead {state.lead_id} "
        f"already, the most the rules' state.linked_ids allows; {identity} does not",
    )


def _applied(
    state: LeadState,
    accepted: int,
    attribution: Attribution | None,
    tail: tuple[Entry, ...],
    tail_ids: frozenset[str],
    fold: Fold,
) -> LeadState:
    # Built field by field: NamedTuple._replace costs several times more, once per event.
    return LeadState(
        state.lead_id,
        accepted,
        state.horizon,
        state.base,
        state.published,
        attribution,
        tail,
        tail_ids,
        fold,
        state.told,
        state.anonymous,
        state.link,
        state.linked,
        state.links,
    )


def withdrawn(state: LeadState, revision: int, rules: Rules) -> tuple[LeadStageChange, ...]:
    """The lead's live changes in detail, retracted (an identity that stops being a lead of
    its own). Changes folded into the snapshot are only counted there and stay as they were."""
    if state.silent:
        return ()
    return tuple(
        _stage_change(state.lead_id, identity, seq, transition, revision, retracted, rules)
        for identity, seq, transition, retracted in rewrites(
            state.fold.transitions, (), state.published
        )
    )


_COMPACT_AT_ONCE: Final = 16
"""Entries past the bound are folded into the snapshot this many at a time (and all of them
before a state is stored): where the bound lies never depends on when that happens."""


def past_bound(state: LeadState, rules: Rules) -> int:
    """How many of the tail's oldest entries are past the bound: older than the allowed
    lateness before the second newest entry (so that one event dated far ahead of the others
    cannot push them out), or beyond the most entries kept (only that, once the lead has
    links). They count as folded into the snapshot, whether or not they are yet."""
    tail = state.tail
    count = len(tail)
    if count <= 2:
        return 0
    limit = rules.state.lead_events
    if state.links:
        return _past_count(tail, limit)
    cut = count - limit if count > limit else 0
    oldest_kept = tail[-2].at - rules.state.allowed_lateness_micros
    if tail[cut].at < oldest_kept:
        cut += 1
        while tail[cut].at < oldest_kept:
            cut += 1
    return min(cut, count - 2)


def _past_count(tail: tuple[Entry, ...], limit: int) -> int:
    # A lead linked to other identities keeps its latest `limit` events in detail, however
    # old: their summaries come through another topic, at any later moment, with steps at
    # the identities' own event times, and must find the lead's history around them as it
    # was. Only the lead's own events count (the steps it holds arrive in any order), and the
    # cut falls right after one of them, so the horizon never depends on that order either.
    own = [index for index, entry in enumerate(tail) if not _is_step(entry)]
    excess = len(own) - limit
    return own[excess - 1] + 1 if excess > 0 else 0


def _is_step(entry: Entry) -> bool:
    """Whether `entry` is a linked identity's step (its detail names the identity) rather
    than an event of the lead's own (an `identity_linked` event has detail "")."""
    return entry.type == LINK_ENTRY and bool(entry.detail)


def horizon_of(state: LeadState, rules: Rules) -> Key | None:
    """The sort key of the newest entry folded into the snapshot, or past the bound: an event
    that sorts at or before it is too late."""
    cut = past_bound(state, rules)
    return state.tail[cut - 1][:3] if cut else state.horizon


def compact(state: LeadState, rules: Rules) -> tuple[tuple[Entry, ...], LeadState]:
    """Fold into the snapshot the entries past the bound. The fold, and so every later
    decision, stays what it was."""
    cut = past_bound(state, rules)
    if not cut:
        return (), state
    tail = state.tail
    compacted = tail[:cut]
    base = state.base
    attribution = state.attribution
    for entry in compacted:
        base = fold_entry(base, entry, attribution, rules, state.linked)
    made = len(base.transitions)
    kept = tail[cut:]
    tail_ids = state.tail_ids.difference(entry.event_id for entry in compacted)
    return compacted, state._replace(
        horizon=compacted[-1][:3],
        base=base._replace(transitions=()),
        published=summarize(state.published, base.transitions),
        tail=kept,
        tail_ids=tail_ids,
        fold=state.fold._replace(transitions=state.fold.transitions[made:]),
    )


def restore(
    lead_id: str,
    accepted: int,
    horizon: Key | None,
    base: Fold,
    published: Published,
    attribution: Attribution | None,
    tail: tuple[Entry, ...],
    told: tuple[float, int] | None,
    rules: Rules,
    anonymous: bool = False,
    link: Link | None = None,
    linked: tuple[Summary, ...] = (),
    links: tuple[tuple[str, Key], ...] = (),
) -> LeadState:
    """A stored lead state, from what a store keeps of it: the snapshot's fit and exclusion are
    read again from its profile, and the fold is the snapshot with the tail folded in, so a
    state stored and reloaded decides exactly as one never stored."""
    base = base._replace(
        fit_score=fit_score(base.profile, rules.fit),
        exclusion=exclusion_of(base.profile, rules.exclusions, rules.fit),
        transitions=(),
    )
    return LeadState(
        lead_id,
        accepted,
        horizon,
        base,
        published,
        attribution,
        tail,
        frozenset(e.event_id for e in tail if not _is_step(e)),
        refold(base, tail, attribution, rules, linked),
        told,
        anonymous,
        link,
        linked,
        links,
    )


def rank_of(event_type: str) -> Rank:
    """How entries of this type sort among those of the same instant."""
    if event_type == "profile_updated":
        return Rank.PROFILE
    return Rank.SALES if event_type in SALES_TYPES else Rank.ENGAGEMENT


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
    if event_type == LINK_ENTRY:
        # "": sorts before the entry of a summary its link causes at the same instant (whose
        # detail names the identity), which then cites the same event.
        return Entry(at, Rank.ENGAGEMENT, event.event_id, event_type, "")
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


def refold(
    base: Fold,
    entries: Sequence[Entry],
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...] = (),
) -> Fold:
    """`base` with sorted `entries` folded in."""
    fold = base
    for entry in entries:
        fold = fold_entry(fold, entry, attribution, rules, linked)
    return fold


def trace(
    entries: Sequence[Entry],
    attribution: Attribution | None,
    rules: Rules,
    start: Fold = EMPTY_FOLD,
    linked: tuple[Summary, ...] = (),
) -> Iterator[tuple[Entry, Fold]]:
    """Each of a lead's sorted entries with the fold right after it, from `start` (for
    `explain`: the entries a replay compacted, then its tail, with the summaries of its
    linked identities; for an identity's steps: its tail from its snapshot)."""
    fold = start
    for entry in entries:
        fold = fold_entry(fold, entry, attribution, rules, linked)
        yield entry, fold


def engagement_at(fold: Fold, at: int, rules: Rules) -> float:
    """The lead's engagement score at event time `at` (>= its last engagement)."""
    if at <= fold.engagement_at or not fold.buckets:
        return fold.engagement
    if not rules.engagement.half_life_micros:
        return fold.engagement * decay_factor(at - fold.engagement_at, rules.engagement)
    return decayed_sum(fold.buckets, at - fold.engagement_at, rules.engagement)


def step_at(summary: Summary, entry: Entry) -> Step | None:
    """The step of a linked identity that counts at `entry`: its latest that sorts at or
    before it (so another event of the same instant that sorts before a step is not moved by
    it); None before the first."""
    key = entry[:3]
    for step in reversed(summary.steps):
        if step[:3] <= key:
            return step
    return None


def lead_engagement(fold: Fold, entry: Entry, rules: Rules, linked: tuple[Summary, ...]) -> float:
    """The lead's engagement score at `entry`, with what its linked identities had by then
    (each at its step), the caps applied to the sum."""
    at = entry.at
    if not linked:
        return engagement_at(fold, at, rules)
    counted = [
        (step.anchor, step.buckets)
        for step in (step_at(summary, entry) for summary in linked)
        if step is not None and step.buckets
    ]
    if not counted:
        return engagement_at(fold, at, rules)
    return combined_engagement([(fold.engagement_at, fold.buckets), *counted], at, rules.engagement)


def fold_entry(
    fold: Fold,
    entry: Entry,
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...] = (),
) -> Fold:
    """Fold one entry (the latest in sort order) into the lead's fold; `linked`: the summaries
    of the identities linked to the lead."""
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
        intent,
        transitions,
    ) = fold
    event_type = entry.type
    lifecycle = rules.lifecycle
    if event_type == LINK_ENTRY:
        pass  # a linked identity's summary: read with the scores, nothing to fold
    elif entry.rank == Rank.ENGAGEMENT:
        points = engagement_points(event_type, entry.detail, rules.engagement)
        elapsed = entry.at - engaged_at if buckets else 0
        buckets = add_engagement(buckets, elapsed, event_type, points, rules.engagement)
        engagement = sum(buckets.values())
        engaged_at = entry.at
        if event_type in lifecycle.contact_event_types:
            has_contact = True
        if rules.intent_patterns:
            intent = _counted(intent, entry, rules)
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
        intent,
        transitions,
    )

    pending = True
    """The event's own trigger (a sales action, a high-intent form) has not fired yet."""
    if event_type == LINK_ENTRY and entry.detail:
        # A linked identity's step triggers what the identity's event would have for the lead
        # (a high-intent form, the last look of an intent pattern).
        entry = _event_of_step(entry, linked)
    for _ in range(_MAX_CHANGES_PER_EVENT):
        found = _next_transition(fold, entry, pending, rules, linked)
        if found is None:
            return fold
        to_stage, rule, mql_kind, reason, triggered_by_event = found
        pending = pending and not triggered_by_event
        if rule == "recycled.sales":
            fold = fold._replace(waived_exclusion=fold.exclusion)
            if lifecycle.reset_engagement_on_recycle:
                fold = fold._replace(buckets={}, engagement=0.0, engagement_at=entry.at, intent={})
        touch = _first_touch(attribution, entry, linked)
        source, campaign = (touch.source, touch.campaign) if touch is not None else (None, None)
        transition = Transition(
            fold.stage,
            to_stage,
            entry.at,
            entry.event_id,
            rule,
            mql_kind,
            reason,
            fold.fit_score,
            lead_engagement(fold, entry, rules, linked),
            source,
            campaign,
        )
        fold = Fold(to_stage, *fold[1:-1], (*fold.transitions, transition))
    raise AssertionError(f"rules loop on event {entry.event_id}")  # pragma: no cover


_Found = tuple[str, str, str | None, str | None, bool]


def _first_touch(
    attribution: Attribution | None, entry: Entry, linked: tuple[Summary, ...]
) -> Attribution | None:
    """The earliest first touch by `entry`: the lead's own, or a linked identity's, each from
    its own event on."""
    touch = attribution if attribution is not None and attribution[:3] <= entry[:3] else None
    for summary in linked:
        theirs = summary.attribution
        key = theirs[:3] if theirs is not None else None
        if key is not None and key <= entry[:3] and (touch is None or key < touch[:3]):
            touch = theirs
    return touch


def _next_transition(
    fold: Fold, entry: Entry, pending: bool, rules: Rules, linked: tuple[Summary, ...] = ()
) -> _Found | None:
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
        found = _event_transition(fold, entry, rules, linked)
        if found is not None:
            return found
    if stage is None and fold.has_contact:
        return "subscriber", "subscriber.contact", None, None, False
    if stage == "subscriber" and _fits(fold, rules):
        return "lead", "lead.fit", None, None, False
    if (
        stage == "lead"
        and lead_engagement(fold, entry, rules, linked) >= rules.engagement.mql_threshold
    ):
        return "mql", "mql.passive_score", "passive", None, False
    return None


def _event_transition(
    fold: Fold, entry: Entry, rules: Rules, linked: tuple[Summary, ...] = ()
) -> _Found | None:
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
    elif stage == "lead":
        if event_type in rules.lifecycle.high_intent_event_types:
            return "mql", "mql.active_form", "active", None, True
        for pattern in rules.intent_patterns:
            if not pattern.counts(event_type, entry.detail):
                continue
            times = fold.intent.get(pattern.id, ())
            if linked:
                times = _with_linked_intent(times, pattern, entry, linked)
            if len(times) >= pattern.count and times[-1] == entry.at:
                return "mql", pattern.rule, "active", None, True
    return None


def _event_of_step(entry: Entry, linked: tuple[Summary, ...]) -> Entry:
    """The identity's event behind a step entry of the lead's history (its type and detail)."""
    key = entry[:3]
    for summary in linked:
        if summary.from_id == entry.detail:
            for step in summary.steps:
                if step[:3] == key:
                    return Entry(*key, step.type, step.detail)
    return entry


def _with_linked_intent(
    times: tuple[int, ...], pattern: IntentPattern, entry: Entry, linked: tuple[Summary, ...]
) -> tuple[int, ...]:
    """A pattern's times with those of the linked identities by `entry` (each at its step),
    within the pattern's window: a run of pricing looks that began on another device, or
    before the visitor was known, completes on the lead's own."""
    oldest = entry.at - pattern.within_micros
    merged = [t for t in times if t >= oldest]
    for summary in linked:
        step = step_at(summary, entry)
        if step is not None:
            merged += (t for t in step.intent.get(pattern.id, ()) if t >= oldest)
    return tuple(sorted(merged))


def _counted(
    intent: dict[str, tuple[int, ...]], entry: Entry, rules: Rules
) -> dict[str, tuple[int, ...]]:
    """The intent patterns' times once `entry` (an engagement event, the latest in sort order)
    is counted: each pattern keeps its latest `count` times within its window."""
    counted = None
    for pattern in rules.intent_patterns:
        if not pattern.counts(entry.type, entry.detail):
            continue
        oldest = entry.at - pattern.within_micros
        kept = [at for at in intent.get(pattern.id, ()) if at >= oldest]
        kept.append(entry.at)
        counted = counted if counted is not None else dict(intent)
        counted[pattern.id] = tuple(kept[-pattern.count :])
    return intent if counted is None else counted


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


def _publish(state: LeadState, first_new: int, rules: Rules) -> tuple[LeadStageChange, ...]:
    transitions = state.fold.transitions
    if first_new == len(transitions):
        return ()
    found = identities(transitions, state.published)
    offset = state.published.changes
    return tuple(
        _stage_change(
            state.lead_id, found[seq], offset + seq, transitions[seq], state.accepted, False, rules
        )
        for seq in range(first_new, len(transitions))
    )


def _publish_rewrite(
    before: LeadState, after: LeadState, rules: Rules
) -> tuple[LeadStageChange, ...]:
    """Changes to publish after a refold: retractions first, then new or altered changes."""
    return tuple(
        _stage_change(after.lead_id, identity, seq, transition, after.accepted, retracted, rules)
        for identity, seq, transition, retracted in rewrites(
            before.fold.transitions, after.fold.transitions, after.published
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
    fit = round(transition.fit_score, 3)
    engagement = round(transition.engagement_score, 3)
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
        fit,
        engagement,
        grade_of(fit, engagement, rules.grade) if rules.grade is not None else None,
        transition.source,
        transition.campaign,
        sequence,
        revision,
        retracted,
    )
