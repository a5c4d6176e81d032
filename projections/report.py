"""The funnel report: every documented view read back, on the terminal, as HTML, or as JSON."""

from __future__ import annotations

import base64
import html
import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

Row = dict[str, Any]
Metrics = dict[str, list[Row]]

FUNNEL_VIEWS: Final = {
    # view name: the ORDER BY that makes its rows come back in a stable order
    "funnel_overview": "position",
    "stage_entries_daily": "day, stage, source, campaign",
    "stage_entries_weekly": "week, stage, source, campaign",
    "conversion_cohorts": "step, cohort_week, source, campaign",
    "conversion_by_week": "step, week",
    "time_to_convert": "step",
    "sales_cycle": "source",
    "purchase_value": "currency",
    "mql_kinds": "mql_kind",
    "mql_grades": "grade",
    "disqualification_reasons": "source, reason, from_stage",
    "bottlenecks": "position",
    "engagement_daily": "day, event_type, source, campaign",
    "scoring_feedback": "event_type",
}
ACCOUNT_VIEWS: Final = {
    "account_funnel": "position",
    "account_conversion": "step",
    "account_conversion_cohorts": "step, cohort_week",
    "account_sizes": "people",
    "top_accounts": "sqls DESC, mqls DESC, people DESC, account_id",
}
CHALLENGER_VIEWS: Final = {"champion_challenger": "side"}
HANDOFF_VIEWS: Final = {
    "speed_to_lead": "week, dimension, value",
    "handoff_sla_weekly": "week, owner, queue",
    "handoff_open_breaches": "owner, queue",
    "response_time_conversion": "week, position",
}
"""Speed to lead, from the handoff events (docs/handoff.md, "Measures in ClickHouse")."""
IDENTITY_VIEWS: Final = {"identity_stitching": "links", "identity_links_daily": "day"}
ATTRIBUTION_VIEWS: Final = {
    "attribution": "model, conversion, month, source, campaign, currency",
    "conversion_windows": "step, cohort_week, window_days",
}
"""Attribution by model and conversion windows (docs/funnel.md, "Attribution")."""
VIEWS: Final = {**FUNNEL_VIEWS, **ACCOUNT_VIEWS, **CHALLENGER_VIEWS, **HANDOFF_VIEWS}
MONEY_VIEWS: Final = {
    "cac_monthly": "month, currency",
    "cac_by_source": "month, source, campaign, currency",
    "cac_by_lead_touch": "month, source, campaign, currency",
    "pipeline_velocity": "source, quarter, currency",
}
"""Spend, CAC and pipeline velocity (docs/funnel.md, "Money")."""
REPORT_VIEWS: Final = {**VIEWS, **IDENTITY_VIEWS, **MONEY_VIEWS, **ATTRIBUTION_VIEWS}
"""What `leadflow report` reads: every view, identity stitching's, the money's and the
attribution's too."""
IDENTITY_TITLE: Final = "Identity stitching (anonymous visitors linked to leads)"
POINTS_TITLE: Final = (
    "Engagement before identification (points as scored at each event, not decayed)"
)
POINT_COLUMNS: Final = (
    "points_of_leads_with_anonymous_history",
    "points_before_identification",
    "share_of_points_before_identification",
)
FUNNEL_TITLE: Final = "Funnel"
CONVERSION_TITLE: Final = "Conversion (all cohorts)"
BOTTLENECKS_TITLE: Final = (
    "Bottlenecks (per entry into a stage: entered = moved_on + skipped_ahead + dropped + waiting)"
)
CHALLENGER_TITLE: Final = "Champion and challenger rules (the same events, sales' outcomes)"
SPEED_TITLE: Final = (
    "Speed to lead: minutes from MQL to first attempt and to first contact, p50 and p90 "
    "(business: the owner's working time; wall: the clock), all weeks"
)
SPEED_WEEKLY_TITLE: Final = "Speed to lead by week of the MQL (every MQL)"
SLA_WEEKLY_TITLE: Final = "SLA attainment by week: first attempt by the deadline"
SLA_OWNER_TITLE: Final = "SLA attainment by owner and queue, all weeks"
OPEN_BREACHES_TITLE: Final = "Open breaches now: past the deadline, no touch yet"
RESPONSE_CURVE_TITLE: Final = (
    "Response time and conversion: first attempt, wall-clock minutes (a band holds its lower "
    "bound), MQL -> SQL and SQL -> won"
)
ATTRIBUTION_TITLE: Final = "Attribution by source, all months: credit per model (revenue: amount)"
ATTRIBUTION_MODELS: Final = (
    "first_touch",
    "lead_creating",
    "last_touch_before_mql",
    "linear",
    "u_shaped",
)
ATTRIBUTED_CONVERSIONS: Final = ("mql", "sql", "won", "revenue")
WINDOWS_TITLE: Final = (
    "Conversion windows by cohort week: within 7 / 30 / 90 days, share still open"
)
CAC_MONTHLY_TITLE: Final = (
    "Money: blended CAC by month (all spend over all customers won that month), cost per lead,"
    " MQL and SQL"
)
CAC_SOURCE_TITLE: Final = (
    "Money: CAC by campaign, all months (customers by first touch, and by lead-creating touch)"
)
VELOCITY_TITLE: Final = (
    "Money: pipeline velocity by source and quarter (opportunities x win rate x mean deal value"
    " / mean cycle days)"
)
RECENT_QUARTERS: Final = 4
"""Quarters of pipeline velocity shown in the report (every quarter is in the JSON and the view)."""
RECENT_WEEKS: Final = 12
"""Weeks shown in the report's weekly speed tables (every week is in the JSON and the views)."""
SLA_COUNTS: Final = (
    "handoffs",
    "with_target",
    "within_target",
    "late",
    "open_past_due",
    "pending",
    "breached",
)
STEPS: Final = (
    "lead_to_mql",
    "mql_to_sql",
    "sql_to_opportunity",
    "opportunity_to_customer",
    "sql_to_won",
)


