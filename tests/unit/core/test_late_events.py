"""Events older than what their lead keeps in detail are applied, never refused (issue: late
CRM facts, day-one imports): the cases a user meets first, checked against the sorted log."""

from __future__ import annotations

from typing import Any

from streams.core.compaction import compact
from streams.core.lifecycle import decide
from streams.replay import effective_changes
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
