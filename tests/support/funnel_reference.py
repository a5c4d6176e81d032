"""Every funnel view computed in plain Python from replay output and the event log.

Written from the definitions in docs/funnel.md, independently of the SQL: tests compare the two.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from streams.common.events_codec import decode_event
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES

Row = dict[str, Any]
STAGES = ("subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist")
STEPS = (
    ("lead_to_mql", "lead", "mql"),
    ("mql_to_sql", "mql", "sql"),
    ("sql_to_opportunity", "sql", "opportunity"),
    ("opportunity_to_customer", "opportunity", "customer"),
    ("sql_to_won", "sql", "customer"),
)
MICROSECONDS_PER_DAY = 86_400_000_000
BOTTLENECK_OUTCOMES = ("moved_on", "skipped_ahead", "dropped", "waiting")
"""How an entry into a stage ends: each entry ends in exactly one of them (docs/funnel.md)."""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _monday(moment: datetime) -> date:
    day = moment.date()
    return day - timedelta(days=day.weekday())


def _days(start: datetime, end: datetime) -> float:
    return ((end - start) // timedelta(microseconds=1)) / MICROSECONDS_PER_DAY


def quantile(values: list[float], level: float) -> float:
    """Linear interpolation between closest ranks (ClickHouse quantileExactInclusive)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * level
    low = math.floor(position)
    if low + 1 >= len(ordered):
        return ordered[-1]
    return ordered[low] + (position - low) * (ordered[low + 1] - ordered[low])


def linked_identities(event_documents: Iterable[dict[str, Any]]) -> set[str]:
    """Every identity an event links to its lead: the duplicate a `leads_merged` names, or an
    anonymous id other than the event's lead (such an identity is no lead of its own)."""
    linked = set()
    for document in event_documents:
        if document["type"] == "leads_merged":
            linked.add(document["properties"]["merged_lead_id"])
        elif document.get("anonymous_id") not in (None, document["lead_id"]):
            linked.add(document["anonymous_id"])
    return linked


def live_changes(effective: Iterable[bytes], linked: set[str] | None = None) -> list[Row]:
    """The latest revision of each change, retractions and linked identities' changes removed,
    as dicts."""
    live = []
    for value in effective:
        change = orjson.loads(value)
        if change["retracted"] or change["lead_id"] in (linked or ()):
            continue
        change["occurred_at"] = _time(change["occurred_at"])
        change["source"] = change["source"] or "(none)"
        change["campaign"] = change["campaign"] or "(none)"
        live.append(change)
    return live


def lead_status(live: list[Row]) -> dict[str, Row]:
    by_lead: dict[str, list[Row]] = defaultdict(list)
    for change in live:
        by_lead[change["lead_id"]].append(change)
    status = {}
    for lead_id, changes in by_lead.items():
        changes.sort(key=lambda c: c["sequence"])
        latest = changes[-1]
        row: Row = {
            "current_stage": latest["to_stage"],
            "stage_since": latest["occurred_at"],
            "source": latest["source"],
            "campaign": latest["campaign"],
        }
        for stage in (*STAGES, "disqualified"):
            entries = [c for c in changes if c["to_stage"] == stage]
            row[f"{stage}_at"] = entries[0]["occurred_at"] if entries else None
            if stage == "mql":
                row["mql_kind"] = entries[0]["mql_kind"] if entries else None
                row["mql_grade"] = entries[0]["grade"] if entries else None
        status[lead_id] = row
    return status


def lead_conversions(status: dict[str, Row]) -> list[Row]:
    rows = []
    for lead_id, lead in status.items():
        for step, first, second in STEPS:
            entered, reached = lead[f"{first}_at"], lead[f"{second}_at"]
            if entered is None:
                continue
            converted = reached if reached is not None and reached >= entered else None
            rows.append(
                {
                    "lead_id": lead_id,
                    "source": lead["source"],
                    "campaign": lead["campaign"],
                    "step": step,
                    "entered_at": entered,
                    "converted_at": converted,
                    "days": _days(entered, converted) if converted else None,
                }
            )
    return rows


