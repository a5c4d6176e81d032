"""The lead side's one entry point: what one event does to its lead and tells its account.

The worker's `qualify` agent and `leadflow replay` call `qualify`; neither decides the order of
the core's calls, so they cannot drift apart.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.events import Event
from streams.core.account import Signal
from streams.core.identity import absorb, link, summary_changed
from streams.core.lead import Entry, LeadStageChange, LeadState, LinkRequest, Summary
from streams.core.lifecycle import decide
from streams.core.rules import Rules
from streams.core.signals import signals_of, summary_signals


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


def qualify(state: LeadState | None, event: Event, rules: Rules, accounts: bool) -> Qualified:
    """Apply `event` to its lead's `state`; with `accounts`, also the signals for its account(s)
    (the account view reads them). Pure and deterministic."""
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
    return Qualified(
        after,
        decision.changes,
        signals,
        False,
        decision.compacted,
        summaries=summaries,
        requests=decision.requests,
    )


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
