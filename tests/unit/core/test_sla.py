"""The SLA clock of an MQL's handoff (streams/core/sla.py), through the core's entry points."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.common.handoff_codec import encode_handoff
from streams.common.lead_state_codec import decode_state, encode_state, stored_deadline
from streams.core.handoff import response_due
from streams.core.lead import LeadState
from streams.core.qualify import qualify, qualify_clock
from streams.core.revisions import micros_of
from streams.core.rules import load_rules
from streams.core.sla import HandoffStep, next_deadline
from tests.support.factories import BUYER, STUDENT, T0, as_event, days, event

RULES = load_rules()
MINUTE = 60_000_000


class Lead:
    """One lead's log applied through `qualify` (and the clock through `qualify_clock`)."""

    def __init__(self, history: bool = False) -> None:
        self.state: LeadState | None = None
        self.history = history
        self.steps: list[HandoffStep] = []
        self.changes: list[Any] = []

    def apply(self, *documents: dict[str, Any]) -> list[HandoffStep]:
        new: list[HandoffStep] = []
        for document in documents:
            done = qualify(self.state, as_event(document), RULES, False, self.history)
            self.state = done.state
            self.changes.extend(done.changes)
            new.extend(done.handoffs)
        self.steps.extend(new)
        return new

    def clock(self, at: int) -> list[HandoffStep]:
        done = qualify_clock(self.state, "lead-1", at, RULES)
        self.state = done.state
        self.steps.extend(done.handoffs)
        return list(done.handoffs)

    @property
    def deadline(self) -> int | None:
        assert self.state is not None
        return next_deadline(self.state.handoff)


def became_mql(lead: Lead) -> list[HandoffStep]:
    return lead.apply(
        event("profile_updated", timedelta(0), **BUYER),
        event("demo_request", timedelta(minutes=5), event_id="demo"),
    )


def kinds(steps: list[HandoffStep]) -> list[str]:
    return [step.kind if step.touch is None else f"{step.kind}:{step.touch}" for step in steps]


def test_an_mql_is_assigned_to_its_owner_with_a_deadline_in_their_working_time() -> None:
    lead = Lead()
    (assigned,) = became_mql(lead)
    (mql,) = [c for c in lead.changes if c.to_stage == "mql"]
    assert assigned.kind == "assigned" and assigned.assigned_by == "rules"
    assert (assigned.owner, assigned.queue) == (mql.owner, mql.queue) == ("carl", "americas")
    assert assigned.mql_change_id == mql.change_id and assigned.causation_event_id == "demo"
    assert assigned.mql_at == mql.occurred_at == micros_of(T0 + timedelta(minutes=5))
    assert assigned.due_at == response_due(
        "carl", "active", mql.grade, mql.occurred_at, RULES.handoff
    )  # type: ignore[arg-type]
    # Monday 09:05 UTC is 06:05 in Sao Paulo: carl starts at 08:00 (11:00 UTC); 30 minutes.
    assert mql.grade == "A2" and assigned.target_minutes == 30
    assert assigned.due_at == micros_of(T0 + timedelta(hours=2, minutes=30))
    assert lead.deadline is not None and lead.deadline < assigned.due_at  # due soon first


def test_the_first_attempt_and_the_first_contact_are_measured_once_each() -> None:
    lead = Lead()
    became_mql(lead)
    attempt = lead.apply(event("sales_attempted", timedelta(hours=2, minutes=5), event_id="call"))
    assert kinds(attempt) == ["touched:attempt"]
    (touched,) = attempt
    assert touched.response_wall_minutes == 120.0
    assert touched.response_business_minutes == 5.0  # carl's day began at 11:00 UTC
    assert touched.within_target is True and touched.causation_event_id == "call"
    assert lead.deadline is None  # touched: the clock stops
    assert lead.apply(event("sales_attempted", timedelta(hours=3))) == []
    contact = lead.apply(event("sales_contacted", timedelta(hours=4), event_id="talk"))
    assert kinds(contact) == ["touched:contact"]
    assert contact[0].response_wall_minutes == 235.0
    assert lead.apply(event("sales_contacted", timedelta(hours=5))) == []


def test_a_contact_with_no_attempt_before_it_is_the_first_attempt_too() -> None:
    lead = Lead()
    became_mql(lead)
    touched = lead.apply(event("sales_contacted", timedelta(hours=2, minutes=10)))
    assert kinds(touched) == ["touched:attempt", "touched:contact"]
    assert len({step.handoff_id for step in touched}) == 2


def test_the_clock_warns_then_breaches_once_while_nothing_touches_the_lead() -> None:
    lead = Lead()
    (assigned,) = became_mql(lead)
    assert assigned.due_at is not None
    warn = lead.deadline
    assert warn is not None
    assert lead.clock(warn - 1) == []
    (due_soon,) = lead.clock(warn)
    assert (
        due_soon.kind == "due_soon" and due_soon.at == warn and due_soon.causation_event_id is None
    )
    assert lead.deadline == assigned.due_at
    assert lead.clock(warn) == []  # a clock record delivered twice
    (breached,) = lead.clock(assigned.due_at + 5 * MINUTE)
    assert breached.kind == "breached" and breached.at == assigned.due_at
    assert lead.deadline is None and lead.clock(assigned.due_at + 60 * MINUTE) == []
    late = lead.apply(event("sales_attempted", timedelta(hours=3)))
    assert kinds(late) == ["touched:attempt"] and late[0].within_target is False


