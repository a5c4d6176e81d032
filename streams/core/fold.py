"""The fold: a lead's sorted entries folded, one by one, into what its rules read (`Fold`), and
the stage changes (`Transition`s) the rules make on the way. Pure and deterministic, no I/O.

`fold_entry` folds one entry by its kind (engagement, profile facts, sales activity, a linked
identity's step), then applies the stage rules. A linked identity counts for its known lead
through the `Summary` the lead keeps of it: from each of its steps on, its engagement, first
touch and intent-pattern times count with the lead's own (`lead_engagement`, `step_at`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

from streams.core.handoff import queue_of
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

_MAX_CHANGES_PER_EVENT: Final = 16


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
    """Fold one entry (the latest in sort order) into the lead's fold, then apply the stage
    rules; `linked`: the summaries of the identities linked to the lead."""
    after = fold_event(fold, entry, rules)
    if entry.type == LINK_ENTRY and entry.detail:
        # A linked identity's step triggers what the identity's event would have for the
        # lead (a high-intent form, the last look of an intent pattern).
        entry = event_of_step(entry, linked)
    return apply_rules(after, entry, attribution, rules, linked, fold)


def fold_event(fold: Fold, entry: Entry, rules: Rules) -> Fold:
    """What one entry itself adds to the fold (points, profile facts, BANT), before the stage
    rules. A linked identity's step adds nothing here: its engagement is read with the scores."""
    if entry.type == LINK_ENTRY:
        return fold
    rank = entry.rank
    if rank == Rank.ENGAGEMENT:
        return _fold_engagement(fold, entry, rules)
    if rank == Rank.PROFILE:
        return _fold_profile(fold, entry, rules)
    if entry.type == "sales_contacted" and entry.detail is not None:
        return fold._replace(bant=entry.detail)
    return fold


def _fold_engagement(fold: Fold, entry: Entry, rules: Rules) -> Fold:
    """An engagement event: its points into the decayed buckets, its intent-pattern time."""
    event_type = entry.type
    buckets = fold.buckets
    points = engagement_points(event_type, entry.detail, rules.engagement)
    elapsed = entry.at - fold.engagement_at if buckets else 0
    buckets = add_engagement(buckets, elapsed, event_type, points, rules.engagement)
    intent = fold.intent
    if rules.intent_patterns:
        intent = _intent_counted(intent, entry, rules)
    # Once per engagement event, the hot path: positional (in `Fold`'s field order) costs about
    # half of keywords, and a third of `_replace`.
    return Fold(
        fold.stage,
        fold.profile,
        fold.fit_score,
        fold.exclusion,
        fold.waived_exclusion,
        fold.has_contact or event_type in rules.lifecycle.contact_event_types,
        buckets,
        sum(buckets.values()),  # engagement
        entry.at,  # engagement_at
        fold.bant,
        intent,
        fold.transitions,
    )


def _fold_profile(fold: Fold, entry: Entry, rules: Rules) -> Fold:
    """Profile facts: the profile, and the fit and exclusion read from it."""
    profile = {**fold.profile, **entry.detail}
    return fold._replace(
        profile=profile,
        fit_score=fit_score(profile, rules.fit),
        exclusion=exclusion_of(profile, rules.exclusions, rules.fit),
        has_contact=fold.has_contact
        or "email" in entry.detail
        or entry.type in rules.lifecycle.contact_event_types,
    )


def apply_rules(
    fold: Fold,
    entry: Entry,
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...],
    prior: Fold | float,
    late: bool = False,
) -> Fold:
    """The fold with the stage changes the rules make at `entry`, in order. `prior`: the fold
    before the entry, or the lead's own engagement then; `late`: the changes are approximate
    (read from an estimated engagement)."""
    lifecycle = rules.lifecycle
    stage_before = fold.stage
    pending = True
    """The event's own trigger (a sales action, a high-intent form) has not fired yet."""
    for _ in range(_MAX_CHANGES_PER_EVENT):
        found = _next_transition(fold, entry, pending, rules, linked)
        if found is None:
            return fold
        pending = pending and not found.by_event
        if found.rule == "recycled.sales":
            fold = fold._replace(waived_exclusion=fold.exclusion)
            if lifecycle.reset_engagement_on_recycle:
                fold = fold._replace(buckets={}, engagement=0.0, engagement_at=entry.at, intent={})
        touch = _first_touch(attribution, entry, linked)
        transition = Transition(
            from_stage=fold.stage,
            to_stage=found.to_stage,
            at=entry.at,
            cause=entry.event_id,
            rule=found.rule,
            mql_kind=found.mql_kind,
            reason=found.reason,
            fit_score=fold.fit_score,
            engagement_score=lead_engagement(fold, entry, rules, linked),
            source=touch.source if touch is not None else None,
            campaign=touch.campaign if touch is not None else None,
            late=late or _held_before(found, fold, stage_before, entry, prior, rules),
        )
        if found.to_stage == "mql" and rules.handoff is not None:
            transition = transition._replace(queue=_queue(fold, transition, rules))
        fold = fold._replace(stage=found.to_stage, transitions=(*fold.transitions, transition))
    raise AssertionError(f"rules loop on event {entry.event_id}")  # pragma: no cover


