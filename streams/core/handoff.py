"""The handoff of an MQL to sales: which queue takes it, who owns it, and when the first sales
touch is due. Pure and deterministic, no I/O (the rules: `streams.core.handoff_rules`).

The queue is chosen when the lead becomes an MQL, from what the lead is then (country, company
size, first-touch source, grade); the owner from the queue and the lead's id alone (weighted
rendezvous hashing), so a replay, a late event or another worker gives the same owner. What a
lead keeps of its handoff (`HandoffState`) is here too; `streams.core.sla` moves it on.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from streams.core.business_hours import due_at
from streams.core.handoff_rules import HandoffRules
from streams.core.revisions import instant_of, micros_of
from streams.core.routing import pick_owner


def queue_of(
    profile: dict[str, Any], source: str | None, grade: str | None, rules: HandoffRules
) -> str | None:
    """The first queue that takes an MQL with this profile, source and grade; None if none."""
    for queue in rules.queues:
        if queue.takes(profile, source, grade):
            return queue.id
    return None


def owner_of(lead_id: str, queue_id: str | None, rules: HandoffRules) -> str | None:
    """The owner of a lead in a queue: the same for the same lead and queue, everywhere."""
    if queue_id is None:
        return None
    queue = next((q for q in rules.queues if q.id == queue_id), None)
    if queue is None:
        return None
    return pick_owner(lead_id, rules.candidates(queue))


def response_due(
    owner_id: str | None, mql_kind: str, grade: str | None, at: int, rules: HandoffRules
) -> int | None:
    """When the first sales touch of an MQL made at `at` (microseconds) is due, counted in
    its owner's working time; None without an owner."""
    if owner_id is None:
        return None
    owner = rules.owners[owner_id]
    due = due_at(owner.calendar, instant_of(at), rules.target_seconds(mql_kind, grade))
    return None if due is None else micros_of(due)


class OpenHandoff(NamedTuple):
    """The handoff of the lead's latest MQL."""

    change_id: str
    mql_at: int
    mql_kind: str
    grade: str | None
    source: str | None
    campaign: str | None
    queue: str | None
    owner: str | None
    assigned_by: str
    team: str | None
    target_seconds: int | None
    due_at: int | None
    warn_at: int | None
    attempted_at: int | None = None
    contacted_at: int | None = None
    warned: bool = False
    breached: bool = False
    live: bool = True
    """Opened by a live message: only a live handoff warns and breaches."""


class CrmOwner(NamedTuple):
    """The CRM's latest assignment of the lead (the latest by event time, then event id)."""

    at: int
    event_id: str
    owner: str
    team: str | None


class HandoffState(NamedTuple):
    """What a lead keeps for its handoffs."""

    current: OpenHandoff | None = None
    touches: tuple[tuple[int, str, str], ...] = ()
    """The most recent touches (time, "attempt" or "contact", event id), sorted."""
    crm_owner: CrmOwner | None = None


NO_HANDOFF: Final = HandoffState()
