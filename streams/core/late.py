"""An event older than its lead's detail: applied, never refused. Pure and deterministic, no I/O.

The lead's snapshot keeps every stage-deciding entry with the engagement it had there (its
`Past`), so such an event is applied at its own time:

- A stage-deciding event (profile facts, sales activity, a high-intent form, a link) is put
  among the kept entries, with the engagement of the kept entry before it; the kept entries
  and the detail are folded again, and the changes this alters are published again (a late
  disqualification retracts the SQL it precedes). Its changes are exact, scores included,
  when no other engagement event lies between it and the kept entry before it; else their
  scores are approximate and they say `applied_late`.
- An engagement event's points, decayed to each later kept entry's moment and to the
  snapshot's, are added there (within the caps as they stand), and everything is folded
  again: a passive MQL it brings about is found at the next entry leadflow still has, and
  says `applied_late`.
- A redelivered event (its id kept, or its fingerprint remembered) changes nothing.

docs/rules.md ("What the core keeps") says what is exact and what is approximate.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Final

from streams.core.compaction import fingerprint, is_fact, refold_past
from streams.core.fold import engagement_at, refold
from streams.core.lead import (
    EMPTY_FOLD,
    LINK_ENTRY,
    Entry,
    Fold,
    Kept,
    LeadState,
    Mark,
    Past,
    Rank,
)
from streams.core.revisions import summarize
from streams.core.rules import Rules
from streams.core.scoring import add_engagement, decay_factor, engagement_points, type_decay

_NO_ENGAGEMENT = Mark(0, 0, {}, {}, False, 0.0, 0, True)


def remembers(past: Past, entry: Entry, rules: Rules) -> bool:
    """Whether the snapshot holds an event with this entry's id: kept, or by its fingerprint.
    A stage-deciding event is kept whole, so only a lead that let some go past
    `state.lead_facts` reads the fingerprints for one (a collision can then not drop it)."""
    event_id = entry.event_id
    if any(kept.entry.event_id == event_id for kept in past.kept):
        return True
    if is_fact(entry, rules) and past.root_key is None:
        return False
    return fingerprint(event_id) in past.seen


def apply_late(state: LeadState, entry: Entry, rules: Rules) -> LeadState:
    """`state` (compacted) with `entry`, which sorts at or before its horizon, applied."""
    past = state.past
    root_key = past.root_key
    if root_key is not None and entry[:3] <= root_key:
        # Older than every stage-deciding event the lead still keeps (it let the oldest go
        # past `state.lead_facts`): applied right after the newest one let go.
        entry = entry._replace(at=root_key[0] + 1)
    kept = list(past.kept)
    position = bisect_left([k.entry[:3] for k in kept], entry[:3])
    base = state.base
    engaged = past.engaged
    if _is_engagement(entry):
        for index in range(position, len(kept)):
            later = kept[index]
            kept[index] = Kept(later.entry, _bumped(later.mark, later.entry.at, entry, rules))
        base = _bumped_snapshot(base, past.since, entry, rules)
        engaged += 1
        past = past._replace(error=_more_error(past.error, entry, rules))
        kept, past = _maybe_crossing(kept, position, past, base, entry, rules)
        kept, past = _earliest_in_gap(kept, position, past, entry.at)
    seen = past.seen
    if is_fact(entry, rules):
        mark = _estimated(state.past, position, entry, rules)
        kept, past, mark = _crossing_before(kept, position, past, mark, entry)
        kept.insert(position, Kept(entry, mark))
    else:
        seen = (*seen, fingerprint(entry.event_id))[-rules.state.lead_seen_ids :]
    past = past._replace(kept=tuple(kept), engaged=engaged, seen=seen, touched=True)
    return refolded(state, past, base, rules)


def refolded(state: LeadState, past: Past, base: Fold, rules: Rules) -> LeadState:
    """The state with its kept entries and its detail folded again from the root: the
    snapshot's stage and facts as the kept entries now make them, its engagement as `base`
    holds it."""
    attribution = state.attribution
    linked = state.linked
    history, since = refold_past(past, attribution, rules, linked)
    if since != past.since:
        base, past = _on_other_recycles(base, past, since, rules)
    base = Fold(
        history.stage,
        history.profile,
        history.fit_score,
        history.exclusion,
        history.waived_exclusion,
        base.has_contact or history.has_contact,
        base.buckets,
        base.engagement,
        base.engagement_at,
        history.bant,
        base.intent,
        (),
    )
    past = past._replace(settled=history.transitions)
    return state._replace(
        base=base,
        published=summarize(past.root_published, past.settled),
        fold=refold(base, state.tail, attribution, rules, linked),
        past=past,
    )


def error_at(error: tuple[float, int] | None, at: int, rules: Rules) -> float:
    """The snapshot's error bound (`Past.error`) at event time `at`."""
    if error is None:
        return 0.0
    amount, since = error
    if at <= since:
        return amount
    return amount * math.exp2(-(at - since) / rules.engagement.slowest_half_life_micros)