def _queue(fold: Fold, transition: Transition, rules: Rules) -> str | None:
    """The queue of an MQL, from the lead's profile, first touch and grade at that moment."""
    assert rules.handoff is not None
    grade = None
    if rules.grade is not None:
        fit, engagement = round(transition.fit_score, 3), round(transition.engagement_score, 3)
        grade = grade_of(fit, engagement, rules.grade)
    return queue_of(fold.profile, transition.source, grade, rules.handoff)


def _held_before(
    found: _Found,
    fold: Fold,
    stage_before: str | None,
    entry: Entry,
    prior: Fold | float,
    rules: Rules,
) -> bool:
    """Whether a change the lead's state makes (not its event) was due before this entry: its
    true moment lies among events folded into the snapshot, so this one is approximate. In a
    fold of events in order it never is (the rules are checked at every entry)."""
    if found.by_event or fold.stage != stage_before:
        return False
    if found.rule == "mql.passive_score":
        before = prior if isinstance(prior, float) else engagement_at(prior, entry.at, rules)
        return before >= rules.engagement.mql_threshold
    return False


class _Found(NamedTuple):
    """A stage change the rules make: to which stage, by which rule."""

    to_stage: str
    rule: str
    mql_kind: str | None
    reason: str | None
    by_event: bool
    """Made by the event's own trigger (which then fires no more for this event)."""


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
        return _Found("disqualified", "disqualified.exclusion", None, fold.exclusion, False)
    if pending:
        found = _event_transition(fold, entry, rules, linked)
        if found is not None:
            return found
    if stage is None and fold.has_contact:
        return _Found("subscriber", "subscriber.contact", None, None, False)
    if stage == "subscriber" and _fits(fold, rules):
        return _Found("lead", "lead.fit", None, None, False)
    if (
        stage == "lead"
        and lead_engagement(fold, entry, rules, linked) >= rules.engagement.mql_threshold
    ):
        return _Found("mql", "mql.passive_score", "passive", None, False)
    return None


def _event_transition(
    fold: Fold, entry: Entry, rules: Rules, linked: tuple[Summary, ...] = ()
) -> _Found | None:
    stage = fold.stage
    event_type = entry.type
    if event_type == "sales_disqualified":
        if stage is None or stage in BEFORE_CUSTOMER:
            return _Found("disqualified", "disqualified.sales", None, entry.detail, True)
    elif event_type == "deal_lost":
        if stage in LOSABLE:
            return _Found("disqualified", "disqualified.deal_lost", None, "deal_lost", True)
    elif event_type == "deal_won":
        if stage == "customer":
            return _Found("evangelist", "evangelist.repeat_purchase", None, None, True)
        if stage != "evangelist":
            return _Found("customer", "customer.deal_won", None, None, True)
    elif event_type == "advocacy":
        if stage == "customer":
            return _Found("evangelist", "evangelist.advocacy", None, None, True)
    elif event_type == "lead_recycled":
        if stage == "disqualified":
            back_to = "lead" if _fits(fold, rules) else "subscriber"
            return _Found(back_to, "recycled.sales", None, None, True)
    elif event_type == "sales_contacted":
        if stage == "mql":
            return _Found("sql", "sql.sales_contacted", None, None, True)
    elif event_type == "quote_requested":
        if stage == "sql":
            return _Found("opportunity", "opportunity.quote_requested", None, None, True)
    elif stage == "lead":
        if event_type in rules.lifecycle.high_intent_event_types:
            return _Found("mql", "mql.active_form", "active", None, True)
        for pattern in rules.intent_patterns:
            if not pattern.counts(event_type, entry.detail):
                continue
            times = fold.intent.get(pattern.id, ())
            if linked:
                times = _with_linked_intent(times, pattern, entry, linked)
            if len(times) >= pattern.count and times[-1] == entry.at:
                return _Found("mql", pattern.rule, "active", None, True)
    return None


def event_of_step(entry: Entry, linked: tuple[Summary, ...]) -> Entry:
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


def _intent_counted(
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
