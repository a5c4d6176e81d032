"""Identity stitching: a visitor's anonymous history counts for the known lead it turns out to
be, each event at its own time. Pure and deterministic, no I/O.

Three parts, each run where its input is partitioned:
- the known lead's own events (`lifecycle.decide`): one seen under another `anonymous_id`,
  `identity_linked` or `leads_merged` makes the lead ask that identity to count for it (a
  `LinkRequest`, at most `state.linked_ids` identities). From its first link on, the lead
  compacts its events only by count (`state.lead_events`), never by age, so that the
  identity's summary, coming later through another topic, finds them as they were.
- `link(state, request, rules)`, on the identity being linked (keyed by the anonymous id, or by
  the duplicate a CRM merges): the earliest link by (event time, rank, event_id) wins; a link
  to another lead that is not the earliest is refused (a conflict, dead-lettered). Once
  linked, the identity publishes no stage changes of its own (what it had published in detail
  is retracted) and tells its known lead a `Summary` of itself.
- `summary_changed(before, after, rules)`: after any event of a linked identity, the summary
  to send again, if what it says changed (a revision higher than the last).
- `absorb(state, summary, rules)`, on the known lead (keyed by its id): keeps the latest
  summary of each identity, at most `state.linked_ids`, puts each of its steps into the
  lead's history at the identity's event time, and refolds. From a step on, the identity's
  engagement then counts with the lead's own (caps on the sum), its first touch if it is
  earlier, its intent-pattern times; a passive MQL that a step's points make is at that
  event's time and cites it, as if the lead had done it. An identity that is itself linked
  passes the summaries it absorbs on to its own lead (a chain: a visitor of a merged
  duplicate counts for the survivor).

The steps are what keep this bounded: a summary holds the identity's engagement after each of
its latest `state.linked_steps` events (its decayed buckets, the older events within the
oldest), never the events, and a step older than the lead's snapshot counts from the lead's
next event. The outcome depends only on the set of events of both ids, never on the order in
which events, links and summaries arrive, nor on duplicates of any of them.
"""

from __future__ import annotations

from typing import Final

from streams.core.compaction import COMPACT_AT_ONCE, compact, horizon_of, insert_sorted, past_bound
from streams.core.fold import refold, trace
from streams.core.lead import (
    LINK_ENTRY,
    Decision,
    Entry,
    LeadState,
    Link,
    LinkRequest,
    Rank,
    Step,
    Summary,
    new_lead,
)
from streams.core.lifecycle import too_many_links
from streams.core.publishing import publish_rewrite, withdrawn
from streams.core.rules import Rules

CONFLICT: Final = "identity_conflict"


def link(state: LeadState | None, request: LinkRequest, rules: Rules) -> Decision:
    """Apply a known lead's link request to the identity it names."""
    if state is None:
        state = new_lead(request.identity)
    target = request.to_id
    new = Link(request.at, request.rank, request.event_id, target)
    current = state.link
    if current is not None and new[:3] >= current[:3]:
        if current.to_lead_id == target:
            return Decision(state, (), True)
        return Decision(
            state,
            (),
            False,
            refused=(CONFLICT, _conflict_reason(state.lead_id, new, current)),
            conflict=True,
        )
    accepted = state.accepted + 1
    after = state._replace(accepted=accepted, link=new)
    changes = withdrawn(state, accepted, rules)
    summaries = []
    if current is not None and current.to_lead_id != target:
        # An earlier link to another lead arrived after this one: it wins, and the lead that
        # had the identity (and those linked to it) is told it no longer has it.
        summaries.append(_withdrawal(state.lead_id, current.to_lead_id, accepted))
        summaries += _forwarded(state.linked, current.to_lead_id, withdrawn=True)
    before = summary_of(state, rules)
    now = summary_of(after, rules)
    assert now is not None
    if before is None or _content(before) != _content(now):
        summaries.append(now)
    if current is None or current.to_lead_id != target:
        summaries += _forwarded(state.linked, target)
    conflict = current is not None and current.to_lead_id != target
    return Decision(after, changes, False, summaries=tuple(summaries), conflict=conflict)


def _conflict_reason(lead_id: str, refused: Link, kept: Link) -> str:
    return (
        f"identity_conflict: {lead_id} is linked to {kept.to_lead_id} by event {kept.event_id}, "
        f"which comes first; this link to {refused.to_lead_id} (event {refused.event_id}) is not "
        "applied (an identity belongs to one lead: the earliest link wins)"
    )