PRINTED_PRECISION: Final = 0.0005
"""Engagement scores are published to three decimals: an error below this does not show."""


def _more_error(
    error: tuple[float, int] | None, entry: Entry, rules: Rules
) -> tuple[float, int] | None:
    points = abs(engagement_points(entry.type, entry.detail, rules.engagement))
    if error is None or error[1] <= entry.at:
        return (error_at(error, entry.at, rules) + points, entry.at)
    return (error[0] + points, error[1])


def _earliest_in_gap(
    kept: list[Kept], position: int, past: Past, at: int
) -> tuple[list[Kept], Past]:
    if position < len(kept):
        mark = kept[position].mark
        if mark.first_at is None or at < mark.first_at:
            kept[position] = Kept(kept[position].entry, mark._replace(first_at=at))
    elif past.first_at is None or at < past.first_at:
        past = past._replace(first_at=at)
    return kept, past


def _maybe_crossing(
    kept: list[Kept], position: int, past: Past, base: Fold, entry: Entry, rules: Rules
) -> tuple[list[Kept], Past]:
    """An older engagement event may be where the lead's engagement reached the MQL
    threshold: estimated from the next engagement leadflow holds (the next kept entry's, or
    the snapshot's), taken back to the event's moment, it becomes its gap's crossing when it
    is the first there."""
    if position < len(kept):
        following = kept[position]
        later_at = following.entry.at
        later = mark_engagement(following.mark, later_at, rules)
    else:
        later_at = base.engagement_at
        later = engagement_at(base, later_at, rules)
    if entry.at > later_at:
        return kept, past
    estimate = later / decay_factor(later_at - entry.at, rules.engagement)
    if estimate < rules.engagement.mql_threshold:
        return kept, past
    crossing = (*entry[:3], round(estimate, 6))
    if position < len(kept):
        mark = kept[position].mark
        if mark.crossing is None or crossing[:3] < mark.crossing[:3]:
            kept[position] = Kept(kept[position].entry, mark._replace(crossing=crossing))
    elif past.crossing is None or crossing[:3] < past.crossing[:3]:
        past = past._replace(crossing=crossing)
    return kept, past


def _on_other_recycles(base: Fold, past: Past, since: int, rules: Rules) -> tuple[Fold, Past]:
    """The snapshot's engagement once the kept entries recycle the lead at another moment
    than before (a late fact made or unmade a disqualification): from zero at the new
    moment when no event in the snapshot came after it, else as it was, with all of it
    counted as error."""
    recycle = next(
        (k for k in past.kept if k.entry.at == since and k.entry.type == "lead_recycled"), None
    )
    if since > past.since and recycle is not None and recycle.mark.engaged == past.engaged:
        base = base._replace(buckets={}, engagement=0.0, engagement_at=since, intent={})
    elif base.engagement:
        amount = abs(base.engagement) + error_at(past.error, base.engagement_at, rules)
        past = past._replace(error=(amount, base.engagement_at))
    return base, past._replace(since=since)


def _is_engagement(entry: Entry) -> bool:
    return entry.rank == Rank.ENGAGEMENT and entry.type != LINK_ENTRY


def _crossing_before(
    kept: list[Kept], position: int, past: Past, mark: Mark, entry: Entry
) -> tuple[list[Kept], Past, Mark]:
    """A fact put into a gap splits it: the gap's crossing, if it came before the fact, is
    the crossing of the part before it (a recycle there must not read it after)."""
    if position < len(kept):
        following = kept[position]
        crossing = following.mark.crossing
        if crossing is not None and crossing[:3] < entry[:3]:
            # Whether the part after the fact crossed too is not known: approximate.
            moved = following.mark._replace(crossing=None, exact=False)
            kept[position] = Kept(following.entry, moved)
            mark = mark._replace(crossing=crossing)
    elif past.crossing is not None and past.crossing[:3] < entry[:3]:
        mark = mark._replace(crossing=past.crossing)
        past = past._replace(crossing=None)
    return kept, past, mark


