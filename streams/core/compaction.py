"""The snapshot and its bounds: which of a lead's entries stay in detail (its tail), and folding
the older ones into its snapshot. Pure and deterministic, no I/O.

A lead keeps in detail only its entries of the last `state.allowed_lateness_days` of event time,
counted back from its second newest entry, and at most `state.lead_events` of them (from its
first link on, only the count). The older ones are folded into the snapshot (`base`, with
`published` counting the stage changes they made); the sort key of the newest of them is the
lead's `horizon`.
"""

from __future__ import annotations

import zlib
from typing import Final

from schemas.events import LINK_TYPES
from streams.core.fold import apply_rules, engagement_at, event_of_step, fold_event, refold
from streams.core.lead import (
    EMPTY_PAST,
    LINK_ENTRY,
    Attribution,
    Entry,
    Fold,
    Kept,
    Key,
    LeadState,
    Link,
    Mark,
    Past,
    Rank,
    Summary,
    is_step_entry,
)
from streams.core.revisions import Published, summarize
from streams.core.rules import Rules
from streams.core.scoring import exclusion_of, fit_score

COMPACT_AT_ONCE: Final = 16
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
    own = [index for index, entry in enumerate(tail) if not is_step_entry(entry)]
    excess = len(own) - limit
    return own[excess - 1] + 1 if excess > 0 else 0


def horizon_of(state: LeadState, rules: Rules) -> Key | None:
    """The sort key of the newest entry folded into the snapshot, or past the bound: an event
    that sorts at or before it is too late."""
    cut = past_bound(state, rules)
    return state.tail[cut - 1][:3] if cut else state.horizon


def compact(state: LeadState, rules: Rules) -> tuple[tuple[Entry, ...], LeadState]:
    """Fold into the snapshot the entries past the bound, keeping the stage-deciding ones in
    its `past` and a fingerprint of the others. The fold, and so every later decision, stays
    what it was."""
    cut = past_bound(state, rules)
    if not cut:
        return (), state
    tail = state.tail
    compacted = tail[:cut]
    base = state.base
    attribution = state.attribution
    linked = state.linked
    past = state.past
    kept = list(past.kept)
    settled = list(past.settled)
    seen = list(past.seen)
    engaged = past.engaged
    since = past.since
    crossing = past.crossing
    first_at = past.first_at
    threshold = rules.engagement.mql_threshold
    resets = rules.lifecycle.reset_engagement_on_recycle
    for entry in compacted:
        made = len(base.transitions)
        pre = fold_event(base, entry, rules)
        cause = event_of_step(entry, linked) if is_step_entry(entry) else entry
        folded = apply_rules(pre, cause, attribution, rules, linked, base)
        new = folded.transitions[made:]
        engagement = entry.rank == Rank.ENGAGEMENT and entry.type != LINK_ENTRY
        if new or is_fact(entry, rules):
            mark = Mark(
                engaged,
                pre.engagement_at if pre.buckets else 0,
                pre.buckets,
                pre.intent,
                pre.has_contact,
                engagement_at(base, entry.at, rules),
                since,
                True,
                crossing,
                first_at,
            )
            crossing = first_at = None
            kept.append(Kept(entry, mark))
            settled.extend(new)
            if resets and any(t.rule == RECYCLED for t in new):
                since = entry.at
        elif not is_step_entry(entry):
            seen.append(fingerprint(entry.event_id))
            if first_at is None and engagement:
                first_at = entry.at
            if crossing is None and pre.engagement >= threshold:
                crossing = (*entry[:3], pre.engagement)
        if engagement:
            engaged += 1
        base = folded
    past = Past(
        tuple(kept),
        engaged,
        tuple(seen),
        past.root,
        past.root_published,
        past.root_key,
        since,
        crossing=crossing,
        first_at=first_at,
        touched=past.touched,
        error=past.error,
        settled=tuple(settled),
    )
    past = bounded(past, attribution, rules, linked)
    if past.touched:
        # Approximate marks may make other changes than the events did in the detail: the
        # kept ones are what the kept entries make, whenever the lead was compacted.
        past = past._replace(settled=refold_past(past, attribution, rules, linked)[0].transitions)
    tail_ids = state.tail_ids.difference(entry.event_id for entry in compacted)
    return compacted, state._replace(
        horizon=compacted[-1][:3],
        base=base._replace(transitions=()),
        published=summarize(past.root_published, past.settled),
        tail=tail[cut:],
        tail_ids=tail_ids,
        fold=state.fold._replace(transitions=state.fold.transitions[len(base.transitions) :]),
        past=past,
    )


