"""The SLA clock of a lead's handoff to sales: from its MQL to sales' first touch. Pure and
deterministic, no I/O; the steps are `schemas.handoff.HandoffEvent`s (docs/handoff.md).

A lead keeps one open handoff, that of its latest MQL, and a few facts the next one may need:
the CRM's owner and its most recent touches. Four inputs move it, in the lead's log order:
- the stage changes the lead publishes (a new MQL opens a handoff, its retraction withdraws it);
- sales touches (`sales_attempted`, `sales_contacted`): the first attempt and the first contact;
- the CRM's `owner_assigned`: the owner the handoff follows from then on;
- the clock (`HandoffClock` records the worker puts in the log when a deadline comes): due soon,
  then breached, while nothing touched the lead.
Everything the clock says is in the log, so a replay of the log gives the same steps. A
handoff opened by history (an import) never warns nor breaches: history never alerts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from streams.core.business_hours import business_seconds, due_at
from streams.core.handoff import CrmOwner, HandoffState, OpenHandoff
from streams.core.handoff_rules import HandoffRules
from streams.core.lead import LeadStageChange
from streams.core.revisions import derived_id, instant_of, micros_of
from streams.core.rules import Rules

TOUCHES_KEPT: Final = 8
"""Touches a lead remembers for an MQL that its log brings after them (a late MQL); the most
recent are kept, so the work and the state per lead stay bounded."""
TOUCH_TYPES: Final = {"sales_attempted": "attempt", "sales_contacted": "contact"}
_MINUTE: Final = 60_000_000


class HandoffStep(NamedTuple):
    """One handoff event to publish: `schemas.handoff.HandoffEvent`'s fields and order (times
    in microseconds since the epoch)."""

    handoff_id: str
    lead_id: str
    kind: str
    at: int
    mql_change_id: str
    causation_event_id: str | None
    owner: str | None
    queue: str | None
    assigned_by: str | None
    team: str | None
    mql_kind: str
    grade: str | None
    source: str | None
    campaign: str | None
    mql_at: int
    due_at: int | None
    target_minutes: float | None
    touch: str | None
    response_business_minutes: float | None
    response_wall_minutes: float | None
    within_target: bool | None
    rules_version: str


Stepped = tuple[HandoffState, tuple[HandoffStep, ...]]


def after_changes(
    state: HandoffState,
    changes: Iterable[LeadStageChange],
    rules: Rules,
    live: bool,
) -> Stepped:
    """Open a handoff for each new MQL the lead published, withdraw the one whose MQL was
    retracted."""
    steps: list[HandoffStep] = []
    for change in changes:
        current = state.current
        if change.retracted:
            if current is not None and change.change_id == current.change_id:
                steps.append(_step(change.lead_id, current, "withdrawn", change, rules))
                state = state._replace(current=None)
            continue
        if change.to_stage != "mql" or (
            current is not None and current.change_id == change.change_id
        ):
            continue
        opened = _opened(change, state.crm_owner, rules, live)
        steps.append(_assigned(change.lead_id, opened, change.causation_event_id, change, rules))
        # What the log brought before this MQL but happened after it (the MQL came late): the
        # CRM's assignment, then the touches.
        crm = state.crm_owner
        later = crm is not None and crm.at > opened.mql_at
        if later and crm and (opened.owner, opened.team) != (crm.owner, crm.team):
            opened = _with_owner(opened, crm.owner, "crm", crm.team, rules)
            steps.append(_assigned(change.lead_id, opened, crm.event_id, None, rules, crm.at))
        state = state._replace(current=opened)
        for at, touch, event_id in state.touches:
            if at >= opened.mql_at:
                state, more = on_touch(state, change.lead_id, at, touch, event_id, rules)
                steps.extend(more)
    return state, tuple(steps)


def on_touch(
    state: HandoffState,
    lead_id: str,
    at: int,
    touch: str,
    event_id: str,
    rules: Rules,
) -> Stepped:
    """A sales touch ("attempt" or "contact") at `at`: the first of each kind after the MQL
    is measured; a contact is an attempt too."""
    touches = state.touches
    if (at, touch, event_id) not in touches:
        touches = tuple(sorted((*touches, (at, touch, event_id))))[-TOUCHES_KEPT:]
        state = state._replace(touches=touches)
    current = state.current
    if current is None or at < current.mql_at:
        return state, ()
    steps: list[HandoffStep] = []
    due = current.due_at
    if current.attempted_at is None and current.live and not current.breached and due and due < at:
        # The clock's record of the deadline may still be on its way: the breach came first.
        current = current._replace(breached=True, warned=True)
        steps.append(_step(lead_id, current, "breached", None, rules, at=due))
    if current.attempted_at is None:
        current = current._replace(attempted_at=at)
        steps.append(_touched(lead_id, current, "attempt", at, event_id, rules))
    if touch == "contact" and current.contacted_at is None:
        current = current._replace(contacted_at=at)
        steps.append(_touched(lead_id, current, "contact", at, event_id, rules))
    return state._replace(current=current), tuple(steps)


def on_owner(
    state: HandoffState,
    lead_id: str,
    assigned: CrmOwner,
    rules: Rules,
) -> Stepped:
    """The CRM assigned the lead: the open handoff (and the next ones) follow its owner."""
    latest = state.crm_owner
    if latest is not None and (latest.at, latest.event_id) >= (assigned.at, assigned.event_id):
        return state, ()
    state = state._replace(crm_owner=assigned)
    current = state.current
    if current is None or (current.owner, current.team) == (assigned.owner, assigned.team):
        return state, ()
    current = _with_owner(current, assigned.owner, "crm", assigned.team, rules)
    step = _assigned(lead_id, current, assigned.event_id, None, rules, at=assigned.at)
    return state._replace(current=current), (step,)


def on_clock(state: HandoffState, lead_id: str, at: int, rules: Rules) -> Stepped:
    """The clock reached `at`: warn of a deadline near, or say it passed, while nothing
    touched the lead."""
    current = state.current
    if current is None or not current.live or current.attempted_at is not None:
        return state, ()
    steps: list[HandoffStep] = []
    if not current.warned and current.warn_at is not None and current.warn_at <= at:
        current = current._replace(warned=True)
        steps.append(_step(lead_id, current, "due_soon", None, rules, at=current.warn_at))
    if not current.breached and current.due_at is not None and current.due_at <= at:
        current = current._replace(breached=True, warned=True)
        steps.append(_step(lead_id, current, "breached", None, rules, at=current.due_at))
    return state._replace(current=current), tuple(steps)


def next_deadline(state: HandoffState | None) -> int | None:
    """When the clock must next look at this lead (microseconds); None: it need not."""
    current = state.current if state is not None else None
    if current is None or not current.live or current.attempted_at is not None:
        return None
    if not current.warned and current.warn_at is not None:
        return current.warn_at
    return None if current.breached else current.due_at


def _opened(
    change: LeadStageChange, crm_owner: CrmOwner | None, rules: Rules, live: bool
) -> OpenHandoff:
    opened = OpenHandoff(
        change_id=change.change_id,
        mql_at=change.occurred_at,
        mql_kind=change.mql_kind or "active",
        grade=change.grade,
        source=change.source,
        campaign=change.campaign,
        queue=change.queue,
        owner=None,
        assigned_by="rules",
        team=None,
        target_seconds=None,
        due_at=None,
        warn_at=None,
        live=live,
    )
    if crm_owner is not None and crm_owner.at <= change.occurred_at:
        return _with_owner(opened, crm_owner.owner, "crm", crm_owner.team, rules)
    return _with_owner(opened, change.owner, "rules", None, rules)


def _with_owner(
    handoff: OpenHandoff, owner: str | None, by: str, team: str | None, rules: Rules
) -> OpenHandoff:
    """The handoff owned by `owner`: its deadline in their working time when the rules know
    them, otherwise the deadline it had (an owner only the CRM knows keeps the rules' clock)."""
    handoff = handoff._replace(owner=owner, assigned_by=by, team=team)
    known = _handoff(rules).owners.get(owner) if owner is not None else None
    if known is None:
        return handoff
    target = _handoff(rules).target_seconds(handoff.mql_kind, handoff.grade)
    start = instant_of(handoff.mql_at)
    due = due_at(known.calendar, start, target)
    warn = due_at(known.calendar, start, round(target * _handoff(rules).due_soon_share))
    return handoff._replace(
        target_seconds=target,
        due_at=None if due is None else micros_of(due),
        warn_at=None if warn is None else micros_of(warn),
    )


def _assigned(
    lead_id: str,
    handoff: OpenHandoff,
    event_id: str,
    change: LeadStageChange | None,
    rules: Rules,
    at: int | None = None,
) -> HandoffStep:
    step = _step(lead_id, handoff, "assigned", change, rules, at=at, event_id=event_id)
    return step._replace(
        handoff_id=derived_id(handoff.change_id, "assigned", event_id),
        assigned_by=handoff.assigned_by,
    )


def _touched(
    lead_id: str, handoff: OpenHandoff, touch: str, at: int, event_id: str, rules: Rules
) -> HandoffStep:
    step = _step(lead_id, handoff, "touched", None, rules, at=at, event_id=event_id)
    wall = (at - handoff.mql_at) / _MINUTE
    business = wall
    owner = _handoff(rules).owners.get(handoff.owner) if handoff.owner is not None else None
    if owner is not None:
        seconds = business_seconds(owner.calendar, instant_of(handoff.mql_at), instant_of(at))
        business = seconds / 60
    return step._replace(
        handoff_id=derived_id(handoff.change_id, "touched", touch),
        touch=touch,
        response_business_minutes=round(business, 3),
        response_wall_minutes=round(wall, 3),
        within_target=None if handoff.due_at is None else at <= handoff.due_at,
    )


def _step(
    lead_id: str,
    handoff: OpenHandoff,
    kind: str,
    change: LeadStageChange | None,
    rules: Rules,
    at: int | None = None,
    event_id: str | None = None,
) -> HandoffStep:
    if change is not None:
        at = change.occurred_at if at is None else at
        event_id = change.causation_event_id if event_id is None else event_id
    assert at is not None
    target = handoff.target_seconds
    return HandoffStep(
        handoff_id=derived_id(handoff.change_id, kind),
        lead_id=lead_id,
        kind=kind,
        at=at,
        mql_change_id=handoff.change_id,
        causation_event_id=event_id,
        owner=handoff.owner,
        queue=handoff.queue,
        assigned_by=None,
        team=handoff.team,
        mql_kind=handoff.mql_kind,
        grade=handoff.grade,
        source=handoff.source,
        campaign=handoff.campaign,
        mql_at=handoff.mql_at,
        due_at=handoff.due_at,
        target_minutes=None if target is None else target / 60,
        touch=None,
        response_business_minutes=None,
        response_wall_minutes=None,
        within_target=None,
        rules_version=rules_version_of(change, rules),
    )


def rules_version_of(change: LeadStageChange | None, rules: Rules) -> str:
    """The rules version a step names: that of the stage change behind it, or the rules'."""
    return change.rules_version if change is not None else rules.rules_version


def _handoff(rules: Rules) -> HandoffRules:
    assert rules.handoff is not None, "a handoff needs the rules' [handoff]"
    return rules.handoff