def _estimated(past: Past, position: int, entry: Entry, rules: Rules) -> Mark:
    """The engagement mark of a stage-deciding entry put among the kept ones: the kept entry
    before it's (decayed from there), exact when no engagement event lies between them."""
    kept = past.kept
    if position:
        previous = kept[position - 1]
        mark = previous.mark
        engaged = mark.engaged + (1 if _is_engagement(previous.entry) else 0)
        exact = mark.exact
    else:
        mark = _NO_ENGAGEMENT
        engaged = 0
        exact = past.root_key is None
    following = kept[position].mark if position < len(kept) else None
    gap_first = past.first_at if following is None else following.first_at
    exact = exact and (following is None or following.exact)
    exact = exact and (gap_first is None or entry.at < gap_first)
    prior = mark_engagement(mark, entry.at, rules)
    buckets, at, contact = mark.buckets, mark.at, mark.contact
    if _is_engagement(entry):
        # A high-intent form: its own points, as the fold adds them.
        points = engagement_points(entry.type, entry.detail, rules.engagement)
        elapsed = entry.at - at if buckets else 0
        buckets = add_engagement(buckets, elapsed, entry.type, points, rules.engagement)
        at = entry.at
        contact = contact or entry.type in rules.lifecycle.contact_event_types
    first_at = gap_first if gap_first is not None and gap_first < entry.at else None
    at = at if buckets else 0
    return Mark(
        engaged, at, buckets, mark.intent, contact, prior, mark.since, exact, None, first_at
    )


def _bumped(mark: Mark, kept_at: int, entry: Entry, rules: Rules) -> Mark:
    """The mark of a kept entry at `kept_at`, later than `entry` (an engagement event), with
    its points added: approximate from now on (the caps applied out of order)."""
    if entry.at <= mark.since:
        # Before the engagement started from zero again (a recycle; an engagement event of
        # the recycle's instant sorts before it): it counts no more.
        return mark._replace(engaged=mark.engaged + 1)
    buckets, at = _with_points(mark.buckets, mark.at, entry, rules)
    bumped = mark._replace(at=at, buckets=buckets, intent=with_intent(mark.intent, entry, rules))
    added = mark_engagement(bumped, kept_at, rules) - mark_engagement(mark, kept_at, rules)
    return Mark(
        mark.engaged + 1,
        at if buckets else 0,
        buckets,
        bumped.intent,
        mark.contact or entry.type in rules.lifecycle.contact_event_types,
        mark.prior + max(added, 0.0),
        mark.since,
        False,
    )


def _bumped_snapshot(base: Fold, since: int, entry: Entry, rules: Rules) -> Fold:
    """The snapshot with an older engagement event's points added."""
    contact = base.has_contact or entry.type in rules.lifecycle.contact_event_types
    if entry.at <= since:  # before the recycle, as in `_bumped`
        return base._replace(has_contact=contact)
    buckets, at = _with_points(base.buckets, base.engagement_at, entry, rules)
    return base._replace(
        buckets=buckets,
        engagement=sum(buckets.values()),
        engagement_at=at,
        has_contact=contact,
        intent=with_intent(base.intent, entry, rules),
    )


def with_intent(
    intent: dict[str, tuple[int, ...]], entry: Entry, rules: Rules
) -> dict[str, tuple[int, ...]]:
    """Intent-pattern times with an older counting event's time among them: each pattern
    keeps its latest `count`, as the fold does."""
    counted = None
    for pattern in rules.intent_patterns:
        if not pattern.counts(entry.type, entry.detail):
            continue
        times = sorted((*intent.get(pattern.id, ()), entry.at))
        counted = counted if counted is not None else dict(intent)
        counted[pattern.id] = tuple(times[-pattern.count :])
    return intent if counted is None else counted


def _with_points(
    buckets: dict[str, float], at: int, entry: Entry, rules: Rules
) -> tuple[dict[str, float], int]:
    """`buckets` (standing at `at`) with `entry`'s points added: decayed from the entry's
    moment to theirs, or theirs decayed to the entry's when it is the newer."""
    points = engagement_points(entry.type, entry.detail, rules.engagement)
    if not buckets or entry.at >= at:
        elapsed = entry.at - at if buckets else 0
        return add_engagement(buckets, elapsed, entry.type, points, rules.engagement), entry.at
    points *= type_decay(entry.type, at - entry.at, rules.engagement)
    return add_engagement(buckets, 0, entry.type, points, rules.engagement), at


def mark_engagement(mark: Mark, at: int, rules: Rules) -> float:
    """The lead's own engagement a mark holds, decayed to event time `at` (>= the mark's)."""
    fold = EMPTY_FOLD._replace(
        buckets=mark.buckets, engagement=sum(mark.buckets.values()), engagement_at=mark.at
    )
    return engagement_at(fold, at, rules)
