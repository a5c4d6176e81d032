"""The generator's handoffs: reps who are the rules' owners, touches in their working hours,
and leads reached fast converting more.

The MQLs come from the core run on the generated events without the handoff types (which move
no stage), so what is checked is what the core would route, not what the generator says.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import EVENT_ADAPTER, HANDOFF_TYPES
from streams.common.events_codec import decode_event
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.business_hours import business_seconds
from streams.core.handoff_rules import HandoffRules
from streams.core.lead import LeadStageChange, LeadState
from streams.core.lifecycle import decide
from streams.core.revisions import instant_of
from streams.core.rules import load_rules
from streams.local.generator import REPS, TrafficShape, generate

TOUCHES = ("sales_attempted", "sales_contacted")


class Worked(NamedTuple):
    """One MQL as the core made it, and its lead's events from it to the lead's next MQL."""

    mql: LeadStageChange
    events: list[dict[str, Any]]

    @property
    def at(self) -> datetime:
        return instant_of(self.mql.occurred_at)

    @property
    def touches(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] in TOUCHES]

    @property
    def owner(self) -> str | None:
        """The CRM's owner if it reassigned the lead, else the routing's."""
        assigned = [e for e in self.events if e["type"] == "owner_assigned"]
        return str(assigned[0]["properties"]["owner_id"]) if assigned else self.mql.owner

    def first_touch_minutes(self) -> float:
        return (at_of(self.touches[0]) - self.at) / timedelta(minutes=1)

    def qualified(self) -> bool:
        """Reached, and not disqualified after (the generator's SQL)."""
        types = {e["type"] for e in self.events}
        return "sales_contacted" in types and "sales_disqualified" not in types


def at_of(document: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(document["occurred_at"])


def worked_mqls(documents: list[dict[str, Any]]) -> list[Worked]:
    rules = load_rules()
    by_lead: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for document in documents:
        by_lead[document["lead_id"]][document["event_id"]] = document
    worked = []
    for events in by_lead.values():
        ordered = sorted(events.values(), key=at_of)
        state: LeadState | None = None
        mqls: list[LeadStageChange] = []
        for document in ordered:
            if document["type"] in HANDOFF_TYPES:
                continue
            decision = decide(state, EVENT_ADAPTER.validate_python(document), rules)
            state = decision.state
            mqls += [c for c in decision.changes if c.to_stage == "mql" and not c.retracted]
        for index, mql in enumerate(mqls):
            start = instant_of(mql.occurred_at)
            end = instant_of(mqls[index + 1].occurred_at) if index + 1 < len(mqls) else None
            after = [e for e in ordered if start < at_of(e) and (end is None or at_of(e) < end)]
            worked.append(Worked(mql, after))
    return worked


@pytest.fixture(scope="module")
def traffic() -> list[dict[str, Any]]:
    return generate(2_000, seed=21)


@pytest.fixture(scope="module")
def mqls(traffic: list[dict[str, Any]]) -> list[Worked]:
    return worked_mqls(traffic)


@pytest.fixture(scope="module")
def handoff() -> HandoffRules:
    rules = load_rules().handoff
    assert rules is not None
    return rules


@settings(max_examples=12, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(1, 40),
    st.sampled_from([TrafficShape(), TrafficShape(0.1, 0.05, anonymous_browsing=0.6)]),
)
def test_the_same_seed_gives_the_same_bytes(seed: int, leads: int, shape: TrafficShape) -> None:
    first = b"\n".join(orjson.dumps(d) for d in generate(leads, seed, shape))
    assert first == b"\n".join(orjson.dumps(d) for d in generate(leads, seed, shape))


def test_the_handoff_events_meet_the_contract(traffic: list[dict[str, Any]]) -> None:
    handoffs = [d for d in traffic if d["type"] in HANDOFF_TYPES]
    assert {d["type"] for d in handoffs} == set(HANDOFF_TYPES)
    for document in handoffs:
        decode_event(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES)


def test_every_touch_is_the_owners_after_the_mql_in_their_working_hours(
    traffic: list[dict[str, Any]], mqls: list[Worked], handoff: HandoffRules
) -> None:
    touched = [worked for worked in mqls if worked.touches]
    assert len(touched) > 300
    for worked in touched:
        owner = worked.owner
        assert owner is not None
        calendar = handoff.owners[owner].calendar
        for touch in worked.touches:
            at = at_of(touch)
            assert at > worked.at
            assert touch["properties"]["owner_id"] == owner, touch
            assert business_seconds(calendar, at - timedelta(seconds=1), at) == 1, touch
    # ... and every touch (once, duplicates aside) follows an MQL: sales works only MQLs.
    every_touch = {d["event_id"] for d in traffic if d["type"] in TOUCHES}
    assert sum(len(w.touches) for w in touched) == len(every_touch)


def test_some_mqls_get_several_attempts_and_some_are_never_touched(mqls: list[Worked]) -> None:
    untouched = [worked for worked in mqls if not worked.touches]
    several = [w for w in mqls if sum(e["type"] == "sales_attempted" for e in w.events) >= 2]
    assert 0.03 * len(mqls) < len(untouched) < 0.3 * len(mqls)
    assert len(several) > 0.1 * len(mqls)
    for worked in mqls:
        if worked.touches:
            assert worked.touches[0]["type"] == "sales_attempted"


def test_leads_touched_within_five_minutes_qualify_more_than_after_a_day(
    mqls: list[Worked],
) -> None:
    fast = [w for w in mqls if w.touches and w.first_touch_minutes() <= 5]
    slow = [w for w in mqls if w.touches and w.first_touch_minutes() > 24 * 60]
    assert len(fast) >= 30 and len(slow) >= 30

    def rate(group: list[Worked]) -> float:
        return sum(w.qualified() for w in group) / len(group)

    assert rate(fast) > rate(slow) + 0.2

    def reached(group: list[Worked]) -> float:
        # A contact is what makes the core's SQL: the curve shows in MQL -> SQL itself.
        return sum(any(e["type"] == "sales_contacted" for e in w.events) for w in group) / len(
            group
        )

    assert reached(fast) > reached(slow) + 0.3


def test_a_rep_on_vacation_touches_nothing_and_their_leads_wait(
    traffic: list[dict[str, Any]], mqls: list[Worked], handoff: HandoffRules
) -> None:
    (rep,) = [rep for rep in REPS.values() if rep.vacation]
    zone = handoff.owners[rep.owner_id].calendar.zone
    touches = [d for d in traffic if d["type"] in TOUCHES]
    theirs = [d for d in touches if d["properties"]["owner_id"] == rep.owner_id]
    assert len(theirs) > 20
    assert not [d for d in theirs if at_of(d).astimezone(zone).date() in rep.vacation]
    waiting = [
        w
        for w in mqls
        if w.owner == rep.owner_id and w.touches and w.at.astimezone(zone).date() in rep.vacation
    ]
    assert waiting, "some of the rep's MQLs come in during the vacation"
    last_day = max(rep.vacation)
    assert all(at_of(w.touches[0]).astimezone(zone).date() > last_day for w in waiting)


def test_leads_the_crm_reassigns_are_touched_by_the_crms_owner(mqls: list[Worked]) -> None:
    reassigned = [(w, e) for w in mqls for e in w.events if e["type"] == "owner_assigned"]
    assert 0.02 * len(mqls) < len(reassigned) < 0.1 * len(mqls)
    for worked, assigned in reassigned:
        owner = assigned["properties"]["owner_id"]
        assert owner != worked.mql.owner
        assert at_of(assigned) - worked.at <= timedelta(minutes=31)
        for touch in worked.touches:
            assert touch["properties"]["owner_id"] == owner
            assert at_of(touch) > at_of(assigned)
