"""Identity stitching: a visitor's anonymous history counts for the known lead it turns out to
be. Pure and deterministic, no I/O.

Three steps, each run where its input is partitioned:
- the known lead's own events (`lifecycle.decide`): one seen under another `anonymous_id`,
  `identity_linked` or `leads_merged` makes the lead ask that identity to count for it (a
  `LinkRequest`, at most `state.linked_ids` identities), and keeps its events since the first
  link in detail, so that the identity's summary, coming later through another topic, finds
  them as they were.
- `link(state, request, rules)`, on the identity being linked (keyed by the anonymous id, or by
  the duplicate a CRM merges): the earliest link by (event time, rank, event_id) wins; a link
  to another lead that is not the earliest is refused (a conflict, dead-lettered). Once
  linked, the identity publishes no stage changes of its own (what it had published in detail
  is retracted) and tells its known lead a `Summary` of itself.
- `summary_changed(before, after)`: after any event of a linked identity, the summary to send
  again, if what it says changed (a revision higher than the last).
- `absorb(state, summary, rules)`, on the known lead (keyed by its id): keeps the latest
  summary of each identity, at most `state.linked_ids`, and refolds its recent past with
  them: their engagement counts with the lead's own (caps on the sum), their first touch if
  it is earlier, each from its summary's `at` on; a passive MQL they make cites the summary's
  cause (the link, or the visitor's last event when it came after the link).

The summary is what keeps this bounded: the identity's weeks-old events are never refolded
into the lead (they would be too late there); their decayed buckets are read beside the
lead's own. The outcome depends only on the set of events of both ids, never on the order in
which events, links and summaries arrive, nor on duplicates of any of them.
"""

from __future__ import annotations

from typing import Final

from streams.core.lifecycle import (
    LINK_ENTRY,
    Decision,
    Entry,
    LeadState,
    Link,
    LinkRequest,
    Rank,
    Summary,
    _insert_sorted,
    _publish_rewrite,
    compact,
    horizon_of,
    new_lead,
    past_bound,
    refold,
    too_many_links,
    withdrawn,
)
from streams.core.rules import Rules

CONFLICT: Final = "identity_conflict"
_COMPACT_AT_ONCE: Final = 16


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
        # had the identity is told it no longer has it.
        summaries.append(_withdrawal(state.lead_id, current.to_lead_id, accepted))
    before = summary_of(state)
    now = summary_of(after)
    assert now is not None
    if before is None or _content(before) != _content(now):
        summaries.append(now)
    conflict = current is not None and current.to_lead_id != target
    return Decision(after, changes, False, summaries=tuple(summaries), conflict=conflict)


def _conflict_reason(lead_id: str, refused: Link, kept: Link) -> str:
    return (
        f"identity_conflict: {lead_id} is linked to {kept.to_lead_id} by event {kept.event_id}, "
        f"which comes first; this link to {refused.to_lead_id} (event {refused.event_id}) is not "
        "applied (an identity belongs to one lead: the earliest link wins)"
    )


def _withdrawal(from_id: str, to_id: str, revision: int) -> Summary:
    return Summary(from_id, to_id, revision, 0, "", 0, {}, None, {}, True)


def summary_of(state: LeadState) -> Summary | None:
    """What a linked identity tells its known lead of itself now; None if it is not linked."""
    current = state.link
    if current is None:
        return None
    fold = state.fold
    anchor = fold.engagement_at if fold.buckets else 0
    at, cause = current.at, current.event_id
    if anchor > at:
        at = anchor
        cause = next(
            (
                e.event_id
                for e in reversed(state.tail)
                if e.at == anchor and e.rank == Rank.ENGAGEMENT
            ),
            current.event_id,
        )
    return Summary(
        state.lead_id,
        current.to_lead_id,
        state.accepted,
        at,
        cause,
        anchor,
        dict(fold.buckets),
        state.attribution,
        intent=fold.intent,
    )


def _content(summary: Summary) -> Summary:
    return summary._replace(revision=0)


def summary_changed(before: LeadState | None, after: LeadState) -> tuple[Summary, ...]:
    """The summary a linked identity sends again after one of its events, if it changed."""
    now = summary_of(after)
    if now is None:
        return ()
    previous = summary_of(before) if before is not None else None
    if previous is not None and _content(previous) == _content(now):
        return ()
    return (now,)


def absorb(state: LeadState | None, summary: Summary, rules: Rules) -> Decision:
    """Apply an identity's summary to the known lead it names."""
    if state is None:
        state = new_lead(summary.to_id)
    linked = state.linked
    index = next((i for i, s in enumerate(linked) if s.from_id == summary.from_id), None)
    if index is not None and linked[index].revision >= summary.revision:
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
    tail = tuple(
        e for e in state.tail if not (e.type == LINK_ENTRY and e.detail == summary.from_id)
    )
    if not summary.withdrawn:
        entry = Entry(summary.at, int(Rank.ENGAGEMENT), summary.cause, LINK_ENTRY, summary.from_id)
        horizon = horizon_of(state, rules)
        # Before the lead's horizon the summary still counts, from the lead's next event on:
        # only the moment it would be checked at is gone with the snapshot.
        if horizon is None or entry[:3] > horizon:
            tail = _insert_sorted(tail, entry)
    accepted = state.accepted + 1
    fold = refold(state.base, tail, state.attribution, rules, kept)
    after = state._replace(accepted=accepted, tail=tail, fold=fold, linked=kept)
    changes = () if after.silent else _publish_rewrite(state, after, rules)
    if past_bound(after, rules) >= _COMPACT_AT_ONCE:
        compacted, after = compact(after, rules)
        return Decision(after, changes, False, False, compacted)
    return Decision(after, changes, False)