def test_a_touch_after_the_deadline_that_the_clock_did_not_mark_yet_breaches_first() -> None:
    lead = Lead()
    (assigned,) = became_mql(lead)
    steps = lead.apply(event("sales_attempted", timedelta(hours=5)))
    assert kinds(steps) == ["breached", "touched:attempt"]
    assert steps[0].at == assigned.due_at
    assert lead.clock(micros_of(T0 + timedelta(hours=6))) == []


def test_history_never_warns_nor_breaches() -> None:
    lead = Lead(history=True)
    became_mql(lead)
    assert lead.deadline is None
    assert lead.clock(micros_of(T0 + days(30))) == []
    steps = lead.apply(event("sales_attempted", days(3)))
    assert kinds(steps) == ["touched:attempt"] and steps[0].within_target is False


def test_the_crm_owner_replaces_the_routed_one_and_an_older_assignment_changes_nothing() -> None:
    lead = Lead()
    became_mql(lead)
    (crm,) = lead.apply(
        event("owner_assigned", timedelta(minutes=30), event_id="crm-2", owner_id="ben")
    )
    assert (crm.kind, crm.owner, crm.assigned_by, crm.causation_event_id) == (
        "assigned",
        "ben",
        "crm",
        "crm-2",
    )
    # ben works 09:00-17:30 in New York: 14:00 UTC + 30 minutes.
    assert crm.due_at == micros_of(T0 + timedelta(hours=5, minutes=30))
    assert crm.handoff_id != lead.steps[0].handoff_id
    older = event("owner_assigned", timedelta(minutes=20), owner_id="ivy", team="apac")
    assert lead.apply(older) == []
    again = event("owner_assigned", timedelta(minutes=30), event_id="crm-2", owner_id="ben")
    assert lead.apply(again) == []
    unknown = lead.apply(event("owner_assigned", timedelta(minutes=40), owner_id="crm-77"))
    assert unknown[0].owner == "crm-77" and unknown[0].due_at == crm.due_at  # keeps the clock


def test_an_owner_the_crm_gave_before_the_mql_owns_it() -> None:
    lead = Lead()
    lead.apply(event("owner_assigned", timedelta(0), owner_id="eva", team="emea"))
    (assigned,) = became_mql(lead)
    assert (assigned.owner, assigned.assigned_by, assigned.team) == ("eva", "crm", "emea")
    (mql,) = [c for c in lead.changes if c.to_stage == "mql"]
    assert mql.owner == "carl"  # the stage change says what the rules' routing chose


def test_a_retracted_mql_withdraws_its_handoff() -> None:
    lead = Lead()
    (assigned,) = became_mql(lead)
    steps = lead.apply(event("profile_updated", timedelta(minutes=1), **STUDENT))
    assert "withdrawn" in kinds(steps)
    withdrawn = next(s for s in steps if s.kind == "withdrawn")
    assert withdrawn.mql_change_id == assigned.mql_change_id
    assert lead.deadline is None or lead.state.handoff.current.change_id != assigned.mql_change_id  # type: ignore[union-attr]


def test_touches_that_came_before_a_late_mql_are_measured_when_it_comes() -> None:
    lead = Lead()
    lead.apply(
        event("profile_updated", timedelta(0), **BUYER),
        event("sales_attempted", timedelta(hours=2, minutes=5), event_id="call"),
    )
    steps = lead.apply(event("demo_request", timedelta(minutes=5), event_id="demo"))
    assert kinds(steps) == ["assigned", "touched:attempt"]
    assert steps[1].causation_event_id == "call" and steps[1].within_target is True


def test_the_crm_owner_given_after_a_late_mql_owns_it_once_the_mql_comes() -> None:
    lead = Lead()
    lead.apply(
        event("profile_updated", timedelta(0), **BUYER),
        event("owner_assigned", timedelta(minutes=20), event_id="crm", owner_id="ben"),
    )
    steps = lead.apply(event("demo_request", timedelta(minutes=5), event_id="demo"))
    assert [(s.kind, s.owner, s.assigned_by) for s in steps] == [
        ("assigned", "carl", "rules"),
        ("assigned", "ben", "crm"),
    ]
    assert steps[1].at == micros_of(T0 + timedelta(minutes=20))


def test_a_lead_with_a_handoff_is_stored_and_read_back_whole() -> None:
    lead = Lead()
    became_mql(lead)
    lead.apply(event("owner_assigned", timedelta(minutes=30), owner_id="ana", team="emea"))
    assert lead.state is not None and lead.state.handoff is not None
    stored = encode_state(lead.state, RULES)
    read = decode_state(stored, "lead-1", RULES)
    assert read.handoff == lead.state.handoff
    assert stored_deadline(stored, RULES) == lead.deadline is not None


@given(st.permutations(range(5)))
def test_the_same_log_gives_the_same_handoff_bytes(order: list[int]) -> None:
    documents = [
        event("profile_updated", timedelta(0), event_id="p", **BUYER),
        event("demo_request", timedelta(minutes=5), event_id="d"),
        event("sales_attempted", timedelta(hours=3), event_id="a"),
        event("owner_assigned", timedelta(minutes=9), event_id="o", owner_id="ben"),
        event("sales_contacted", timedelta(hours=4), event_id="c"),
    ]
    arrived = [documents[i] for i in order]
    first, second = Lead(), Lead()
    first.apply(*arrived)
    second.apply(*arrived)
    assert [encode_handoff(s) for s in first.steps] == [encode_handoff(s) for s in second.steps]
    ids = [s.handoff_id for s in first.steps]
    assert len(ids) == len(set(ids))
