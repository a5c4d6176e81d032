"""The lead side's one entry point: what one event does to its lead and tells its account.

The worker's `qualify` agent and `leadflow replay` call `qualify`; neither decides the order of
the core's calls, so they cannot drift apart.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.events import HANDOFF_TYPES, Event
from streams.core.account import Signal
from streams.core.handoff import NO_HANDOFF, CrmOwner
from streams.core.identity import absorb, link, summary_changed
from streams.core.lead import Entry, LeadStageChange, LeadState, LinkRequest, Summary, new_lead
from streams.core.lifecycle import decide
from streams.core.revisions import micros_of
from streams.core.rules import Rules
from streams.core.signals import signals_of, summary_signals
from streams.core.sla import (
    TOUCH_TYPES,
    HandoffStep,
    after_changes,
    on_clock,
    on_owner,
    on_touch,
)


class Qualified(NamedTuple):
    """The lead's next state, its stage changes and its account signals, in publishing order."""

    state: LeadState
    changes: tuple[LeadStageChange, ...]
    signals: tuple[Signal, ...]
    duplicate: bool
    """The lead had accepted this event_id already: nothing changed."""
    compacted: tuple[Entry, ...] = ()
    """The entries folded into the lead's snapshot by this event (for `explain`)."""
    summaries: tuple[Summary, ...] = ()
    """What this identity tells the known lead(s) it is linked to: to be routed by `to_id`."""
    requests: tuple[LinkRequest, ...] = ()
    """Identities the lead asks to count for it: to be routed by `identity`."""
    refused: tuple[str, str] | None = None
    """(dead-letter kind, reason) when a link or a summary is not applied."""
    conflict: bool = False
    """The link disagreed with another of its identity (counted; refused unless it won)."""
    handoffs: tuple[HandoffStep, ...] = ()
    """The handoff events of the lead's MQL (`streams.core.sla`), after its stage changes."""


def qualify(
    state: LeadState | None, event: Event, rules: Rules, accounts: bool, history: bool = False
) -> Qualified:
    """Apply `event` to its lead's `state`; with `accounts`, also the signals for its account(s)
    (the account view reads them). A `history` event (an import) opens handoffs that never
    warn nor breach. Pure and deterministic."""
    if event.type in HANDOFF_TYPES:
        return _handoff_only(state, event, rules)
    decision = decide(state, event, rules)
    if decision.refused is not None:
        assert state is not None
        return Qualified(state, (), (), False, refused=decision.refused)
    after = decision.state
    if decision.duplicate:
        return Qualified(after, (), (), True)
    signals = signals_of(state, event, decision, rules) if accounts and not after.silent else ()
    if signals:
        told = signals[-1]
        after = after._replace(told=(told.engagement_score, told.occurred_at))
    summaries = summary_changed(state, after, rules) if after.link is not None else ()
    handoffs: tuple[HandoffStep, ...] = ()
    if rules.handoff is not None and not after.silent:
        after, handoffs = _handoff_steps(after, decision.changes, event, rules, not history)
    return Qualified(
        after,
        decision.changes,
        signals,
        False,
        decision.compacted,
        summaries=summaries,
        requests=decision.requests,
        handoffs=handoffs,
    )


def qualify_clock(state: LeadState | None, lead_id: str, at: int, rules: Rules) -> Qualified:
    """The clock reached `at` (microseconds) for this lead: its handoff's warning or breach, if
    one is due and nothing touched the lead. Pure and deterministic."""
    if state is None or state.handoff is None or rules.handoff is None:
        return Qualified(state or new_lead(lead_id), (), (), True)
    handoff, steps = on_clock(state.handoff, lead_id, at, rules)
    if not steps:
        return Qualified(state, (), (), True)
    return Qualified(state._replace(handoff=handoff), (), (), False, handoffs=steps)


def _handoff_steps(
    state: LeadState,
    changes: tuple[LeadStageChange, ...],
    event: Event,
    rules: Rules,
    live: bool,
) -> tuple[LeadState, tuple[HandoffStep, ...]]:
    before = state.handoff or NO_HANDOFF
    handoff, steps = after_changes(before, changes, rules, live) if changes else (before, ())
    touch = TOUCH_TYPES.get(event.type)
    if touch is not None:
        at = micros_of(event.occurred_at)
        handoff, more = on_touch(handoff, state.lead_id, at, touch, event.event_id, rules)
        steps += more
    if handoff is before:
        return state, ()
    return state._replace(handoff=handoff), steps


def _handoff_only(state: LeadState | None, event: Event, rules: Rules) -> Qualified:
    """A sales attempt or the CRM's owner: it moves only the lead's handoff. Applying one twice
    changes nothing more (the first touch and the latest owner are kept, whatever the order)."""
    state = state or new_lead(event.lead_id)
    if rules.handoff is None or state.silent:
        return Qualified(state, (), (), True)
    before = state.handoff or NO_HANDOFF
    at = micros_of(event.occurred_at)
    if event.type == "owner_assigned":
        properties = event.properties
        owner = CrmOwner(
            at,
            event.event_id,
            properties.owner_id,
            getattr(properties, "team"),  # noqa: B009
        )
        handoff, steps = on_owner(before, state.lead_id, owner, rules)
    else:
        handoff, steps = on_touch(before, state.lead_id, at, "attempt", event.event_id, rules)
    if handoff == before:
        return Qualified(state, (), (), True)
    return Qualified(state._replace(handoff=handoff), (), (), False, handoffs=steps)


def qualify_request(state: LeadState | None, request: LinkRequest, rules: Rules) -> Qualified:
    """Apply a known lead's link request to the identity it names. Pure and deterministic."""
    decision = link(state, request, rules)
    return Qualified(
        decision.state,
        decision.changes,
        (),
        decision.duplicate,
        summaries=decision.summaries,
        refused=decision.refused,
        conflict=decision.conflict,
    )


def qualify_summary(
    state: LeadState | None, summary: Summary, rules: Rules, accounts: bool = False
) -> Qualified:
    """Apply a linked identity's summary to the known lead it names; with `accounts`, also the
    signals that tell its account(s) the engagement the summary gives the lead at once. Pure
    and deterministic."""
    decision = absorb(state, summary, rules)
    signals = summary_signals(state, summary, decision, rules) if accounts else ()
    after = decision.state
    if signals:
        told = signals[-1]
        after = after._replace(told=(told.engagement_score, told.occurred_at))
    return Qualified(
        after,
        decision.changes,
        signals,
        decision.duplicate,
        compacted=decision.compacted,
        summaries=decision.summaries,
        refused=decision.refused,
    )
