"""The snapshot and its bounds: which of a lead's entries stay in detail (its tail), and folding
the older ones into its snapshot. Pure and deterministic, no I/O.

A lead keeps in detail only its entries of the last `state.allowed_lateness_days` of event time,
counted back from its second newest entry, and at most `state.lead_events` of them (from its
first link on, only the count). The older ones are folded into the snapshot (`base`, with
`published` counting the stage changes they made); the sort key of the newest of them is the
lead's `horizon`.
"""

from __future__ import annotations

from typing import Final

from streams.core.fold import fold_entry, refold
from streams.core.lead import (
    Attribution,
    Entry,
    Fold,
    Key,
    LeadState,
    Link,
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
