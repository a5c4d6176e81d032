"""The ledger: what makes a lead's fit and engagement scores, adding up to them exactly."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.core.explain import ledger, rounded_parts
from streams.core.lead import entry_of
from streams.core.rules import Rules
from tests.support.factories import BUYER, as_event, days, event
from tests.support.random_logs import RULES, in_event_time_order, lead_logs


def entries(documents: list[dict[str, Any]]) -> list[Any]:
    unique = {d["event_id"]: d for d in documents}.values()
    return [entry_of(as_event(d)) for d in in_event_time_order(list(unique))]


def test_the_fit_ledger_names_each_fact_and_its_points(rules: Rules) -> None:
    sorted_entries = entries([event("profile_updated", **BUYER)])
    shown = ledger(sorted_entries, None, rules, 0)
    assert shown.fit == (
        ("email", "business domain acme.com", 10.0),
        ("seniority", "vp", 25.0),
        ("title_keyword", "marketing", 10.0),
        ("company_size", "400 (>= 100)", 10.0),
        ("industry", "software", 10.0),
        ("country", "US", 5.0),
    )
    assert sum(points for _, _, points in shown.fit) == shown.fit_score == 70


def test_a_capped_event_shows_what_its_cap_took_and_the_parts_add_up(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER)]
    documents += [event("pricing_page_view", days(i / 10), event_id=f"p{i}") for i in range(6)]
    documents += [event("email_click", days(20), event_id="late-click")]
    sorted_entries = entries(documents)
    shown = ledger(sorted_entries, None, rules, len(sorted_entries) - 1)
    clipped = {c.event_id: round(c.clipped, 3) for c in shown.engagement}
    assert clipped["p0"] == clipped["p3"] == 0 and 9 < clipped["p4"] < clipped["p5"] < 10
    assert abs(sum(c.decayed_to for c in shown.engagement) - shown.engagement_score) < 1e-9


@given(lead_logs(), st.data())
def test_the_parts_sum_to_the_scores_at_every_moment(
    documents: list[dict[str, Any]], data: st.DataObject
) -> None:
    sorted_entries = entries(documents)
    upto = data.draw(st.integers(0, len(sorted_entries) - 1))
    shown = ledger(sorted_entries, None, RULES, upto)
    assert sum(points for _, _, points in shown.fit) == shown.fit_score
    total = sum(c.decayed_to for c in shown.engagement)
    assert abs(total - shown.engagement_score) < 5e-7
    printed = rounded_parts([c.decayed_to for c in shown.engagement], shown.engagement_score)
    assert f"{sum(printed):.3f}" == f"{shown.engagement_score:.3f}"


@given(st.lists(st.floats(-100, 100), max_size=30))
def test_printed_parts_add_up_to_the_printed_total(parts: list[float]) -> None:
    printed = rounded_parts(parts, sum(parts))
    assert round(sum(printed) * 1000) == round(sum(parts) * 1000)
    assert all(abs(p - q) <= 0.0015 for p, q in zip(printed, parts, strict=True))