def read_funnel(client: Any, database: str, views: dict[str, str] = VIEWS) -> Metrics:
    """Every funnel view's rows (or those of `views`: name -> ORDER BY), as dicts, in a
    stable order."""
    metrics: Metrics = {}
    for view, order in views.items():
        result = client.query(f"SELECT * FROM {database}.{view} ORDER BY {order}")
        metrics[view] = [
            dict(zip(result.column_names, row, strict=True)) for row in result.result_rows
        ]
    return metrics


def conversion_summary(metrics: Metrics) -> list[Row]:
    """Per step: entered, converted and rate over all cohorts, with the time to convert."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in metrics["conversion_cohorts"]:
        totals[row["step"]][0] += row["entered"]
        totals[row["step"]][1] += row["converted"]
    times = {row["step"]: row for row in metrics["time_to_convert"]}
    summary = []
    for step in STEPS:
        entered, converted = totals.get(step, [0, 0])
        timing = times.get(step, {})
        summary.append(
            {
                "step": step,
                "entered": entered,
                "converted": converted,
                "rate": converted / entered if entered else None,
                "median_days": timing.get("median_days"),
                "p90_days": timing.get("p90_days"),
            }
        )
    return summary


def print_report(metrics: Metrics, console: Console | None = None) -> None:
    """The funnel on the terminal."""
    console = console or Console()
    console.print(_table(FUNNEL_TITLE, _funnel_rows(metrics)))
    console.print(_table(CONVERSION_TITLE, conversion_summary(metrics)))
    console.print(_table("MQL kinds", metrics["mql_kinds"]))
    console.print(_table("MQL grades (fit letter, engagement number)", metrics["mql_grades"]))
    console.print(_table(BOTTLENECKS_TITLE, _without_position(metrics["bottlenecks"])))
    console.print(_table("Disqualification reasons", _reasons(metrics)))
    console.print(_table("Purchase value", metrics["purchase_value"]))
    console.print(
        _table("Scoring feedback (SQL rate of MQLs that did / did not)", _feedback(metrics))
    )
    for title, rows in _account_sections(metrics):
        console.print(_table(title, rows))
    if metrics["champion_challenger"]:
        console.print(_table(CHALLENGER_TITLE, metrics["champion_challenger"]))
    for title, rows in speed_to_lead_sections(metrics):
        console.print(_table(title, rows))
    for title, rows in _identity_sections(metrics):
        console.print(_table(title, rows))
    for title, rows in attribution_sections(metrics):
        console.print(_table(title, rows))
    for title, rows in money_sections(metrics):
        console.print(_table(title, rows))


def write_html(metrics: Metrics, path: Path, title: str = "leadflow funnel") -> None:
    """A one-page, self-contained report (inline SVG charts) a person can open anywhere."""
    charts = [_funnel_chart(metrics), _conversion_chart(metrics), _time_chart(metrics)]
    speed = speed_to_lead_sections(metrics)
    if speed:
        charts.append(_response_curve_chart(metrics))
    sections = [
        (FUNNEL_TITLE, _funnel_rows(metrics)),
        (CONVERSION_TITLE, conversion_summary(metrics)),
        ("MQL kinds", metrics["mql_kinds"]),
        ("MQL grades (fit letter, engagement number)", metrics["mql_grades"]),
        (BOTTLENECKS_TITLE, _without_position(metrics["bottlenecks"])),
        ("Disqualification reasons", _reasons(metrics)),
        ("Purchase value", metrics["purchase_value"]),
        ("Sales cycle by source", metrics["sales_cycle"]),
        ("Scoring feedback", _feedback(metrics)),
        *_account_sections(metrics),
    ]
    if metrics["champion_challenger"]:
        sections.append((CHALLENGER_TITLE, metrics["champion_challenger"]))
    sections.extend(speed)
    sections.extend(_identity_sections(metrics))
    sections.extend(attribution_sections(metrics))
    sections.extend(money_sections(metrics))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f'<figure><img alt="{alt}" src="{src}"></figure>' for alt, src in charts)
    body += "".join(_html_table(name, rows) for name, rows in sections)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Generated {generated}. Definitions: docs/funnel.md, section “Funnel views”.</p>"
        f"<div class='charts'>{body}</div></body></html>",
        encoding="utf-8",
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse;margin:0 0 2rem}td,th{padding:.25rem .6rem;"
    "border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
    "td:first-child,th:first-child{text-align:left}"
    "figure{display:inline-block;margin:0 1rem 1rem 0}img{max-width:560px}"
)


def speed_to_lead_sections(metrics: Metrics) -> list[tuple[str, list[Row]]]:
    """The Speed to lead part of the report: response times by dimension over all weeks and
    per recent week, SLA attainment per week and per owner and queue, the open breaches and
    the response-time curve. None before any handoff event was projected."""
    speed = metrics.get("speed_to_lead") or []
    if not speed:
        return []
    overall = [
        {"dimension": row["dimension"], "value": row["value"], **_response_times(row)}
        for row in speed
        if row["week"] is None
    ]
    weekly = [
        {"week": row["week"], **_response_times(row)}
        for row in speed
        if row["week"] is not None and row["dimension"] == "all"
    ][-RECENT_WEEKS:]
    sla = metrics.get("handoff_sla_weekly") or []
    by_week = _sla_totals(sla, ("week",))[-RECENT_WEEKS:]
    by_owner = _sla_totals(sla, ("owner", "queue"))
    breaches = [
        {
            **row,
            "oldest_due_at": _minute(row["oldest_due_at"]),
            "oldest_mql_at": _minute(row["oldest_mql_at"]),
        }
        for row in metrics.get("handoff_open_breaches") or []
    ]
    return [
        (SPEED_TITLE, overall),
        (f"{SPEED_WEEKLY_TITLE}, the last {RECENT_WEEKS} weeks", weekly),
        (f"{SLA_WEEKLY_TITLE}, the last {RECENT_WEEKS} weeks", by_week),
        (SLA_OWNER_TITLE, by_owner),
        (OPEN_BREACHES_TITLE, breaches),
        (RESPONSE_CURVE_TITLE, response_curve(metrics)),
    ]


def attribution_sections(metrics: Metrics) -> list[tuple[str, list[Row]]]:
    """Attribution by source over all months (one column per model), and the conversion
    windows of the recent cohort weeks. None before anything converted."""
    sections = []
    if metrics.get("attribution"):
        sections.append((ATTRIBUTION_TITLE, attribution_by_source(metrics)))
    if metrics.get("conversion_windows"):
        sections.append(
            (f"{WINDOWS_TITLE}, the last {RECENT_WEEKS} weeks", conversion_windows(metrics))
        )
    return sections


def attribution_by_source(metrics: Metrics) -> list[Row]:
    """Per conversion (revenue per currency) and source: what each model credits it with,
    conversions (fractions add up) or, for revenue, the amount."""
    totals: dict[tuple[int, str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(ATTRIBUTION_MODELS, 0.0)
    )
    for row in metrics.get("attribution") or []:
        revenue = row["conversion"] == "revenue"
        label = f"revenue {row['currency']}" if revenue else row["conversion"]
        order = ATTRIBUTED_CONVERSIONS.index(row["conversion"])
        totals[(order, label, row["source"])][row["model"]] += (
            row["amount"] if revenue else row["credit"]
        )
    return [
        {"conversion": label, "source": source, **credits}
        for (_, label, source), credits in sorted(totals.items())
    ]


def conversion_windows(metrics: Metrics) -> list[Row]:
    """Per step and recent cohort week: the leads that entered, and per window the rate
    converted within it and the share still open."""
    cohorts: dict[tuple[str, date], Row] = {}
    for row in metrics.get("conversion_windows") or []:
        cohort = cohorts.setdefault(
            (row["step"], row["cohort_week"]),
            {"step": row["step"], "cohort_week": row["cohort_week"], "entered": row["entered"]},
        )
        cohort[f"{row['window_days']}d rate"] = row["rate"]
        cohort[f"{row['window_days']}d open"] = row["open_share"]
    recent = []
    for step in ("mql_to_sql", "sql_to_won"):
        rows = [cohorts[key] for key in sorted(cohorts) if key[0] == step]
        recent.extend(rows[-RECENT_WEEKS:])
    return recent


def money_sections(metrics: Metrics) -> list[tuple[str, list[Row]]]:
    """The Money section: blended CAC by month, CAC by source and campaign over all months
    (per currency), and pipeline velocity. Only the parts that have rows (no spend: no CAC)."""
    sections = []
    if metrics.get("cac_monthly"):
        sections.append((CAC_MONTHLY_TITLE, metrics["cac_monthly"]))
        sections.append((CAC_SOURCE_TITLE, cac_by_campaign(metrics)))
    velocity = metrics.get("pipeline_velocity") or []
    if velocity:
        recent = sorted({row["quarter"] for row in velocity})[-RECENT_QUARTERS:]
        rows = [row for row in velocity if row["quarter"] in recent]
        sections.append((f"{VELOCITY_TITLE}, the last {len(recent)} quarters", rows))
    return sections


def cac_by_campaign(metrics: Metrics) -> list[Row]:
    """Per source, campaign and currency over all months: spend, customers by first touch and
    by lead-creating touch, and the CAC of each."""
    totals: dict[tuple[str, str, str], dict[str, float]] = defaultdict(
        lambda: {"spend": 0.0, "customers": 0, "leads": 0, "lead_touch_customers": 0}
    )
    for row in metrics.get("cac_by_source") or []:
        total = totals[(row["source"], row["campaign"], row["currency"])]
        total["spend"] += row["spend"]
        total["customers"] += row["customers"]
        total["leads"] += row["leads"]
    for row in metrics.get("cac_by_lead_touch") or []:
        totals[(row["source"], row["campaign"], row["currency"])]["lead_touch_customers"] += row[
            "customers"
        ]
    return [
        {
            "source": source,
            "campaign": campaign,
            "currency": currency,
            "spend": total["spend"],
            "leads": total["leads"],
            "cost_per_lead": _ratio(total["spend"], total["leads"]),
            "customers": total["customers"],
            "cac": _ratio(total["spend"], total["customers"]),
            "lead_touch_customers": total["lead_touch_customers"],
            "lead_touch_cac": _ratio(total["spend"], total["lead_touch_customers"]),
        }
        for (source, campaign, currency), total in sorted(totals.items())
    ]


def _ratio(amount: float, count: float) -> float | None:
    return amount / count if count else None


def _sla_totals(rows: list[Row], keys: tuple[str, ...]) -> list[Row]:
    """The SLA counts summed by `keys`, with the attainment of the sums."""
    totals: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
    for row in rows:
        totals[tuple(row[key] for key in keys)].update({c: row[c] for c in SLA_COUNTS})
    summed = []
    for key, counts in sorted(totals.items()):
        decided = counts["within_target"] + counts["late"] + counts["open_past_due"]
        summed.append(
            {
                **dict(zip(keys, key, strict=True)),
                **{name: counts[name] for name in SLA_COUNTS},
                "attainment": counts["within_target"] / decided if decided else None,
            }
        )
    return summed


def response_curve(metrics: Metrics) -> list[Row]:
    """The response-time curve over every week: per band, leads, MQL -> SQL and SQL -> won."""
    totals: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in metrics.get("response_time_conversion") or []:
        tally = totals[(row["position"], row["band"])]
        tally[0] += row["leads"]
        tally[1] += row["became_sql"]
        tally[2] += row["won"]
    return [
        {
            "band": band,
            "leads": leads,
            "became_sql": sqls,
            "sql_rate": sqls / leads if leads else None,
            "won": won,
            "won_rate": won / sqls if sqls else None,
        }
        for (_, band), (leads, sqls, won) in sorted(totals.items())
    ]


def _response_times(row: Row) -> Row:
    """A speed_to_lead row's counts, and its percentiles as `p50 / p90` minutes per measure."""
    times = {
        f"{touch} {clock} min p50 / p90": " / ".join(
            _minutes(row[f"{touch}_{clock}_p{level}"]) for level in (50, 90)
        )
        for touch in ("attempt", "contact")
        for clock in ("business", "wall")
    }
    return {"mqls": row["mqls"], "touched": row["touched"], "contacted": row["contacted"], **times}


