"""The lifecycle state machine: a pure, deterministic fold of a lead's events. No I/O.

A lead's state is the fold of its accepted events sorted by event time, then kind (profile facts
before engagement before sales activity, so a form and the profile it carries apply in a sensible
order), then `event_id`. `decide(state, event, rules)` returns the next state and the stage
changes to publish; it never reads a clock, a random source or anything but its arguments.

- An event in order (the usual case) extends the fold by one entry.
- An event that arrives late is inserted at its own time and the lead's recent past is
  refolded. The changes whose content the refold alters are published again with a higher
  revision; those that no longer happen are published as retracted. Keyed by `change_id`, the
  latest revision of every change therefore equals the fold of the sorted log, whatever the
  arrival order.
- An event whose `event_id` was already accepted changes nothing.

The state stays small whatever the lead's history: it keeps in detail (its `tail`) only its
events of the last `state.allowed_lateness_days` of event time, counted back from its second
newest event, and at most `state.lead_events` of them; the older ones are folded into a snapshot
(`base`, with `published` counting the stage changes they made), which keeps the stage-deciding
ones and a fingerprint of the others (its `past`). An event that sorts at or before the newest
event in the snapshot (the `horizon`) is applied by `streams.core.late`: exactly for
stage-deciding events, with its changes saying `applied_late` where engagement makes them
approximate.

The model (`LeadState`, `Entry`...) is in `streams.core.lead`, the fold in `streams.core.fold`,
the snapshot and its bounds in `streams.core.compaction`, the stage changes' ids and revisions
in `streams.core.publishing`.
"""

from __future__ import annotations

from schemas.events import HANDOFF_TYPES, LINK_TYPES, Event
from streams.core.compaction import COMPACT_AT_ONCE, compact, horizon_of, insert_sorted, past_bound
from streams.core.fold import fold_entry, refold
from streams.core.late import apply_late, remembers
from streams.core.lead import (
    Attribution,
    Decision,
    Entry,
    Fold,
    LeadState,
    LinkRequest,
    entry_of,
    new_lead,
)
from streams.core.publishing import (
    publish_history_rewrite,
    publish_new,
    publish_rewrite,
    withdrawn,
)
from streams.core.rules import Rules


def decide(state: LeadState | None, event: Event, rules: Rules) -> Decision:
    """Apply one event to a lead's state. Pure and deterministic."""
    if state is None:
        state = new_lead(event.lead_id)
    if event.type in HANDOFF_TYPES:
        # Only the handoff reads these (`streams.core.sla`): not part of the scored history.
        return Decision(state, (), duplicate=False)
    entry = entry_of(event)
    tail = state.tail
    late = False
    if tail and entry[:3] <= tail[-1][:3]:
        horizon = horizon_of(state, rules)
        late = horizon is not None and entry[:3] <= horizon
    if event.event_id in state.tail_ids or (late and remembers(state.past, entry, rules)):
        return Decision(state, (), duplicate=True)
    links = state.links
    requests: tuple[LinkRequest, ...] = ()
    identity = linked_identity(event)
    if identity is not None:
        known = next((key for linked_id, key in links if linked_id == identity), None)
        if known is None and len(links) >= rules.state.linked_ids:
            if event.type in LINK_TYPES:
                return Decision(state, (), duplicate=False, refused=too_many_links(state, identity))
        elif known is None or entry[:3] < known:
            links = tuple(sorted([*(p for p in links if p[0] != identity), (identity, entry[:3])]))
            requests = (LinkRequest(identity, state.lead_id, *entry[:3]),)
    attribution = _earlier_attribution(state.attribution, entry, event.source, event.campaign)
    accepted = state.accepted + 1
    tail_ids = state.tail_ids | {entry.event_id}
    old = state.fold.transitions
    linked = state.linked
    compacted: tuple[Entry, ...] = ()
    if not tail or entry > tail[-1]:
        fold = fold_entry(state.fold, entry, attribution, rules, linked)
        after = _applied(state, accepted, attribution, (*tail, entry), tail_ids, fold)
        changes = publish_new(after, len(old), rules)
    elif late:
        compacted, state = compact(state, rules)
        after = state._replace(accepted=accepted, attribution=attribution)
        after = apply_late(after, entry, rules)
        changes = publish_history_rewrite(state, after, rules)
    else:
        tail = insert_sorted(tail, entry)
        fold = refold(state.base, tail, attribution, rules, linked)
        after = _applied(state, accepted, attribution, tail, tail_ids, fold)
        changes = publish_rewrite(state, after, rules)
    if after.silent or event.anonymous_id == event.lead_id:
        # A visitor not identified, or an identity linked to a known lead, is no lead of its
        # own: what it had published before it turned out to be one is retracted.
        changes = withdrawn(state, accepted, rules)
        if not after.anonymous and event.anonymous_id == event.lead_id:
            after = after._replace(anonymous=True)
    if requests:
        if not state.links:
            # From its first link on, the lead compacts only by count (see `past_bound`):
            # what the lateness bound had already left behind goes into the snapshot now.
            more, after = compact(after, rules)
            compacted += more
        after = after._replace(links=links)
    if past_bound(after, rules) >= COMPACT_AT_ONCE:
        more, after = compact(after, rules)
        compacted += more
    return Decision(after, changes, duplicate=False, compacted=compacted, requests=requests)


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
    # Once per event, the hot path: positional (in `LeadState`'s field order) costs about half
    # of keywords, and a third of `_replace`.
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
        state.past,
        state.handoff,
    )


def _earlier_attribution(
    current: Attribution | None, entry: Entry, source: str | None, campaign: str | None
) -> Attribution | None:
    if source is None and campaign is None:
        return current
    if current is not None and current[:3] <= entry[:3]:
        return current
    return Attribution(entry.at, entry.rank, entry.event_id, source, campaign)
