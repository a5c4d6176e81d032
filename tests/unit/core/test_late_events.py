"""Events older than what their lead keeps in detail are applied, never refused (issue: late
CRM facts, day-one imports): the cases a user meets first, checked against the sorted log."""

from __future__ import annotations

from typing import Any

from streams.core.compaction import compact
from streams.core.lifecycle import decide
from streams.offline.replay import effective_changes
from tests.support.factories import BUYER, STUDENT, as_event, days, event, run
from tests.support.random_logs import RULES, in_event_time_order

BROWSING = [event("page_view", days(3 + n), lead="l") for n in range(19)]


def outcome(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The changes in effect (content, not revision) of `documents` in the order given."""
    state, changes = None, []
    for document in documents:
        decision = decide(state, as_event(document), RULES)
        state, changes = decision.state, [*changes, *decision.changes]
    return {
        change_id: change._replace(revision=0)
        for change_id, change in effective_changes(changes).items()
    }


def check_exact(history: list[dict[str, Any]], late: dict[str, Any]) -> dict[str, Any]:
    """`late` delivered after `history` gives the sorted log's outcome, none of it marked."""
    arrived = outcome([*history, late])
    expected = outcome(in_event_time_order([*history, late]))
    assert arrived == expected
    assert not any(change.applied_late for change in arrived.values())
    return arrived


def stages(changes: dict[str, Any]) -> list[tuple[str | None, str]]:
    ordered = sorted(changes.values(), key=lambda c: c.sequence)
    return [(c.from_stage, c.to_stage) for c in ordered]


def test_a_late_disqualification_retracts_the_mql_it_precedes() -> None:
    history = [
        event("profile_updated", days(0), lead="l", **BUYER),
        event("demo_request", days(1), lead="l"),
        *BROWSING,
    ]
    late = event("sales_disqualified", days(2), lead="l", reason="competitor")
    state = run(history, RULES)[0]["l"]
    assert compact(state, RULES)[1].horizon is not None  # day 2 is older than the detail
    changes = check_exact(history, late)
    assert stages(changes)[-1] == ("mql", "disqualified")


def test_a_late_student_profile_retracts_the_lead_and_the_mql() -> None:
    history = [
        event("profile_updated", days(0), lead="l", **BUYER),
        event("demo_request", days(2), lead="l"),
        *BROWSING,
    ]
    late = event("profile_updated", days(1), lead="l", **STUDENT)
    changes = check_exact(history, late)
    assert ("lead", "mql") not in stages(changes)


def test_a_late_won_deal_and_a_late_demo_form_count_at_their_own_time() -> None:
    history = [event("profile_updated", days(0), lead="l", **BUYER), *BROWSING]
    form = event("demo_request", days(1), lead="l")
    # The form's own points enter the snapshot out of order: its MQL is exact, stage and
    # scores, though it may say applied_late.
    arrived = outcome([*history, form])
    expected = outcome(in_event_time_order([*history, form]))
    assert {k: c._replace(applied_late=False) for k, c in arrived.items()} == expected
    assert ("lead", "mql") in stages(arrived)
    won = check_exact(history, event("deal_won", days(2), lead="l", amount=5.0, currency="EUR"))
    assert stages(won)[-1][1] == "customer"


def test_a_redelivered_event_changes_nothing_after_leaving_the_detail() -> None:
    history = [event("profile_updated", days(0), lead="l", **BUYER), *BROWSING]
    state = run(history, RULES)[0]["l"]
    for old in (history[0], BROWSING[0]):  # one kept in the snapshot, one only remembered
        assert decide(state, as_event(old), RULES).duplicate


def test_an_old_engagement_event_counts_and_its_changes_say_applied_late() -> None:
    history = [event("profile_updated", days(0), lead="l", **BUYER)]
    history += [event("page_view", days(3 + n), lead="l") for n in range(12)]
    late = event("pricing_page_view", days(1), lead="l")
    arrived = outcome([*history, late])
    expected = outcome(in_event_time_order([*history, late]))
    state = run([*history, late], RULES)[0]["l"]
    assert state.accepted == len(history) + 1
    differing = [k for k in arrived.keys() | expected.keys() if arrived.get(k) != expected.get(k)]
    assert all(arrived[k].applied_late for k in differing if k in arrived)


def test_a_late_recycle_does_not_read_the_crossing_that_came_before_it() -> None:
    """Engagement crossed the MQL threshold at 10:00 while the lead was disqualified; a
    recycle at 12:00, delivered after that day went into the snapshot, starts engagement from
    zero: the crossing before it must not make an exact-looking passive MQL after it (found by
    hypothesis: test_properties.py)."""
    at = {"09": days(0), "10": days(1 / 24), "12": days(3 / 24), "13": days(4 / 24)}
    arrivals = [
        ("page_view", at["09"]),
        ("sales_disqualified", at["09"]),
        *[("page_view", at["09"])] * 4,
        ("demo_request", at["09"]),
        ("profile_updated", at["09"]),
        ("page_view", at["10"]),
        ("profile_updated", at["13"]),
        ("pricing_page_view", at["09"]),
        ("page_view", days(13.7)),
        ("page_view", at["13"]),
        *[("page_view", at["09"])] * 4,
        ("profile_updated", days(13.54)),
        ("lead_recycled", at["12"]),
        ("profile_updated", at["09"]),
    ]
    documents = []
    for number, (event_type, offset) in enumerate(arrivals):
        properties: dict[str, Any] = (
            {"reason": "no_budget"} if event_type == "sales_disqualified" else {}
        )
        if event_type == "profile_updated":
            properties = BUYER
        documents.append(
            event(event_type, offset, lead="l", event_id=f"e{number:02}", **properties)
        )
    arrived = outcome(documents)
    expected = outcome(in_event_time_order(documents))
    differing = {
        change_id
        for change_id in arrived.keys() | expected.keys()
        if _content(arrived.get(change_id)) != _content(expected.get(change_id))
    }
    assert differing
    assert all(arrived[c].applied_late for c in differing if c in arrived)


def _content(change: Any) -> Any:
    return None if change is None else change._replace(applied_late=False, sequence=0)


def test_a_late_page_view_at_the_instant_of_a_recycle_counts_before_it() -> None:
    """A page view and a recycle of the same instant: the view sorts first, so the recycle's
    reset leaves it out. Delivered after the recycle, past the lead's detail, it must not
    count after the reset either: the disqualification an hour later reads an engagement of
    0.0, not the view's points (found by hypothesis: test_properties.py)."""
    hour = 1 / 24
    arrivals = [  # (event id, type, time), in the order delivered
        (8, "page_view", days(7 + 5 * hour)),
        (5, "free_trial_signup", days(0)),
        (11, "page_view", days(7 + 5 * hour)),
        (7, "deal_lost", days(0)),
        (17, "lead_recycled", days(hour)),
        (9, "profile_updated", days(0)),
        (10, "page_view", days(hour)),
        (16, "sales_disqualified", days(2 * hour)),
        (12, "page_view", days(4 * hour)),
        (14, "page_view", days(3 * hour)),
        (19, "profile_updated", days(0)),
    ]
    documents = []
    for number, event_type, offset in arrivals:
        properties: dict[str, Any] = (
            {"reason": "no_budget"} if event_type == "sales_disqualified" else {}
        )
        if event_type == "profile_updated":
            properties = BUYER
        source = "google" if number == 19 else None  # a first touch the sorted log has first
        documents.append(
            event(event_type, offset, lead="l", event_id=f"l-{number}", source=source, **properties)
        )
    arrived = outcome(documents)
    expected = outcome(in_event_time_order(documents))
    disqualified = [c for c in expected.values() if c.rule == "disqualified.sales"]
    assert [c.engagement_score for c in disqualified] == [0.0]
    differing = {
        change_id
        for change_id in arrived.keys() | expected.keys()
        if _content(arrived.get(change_id)) != _content(expected.get(change_id))
    }
    assert all(arrived[c].applied_late for c in differing if c in arrived)
    if not any(change.applied_late for change in arrived.values()):
        assert not differing