def _minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _minute(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _identity_sections(metrics: Metrics) -> list[tuple[str, list[Row]]]:
    """Identity stitching's figures, and apart the engagement of the leads with anonymous
    history: their points, those of their visitors' visits before identification, the share.
    None before any event linked a visitor."""
    rows = metrics.get("identity_stitching") or []
    if not (rows and rows[0]["links"]):
        return []
    row = rows[0]
    counts = {name: value for name, value in row.items() if name not in POINT_COLUMNS}
    points = {"leads_with_anonymous_history": row["leads_with_anonymous_history"]}
    points.update((name, row[name]) for name in POINT_COLUMNS)
    return [(IDENTITY_TITLE, [counts]), (POINTS_TITLE, [points])]


def _funnel_rows(metrics: Metrics) -> list[Row]:
    # Counts only: reached(B) / reached(A) is no conversion rate, since leads skip stages (a deal
    # won before a quote makes a customer that never was an opportunity). The step rates are
    # conversion_summary's, one per step.
    return _without_position(metrics["funnel_overview"])


def _account_sections(metrics: Metrics) -> list[tuple[str, list[Row]]]:
    """The Accounts part of the report: stages, conversion, committee sizes, top accounts."""
    stages, previous = [], None
    for row in metrics["account_funnel"]:
        stages.append({**row, "of_previous_stage": row["reached"] / previous if previous else None})
        previous = row["reached"]
    top = [{**row, "seniorities": _tally(row["seniorities"])} for row in metrics["top_accounts"]]
    return [
        ("Accounts by stage", _without_position(stages)),
        ("Account conversion", metrics["account_conversion"]),
        ("Accounts by number of people", metrics["account_sizes"]),
        ("Top accounts (most people at SQL, then MQL)", top),
    ]


def _tally(values: Iterable[str]) -> str:
    """`["director", "manager", "manager"]` as `director, manager x2`."""
    counts = Counter(values)
    return ", ".join(f"{v} x{n}" if n > 1 else v for v, n in sorted(counts.items()))


def _without_position(rows: list[Row]) -> list[Row]:
    return [{k: v for k, v in row.items() if k != "position"} for row in rows]


def _reasons(metrics: Metrics) -> list[Row]:
    counts: dict[tuple[str, str | None], int] = defaultdict(int)
    for row in metrics["disqualification_reasons"]:
        counts[(row["reason"], row["from_stage"])] += row["disqualifications"]
    # A lead disqualified before it had any stage has no from_stage: it sorts first.
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or ""))
    return [{"reason": r, "from_stage": s, "disqualifications": n} for (r, s), n in ordered]


