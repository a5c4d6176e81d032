"""The money views computed in plain Python from replay output, the event log and the spend.

Written from the definitions in docs/funnel.md ("Money"), independently of the SQL: tests
compare the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from schemas.spend import CampaignSpend
from tests.support.funnel_reference import (
    _days,
    lead_status,
    linked_identities,
    live_changes,
)

Row = dict[str, Any]
MONEY_STAGES = ("lead", "mql", "sql", "customer")


def _month(moment: date) -> date:
    return moment.replace(day=1)


def _quarter(moment: date) -> date:
    return date(moment.year, 3 * ((moment.month - 1) // 3) + 1, 1)


def _per(spend: float, count: int) -> float | None:
    return spend / count if count else None


def expected_money(
    effective: Iterable[bytes], events: list[dict[str, Any]], spend: Iterable[CampaignSpend]
) -> dict[str, list[Row]]:
    """Every money view's rows, in the report's order."""
    live = live_changes(effective, linked_identities(events))
    status = lead_status(live)
    by_lead: dict[str, list[Row]] = defaultdict(list)
    for change in live:
        by_lead[change["lead_id"]].append(change)
    touches = {event["event_id"]: event for event in events}
    for lead_id, row in status.items():
        changes = sorted(by_lead[lead_id], key=lambda c: c["sequence"])
        row["first_seen_at"] = min(c["occurred_at"] for c in changes)
        creating = next((c for c in changes if c["to_stage"] == "lead"), None)
        event = touches.get(creating["causation_event_id"]) if creating else None
        row["creating_source"] = (event or {}).get("source") or "(none)"
        row["creating_campaign"] = (event or {}).get("campaign") or "(none)"

    latest = {record.spend_id: record for record in spend}
    monthly: dict[tuple[date, str, str, str], float] = defaultdict(float)
    for record in latest.values():
        monthly[(_month(record.day), record.source, record.campaign, record.currency)] += (
            record.amount
        )

    def entries(touch: str) -> dict[tuple[Any, ...], dict[str, int]]:
        counted: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in status.values():
            for stage in MONEY_STAGES:
                at = row[f"{stage}_at"]
                if at is not None:
                    month = _month(at.date())
                    if touch == "blended":
                        key: tuple[Any, ...] = (month,)
                    elif touch == "first":
                        key = (month, row["source"], row["campaign"])
                    else:
                        key = (month, row["creating_source"], row["creating_campaign"])
                    counted[key][stage] += 1
        return counted

    def cac_row(spent: float, counts: dict[str, int]) -> Row:
        return {
            "spend": spent,
            "customers": counts.get("customer", 0),
            "cac": _per(spent, counts.get("customer", 0)),
            "leads": counts.get("lead", 0),
            "cost_per_lead": _per(spent, counts.get("lead", 0)),
            "mqls": counts.get("mql", 0),
            "cost_per_mql": _per(spent, counts.get("mql", 0)),
            "sqls": counts.get("sql", 0),
            "cost_per_sql": _per(spent, counts.get("sql", 0)),
        }

    blended_spend: dict[tuple[date, str], float] = defaultdict(float)
    for (month, _, _, currency), amount in monthly.items():
        blended_spend[(month, currency)] += amount
    blended = entries("blended")
    cac_monthly = [
        {"month": month, "currency": currency, **cac_row(spent, blended.get((month,), {}))}
        for (month, currency), spent in sorted(blended_spend.items())
    ]
    views: dict[str, list[Row]] = {"cac_monthly": cac_monthly}
    for view, touch in (("cac_by_source", "first"), ("cac_by_lead_touch", "creating")):
        counted = entries(touch)
        views[view] = [
            {
                "month": month,
                "source": source,
                "campaign": campaign,
                "currency": currency,
                **cac_row(spent, counted.get((month, source, campaign), {})),
            }
            for (month, source, campaign, currency), spent in sorted(monthly.items())
        ]
    views["pipeline_velocity"] = pipeline_velocity(status, events)
    return views


def pipeline_velocity(status: dict[str, Row], events: list[dict[str, Any]]) -> list[Row]:
    """Per first-touch source, quarter of the first opportunity and currency of the deals."""
    first_deal: dict[str, tuple[datetime, str, float, str]] = {}
    for event in events:
        if event["type"] != "deal_won":
            continue
        deal = (
            datetime.fromisoformat(event["occurred_at"]),
            event["event_id"],
            float(event["properties"]["amount"]),
            event["properties"]["currency"],
        )
        known = first_deal.get(event["lead_id"])
        if known is None or deal[:2] < known[:2]:
            first_deal[event["lead_id"]] = deal
    cohorts: dict[tuple[str, date], list[tuple[str, Row, bool]]] = defaultdict(list)
    for lead_id, row in status.items():
        opportunity = row["opportunity_at"]
        if opportunity is None:
            continue
        won = row["customer_at"] is not None and row["customer_at"] >= opportunity
        cohorts[(row["source"], _quarter(opportunity.date()))].append((lead_id, row, won))
    found = []
    for (source, quarter), leads in cohorts.items():
        won = [(lead_id, row) for lead_id, row, was_won in leads if was_won]
        win_rate = len(won) / len(leads)
        cycles = [_days(row["first_seen_at"], row["customer_at"]) for _, row in won]
        mean_cycle = sum(cycles) / len(cycles) if cycles else None
        amounts: dict[str, list[float]] = defaultdict(list)
        for lead_id, _ in won:
            if lead_id in first_deal:
                amounts[first_deal[lead_id][3]].append(first_deal[lead_id][2])
        base = {
            "source": source,
            "quarter": quarter,
            "opportunities": len(leads),
            "won": len(won),
            "win_rate": win_rate,
        }
        if not amounts:
            found.append(
                {
                    **base,
                    "currency": None,
                    "deals": None,
                    "mean_deal_value": None,
                    "mean_cycle_days": mean_cycle,
                    "velocity": None,
                }
            )
        for currency, values in amounts.items():
            mean_value = sum(values) / len(values)
            found.append(
                {
                    **base,
                    "currency": currency,
                    "deals": len(values),
                    "mean_deal_value": mean_value,
                    "mean_cycle_days": mean_cycle,
                    "velocity": len(leads) * win_rate * mean_value / mean_cycle
                    if mean_cycle
                    else None,
                }
            )
    found.sort(key=lambda r: (r["source"], r["quarter"], r["currency"] is None, r["currency"]))
    return found