RECYCLED: Final = "recycled.sales"


def is_fact(entry: Entry, rules: Rules) -> bool:
    """Whether an entry decides stages by itself (profile facts, sales activity, a high-intent
    form, a link): kept whatever its age, so that one older than the detail is exact."""
    return (
        entry.rank != Rank.ENGAGEMENT
        or entry.type in rules.lifecycle.high_intent_event_types
        or entry.type in LINK_TYPES
    )


FINGERPRINT_BYTES: Final = 3


def fingerprint(event_id: str) -> int:
    """24 bits of the CRC-32 of an event id: what the snapshot remembers of an entry it does
    not keep (docs/rules.md says what a collision costs)."""
    return zlib.crc32(event_id.encode()) >> (32 - 8 * FINGERPRINT_BYTES)


def bounded(
    past: Past, attribution: Attribution | None, rules: Rules, linked: tuple[Summary, ...]
) -> Past:
    """`past` within its bounds: past `state.lead_facts` kept entries, the oldest are let go
    into its root (their ids into the fingerprints); of those, the latest `state.lead_seen_ids`."""
    limit = rules.state.lead_facts
    seen = past.seen
    if len(past.kept) > limit:
        excess = len(past.kept) - limit
        gone = past.kept[:excess]
        root = past.root
        since = 0
        for kept in gone:
            root, since = fold_kept(root, kept, since, attribution, rules, linked)
        made = len(root.transitions)
        seen = (*seen, *(fingerprint(k.entry.event_id) for k in gone if not is_step_entry(k.entry)))
        past = past._replace(
            kept=past.kept[excess:],
            root=root._replace(transitions=()),
            root_published=summarize(past.root_published, past.settled[:made]),
            root_key=gone[-1].entry[:3],
            settled=past.settled[made:],
        )
    most = rules.state.lead_seen_ids
    if len(seen) > most:
        seen = seen[-most:]
    return past._replace(seen=seen)


def fold_kept(
    fold: Fold,
    kept: Kept,
    since: int,
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...],
) -> tuple[Fold, int]:
    """Fold one kept entry of the snapshot: the engagement as its mark holds it, the entry's
    own facts, then the stage rules. Returns the fold and when the engagement last started
    from zero. A change read from a mark that is not exact, or from one made on another
    path of recycles, says it is approximate."""
    entry, mark = kept
    if mark.crossing is not None and fold.stage == "lead":
        fold = crossed(fold, mark.crossing, attribution, rules, linked, not mark.exact)
    fold = Fold(
        fold.stage,
        fold.profile,
        fold.fit_score,
        fold.exclusion,
        fold.waived_exclusion,
        fold.has_contact or mark.contact,
        mark.buckets,
        sum(mark.buckets.values()) if mark.buckets else 0.0,
        mark.at,
        fold.bant,
        mark.intent,
        fold.transitions,
    )
    if entry.rank != Rank.ENGAGEMENT:
        fold = fold_event(fold, entry, rules)
    cause = event_of_step(entry, linked) if is_step_entry(entry) else entry
    made = len(fold.transitions)
    late = not mark.exact or mark.since != since
    fold = apply_rules(fold, cause, attribution, rules, linked, mark.prior, late)
    if rules.lifecycle.reset_engagement_on_recycle and any(
        t.rule == RECYCLED for t in fold.transitions[made:]
    ):
        since = entry.at
    return fold, since