def _feedback(metrics: Metrics) -> list[Row]:
    def lift(row: Row) -> float:
        return (row["sql_rate_did"] or 0) - (row["sql_rate_did_not"] or 0)

    return sorted(metrics["scoring_feedback"], key=lambda row: -lift(row))


def _table(title: str, rows: list[Row]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in rows[0] if rows else ["(no data)"]:
        table.add_column(name, justify="left" if name in _TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*(_cell(value) for value in row.values()))
    return table


_TEXT_COLUMNS: Final = {
    "stage",
    "step",
    "source",
    "campaign",
    "reason",
    "from_stage",
    "event_type",
    "mql_kind",
    "currency",
    "account_id",
    "account_stage",
    "seniorities",
    "dimension",
    "value",
    "owner",
    "queue",
    "band",
    "oldest_due_at",
    "oldest_mql_at",
    "conversion",
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    return str(value)


def _html_table(title: str, rows: list[Row]) -> str:
    if not rows:
        return f"<h2>{html.escape(title)}</h2><p>No data.</p>"
    head = "".join(f"<th>{html.escape(name)}</th>" for name in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt

    return plt


def _funnel_chart(metrics: Metrics) -> tuple[str, str]:
    plt = _pyplot()
    rows = [row for row in metrics["funnel_overview"] if row["stage"] != "disqualified"]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    axes.barh([r["stage"] for r in rows][::-1], [r["reached"] for r in rows][::-1], color="#3b7dd8")
    axes.set_title("Leads that reached each stage")
    axes.set_xlabel("leads")
    try:
        return "Funnel", _svg(figure)
    finally:
        plt.close(figure)


def _conversion_chart(metrics: Metrics) -> tuple[str, str]:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2))
    for step in ("mql_to_sql", "sql_to_won"):
        weeks = _cohort_rates(metrics["conversion_cohorts"], step)
        axes.plot(list(weeks), list(weeks.values()), marker="o", label=step.replace("_", " "))
    axes.set_title("Cohort conversion by week of entry")
    axes.set_ylabel("rate")
    axes.legend()
    figure.autofmt_xdate()
    try:
        return "Conversion over time", _svg(figure)
    finally:
        plt.close(figure)


def _time_chart(metrics: Metrics) -> tuple[str, str]:
    plt = _pyplot()
    rows = metrics["time_to_convert"]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    positions = range(len(rows))
    axes.bar([p - 0.2 for p in positions], [r["median_days"] for r in rows], 0.4, label="median")
    axes.bar([p + 0.2 for p in positions], [r["p90_days"] for r in rows], 0.4, label="p90")
    axes.set_xticks(list(positions), [r["step"].replace("_", " ") for r in rows], rotation=20)
    axes.set_title("Time to convert")
    axes.set_ylabel("days")
    axes.legend()
    try:
        return "Time to convert", _svg(figure)
    finally:
        plt.close(figure)


def _cohort_rates(rows: Iterable[Row], step: str) -> dict[date, float]:
    totals: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row["step"] == step:
            totals[row["cohort_week"]][0] += row["entered"]
            totals[row["cohort_week"]][1] += row["converted"]
    return {week: c / e for week, (e, c) in sorted(totals.items()) if e}


def _response_curve_chart(metrics: Metrics) -> tuple[str, str]:
    plt = _pyplot()
    rows = response_curve(metrics)
    figure, axes = plt.subplots(figsize=(6, 3.2))
    positions = range(len(rows))
    sql_rates = [r["sql_rate"] or 0 for r in rows]
    won_rates = [r["won_rate"] or 0 for r in rows]
    axes.bar([p - 0.2 for p in positions], sql_rates, 0.4, label="MQL -> SQL")
    axes.bar([p + 0.2 for p in positions], won_rates, 0.4, label="SQL -> won")
    labels = [f"{r['band']}\n({r['leads']} leads)" for r in rows]
    axes.set_xticks(list(positions), labels, fontsize=7)
    axes.set_title("Conversion by wall-clock time to the first attempt")
    axes.set_ylabel("rate")
    axes.set_ylim(0, 1.25)  # room for the legend above the bars
    axes.legend(loc="upper center", ncol=2)
    try:
        return "Response time and conversion", _svg(figure)
    finally:
        plt.close(figure)
