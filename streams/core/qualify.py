"""The lead side's one entry point: what one event does to its lead and tells its account.

The worker's `qualify` agent and `leadflow replay` call `qualify`; neither decides the order of
the core's steps, so they cannot drift apart.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.events import Event
from streams.core.accounts import Signal, signals_of
from streams.core.lifecycle import LeadStageChange, LeadState, decide
from streams.core.rules import Rules


class Qualified(NamedTuple):
    """The lead's next state, its stage changes and its account signals, in publishing order."""

    state: LeadState
    changes: tuple[LeadStageChange, ...]
    signals: tuple[Signal, ...]
    duplicate: bool
    """The lead had accepted this event_id already: nothing changed."""


def qualify(state: LeadState | None, event: Event, rules: Rules, accounts: bool) -> Qualified:
    """Apply `event` to its lead's `state`; with `accounts`, also the signals for its account(s)
    (the account view reads them). Pure and deterministic."""
    decision = decide(state, event, rules)
    signals = signals_of(state, event, decision, rules) if accounts else ()
    return Qualified(decision.state, decision.changes, signals, decision.duplicate)
