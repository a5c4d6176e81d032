"""Daily campaign spend for generated traffic, so that the demo's funnel has a cost.

Every paid campaign the events name gets a daily budget (in proportion to the traffic's
leads), spent every day from its first touch to the traffic's last day, a little less at
weekends and never exactly the same twice. The spend is drawn from its own random generator:
the same events and seed give the same spend, and the events themselves are not changed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Any, Final

from schemas.spend import CampaignSpend

OWNED_SOURCES: Final = frozenset({"email", "newsletter", "crm", "organic_search"})
"""Sources that cost no media money (their tools are no campaign spend)."""
EURO_SOURCES: Final = frozenset({"events"})
"""Sources booked in euros (the European events), so that the demo shows two currencies."""
BUDGETS: Final = (60.0, 120.0, 180.0, 250.0, 400.0)
"""Daily budgets a campaign is given for traffic of BUDGET_LEADS leads, in its currency."""
BUDGET_LEADS: Final = 2000
"""Budgets scale with the traffic: half the leads, half the spend (so CAC stays plausible)."""


def generate_spend(events: Iterable[dict[str, Any]], seed: int) -> Iterator[CampaignSpend]:
    """The daily spend of every paid campaign the events touch, sorted by day then campaign."""
    first_day: dict[tuple[str, str], date] = {}
    last_day: date | None = None
    leads: set[str] = set()
    for event in events:
        leads.add(event["lead_id"])
        day = datetime.fromisoformat(event["occurred_at"]).date()
        last_day = day if last_day is None else max(last_day, day)
        source, campaign = event.get("source"), event.get("campaign")
        if not source or not campaign or source in OWNED_SOURCES:
            continue
        key = (source, campaign)
        first_day[key] = min(first_day.get(key, day), day)
    if last_day is None:
        return
    rng = random.Random(f"spend-{seed}")
    scale = len(leads) / BUDGET_LEADS
    budgets = {key: rng.choice(BUDGETS) * scale for key in sorted(first_day)}
    day = min(first_day.values(), default=last_day)
    while day <= last_day:
        for (source, campaign), budget in budgets.items():
            if day < first_day[(source, campaign)]:
                continue
            weekend = 0.4 if day.weekday() >= 5 else 1.0
            amount = round(budget * weekend * rng.uniform(0.7, 1.3), 2)
            currency = "EUR" if source in EURO_SOURCES else "USD"
            yield CampaignSpend(
                source=source, campaign=campaign, day=day, amount=amount, currency=currency
            )
        day += timedelta(days=1)
