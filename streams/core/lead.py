"""The lead's model: what a lead's fold reads and keeps, and what it publishes. No I/O.

An accepted event becomes an `Entry`; a lead's `LeadState` keeps a snapshot of its older
entries (`base`, `published`), its recent ones in detail (`tail`), and their `Fold`. The fold
itself is in `streams.core.fold`, the decision on one event in `streams.core.lifecycle`, the
snapshot and its bounds in `streams.core.compaction`, the published stage changes in
`streams.core.publishing`. docs/design.md has a glossary of these words.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final, NamedTuple

from schemas.events import SALES_TYPES, Event
from streams.core.handoff import HandoffState
from streams.core.revisions import NOTHING_PUBLISHED, Published, micros_of

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
    late: bool = False
    """Its moment or scores are approximate: an event older than the lead's detail moved it
    (docs/rules.md, "What the core keeps")."""
    queue: str | None = None
    """An MQL's queue (the rules' `[handoff]`), chosen from what the lead was then."""


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
    owner: str | None
    queue: str | None
    sequence: int
    revision: int
    retracted: bool
    applied_late: bool


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


EMPTY_FOLD: Final = Fold(
    stage=None,
    profile={},
    fit_score=0.0,
    exclusion=None,
    waived_exclusion=None,
    has_contact=False,
    buckets={},
    engagement=0.0,
    engagement_at=0,
    bant=None,
    intent={},
    transitions=(),
)

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


class Mark(NamedTuple):
    """The lead's own engagement at a kept entry, as the fold had it right after the entry's
    own points and before the stage rules: what a refold of the snapshot reads there."""

    engaged: int
    """Engagement events folded into the snapshot before this entry, all time."""
    at: int
    buckets: dict[str, float]
    intent: dict[str, tuple[int, ...]]
    contact: bool
    prior: float
    """The engagement just before the entry's own points (at its time)."""
    since: int
    """When the engagement last started from zero (a recycle) before the entry; 0: never."""
    exact: bool
    """False when an event older than the snapshot changed or estimated this mark."""
    crossing: tuple[int, int, str, float] | None = None
    """Of the events folded into the snapshot since the kept entry before (not kept), the
    first whose engagement reached `engagement.mql_threshold`: (its sort key, the engagement
    then). Where a refold finds the lead a lead there, that is its passive MQL moment."""
    first_at: int | None = None
    """When the first of those events (any) happened: an event put before it is exact."""


class Kept(NamedTuple):
    """A stage-deciding entry folded into the snapshot, kept with its engagement there."""

    entry: Entry
    mark: Mark


class Past(NamedTuple):
    """What a lead keeps of the events folded into its snapshot, so that an event older than
    its detail is still applied (docs/rules.md): every stage-deciding entry (profile facts,
    sales activity, high-intent forms, links, and any entry that made a stage change) with its
    engagement mark, up to `state.lead_facts` of them; a fingerprint of every other one."""

    kept: tuple[Kept, ...]
    engaged: int
    """Engagement events folded into the snapshot, all time."""
    seen: tuple[int, ...]
    """24-bit fingerprints (of the CRC-32) of the ids of the latest `state.lead_seen_ids`
    entries folded into the snapshot and not kept: how a redelivered one is recognised."""
    root: Fold
    """The fold before the oldest kept entry (empty unless older ones were let go)."""
    root_published: Published
    root_key: Key | None
    """The sort key of the newest entry let go past `state.lead_facts`; None: none was."""
    since: int = 0
    """When the snapshot's engagement last started from zero (a recycle); 0: never."""
    crossing: tuple[int, int, str, float] | None = None
    """As `Mark.crossing`, for the events folded in since the newest kept entry."""
    first_at: int | None = None
    """As `Mark.first_at`, for the events folded in since the newest kept entry."""
    touched: bool = False
    """An event older than the snapshot was applied to it: its changes (`settled`) are then
    always those a refold of the kept entries gives, however it was compacted."""
    error: tuple[float, int] | None = None
    """At most how far the snapshot's engagement may be from the exact one, and when: the
    points of events older than it that it took in (the caps applied out of order). It fades
    as scores do; while it shows at the printed precision, changes say `applied_late`."""
    settled: tuple[Transition, ...] = ()
    """The stage changes made at the kept entries, in order (derived: not stored)."""


EMPTY_PAST: Final = Past((), 0, (), EMPTY_FOLD, NOTHING_PUBLISHED, None)


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
    past: Past = EMPTY_PAST
    """What it keeps of the events in its snapshot (empty while every event is in detail)."""
    handoff: HandoffState | None = None
    """Its MQL's handoff to sales (`streams.core.sla`); None: it never had one."""

    @property
    def silent(self) -> bool:
        """Whether the lead's changes stay unpublished (an anonymous or a linked identity)."""
        return self.anonymous or self.link is not None


class Decision(NamedTuple):
    """What `decide` returns: the next state and the stage changes to publish, in order."""

    state: LeadState
    changes: tuple[LeadStageChange, ...]
    duplicate: bool
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
        lead_id=lead_id,
        accepted=0,
        horizon=None,
        base=EMPTY_FOLD,
        published=NOTHING_PUBLISHED,
        attribution=None,
        tail=(),
        tail_ids=frozenset(),
        fold=EMPTY_FOLD,
    )


def is_step_entry(entry: Entry) -> bool:
    """Whether `entry` is a linked identity's step in the lead's tail (its detail names the
    identity) rather than an event of the lead's own (an `identity_linked` event has "")."""
    return entry.type == LINK_ENTRY and bool(entry.detail)


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
