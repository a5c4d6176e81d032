"""The lead side's one entry point: what one event does to its lead and tells its account.

The worker's `qualify` agent and `leadflow replay` call `qualify`; neither decides the order of
the core's steps, so they cannot drift apart.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.events import Event
from streams.core.accounts import Signal, signals_of
from streams.core.lifecycle import Entry, LeadStageChange, LeadState, decide, horizon_of
from streams.core.revisions import instant_of
from streams.core.rules import Rules


class Qualified(NamedTuple):
    """The lead's next state, its stage changes and its account signals, in publishing order."""

    state: LeadState
    changes: tuple[LeadStageChange, ...]
    signals: tuple[Signal, ...]
    duplicate: bool
    """The lead had accepted this event_id already: nothing changed."""
    too_late: str | None = None
    """Why the event was not applied, when it sorts before the lead's horizon."""
    compacted: tuple[Entry, ...] = ()
    """The entries folded into the lead's snapshot by this event (for `explain`)."""


def qualify(state: LeadState | None, event: Event, rules: Rules, accounts: bool) -> Qualified:
    """Apply `event` to its lead's `state`; with `accounts`, also the signals for its account(s)
    (the account view reads them). Pure and deterministic."""
    decision = decide(state, event, rules)
    if decision.too_late:
        assert state is not None
        return Qualified(state, (), (), False, too_late_reason(state, event, rules))
    after = decision.state
    signals = signals_of(state, event, decision, rules) if accounts else ()
    if signals:
        told = signals[-1]
        after = after._replace(told=(told.engagement_score, told.occurred_at))
    return Qualified(after, decision.changes, signals, decision.duplicate, None, decision.compacted)


def too_late_reason(state: LeadState, event: Event, rules: Rules) -> str:
    """Why an event that sorts before its lead's horizon was not applied, in one line."""
    key = horizon_of(state, rules)
    assert key is not None
    bound = rules.state
    horizon = instant_of(key[0]).isoformat().replace("+00:00", "Z")
    return (
        f"too late: lead {state.lead_id} keeps its events of the last "
        f"{bound.allowed_lateness_days:g} days (at most {bound.lead_events}) and folded the "
        f"older ones into a snapshot, up to {horizon}; this event sorts before that (a "
        "duplicate of an event in the snapshot, or later than the bound)"
    )