def bottlenecks(live: list[Row]) -> list[Row]:
    """Per stage, its entries (stage changes into it) and how each ended: by the lead's next
    change, to the next stage, past it, to disqualified, or not yet (waiting)."""
    if not live:
        return []
    data_time = max(c["occurred_at"] for c in live)
    by_lead: dict[str, list[Row]] = defaultdict(list)
    for change in live:
        by_lead[change["lead_id"]].append(change)
    tallies: dict[str, Row] = {}
    for changes in by_lead.values():
        changes.sort(key=lambda c: c["sequence"])
        seen: set[str] = set()
        for change, following in itertools.zip_longest(changes, changes[1:]):
            stage = change["to_stage"]
            if stage not in STAGES[:-1]:  # evangelist is the last stage; disqualified is none
                continue
            tally = tallies.setdefault(
                stage,
                dict.fromkeys(("entered", *BOTTLENECK_OUTCOMES, "re_entries"), 0)
                | {"moved_days": [], "waiting_days": []},
            )
            tally["entered"] += 1
            tally["re_entries"] += stage in seen
            seen.add(stage)
            if following is None:
                tally["waiting"] += 1
                tally["waiting_days"].append(_days(change["occurred_at"], data_time))
            elif following["to_stage"] == "disqualified":
                tally["dropped"] += 1
            elif STAGES.index(following["to_stage"]) == STAGES.index(stage) + 1:
                tally["moved_on"] += 1
                tally["moved_days"].append(_days(change["occurred_at"], following["occurred_at"]))
            elif STAGES.index(following["to_stage"]) > STAGES.index(stage) + 1:
                tally["skipped_ahead"] += 1
            else:
                raise AssertionError(f"a lead went back from {stage}: {following}")
    rows = []
    for position, stage in enumerate(STAGES[:-1], start=1):
        if stage not in tallies:
            continue
        tally = tallies[stage]
        rows.append(
            {
                "stage": stage,
                "position": position,
                "entered": tally["entered"],
                **{outcome: tally[outcome] for outcome in BOTTLENECK_OUTCOMES},
                "re_entries": tally["re_entries"],
                "median_days_to_move_on": quantile(tally["moved_days"], 0.5),
                "median_days_waiting": quantile(tally["waiting_days"], 0.5),
            }
        )
    return rows


def _count_rows(
    keys: Iterable[tuple[Any, ...]], names: tuple[str, ...], leads: Iterable[str]
) -> list[Row]:
    counts: dict[tuple[Any, ...], list[Any]] = {}
    for key, lead in zip(keys, leads, strict=True):
        entry = counts.setdefault(key, [0, set()])
        entry[0] += 1
        entry[1].add(lead)
    return [
        {**dict(zip(names, key, strict=True)), "entries": n, "leads": len(ls)}
        for key, (n, ls) in sorted(counts.items(), key=lambda item: _nulls_last(item[0]))
    ]


