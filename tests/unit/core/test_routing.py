"""Routing a lead to an owner: deterministic, proportional to weight, minimal moves."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from streams.core.routing import Candidate, pick_owner

TEAM = [Candidate("ana", 2.0), Candidate("ben", 1.0), Candidate("cai", 1.0)]
LEADS = [f"lead-{n}" for n in range(20_000)]


def test_shares_follow_the_weights() -> None:
    shares = Counter(pick_owner(lead, TEAM) for lead in LEADS)
    # 20,000 draws: a binomial share's standard deviation is under 0.4 points.
    assert abs(shares["ana"] / len(LEADS) - 0.50) < 0.015
    assert abs(shares["ben"] / len(LEADS) - 0.25) < 0.015
    assert abs(shares["cai"] / len(LEADS) - 0.25) < 0.015


def test_an_owner_away_gets_no_lead_and_only_their_leads_move() -> None:
    before = {lead: pick_owner(lead, TEAM) for lead in LEADS}
    away = [Candidate("ana", 2.0, away=True), *TEAM[1:]]
    after = {lead: pick_owner(lead, away) for lead in LEADS}
    assert "ana" not in after.values()
    moved = [lead for lead in LEADS if before[lead] != after[lead]]
    assert all(before[lead] == "ana" for lead in moved)


def test_nobody_available_owns_nothing() -> None:
    assert pick_owner("l", [Candidate("ana", 1.0, away=True), Candidate("ben", 0.0)]) is None


@given(st.text(min_size=1, max_size=40), st.permutations(TEAM))
def test_the_same_lead_gets_the_same_owner_whatever_the_order_of_the_owners(
    lead: str, owners: list[Candidate]
) -> None:
    assert pick_owner(lead, owners) == pick_owner(lead, TEAM)
