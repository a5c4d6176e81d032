"""Attribution and conversion windows on the embedded ClickHouse engine, fed directly (no Kafka)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from projections.clickhouse import migrate
from projections.report import (
    ATTRIBUTION_TITLE,
    ATTRIBUTION_VIEWS,
    REPORT_VIEWS,
    WINDOWS_TITLE,
    print_report,
    read_funnel,
    write_html,
)
from projections.rows import event_row, stage_change_row
from projections.writer import ProjectionWriter
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.rules import Rules
from streams.local.generator import TrafficShape, generate
from tests.support.attribution_reference import (
    MODELS,
    attribution,
    attribution_credits,
    conversion_windows,
)
from tests.support.factories import BUYER, days, event
from tests.support.funnel_reference import _monday, normalised
from tests.support.harness import effective, replay_bytes, unique

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "funnel.json"
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Projected:
    """One database holding generated traffic and the hand-made leads, and what it was fed."""

    database: str
    events: list[dict[str, Any]]
    changes: list[bytes]


def touched_journey() -> list[dict[str, Any]]:
    """attr-a: an anonymous visit from google (linked by its sign-up from linkedin, which makes
    it a lead), a newsletter download, a demo request (MQL), an events webinar after the MQL,
    then SQL and a won deal of 1,000 EUR; attr-b: two touches before its MQL; attr-c: none."""
    visit = event("page_view", days(0), lead="anon-a", source="google", campaign="brand", url="/")
    visit["anonymous_id"] = "anon-a"
    signup = event(
        "profile_updated", days(1), lead="attr-a", source="linkedin", campaign="abm", **BUYER
    )
    signup["anonymous_id"] = "anon-a"
    return [
        visit,
        signup,
        event(
            "content_download",
            days(2),
            lead="attr-a",
            source="newsletter",
            campaign="digest",
            content_category="whitepaper",
        ),
        event("demo_request", days(3), lead="attr-a"),
        event("webinar_attended", days(3.5), lead="attr-a", source="events", campaign="summit"),
        event("sales_contacted", days(4), lead="attr-a"),
        event("deal_won", days(10), lead="attr-a", amount=1000.0, currency="EUR"),
        event("page_view", days(0), lead="attr-b", source="google", campaign="brand", url="/"),
        event("profile_updated", days(1), lead="attr-b", **BUYER),
        event("page_view", days(1.5), lead="attr-b", source="partner", campaign="resell", url="/"),
        event("demo_request", days(2), lead="attr-b"),
        event("profile_updated", days(1), lead="attr-c", **BUYER),
        event("demo_request", days(2), lead="attr-c"),
    ]


def young_cohorts() -> list[dict[str, Any]]:
    """win-young: MQL 3 days ago, no SQL; win-middle: MQL 20 days ago, no SQL; win-old: MQL
    40 days ago, SQL 2 days later, not won."""
    return [
        event("profile_updated", NOW - days(3.1), lead="win-young", **BUYER),
        event("demo_request", NOW - days(3), lead="win-young"),
        event("profile_updated", NOW - days(20.1), lead="win-middle", **BUYER),
        event("demo_request", NOW - days(20), lead="win-middle"),
        event("profile_updated", NOW - days(40.1), lead="win-old", **BUYER),
        event("demo_request", NOW - days(40), lead="win-old"),
        event("sales_contacted", NOW - days(38), lead="win-old"),
    ]


@pytest.fixture(scope="module")
def projected(clickhouse: Any, rules: Rules) -> Iterator[Projected]:
    events = [
        *generate(300, seed=21, shape=TrafficShape(anonymous_browsing=0.6)),
        *touched_journey(),
        *young_cohorts(),
    ]
    changes = replay_bytes(events, rules)
    database = unique("attribution").replace("-", "_")
    migrate(clickhouse, database)
    writer = ProjectionWriter(clickhouse, database)
    change_rows = [stage_change_row(value) for value in changes]
    event_rows = [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events]
    writer.write(change_rows, event_rows)
    writer.write(change_rows, event_rows)  # a redelivery counts once
    yield Projected(database, events, changes)
    clickhouse.command(f"DROP DATABASE IF EXISTS {database}")


def query(client: Any, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def credits_of(client: Any, database: str, conversion_id: str) -> dict[str, dict[str, float]]:
    """model -> {source: credit} of one conversion."""
    found: dict[str, dict[str, float]] = defaultdict(dict)
    for row in query(
        client,
        f"SELECT model, source, credit FROM {database}.attribution_credits "
        f"WHERE conversion_id = '{conversion_id}'",
    ):
        found[row["model"]][row["source"]] = round(row["credit"], 9)
    return dict(found)


def test_attribution_equals_the_reference_and_every_conversion_gives_out_one(
    clickhouse: Any, projected: Projected
) -> None:
    expected_credits = attribution_credits(effective(projected.changes).values(), projected.events)
    found_credits = query(clickhouse, f"SELECT * FROM {projected.database}.attribution_credits")

    def keyed(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        by_key = {(r["conversion_id"], r["model"], r["source"], r["campaign"]): [r] for r in rows}
        return normalised({"|".join(map(str, key)): rows for key, rows in by_key.items()})

    assert len(found_credits) == len(expected_credits)
    assert keyed(found_credits) == keyed(expected_credits)
    conversions = {(r["conversion"], r["conversion_id"]) for r in found_credits}
    assert {kind for kind, _ in conversions} == {"mql", "sql", "won", "revenue"}
    assert len(conversions) > 100, "want a sample with many conversions"

    sums: dict[tuple[str, str], float] = defaultdict(float)
    for row in found_credits:
        sums[(row["conversion_id"], row["model"])] += row["credit"]
    assert len(sums) == len(conversions) * len(MODELS)
    assert all(abs(total - 1) < 1e-9 for total in sums.values()), "credits must sum to 1"
    # Not everything goes to (none): the models read real touches, linked visits included.
    for model in MODELS:
        credited = [r for r in found_credits if r["model"] == model and r["source"] != "(none)"]
        assert len(credited) > len(conversions) / 2, model

    found = query(clickhouse, f"SELECT * FROM {projected.database}.attribution")
    expected = attribution(expected_credits)
    by_key = {
        (r["model"], r["conversion"], r["month"], r["source"], r["campaign"], r["currency"]): {
            "conversions": r["conversions"],
            "credit": r["credit"],
            "amount": r["amount"],
        }
        for r in found
    }
    assert len(found) == len(by_key) == len(expected)

    def text(rows: dict[tuple[Any, ...], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        return normalised({"|".join(map(str, key)): [row] for key, row in rows.items()})

    assert text(by_key) == text(expected)
    # Revenue credited adds up to the purchases, per currency, under every model.
    purchases = {
        row["currency"]: row["total_amount"]
        for row in query(clickhouse, f"SELECT * FROM {projected.database}.purchase_value")
    }
    for model in MODELS:
        revenue: dict[str, float] = defaultdict(float)
        for row in found:
            if row["model"] == model and row["conversion"] == "revenue":
                revenue[row["currency"]] += row["amount"]
        assert revenue == pytest.approx(purchases), model


def test_each_model_credits_a_hand_made_journey(clickhouse: Any, projected: Projected) -> None:
    third = round(1 / 3, 9)
    mql = credits_of(clickhouse, projected.database, "attr-a/mql")
    assert mql == {
        "first_touch": {"google": 1.0},
        "lead_creating": {"linkedin": 1.0},
        "last_touch_before_mql": {"newsletter": 1.0},
        "linear": {"google": third, "linkedin": third, "newsletter": third},
        "u_shaped": {"google": 0.4, "linkedin": 0.2, "newsletter": 0.4},
    }
    # The SQL's path also holds the webinar after the MQL; the last touch before the MQL stays.
    expected_after_mql = {
        "first_touch": {"google": 1.0},
        "lead_creating": {"linkedin": 1.0},
        "last_touch_before_mql": {"newsletter": 1.0},
        "linear": {"google": 0.25, "linkedin": 0.25, "newsletter": 0.25, "events": 0.25},
        "u_shaped": {"google": 0.4, "linkedin": 0.1, "newsletter": 0.1, "events": 0.4},
    }
    assert credits_of(clickhouse, projected.database, "attr-a/sql") == expected_after_mql
    assert credits_of(clickhouse, projected.database, "attr-a/won") == expected_after_mql
    deal = next(
        e["event_id"]
        for e in projected.events
        if e["lead_id"] == "attr-a" and e["type"] == "deal_won"
    )
    revenue = query(
        clickhouse,
        f"SELECT model, source, amount, currency FROM {projected.database}.attribution_credits "
        f"WHERE conversion_id = '{deal}' AND model = 'u_shaped' ORDER BY source",
    )
    assert [(r["source"], round(r["amount"], 6), r["currency"]) for r in revenue] == [
        ("events", 400.0, "EUR"),
        ("google", 400.0, "EUR"),
        ("linkedin", 100.0, "EUR"),
        ("newsletter", 100.0, "EUR"),
    ]
    two = credits_of(clickhouse, projected.database, "attr-b/mql")
    assert two["u_shaped"] == two["linear"] == {"google": 0.5, "partner": 0.5}
    assert two["lead_creating"] == {"(none)": 1.0}, "its sign-up has no source"
    assert credits_of(clickhouse, projected.database, "attr-c/mql") == {
        model: {"(none)": 1.0} for model in MODELS
    }


def test_conversion_windows_equal_the_reference_and_a_young_cohort_is_still_open(
    clickhouse: Any, projected: Projected
) -> None:
    now = clickhouse.query("SELECT now64(6)").result_rows[0][0].replace(tzinfo=UTC)
    found = query(clickhouse, f"SELECT * FROM {projected.database}.conversion_windows")
    expected = conversion_windows(effective(projected.changes).values(), projected.events, now)
    by_key = {
        (r["step"], r["cohort_week"], r["window_days"]): {
            k: v for k, v in r.items() if k not in ("step", "cohort_week", "window_days")
        }
        for r in found
    }
    assert len(found) == len(by_key) == len(expected)

    def text(rows: dict[tuple[Any, ...], dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        return normalised({"|".join(map(str, key)): [row] for key, row in rows.items()})

    assert text(by_key) == text(expected)
    for row in found:
        assert row["entered"] == row["converted"] + row["still_open"] + row["not_converted"]

    def window(step: str, ago: float, days_: int) -> dict[str, Any]:
        return by_key[(step, _monday(NOW - days(ago)), days_)]

    young = window("mql_to_sql", 3, 7)
    assert (young["entered"], young["converted"], young["still_open"]) == (1, 0, 1)
    assert young["open_share"] == 1.0 and young["decided_rate"] is None
    assert young["rate"] == 0.0, "a young cohort: no rate yet, but all of it still open"
    middle = [window("mql_to_sql", 20, d) for d in (7, 30, 90)]
    assert [(w["not_converted"], w["still_open"]) for w in middle] == [(1, 0), (0, 1), (0, 1)]
    old = [window("mql_to_sql", 40, d) for d in (7, 30, 90)]
    assert [(w["converted"], w["rate"]) for w in old] == [(1, 1.0)] * 3
    won = [window("sql_to_won", 38, d) for d in (7, 30, 90)]
    assert [(w["not_converted"], w["still_open"]) for w in won] == [(1, 0), (1, 0), (0, 1)]


def test_the_report_and_the_dashboard_show_attribution_and_windows(
    clickhouse: Any, projected: Projected, tmp_path: Path
) -> None:
    metrics = read_funnel(clickhouse, projected.database, REPORT_VIEWS)
    assert all(metrics[view] for view in ATTRIBUTION_VIEWS)
    console = Console(record=True, width=220)
    print_report(metrics, console)
    text = console.export_text()
    assert ATTRIBUTION_TITLE in text and WINDOWS_TITLE in text
    assert "u_shaped" in text and "revenue EUR" in text
    page = tmp_path / "funnel.html"
    write_html(metrics, page)
    html = page.read_text()
    assert f"<h2>{ATTRIBUTION_TITLE}</h2>" in html and "<h2>" + WINDOWS_TITLE in html
    json.loads(orjson.dumps(metrics))  # --json prints the same metrics

    queries = [
        target["rawSql"]
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        for target in panel.get("targets", [])
    ]
    for view in ATTRIBUTION_VIEWS:
        mine = [q for q in queries if f"funnel.{view} " in q]
        assert mine, f"no panel reads {view}"
        for sql in mine:
            rows = clickhouse.query(sql.replace("funnel.", f"{projected.database}.")).result_rows
            assert rows, sql