def _nulls_last(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    """A sort key that orders None after every value, as ClickHouse's ORDER BY does."""
    return tuple((value is None, "" if value is None else value) for value in key)


def expected_metrics(
    effective: Iterable[bytes],
    event_documents: Iterable[dict[str, Any]],
    handoff_values: Iterable[bytes] = (),
    now: datetime | None = None,
) -> dict[str, list[Row]]:
    """What each view of `projections.report.VIEWS` must return, in the same order (the handoff
    views from `handoff_values`, open breaches against `now`, default the present)."""
    from tests.support.handoff_reference import expected_handoff_metrics

    documents = list(event_documents)
    live = live_changes(effective, linked_identities(documents))
    status = lead_status(live)
    conversions = lead_conversions(status)
    events: dict[str, Any] = {}
    for document in documents:
        event = decode_event(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES)
        events[event.event_id] = event
    metrics: dict[str, list[Row]] = {}

    metrics["funnel_overview"] = [
        {
            "stage": stage,
            "position": position,
            "reached": sum(1 for lead in status.values() if lead[f"{stage}_at"] is not None),
            "current": sum(1 for lead in status.values() if lead["current_stage"] == stage),
        }
        for position, stage in enumerate((*STAGES, "disqualified"), start=1)
    ]
    metrics["stage_entries_daily"] = _count_rows(
        ((c["occurred_at"].date(), c["to_stage"], c["source"], c["campaign"]) for c in live),
        ("day", "stage", "source", "campaign"),
        (c["lead_id"] for c in live),
    )
    metrics["stage_entries_weekly"] = _count_rows(
        ((_monday(c["occurred_at"]), c["to_stage"], c["source"], c["campaign"]) for c in live),
        ("week", "stage", "source", "campaign"),
        (c["lead_id"] for c in live),
    )

    cohorts: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    weekly: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    for row in conversions:
        key = (row["step"], _monday(row["entered_at"]), row["source"], row["campaign"])
        cohorts[key][0] += 1
        weekly[(row["step"], _monday(row["entered_at"]))][0] += 1
        if row["converted_at"] is not None:
            cohorts[key][1] += 1
            weekly[(row["step"], _monday(row["converted_at"]))][1] += 1
    metrics["conversion_cohorts"] = [
        {
            "step": step,
            "cohort_week": week,
            "source": source,
            "campaign": campaign,
            "entered": entered,
            "converted": converted,
            "rate": converted / entered,
        }
        for (step, week, source, campaign), (entered, converted) in sorted(cohorts.items())
    ]
    metrics["conversion_by_week"] = [
        {
            "step": step,
            "week": week,
            "entered": entered,
            "converted": converted,
            "rate": converted / entered if entered else None,
        }
        for (step, week), (entered, converted) in sorted(weekly.items())
    ]

    def timing(days: list[float]) -> Row:
        return {
            "median_days": quantile(days, 0.5),
            "p90_days": quantile(days, 0.9),
            "mean_days": sum(days) / len(days),
        }

    by_step: dict[str, list[float]] = defaultdict(list)
    by_source: dict[str, list[float]] = defaultdict(list)
    for row in conversions:
        if row["converted_at"] is not None:
            by_step[row["step"]].append(row["days"])
            if row["step"] == "sql_to_won":
                by_source[row["source"]].append(row["days"])
    metrics["time_to_convert"] = [
        {"step": step, "converted": len(days), **timing(days)}
        for step, days in sorted(by_step.items())
    ]
    metrics["sales_cycle"] = [
        {"source": source, "won": len(days), **timing(days)}
        for source, days in sorted(by_source.items())
    ]

    sales: dict[str, list[float]] = defaultdict(list)
    for event in events.values():
        if event.type == "deal_won":
            sales[event.properties.currency].append(event.properties.amount)
    metrics["purchase_value"] = [
        {
            "currency": currency,
            "deals": len(amounts),
            "total_amount": sum(amounts),
            "mean_amount": sum(amounts) / len(amounts),
        }
        for currency, amounts in sorted(sales.items())
    ]

    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for lead in status.values():
        if lead["mql_at"] is not None:
            kinds[lead["mql_kind"]][0] += 1
            kinds[lead["mql_kind"]][1] += lead["sql_at"] is not None
    metrics["mql_kinds"] = [
        {"mql_kind": kind, "mqls": mqls, "became_sql": sqls, "sql_rate": sqls / mqls}
        for kind, (mqls, sqls) in sorted(kinds.items())
    ]

    grades: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for lead in status.values():
        if lead["mql_at"] is not None:
            tally = grades[lead["mql_grade"] or "(none)"]
            tally[0] += 1
            tally[1] += lead["sql_at"] is not None
            tally[2] += lead["customer_at"] is not None
    metrics["mql_grades"] = [
        {
            "grade": grade,
            "mqls": mqls,
            "became_sql": sqls,
            "sql_rate": sqls / mqls,
            "won": won,
            "won_rate": won / mqls,
        }
        for grade, (mqls, sqls, won) in sorted(grades.items())
    ]

    disqualified = [c for c in live if c["to_stage"] == "disqualified"]
    reasons = _count_rows(
        ((c["source"], c["reason"], c["from_stage"]) for c in disqualified),
        ("source", "reason", "from_stage"),
        (c["lead_id"] for c in disqualified),
    )
    metrics["disqualification_reasons"] = [
        {**{k: v for k, v in row.items() if k != "entries"}, "disqualifications": row["entries"]}
        for row in reasons
    ]
    for row in metrics["disqualification_reasons"]:
        row["leads"] = row.pop("leads")

    metrics["bottlenecks"] = bottlenecks(live)

    metrics["engagement_daily"] = [
        {**{k: v for k, v in row.items() if k != "entries"}, "events": row["entries"]}
        for row in _count_rows(
            (
                (e.occurred_at.date(), e.type, e.source or "(none)", e.campaign or "(none)")
                for e in events.values()
            ),
            ("day", "event_type", "source", "campaign"),
            (e.lead_id for e in events.values()),
        )
    ]
    for row in metrics["engagement_daily"]:
        row["leads"] = row.pop("leads")

    mqls = {lead_id: lead for lead_id, lead in status.items() if lead["mql_at"] is not None}
    done: dict[str, set[str]] = defaultdict(set)
    for event in events.values():
        lead = mqls.get(event.lead_id)
        if lead is not None and event.occurred_at <= lead["mql_at"]:
            done[event.type].add(event.lead_id)
    all_sqls = sum(1 for lead in mqls.values() if lead["sql_at"] is not None)
    feedback = []
    for event_type, leads in sorted(done.items()):
        sqls = sum(1 for lead_id in leads if mqls[lead_id]["sql_at"] is not None)
        did_not = len(mqls) - len(leads)
        feedback.append(
            {
                "event_type": event_type,
                "mqls_did": len(leads),
                "sqls_did": sqls,
                "sql_rate_did": sqls / len(leads),
                "mqls_did_not": did_not,
                "sqls_did_not": all_sqls - sqls,
                "sql_rate_did_not": (all_sqls - sqls) / did_not if did_not else None,
            }
        )
    metrics["scoring_feedback"] = feedback
    metrics["champion_challenger"] = []  # no challenger in these logs: see champion_challenger()
    metrics.update(expected_handoff_metrics(handoff_values, live, now or datetime.now(UTC)))
    return metrics


def normalised(metrics: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """Rows comparable across ClickHouse and Python: floats rounded, NaN as None, dates as text."""

    def value(v: Any) -> Any:
        if isinstance(v, float):
            # Rounded to 9 places first: ClickHouse and Python may differ in the last bits, which
            # must not tip a value over a 6th-decimal rounding boundary.
            return None if math.isnan(v) else round(round(v, 9), 6)
        if isinstance(v, datetime | date):
            return v.isoformat()[:10]
        return v

    return {
        view: [{k: value(v) for k, v in row.items()} for row in rows]
        for view, rows in metrics.items()
    }


def _wilson(successes: int, trials: int) -> tuple[float, float]:
    z = 1.959963984540054
    rate = successes / trials
    centre = rate + z * z / (2 * trials)
    spread = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    return (centre - spread) / (1 + z * z / trials), (centre + spread) / (1 + z * z / trials)


def champion_challenger(champion: Iterable[bytes], challenger: Iterable[bytes]) -> list[Row]:
    """What `champion_challenger` must return for the effective changes of both rule sets."""
    sides = {"champion": live_changes(champion), "challenger": live_changes(challenger)}
    firsts: dict[str, dict[str, dict[str, Any]]] = {}
    versions = {}
    for side, live in sides.items():
        leads: dict[str, dict[str, Any]] = defaultdict(dict)
        for change in sorted(live, key=lambda c: c["occurred_at"]):
            leads[change["lead_id"]].setdefault(change["to_stage"], change["occurred_at"])
        firsts[side] = leads
        versions[side] = max(live, key=lambda c: c["occurred_at"])["rules_version"]
    rows = []
    for side, other in (("challenger", "champion"), ("champion", "challenger")):
        leads = firsts[side]
        mqls = [lead for lead in leads.values() if "mql" in lead]
        sqls = sum("sql" in lead for lead in mqls)
        won = sum("customer" in lead for lead in mqls)
        flagged, first, days = 0, 0, []
        for lead_id, lead in leads.items():
            won_at, mql_at = lead.get("customer"), lead.get("mql")
            if won_at is None or mql_at is None or mql_at > won_at:
                continue
            flagged += 1
            theirs = firsts[other].get(lead_id, {}).get("mql")
            other_flagged = theirs is not None and theirs <= won_at
            if not other_flagged or mql_at < theirs:
                first += 1
            if other_flagged and mql_at < theirs:
                days.append(_days(mql_at, theirs))
        sql_low, sql_high = _wilson(sqls, len(mqls))
        won_low, won_high = _wilson(won, len(mqls))
        rows.append(
            {
                "side": side,
                "rules_version": versions[side],
                "mqls": len(mqls),
                "became_sql": sqls,
                "sql_rate": sqls / len(mqls),
                "sql_rate_low": sql_low,
                "sql_rate_high": sql_high,
                "won": won,
                "won_rate": won / len(mqls),
                "won_rate_low": won_low,
                "won_rate_high": won_high,
                "wins": sum("customer" in lead for lead in leads.values()),
                "wins_flagged": flagged,
                "wins_flagged_first": first,
                "median_days_first": quantile(days, 0.5) if days else None,
            }
        )
    return rows