def crossed(
    fold: Fold,
    crossing: tuple[int, int, str, float],
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...],
    late: bool,
) -> Fold:
    """A lead's fold at the moment its engagement reached the MQL threshold among events the
    snapshot does not keep: the stage rules applied there (a passive MQL)."""
    at, rank, event_id, engagement = crossing
    at_crossing = fold._replace(buckets={}, engagement=engagement, engagement_at=at)
    entry = Entry(at, rank, event_id, LINK_ENTRY, "")
    after = apply_rules(at_crossing, entry, attribution, rules, linked, 0.0, late)
    return after._replace(
        buckets=fold.buckets, engagement=fold.engagement, engagement_at=fold.engagement_at
    )


def refold_past(
    past: Past,
    attribution: Attribution | None,
    rules: Rules,
    linked: tuple[Summary, ...] = (),
) -> tuple[Fold, int]:
    """The fold of the kept entries from the root: the stage, profile and BANT they make, and
    (in `transitions`) the changes made at them; and when the engagement last started from
    zero on the way."""
    fold = past.root
    since = 0
    for kept in past.kept:
        fold, since = fold_kept(fold, kept, since, attribution, rules, linked)
    if past.crossing is not None and fold.stage == "lead":
        fold = crossed(
            fold, past.crossing, attribution, rules, linked, since != past.since or bool(past.error)
        )
    return fold, since


def restore(
    lead_id: str,
    accepted: int,
    horizon: Key | None,
    base: Fold,
    published: Published | None,
    attribution: Attribution | None,
    tail: tuple[Entry, ...],
    told: tuple[float, int] | None,
    rules: Rules,
    anonymous: bool = False,
    link: Link | None = None,
    linked: tuple[Summary, ...] = (),
    links: tuple[tuple[str, Key], ...] = (),
    past: Past = EMPTY_PAST,
) -> LeadState:
    """A stored lead state, from what a store keeps of it: the snapshot's fit and exclusion are
    read again from its profile, its kept changes (and, given None, the tally `published`)
    from its kept entries, and the fold is the snapshot with the tail folded in, so a state
    stored and reloaded decides exactly as one never stored."""
    base = base._replace(
        fit_score=fit_score(base.profile, rules.fit),
        exclusion=exclusion_of(base.profile, rules.exclusions, rules.fit),
        transitions=(),
    )
    if past.kept:
        past = past._replace(
            root=_with_scores(past.root, rules),
            settled=refold_past(past, attribution, rules, linked)[0].transitions,
        )
    if published is None:
        published = summarize(past.root_published, past.settled)
    return LeadState(
        lead_id=lead_id,
        accepted=accepted,
        horizon=horizon,
        base=base,
        published=published,
        attribution=attribution,
        tail=tail,
        tail_ids=frozenset(e.event_id for e in tail if not is_step_entry(e)),
        fold=refold(base, tail, attribution, rules, linked),
        told=told,
        anonymous=anonymous,
        link=link,
        linked=linked,
        links=links,
        past=past,
    )


def _with_scores(fold: Fold, rules: Rules) -> Fold:
    return fold._replace(
        fit_score=fit_score(fold.profile, rules.fit),
        exclusion=exclusion_of(fold.profile, rules.exclusions, rules.fit),
        transitions=(),
    )


def insert_sorted(history: tuple[Entry, ...], entry: Entry) -> tuple[Entry, ...]:
    """`history` (sorted) with `entry` inserted at its place."""
    low, high = 0, len(history)
    while low < high:
        middle = (low + high) // 2
        if history[middle] < entry:
            low = middle + 1
        else:
            high = middle
    return (*history[:low], entry, *history[low:])