def _withdrawal(from_id: str, to_id: str, revision: int) -> Summary:
    return Summary(from_id, to_id, revision, (), None, True)


def _forwarded(
    linked: tuple[Summary, ...], to_id: str, withdrawn: bool = False
) -> tuple[Summary, ...]:
    """The summaries of the identities linked to an identity, passed on to the lead that
    identity is linked to (a chain: a visitor of a CRM duplicate counts for the survivor), or
    withdrawn from it at the same revision."""
    return tuple(
        _withdrawal(s.from_id, to_id, s.revision) if withdrawn else s._replace(to_id=to_id)
        for s in linked
        if s.from_id != to_id
    )


def summary_of(state: LeadState, rules: Rules) -> Summary | None:
    """What a linked identity tells its known lead of itself now; None if it is not linked."""
    current = state.link
    if current is None:
        return None
    return Summary(
        state.lead_id, current.to_lead_id, state.accepted, steps_of(state, rules), state.attribution
    )


def steps_of(state: LeadState, rules: Rules) -> tuple[Step, ...]:
    """An identity's engagement after its snapshot and after each of its engagement events in
    detail: the latest `state.linked_steps` of them (the oldest kept holds all before it)."""
    steps = []
    base = state.base
    if base.buckets and state.horizon is not None:
        # The snapshot's own step triggers nothing (its events' moments are gone with it).
        steps.append(Step(*state.horizon, "", None, base.engagement_at, base.buckets, base.intent))
    for entry, fold in trace(state.tail, state.attribution, rules, base):
        if entry.rank == Rank.ENGAGEMENT and entry.type != LINK_ENTRY:
            steps.append(Step(*entry, fold.engagement_at, fold.buckets, fold.intent))
    return tuple(steps[-rules.state.linked_steps :])


def _content(summary: Summary) -> Summary:
    return summary._replace(revision=0)


def summary_changed(
    before: LeadState | None, after: LeadState, rules: Rules
) -> tuple[Summary, ...]:
    """The summary a linked identity sends again after one of its events, if it changed."""
    now = summary_of(after, rules)
    if now is None:
        return ()
    previous = summary_of(before, rules) if before is not None else None
    if previous is not None and _content(previous) == _content(now):
        return ()
    return (now,)


def absorb(state: LeadState | None, summary: Summary, rules: Rules) -> Decision:
    """Apply an identity's summary to the known lead it names."""
    if state is None:
        state = new_lead(summary.to_id)
    linked = state.linked
    index = next((i for i, s in enumerate(linked) if s.from_id == summary.from_id), None)
    if index is not None and (
        linked[index].revision > summary.revision
        or (linked[index].revision == summary.revision and not summary.withdrawn)
    ):
        # A withdrawal supersedes its own revision: a chain's middle identity withdraws what
        # it had passed on at the revision it passed on.
        return Decision(state, (), True)
    if summary.withdrawn:
        if index is None:
            return Decision(state, (), True)
        kept = linked[:index] + linked[index + 1 :]
    elif index is None:
        if len(linked) >= rules.state.linked_ids:
            return Decision(state, (), False, refused=too_many_links(state, summary.from_id))
        kept = tuple(sorted((*linked, summary)))
    else:
        kept = (*linked[:index], summary, *linked[index + 1 :])
    identity = summary.from_id
    tail = tuple(e for e in state.tail if not (e.type == LINK_ENTRY and e.detail == identity))
    horizon = horizon_of(state, rules)
    for step in () if summary.withdrawn else summary.steps:
        # A step before the lead's horizon still counts, from the lead's next event on: only
        # the moment it would be checked at is gone with the snapshot.
        if horizon is None or step[:3] > horizon:
            tail = insert_sorted(tail, Entry(*step[:3], LINK_ENTRY, identity))
    accepted = state.accepted + 1
    fold = refold(state.base, tail, state.attribution, rules, kept)
    after = state._replace(accepted=accepted, tail=tail, fold=fold, linked=kept)
    changes = () if after.silent else publish_rewrite(state, after, rules)
    passed_on = _forwarded((summary,), state.link.to_lead_id) if state.link is not None else ()
    compacted: tuple[Entry, ...] = ()
    if past_bound(after, rules) >= COMPACT_AT_ONCE:
        compacted, after = compact(after, rules)
    return Decision(after, changes, False, compacted, summaries=passed_on)
