"""Every account view computed in plain Python from account-change and account-signal records.

Written from the definitions (docs/accounts.md, `schemas/accounts.py`), independently of the
SQL: tests compare the two. Records are the bytes of the contract, as published, duplicates
included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from tests.support.funnel_reference import _days, _monday, _time, quantile

Row = dict[str, Any]
ACCOUNT_STAGES = ("engaged", "sales_ready", "customer")
STEPS = (
    ("engaged_to_sales_ready", "engaged", "sales_ready"),
    ("sales_ready_to_customer", "sales_ready", "customer"),
)
LEAD_OR_FURTHER = ("lead", "mql", "sql", "opportunity", "customer", "evangelist")
MQL_OR_FURTHER = LEAD_OR_FURTHER[1:]
SQL_OR_FURTHER = LEAD_OR_FURTHER[2:]
TOP_ACCOUNTS = 20


def live_account_changes(records: Iterable[bytes]) -> list[Row]:
    """The highest revision of each change_id, retractions removed, as dicts."""
    latest: dict[str, Row] = {}
    for value in records:
        change = orjson.loads(value)
        current = latest.get(change["change_id"])
        if current is None or change["revision"] >= current["revision"]:
            latest[change["change_id"]] = change
    live = [change for change in latest.values() if not change["retracted"]]
    for change in live:
        change["occurred_at"] = _time(change["occurred_at"])
    return live


def current_members(records: Iterable[bytes]) -> list[Row]:
    """The highest revision of each (account, lead) signal, where the lead is a member."""
    latest: dict[tuple[str, str], Row] = {}
    for value in records:
        signal = orjson.loads(value)
        key = (signal["account_id"], signal["lead_id"])
        current = latest.get(key)
        if current is None or signal["revision"] >= current["revision"]:
            latest[key] = signal
    members = [signal for signal in latest.values() if signal["member"]]
    for signal in members:
        signal["occurred_at"] = _time(signal["occurred_at"])
    return members


def account_status(live: list[Row]) -> dict[str, Row]:
    by_account: dict[str, list[Row]] = defaultdict(list)
    for change in live:
        by_account[change["account_id"]].append(change)
    status = {}
    for account_id, changes in sorted(by_account.items()):
        changes.sort(key=lambda c: c["sequence"])
        row: Row = {
            "account_id": account_id,
            "current_stage": changes[-1]["to_stage"],
            "stage_since": changes[-1]["occurred_at"],
            "first_seen_at": min(c["occurred_at"] for c in changes),
        }
        for stage in ACCOUNT_STAGES:
            row[f"{stage}_at"] = min(
                (c["occurred_at"] for c in changes if c["to_stage"] == stage), default=None
            )
        status[account_id] = row
    return status


def account_people(members: list[Row], status: dict[str, Row]) -> list[Row]:
    by_account: dict[str, list[Row]] = defaultdict(list)
    for member in members:
        by_account[member["account_id"]].append(member)
    rows = []
    for account_id, people in sorted(by_account.items()):
        stages = [p["stage"] for p in people]
        rows.append(
            {
                "account_id": account_id,
                "account_stage": status[account_id]["current_stage"]
                if account_id in status
                else "(none)",
                "people": len(people),
                "leads": sum(stage in LEAD_OR_FURTHER for stage in stages),
                "mqls": sum(stage in MQL_OR_FURTHER for stage in stages),
                "sqls": sum(stage in SQL_OR_FURTHER for stage in stages),
                "seniorities": sorted(p["seniority"] for p in people if p["seniority"] is not None),
                "last_activity_at": max(p["occurred_at"] for p in people),
            }
        )
    return rows


def account_conversions(status: dict[str, Row]) -> list[Row]:
    rows = []
    for account_id, account in status.items():
        for step, first, second in STEPS:
            entered, reached = account[f"{first}_at"], account[f"{second}_at"]
            if entered is None:
                continue
            converted: datetime | None = reached if reached and reached >= entered else None
            rows.append(
                {
                    "account_id": account_id,
                    "step": step,
                    "entered_at": entered,
                    "converted_at": converted,
                    "days_to_convert": _days(entered, converted) if converted else None,
                }
            )
    return rows


def expected_account_metrics(
    change_records: Iterable[bytes], signal_records: Iterable[bytes]
) -> dict[str, list[Row]]:
    """What each account view must return: the views of `projections.report.ACCOUNT_VIEWS`
    in their order, then the per-account views (ordered by account, then step)."""
    status = account_status(live_account_changes(change_records))
    people = account_people(current_members(signal_records), status)
    conversions = account_conversions(status)
    metrics: dict[str, list[Row]] = {}

    metrics["account_funnel"] = [
        {
            "stage": stage,
            "position": position,
            "reached": sum(a[f"{stage}_at"] is not None for a in status.values()),
            "current": sum(a["current_stage"] == stage for a in status.values()),
        }
        for position, stage in enumerate(ACCOUNT_STAGES, start=1)
        if status
    ]

    by_step: dict[str, list[Row]] = defaultdict(list)
    cohorts: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
    for row in conversions:
        by_step[row["step"]].append(row)
        cohort = cohorts[(row["step"], _monday(row["entered_at"]))]
        cohort[0] += 1
        cohort[1] += row["converted_at"] is not None
    metrics["account_conversion"] = []
    for step, rows in sorted(by_step.items()):
        days = [r["days_to_convert"] for r in rows if r["converted_at"] is not None]
        metrics["account_conversion"].append(
            {
                "step": step,
                "entered": len(rows),
                "converted": len(days),
                "rate": len(days) / len(rows),
                "median_days": quantile(days, 0.5),
                "p90_days": quantile(days, 0.9),
                "mean_days": sum(days) / len(days) if days else None,
            }
        )
    metrics["account_conversion_cohorts"] = [
        {
            "step": step,
            "cohort_week": week,
            "entered": entered,
            "converted": converted,
            "rate": converted / entered,
        }
        for (step, week), (entered, converted) in sorted(cohorts.items())
    ]

    sizes: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in people:
        size = sizes[row["people"]]
        size[0] += 1
        size[1] += row["mqls"] > 0
        size[2] += row["sqls"] > 0
    metrics["account_sizes"] = [
        {"people": n, "accounts": accounts, "with_mql": mql, "with_sql": sql}
        for n, (accounts, mql, sql) in sorted(sizes.items())
    ]
    top = sorted(people, key=lambda r: (-r["sqls"], -r["mqls"], -r["people"], r["account_id"]))
    metrics["top_accounts"] = [
        {
            **{k: v for k, v in row.items() if k != "last_activity_at"},
            "last_active_on": row["last_activity_at"].date(),
        }
        for row in top[:TOP_ACCOUNTS]
    ]

    metrics["account_status"] = list(status.values())
    metrics["account_people"] = people
    metrics["account_conversions"] = sorted(conversions, key=lambda r: (r["account_id"], r["step"]))
    return metrics
