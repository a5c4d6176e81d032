"""The speed-to-lead views computed in plain Python from handoff events and the stage changes
in effect.

Written from the definitions in docs/handoff.md ("Measures in ClickHouse"), independently of the
SQL: tests compare the two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

import orjson

from tests.support.funnel_reference import quantile

Row = dict[str, Any]
DIMENSIONS = ("all", "owner", "queue", "source", "mql_kind", "grade")
BANDS = ("under 5 min", "5-15 min", "15-60 min", "1-24 h", "over a day", "never")
BAND_LOWER_BOUNDS = (0.0, 5.0, 15.0, 60.0, 1440.0)
"""Wall-clock minutes at which each timed band starts (it holds its lower bound)."""
PERCENTILES = {
    "attempt_business": "first_attempt_business_minutes",
    "attempt_wall": "first_attempt_wall_minutes",
    "contact_business": "first_contact_business_minutes",
    "contact_wall": "first_contact_wall_minutes",
}


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _monday(moment: datetime) -> date:
    day = moment.date()
    return day - timedelta(days=day.weekday())


def band_of(minutes: float | None) -> int:
    """The position (1 to 6) of the response band of a first attempt `minutes` after the MQL."""
    if minutes is None:
        return len(BANDS)
    return sum(1 for bound in BAND_LOWER_BOUNDS if minutes >= bound)


def handoff_status(values: Iterable[bytes]) -> list[Row]:
    """One row per handoff not withdrawn, in its latest state (each handoff event counted once)."""
    by_id = {}
    for value in values:
        step = orjson.loads(value)
        for name in ("at", "mql_at", "due_at"):
            step[name] = _time(step[name])
        by_id[step["handoff_id"]] = step
    handoffs: dict[str, list[Row]] = defaultdict(list)
    for step in by_id.values():
        handoffs[step["mql_change_id"]].append(step)
    rows = []
    for mql_change_id, steps in sorted(handoffs.items()):
        if any(step["kind"] == "withdrawn" for step in steps):
            continue
        steps.sort(key=lambda step: (step["at"], step["handoff_id"]))
        latest = steps[-1]
        assigned = [step for step in steps if step["kind"] == "assigned"]
        queues = [step["queue"] for step in assigned if step["queue"] is not None]
        touches = [step for step in steps if step["kind"] == "touched"]
        contacts = [step for step in touches if step["touch"] == "contact"]
        attempt = touches[0] if touches else {}
        contact = contacts[0] if contacts else {}
        rows.append(
            {
                "mql_change_id": mql_change_id,
                "lead_id": latest["lead_id"],
                "mql_at": latest["mql_at"],
                "owner": (assigned or steps)[-1]["owner"] or "(none)",
                "queue": queues[-1] if queues else "(none)",
                "mql_kind": latest["mql_kind"],
                "grade": latest["grade"] or "(none)",
                "source": latest["source"] or "(none)",
                "campaign": latest["campaign"] or "(none)",
                "due_at": latest["due_at"],
                "target_minutes": latest["target_minutes"],
                "first_attempt_at": attempt.get("at"),
                "first_attempt_business_minutes": attempt.get("response_business_minutes"),
                "first_attempt_wall_minutes": attempt.get("response_wall_minutes"),
                "first_attempt_within_target": attempt.get("within_target"),
                "first_contact_at": contact.get("at"),
                "first_contact_business_minutes": contact.get("response_business_minutes"),
                "first_contact_wall_minutes": contact.get("response_wall_minutes"),
                "breached": any(step["kind"] == "breached" for step in steps),
            }
        )
    return rows


def _nulls_last(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((value is None, "" if value is None else value) for value in key)


def speed_to_lead(status: list[Row]) -> list[Row]:
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for handoff in status:
        for dimension in DIMENSIONS:
            value = "(all)" if dimension == "all" else handoff[dimension]
            groups[(_monday(handoff["mql_at"]), dimension, value)].append(handoff)
            groups[(None, dimension, value)].append(handoff)
    rows = []
    for (week, dimension, value), handoffs in sorted(
        groups.items(), key=lambda item: _nulls_last(item[0])
    ):
        row: Row = {
            "week": week,
            "dimension": dimension,
            "value": value,
            "mqls": len(handoffs),
            "touched": sum(h["first_attempt_at"] is not None for h in handoffs),
            "contacted": sum(h["first_contact_at"] is not None for h in handoffs),
        }
        for name, column in PERCENTILES.items():
            minutes = [h[column] for h in handoffs if h[column] is not None]
            row[f"{name}_p50"] = quantile(minutes, 0.5) if minutes else None
            row[f"{name}_p90"] = quantile(minutes, 0.9) if minutes else None
        rows.append(row)
    return rows


def sla_weekly(status: list[Row], now: datetime) -> list[Row]:
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for handoff in status:
        groups[(_monday(handoff["mql_at"]), handoff["owner"], handoff["queue"])].append(handoff)
    rows = []
    for (week, owner, queue), handoffs in sorted(groups.items()):
        targeted = [h for h in handoffs if h["due_at"] is not None]
        untouched = [h for h in targeted if h["first_attempt_at"] is None]
        within = sum(h["first_attempt_within_target"] is True for h in targeted)
        late = sum(h["first_attempt_within_target"] is False for h in targeted)
        open_past_due = sum(h["due_at"] < now for h in untouched)
        decided = within + late + open_past_due
        rows.append(
            {
                "week": week,
                "owner": owner,
                "queue": queue,
                "handoffs": len(handoffs),
                "with_target": len(targeted),
                "within_target": within,
                "late": late,
                "open_past_due": open_past_due,
                "pending": len(untouched) - open_past_due,
                "breached": sum(h["breached"] for h in handoffs),
                "attainment": within / decided if decided else None,
            }
        )
    return rows


def open_breaches(status: list[Row], now: datetime) -> list[Row]:
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for handoff in status:
        due = handoff["due_at"]
        if handoff["first_attempt_at"] is None and due is not None and due < now:
            groups[(handoff["owner"], handoff["queue"])].append(handoff)
    return [
        {
            "owner": owner,
            "queue": queue,
            "open_breaches": len(handoffs),
            "oldest_due_at": min(h["due_at"] for h in handoffs),
            "oldest_mql_at": min(h["mql_at"] for h in handoffs),
        }
        for (owner, queue), handoffs in sorted(groups.items())
    ]


def response_time_conversion(status: list[Row], live: list[Row]) -> list[Row]:
    """Per week of each lead's first handoff and response band: the leads, those that became
    SQL at or after that MQL, and those won at or after that SQL (`live`: the stage changes
    that hold, as funnel_reference.live_changes gives them)."""
    first: dict[str, Row] = {}
    for handoff in sorted(status, key=lambda h: (h["mql_at"], h["mql_change_id"])):
        first.setdefault(handoff["lead_id"], handoff)
    reached: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for change in live:
        reached[(change["lead_id"], change["to_stage"])].append(change["occurred_at"])
    groups: dict[tuple[date, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for lead_id, handoff in first.items():
        sqls = [t for t in reached[(lead_id, "sql")] if t >= handoff["mql_at"]]
        won = bool(sqls) and any(t >= min(sqls) for t in reached[(lead_id, "customer")])
        tally = groups[(_monday(handoff["mql_at"]), band_of(handoff["first_attempt_wall_minutes"]))]
        tally[0] += 1
        tally[1] += bool(sqls)
        tally[2] += won
    return [
        {
            "week": week,
            "position": position,
            "band": BANDS[position - 1],
            "leads": leads,
            "became_sql": sqls,
            "won": won,
            "sql_rate": sqls / leads,
            "won_rate": won / sqls if sqls else None,
        }
        for (week, position), (leads, sqls, won) in sorted(groups.items())
    ]


def expected_handoff_metrics(
    handoff_values: Iterable[bytes], live: list[Row], now: datetime
) -> dict[str, list[Row]]:
    """What each view of `projections.report.HANDOFF_VIEWS` must return, in the same order."""
    status = handoff_status(handoff_values)
    return {
        "speed_to_lead": speed_to_lead(status),
        "handoff_sla_weekly": sla_weekly(status, now),
        "handoff_open_breaches": open_breaches(status, now),
        "response_time_conversion": response_time_conversion(status, live),
    }
