"""The funnel tables and views on the embedded ClickHouse engine, fed directly (no Kafka)."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from rich.console import Console

from projections.clickhouse import ClickHouseError, migrate, migrations
from projections.projector import Projector
from projections.report import (
    ACCOUNT_VIEWS,
    BOTTLENECKS_TITLE,
    CONVERSION_TITLE,
    FUNNEL_TITLE,
    FUNNEL_VIEWS,
    HANDOFF_VIEWS,
    IDENTITY_TITLE,
    IDENTITY_VIEWS,
    OPEN_BREACHES_TITLE,
    POINTS_TITLE,
    REPORT_VIEWS,
    SLA_OWNER_TITLE,
    SPEED_TITLE,
    VIEWS,
    print_report,
    read_funnel,
    response_curve,
    speed_to_lead_sections,
    write_html,
)
from projections.rows import (
    RejectedRecord,
    account_change_row,
    account_member_row,
    event_row,
    handoff_event_row,
    spend_row,
    stage_change_row,
)
from projections.writer import ProjectionWriter
from schemas.accounts import AccountChange, AccountSignal
from schemas.events import ENGAGEMENT_TYPES
from streams.common.account_signals_codec import encode_account_signal
from streams.common.kafka_clients import create_topics
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.spend import encode_spend
from streams.common.stage_changes_codec import encode_account_change
from streams.core.account import AccountStageChange, Signal
from streams.core.rules import Rules
from streams.local.generator import TrafficShape, generate
from streams.local.spend_traffic import generate_spend
from streams.offline.replay import Replayer
from tests.support.account_records import T0, AccountLog, account_log
from tests.support.account_reference import expected_account_metrics
from tests.support.factories import BUYER, days, event
from tests.support.funnel_reference import (
    BOTTLENECK_OUTCOMES,
    champion_challenger,
    expected_metrics,
    normalised,
)
from tests.support.handoff_records import handoff_event, handoff_log
from tests.support.handoff_reference import BANDS, DIMENSIONS, band_of, expected_handoff_metrics
from tests.support.harness import (
    Pipeline,
    effective,
    in_effect,
    replay_bytes,
    settings_from,
)
from tests.support.lead_paths import example_paths, lead_histories
from tests.support.waiting import wait_for

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "funnel.json"
PER_ACCOUNT_VIEWS = {
    "account_status": "account_id",
    "account_people": "account_id",
    "account_conversions": "account_id, step",
}


@pytest.fixture(scope="module")
def sample(rules: Rules) -> tuple[list[dict[str, Any]], list[bytes]]:
    # Each event delivered up to six days late (within the rules' allowed lateness), in any
    # interleaving: many events are late, so the log has rewrites and retractions.
    shuffle = random.Random(7)
    events = sorted(
        generate(600, seed=7),
        key=lambda e: (
            datetime.fromisoformat(e["occurred_at"]) + timedelta(days=6 * shuffle.random())
        ),
    )
    return events, replay_bytes(events, rules)


@pytest.fixture(scope="module")
def replayed_accounts(rules: Rules, sample: tuple[list[dict[str, Any]], list[bytes]]) -> AccountLog:
    """The account records the workers publish for the sample's events (the same replay)."""
    replayed = AccountLog()
    for item in Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=True).run(
        orjson.dumps(e) for e in sample[0]
    ):
        if isinstance(item, Signal):
            replayed.signals.append(encode_account_signal(item))
        elif isinstance(item, AccountStageChange):
            replayed.changes.append(encode_account_change(item))
    return replayed


def write_accounts(writer: ProjectionWriter, log: AccountLog, batch: int = 1000) -> None:
    """Every record in a shuffled order and in batches, then all of them again: a redelivery."""
    changes = [account_change_row(value, 1_700_000_000_000) for value in log.changes]
    signals = [account_member_row(value, 1_700_000_000_000) for value in log.signals]
    shuffle = random.Random(11)
    changes_shuffled = shuffle.sample(changes, len(changes))
    signals_shuffled = shuffle.sample(signals, len(signals))
    for start in range(0, max(len(changes), len(signals)), batch):
        writer.write(
            [],
            [],
            changes_shuffled[start : start + batch],
            signals_shuffled[start : start + batch],
        )
    writer.write([], [], changes, signals)


def read_account_views(client: Any, database: str) -> dict[str, list[dict[str, Any]]]:
    """The report's account views, then the per-account ones, as dicts."""
    found = {view: read_funnel(client, database)[view] for view in ACCOUNT_VIEWS}
    for view, order in PER_ACCOUNT_VIEWS.items():
        result = client.query(f"SELECT * FROM {database}.{view} ORDER BY {order}")
        found[view] = [
            dict(zip(result.column_names, row, strict=True)) for row in result.result_rows
        ]
    return normalised(found)


def test_every_view_equals_the_same_metric_computed_from_replay(
    clickhouse: Any, database: str, sample: tuple[list[dict[str, Any]], list[bytes]]
) -> None:
    events, changes = sample
    assert any(orjson.loads(c)["revision"] > 1 for c in changes), "want rewrites in the log"
    assert any(orjson.loads(c)["retracted"] for c in changes), "want retractions in the log"
    writer = ProjectionWriter(clickhouse, database)
    change_rows = [stage_change_row(value, 1_700_000_000_000) for value in changes]
    event_rows = [
        event_row(orjson.dumps(event), DEFAULT_MAX_EVENT_BYTES, 1_700_000_000_000)
        for event in events
    ]
    # Every revision, in a shuffled order, then all of it again in other batches: a redelivery.
    shuffled = random.Random(3).sample(change_rows, len(change_rows))
    for start in range(0, len(shuffled), 1000):
        writer.write(shuffled[start : start + 1000], event_rows[start : start + 1000])
    writer.write(change_rows, event_rows)

    found = normalised(read_funnel(clickhouse, database))
    expected = normalised(expected_metrics(effective(changes).values(), events))
    assert list(found) == list(VIEWS)
    for view in FUNNEL_VIEWS:
        assert found[view], f"{view} is empty: the sample does not exercise it"
        assert found[view] == expected[view], view


BOTTLENECK_VIEWS = {"bottlenecks": "position", "funnel_overview": "position"}


def project_log(
    client: Any, database: str, events: list[dict[str, Any]], rules: Rules
) -> dict[str, list[dict[str, Any]]]:
    """Write the events and the stage changes `leadflow replay` publishes for them; return
    the reference's bottlenecks and funnel for the same log."""
    changes = replay_bytes(events, rules)
    ProjectionWriter(client, database).write(
        [stage_change_row(value) for value in changes],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events],
    )
    return expected_metrics(effective(changes).values(), events)


def assert_bottlenecks_add_up(client: Any, database: str, expected: dict[str, Any]) -> None:
    """Per stage: entered = moved_on + skipped_ahead + dropped + waiting; entries less
    re-entries are the funnel's leads; and the view equals the reference."""
    found = read_funnel(client, database, BOTTLENECK_VIEWS)
    reached = {row["stage"]: row["reached"] for row in found["funnel_overview"]}
    for row in found["bottlenecks"]:
        assert row["entered"] == sum(row[outcome] for outcome in BOTTLENECK_OUTCOMES), row
        assert row["entered"] - row["re_entries"] == reached[row["stage"]], row
    assert normalised(found)["bottlenecks"] == normalised(expected)["bottlenecks"]


def test_bottlenecks_add_up_for_recycled_and_stage_skipping_leads(
    clickhouse: Any, database: str, rules: Rules
) -> None:
    # Generated traffic (its recycled leads re-enter stages, some win before opportunity) and
    # one lead on each kind of path: recycled, skipping from lead, MQL, SQL, no stage at all.
    events = [*generate(600, seed=7), *example_paths()]
    expected = project_log(clickhouse, database, events, rules)
    rows = read_funnel(clickhouse, database, BOTTLENECK_VIEWS)["bottlenecks"]
    assert [row["stage"] for row in rows] == [
        "subscriber",
        "lead",
        "mql",
        "sql",
        "opportunity",
        "customer",
    ]
    assert sum(row["re_entries"] for row in rows) > 30, "want recycled leads"
    assert sum(row["skipped_ahead"] for row in rows) > 2, "want leads that skip stages"
    assert_bottlenecks_add_up(clickhouse, database, expected)


@examples(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=lead_histories())
def test_bottlenecks_add_up_whatever_leads_do(
    clickhouse: Any, database: str, rules: Rules, documents: list[dict[str, Any]]
) -> None:
    for table in ("stage_changes", "events"):  # the database outlives each example
        clickhouse.command(f"TRUNCATE TABLE {database}.{table}")
    expected = project_log(clickhouse, database, documents, rules)
    assert_bottlenecks_add_up(clickhouse, database, expected)


def test_champion_and_challenger_compare_against_the_same_sales_outcomes(
    clickhouse: Any, database: str, sample: tuple[list[dict[str, Any]], list[bytes]]
) -> None:
    events, champion = sample
    writer = ProjectionWriter(clickhouse, database)
    assert read_funnel(clickhouse, database, {"champion_challenger": "side"}) == {
        "champion_challenger": []
    }, "nothing to compare before a challenger runs"
    challenger = replay_bytes(events, with_threshold(45.0))
    writer.write([stage_change_row(v, 1_700_000_000_000) for v in champion], [])
    rows = [stage_change_row(v, 1_700_000_000_000) for v in challenger]
    writer.write([], [], challenger_changes=rows)
    writer.write([], [], challenger_changes=rows[: len(rows) // 2])  # a redelivery
    found = read_funnel(clickhouse, database, {"champion_challenger": "side"})
    expected = champion_challenger(effective(champion).values(), effective(challenger).values())
    assert [row["side"] for row in expected] == ["challenger", "champion"]
    assert expected[0]["mqls"] > expected[1]["mqls"] and expected[0]["wins_flagged_first"] > 0
    assert normalised(found) == normalised({"champion_challenger": expected})


def with_threshold(threshold: float) -> Rules:
    from streams.core.rules import load_rules

    rules = load_rules()
    engagement = rules.engagement.model_copy(update={"mql_threshold": threshold})
    return rules.model_copy(update={"engagement": engagement, "version": "challenger"})


@pytest.mark.parametrize("source", ["replayed", "by_hand"])
def test_every_account_view_equals_the_same_metric_computed_from_the_records(
    clickhouse: Any, database: str, replayed_accounts: AccountLog, source: str
) -> None:
    # Replayed: realistic traffic, rewritten at higher revisions by late events. By hand: also
    # retractions and people who move to another account or leave theirs.
    log = replayed_accounts if source == "replayed" else account_log()
    changes = [orjson.loads(value) for value in log.changes]
    assert any(change["revision"] > 1 for change in changes), "want rewrites in the log"
    if source == "by_hand":
        assert any(change["retracted"] for change in changes), "want retractions in the log"
        assert any(not orjson.loads(s)["member"] for s in log.signals), "want people leaving"
    write_accounts(ProjectionWriter(clickhouse, database), log)

    found = read_account_views(clickhouse, database)
    expected = normalised(expected_account_metrics(log.changes, log.signals))
    assert list(found) == list(expected)
    for view, rows in expected.items():
        assert rows, f"{view} is empty: the records do not exercise it"
        assert found[view] == rows, view


def _signal(lead: str, revision: int, member: bool, stage: str, account: str = "acme.com") -> bytes:
    return (
        AccountSignal(
            account_id=account,
            lead_id=lead,
            revision=revision,
            occurred_at=T0 + timedelta(days=revision),
            causation_event_id=f"e-{lead}-{revision}",
            member=member,
            stage=stage,
            seniority="director",
            engagement_score=10.0,
        )
        .model_dump_json()
        .encode()
    )


def _change(
    to_stage: str, days: float, revision: int, sequence: int, retracted: bool = False
) -> bytes:
    return (
        AccountChange(
            change_id=f"{to_stage}-{days}",
            account_id="acme.com",
            from_stage=None,
            to_stage=to_stage,
            occurred_at=T0 + timedelta(days=days),
            rule=f"account.{to_stage}",
            rules_version="test",
            causation_lead_id="lead-1",
            causation_event_id="e-1",
            people=1,
            leads=1,
            mqls=1,
            sqls=0,
            engagement_score=1.0,
            seniorities=("director",),
            sequence=sequence,
            revision=revision,
            retracted=retracted,
        )
        .model_dump_json()
        .encode()
    )


def test_account_revisions_and_retractions_count_once_whatever_the_arrival_order(
    clickhouse: Any, database: str
) -> None:
    log = AccountLog(
        signals=[
            _signal("lead-1", 1, True, "mql"),
            _signal("lead-1", 4, True, "sql"),
            _signal("lead-2", 2, True, "lead"),
            _signal("lead-2", 5, False, "mql"),  # lead-2 left for another company
            _signal("lead-2", 5, True, "mql", account="other.com"),
        ],
        changes=[
            _change("engaged", 1, revision=1, sequence=0),
            _change("sales_ready", 3, revision=2, sequence=5),  # a stale position...
            _change("sales_ready", 3, revision=3, sequence=1),  # ...rewritten
            _change("customer", 6, revision=4, sequence=2),
            _change("customer", 6, revision=5, sequence=2, retracted=True),
        ],
    )
    # Newest first, each record three times: the highest revision must win all the same.
    writer = ProjectionWriter(clickhouse, database)
    for _ in range(3):
        write_accounts(writer, AccountLog(log.signals[::-1], log.changes[::-1]), batch=1)

    found = read_account_views(clickhouse, database)
    assert [(r["stage"], r["reached"], r["current"]) for r in found["account_funnel"]] == [
        ("engaged", 1, 0),
        ("sales_ready", 1, 1),
        ("customer", 0, 0),
    ]
    people = {r["account_id"]: r for r in found["account_people"]}
    assert people["acme.com"]["people"] == 1 and people["acme.com"]["sqls"] == 1
    assert people["acme.com"]["account_stage"] == "sales_ready"
    assert people["other.com"]["account_stage"] == "(none)"
    assert [
        (r["step"], r["entered"], r["converted"], r["median_days"])
        for r in found["account_conversion"]
    ] == [("engaged_to_sales_ready", 1, 1, 2.0), ("sales_ready_to_customer", 1, 0, None)]
    assert found == normalised(expected_account_metrics(log.changes, log.signals))


def test_migrations_are_idempotent_and_refuse_an_edited_version(
    clickhouse: Any, database: str
) -> None:
    assert migrate(clickhouse, database) == []
    versioned = next(m for m in migrations() if m.version is not None)
    clickhouse.command(
        f"INSERT INTO {database}.schema_migrations (name, version, checksum) "
        f"VALUES ('V{versioned.version:04d}__{versioned.name}', {versioned.version}, 'edited')"
    )
    with pytest.raises(ClickHouseError, match="changed after it was applied"):
        migrate(clickhouse, database)


def test_unreadable_messages_are_rejected_with_a_reason() -> None:
    with pytest.raises(RejectedRecord, match="not a stage change"):
        stage_change_row(b'{"change_id": "x"}')
    with pytest.raises(RejectedRecord, match="not JSON"):
        event_row(b"\xff\xfe", DEFAULT_MAX_EVENT_BYTES)
    with pytest.raises(RejectedRecord, match="not an account change: missing field 'account_id'"):
        account_change_row(b'{"change_id": "x"}')
    with pytest.raises(RejectedRecord, match="not an account signal: stage"):
        account_member_row(_signal("lead-1", 1, True, "mql").replace(b'"mql"', b'"vip"'))
    with pytest.raises(RejectedRecord, match="not an account signal: not JSON"):
        account_member_row(b"\xff\xfe")


def test_every_dashboard_query_runs_on_the_embedded_engine(
    clickhouse: Any,
    database: str,
    sample: tuple[list[dict[str, Any]], list[bytes]],
    replayed_accounts: AccountLog,
    rules: Rules,
) -> None:
    events, changes = sample
    writer = ProjectionWriter(clickhouse, database)
    writer.write(
        [stage_change_row(c) for c in changes],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events],
    )
    write_accounts(writer, replayed_accounts)
    challenger = replay_bytes(events, with_threshold(45.0))
    writer.write([], [], challenger_changes=[stage_change_row(c) for c in challenger])
    # Visitors linked to leads and a merged duplicate, scored: the identity panels have rows.
    stitched = [
        *generate(100, seed=14, shape=TrafficShape(anonymous_browsing=0.6)),
        *merged_duplicate(),
    ]
    writer.write(
        [stage_change_row(c) for c in replay_bytes(stitched, rules)],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES, rules=rules) for e in stitched],
    )
    write_handoffs(writer, handoff_log(effective(changes).values()))
    # The campaigns' spend: the money panels have rows.
    writer.write([], [], spend=[spend_row(encode_spend(s)) for s in generate_spend(events, 7)])
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["rawSql"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(queries) >= 8
    identity = " ".join(query for query in queries if ".identity_" in query)
    for column in ("links", "share_with_anonymous_history", "points_before_identification"):
        assert column in identity, f"no panel shows {column}"
    for view in HANDOFF_VIEWS:
        assert any(f"funnel.{view} " in query for query in queries), f"no panel reads {view}"
    for query in queries:
        assert "funnel." in query
        result = clickhouse.query(query.replace("funnel.", f"{database}."))
        assert result.result_rows, query


def test_the_html_report_is_one_self_contained_page(
    clickhouse: Any,
    database: str,
    sample: tuple[list[dict[str, Any]], list[bytes]],
    replayed_accounts: AccountLog,
    tmp_path: Path,
) -> None:
    events, changes = sample
    writer = ProjectionWriter(clickhouse, database)
    writer.write(
        [stage_change_row(c) for c in changes],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events],
    )
    write_accounts(writer, replayed_accounts)
    page = tmp_path / "funnel.html"
    write_html(read_funnel(clickhouse, database), page)
    text = page.read_text()
    assert text.count("data:image/svg+xml;base64,") == 3
    assert "http://" not in text and "https://" not in text  # opens offline
    for heading in (
        "Funnel",
        "Conversion",
        "Bottlenecks",
        "Scoring feedback",
        "Accounts by stage",
        "Account conversion",
        "Top accounts",
    ):
        assert f"<h2>{heading}" in text


def test_the_terminal_report_shows_every_section(
    clickhouse: Any,
    database: str,
    sample: tuple[list[dict[str, Any]], list[bytes]],
    replayed_accounts: AccountLog,
) -> None:
    events, changes = sample
    writer = ProjectionWriter(clickhouse, database)
    writer.write(
        [stage_change_row(c) for c in changes],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events],
    )
    write_accounts(writer, replayed_accounts)
    console = Console(record=True, width=200)
    print_report(read_funnel(clickhouse, database), console)
    text = console.export_text()
    for title in ("Funnel", "Conversion", "MQL kinds", "Bottlenecks", "Purchase value"):
        assert title in text
    assert "mql_to_sql" in text and "passive" in text
    for title in ("Accounts by stage", "Account conversion", "Top accounts"):
        assert title in text
    assert "engaged_to_sales_ready" in text and "sales_ready_to_customer" in text


def test_the_report_shows_one_rate_per_step_and_bottlenecks_that_add_up(
    clickhouse: Any,
    database: str,
    sample: tuple[list[dict[str, Any]], list[bytes]],
    replayed_accounts: AccountLog,
    tmp_path: Path,
) -> None:
    events, changes = sample
    writer = ProjectionWriter(clickhouse, database)
    writer.write(
        [stage_change_row(c) for c in changes],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events],
    )
    write_accounts(writer, replayed_accounts)
    metrics = read_funnel(clickhouse, database)
    page = tmp_path / "funnel.html"
    write_html(metrics, page)
    tables = {
        title: section.split("</table>")[0]
        for title, section in (
            part.split("</h2>", 1) for part in page.read_text().split("<h2>")[1:]
        )
    }
    # The funnel counts leads; the one rate of each step is the conversion table's (reached
    # over reached is none: leads that win before opportunity would count as converted).
    assert _header(tables[FUNNEL_TITLE]) == ["stage", "reached", "current"]
    assert _header(tables[CONVERSION_TITLE])[:4] == ["step", "entered", "converted", "rate"]
    assert _header(tables[BOTTLENECKS_TITLE])[:7] == [
        "stage",
        "entered",
        *BOTTLENECK_OUTCOMES,
        "re_entries",
    ]
    for row in metrics["bottlenecks"]:
        cells = f"<td>{row['stage']}</td><td>{row['entered']}</td>" + "".join(
            f"<td>{row[outcome]}</td>" for outcome in BOTTLENECK_OUTCOMES
        )
        assert cells in tables[BOTTLENECKS_TITLE]
    console = Console(record=True, width=250)
    print_report(metrics, console)
    text = console.export_text()
    funnel = text.split(FUNNEL_TITLE, 1)[1].split(CONVERSION_TITLE, 1)[0]
    assert "reached" in funnel and "of_previous_stage" not in funnel
    assert "skipped_ahead" in text.split(BOTTLENECKS_TITLE, 1)[1]


def _header(table: str) -> list[str]:
    return [cell.split("</th>")[0] for cell in table.split("<th>")[1:]]


def test_the_projector_says_when_it_owns_its_partitions(
    pipeline: Pipeline, clickhouse: Any, database: str
) -> None:
    settings = settings_from(
        pipeline.projector_env("assigned", LEADFLOW_CLICKHOUSE__DATABASE=database)
    )
    create_topics(settings)
    projector = Projector(settings, clickhouse)
    stop = threading.Event()
    running = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    running.start()
    try:
        wait_for(projector.assigned.is_set, bool, 90, "the projector to own its partitions")
    finally:
        stop.set()
        running.join(timeout=60)
    assert not running.is_alive()


def raw_points(document: dict[str, Any], rules: Rules) -> float:
    """An event's engagement points as docs/funnel.md defines `events.points`: its content
    category's points if listed, else its type's, within its type's cap; 0 if not engagement."""
    engagement = rules.engagement
    if document["type"] not in ENGAGEMENT_TYPES:
        return 0.0
    category = document["properties"].get("content_category")
    points = engagement.category_points.get(category, engagement.points.get(document["type"], 0))
    cap = engagement.caps.get(document["type"])
    return points if cap is None else max(-cap, min(cap, points))


def test_the_identity_views_count_links_merges_and_the_engagement_they_attribute(
    clickhouse: Any, database: str, rules: Rules
) -> None:
    generated = generate(300, seed=11, shape=TrafficShape(anonymous_browsing=0.6))
    survivor = next(
        e["lead_id"]
        for e in generated
        if e.get("anonymous_id") not in (None, e["lead_id"]) and e["type"] == "profile_updated"
    )
    # A lead with anonymous history also has a CRM duplicate merged into it.
    duplicate = [
        event("profile_updated", days(0), lead="dup", **BUYER),
        event("content_download", days(0.5), lead="dup", content_category="pricing_guide"),
        event("leads_merged", days(40), lead=survivor, merged_lead_id="dup"),
    ]
    events = [*generated, *duplicate]
    changes = replay_bytes(events, rules)
    writer = ProjectionWriter(clickhouse, database)
    change_rows = [stage_change_row(value, 1_700_000_000_000) for value in changes]
    event_rows = [
        event_row(orjson.dumps(event), DEFAULT_MAX_EVENT_BYTES, 1_700_000_000_000, rules)
        for event in events
    ]
    writer.write(change_rows, event_rows)
    writer.write(change_rows, event_rows)  # a redelivery counts once

    unique_events = {e["event_id"]: e for e in events}.values()
    visits: dict[str, int] = {}
    linked: dict[str, tuple[str, str, str]] = {}
    for e in unique_events:
        anonymous = e.get("anonymous_id")
        if anonymous == e["lead_id"]:
            visits[anonymous] = visits.get(anonymous, 0) + 1
        elif anonymous is not None:
            key = (e["occurred_at"], e["event_id"], e["lead_id"])
            linked[anonymous] = min(linked.get(anonymous, key), key)
    leads = {orjson.loads(value)["lead_id"] for value in in_effect(changes).values()} - {"dup"}
    with_history = {
        lead for visitor, (_, _, lead) in linked.items() if visits.get(visitor) and lead in leads
    }
    owner = {visitor: lead for visitor, (_, _, lead) in linked.items()} | {"dup": survivor}
    counted = [e for e in unique_events if owner.get(e["lead_id"], e["lead_id"]) in with_history]
    points = sum(raw_points(e, rules) for e in counted)
    before = sum(raw_points(e, rules) for e in counted if e.get("anonymous_id") == e["lead_id"])
    found = read_funnel(clickhouse, database, IDENTITY_VIEWS)["identity_stitching"]
    assert len(linked) > 50 and survivor in with_history and 0 < before < points
    assert found == [
        {
            "links": len(linked),
            "merges": 1,
            "contested": 0,
            "leads": len(leads),
            "leads_with_anonymous_history": len(with_history),
            "share_with_anonymous_history": len(with_history) / len(leads),
            "events_attributed": sum(visits.get(visitor, 0) for visitor in linked),
            "points_of_leads_with_anonymous_history": pytest.approx(points),
            "points_before_identification": pytest.approx(before),
            "share_of_points_before_identification": pytest.approx(before / points),
            "visitors_never_identified": len(visits.keys() - linked.keys()),
        }
    ]
    daily = read_funnel(clickhouse, database, IDENTITY_VIEWS)["identity_links_daily"]
    assert sum(row["links"] for row in daily) == len(linked)
    assert sum(row["merges"] for row in daily) == 1
    assert sum(row["events_attributed"] for row in daily) == found[0]["events_attributed"]
    attributed = [e for e in unique_events if e["lead_id"] in linked]
    assert sum(row["points_attributed"] for row in daily) == pytest.approx(
        sum(raw_points(e, rules) for e in attributed)
    )
    link = clickhouse.query(
        f"SELECT kind, lead_id, events, points, anonymous_events, anonymous_points "
        f"FROM {database}.identity_links WHERE identity = 'dup'"
    ).result_rows
    assert link == [("merged_lead", survivor, 2, 15.0, 0, 0.0)]


def test_the_report_shows_the_engagement_before_identification_in_points(
    clickhouse: Any, database: str, rules: Rules, tmp_path: Path
) -> None:
    events = generate(200, seed=13, shape=TrafficShape(anonymous_browsing=0.6))
    writer = ProjectionWriter(clickhouse, database)
    writer.write(
        [stage_change_row(value) for value in replay_bytes(events, rules)],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES, rules=rules) for e in events],
    )
    metrics = read_funnel(clickhouse, database, REPORT_VIEWS)
    stitching = metrics["identity_stitching"][0]
    figures = [
        f"{stitching['points_of_leads_with_anonymous_history']:,.0f}",
        f"{stitching['points_before_identification']:,.0f}",
        f"{stitching['share_of_points_before_identification']:.3f}",
    ]
    assert 0 < stitching["share_of_points_before_identification"] < 1
    console = Console(record=True, width=200)
    print_report(metrics, console)
    text = console.export_text()
    assert IDENTITY_TITLE in text and POINTS_TITLE in text
    assert all(figure in text for figure in figures), (figures, text[-2000:])
    page = tmp_path / "funnel.html"
    write_html(metrics, page)
    html = page.read_text()
    assert f"<h2>{POINTS_TITLE}</h2>" in html
    assert all(f"<td>{figure}</td>" in html for figure in figures)
    # The other sections read the same events as before.
    for heading in (FUNNEL_TITLE, CONVERSION_TITLE, "Scoring feedback", IDENTITY_TITLE):
        assert f"<h2>{heading}</h2>" in html


def merged_duplicate() -> list[dict[str, Any]]:
    """A CRM duplicate that became an MQL weeks before the merge (its changes are folded into
    its snapshot, so they stay published), merged into `keep`; a later merge of it by `other`
    is a conflict the core refuses."""
    return [
        event("profile_updated", days(0), lead="dup", **BUYER),
        event("demo_request", days(0.1), lead="dup"),
        *[event("page_view", days(0.2 + n / 100), lead="dup", url="/p") for n in range(20)],
        *[event("email_open", days(10 + n / 10), lead="dup") for n in range(20)],
        event("profile_updated", days(1), lead="keep", **BUYER),
        event("content_download", days(2), lead="keep", content_category="whitepaper"),
        event("leads_merged", days(15), lead="keep", event_id="merge-1", merged_lead_id="dup"),
        event("profile_updated", days(3), lead="other", **BUYER),
        event("leads_merged", days(16), lead="other", event_id="merge-2", merged_lead_id="dup"),
    ]


def test_a_merged_duplicate_counts_once_as_the_lead_it_was_merged_into(
    clickhouse: Any, database: str, rules: Rules
) -> None:
    events = [
        *generate(150, seed=12, shape=TrafficShape(anonymous_browsing=0.6)),
        *merged_duplicate(),
    ]
    changes = replay_bytes(events, rules)
    published = [orjson.loads(value) for value in in_effect(changes).values()]
    assert {c["to_stage"] for c in published if c["lead_id"] == "dup"} == {
        "subscriber",
        "lead",
        "mql",
    }, "the duplicate's snapshot changes stay on the topic"
    writer = ProjectionWriter(clickhouse, database)
    event_rows = [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events]
    # The merge arrives after the duplicate's changes were projected, and again (a redelivery).
    writer.write([stage_change_row(value) for value in changes], event_rows[:-3])
    writer.write([], event_rows)

    status = clickhouse.query(f"SELECT lead_id FROM {database}.lead_status").result_rows
    assert ("keep",) in status and ("dup",) not in status
    found = normalised(read_funnel(clickhouse, database))
    expected = normalised(expected_metrics(effective(changes).values(), events))
    for view in FUNNEL_VIEWS:
        assert found[view] == expected[view], view
    mqls = next(r for r in found["funnel_overview"] if r["stage"] == "mql")["reached"]
    assert mqls == len({c["lead_id"] for c in published if c["to_stage"] == "mql"}) - 1

    link = clickhouse.query(
        f"SELECT kind, lead_id, leads_claiming, events, anonymous_events "
        f"FROM {database}.identity_links WHERE identity = 'dup'"
    ).result_rows
    assert link == [("merged_lead", "keep", 2, 42, 0)]
    stitching = read_funnel(clickhouse, database, IDENTITY_VIEWS)["identity_stitching"][0]
    assert stitching["merges"] == 1 and stitching["contested"] == 1
    assert stitching["leads"] == len(status)
    daily = read_funnel(clickhouse, database, IDENTITY_VIEWS)["identity_links_daily"]
    assert sum(row["merges"] for row in daily) == 1
    assert sum(row["links"] for row in daily) == stitching["links"] > 20


def write_handoffs(writer: ProjectionWriter, handoffs: list[bytes], batch: int = 500) -> None:
    """Every handoff event in a shuffled order and in batches, then all of them again: a
    redelivery."""
    rows = [handoff_event_row(value, 1_700_000_000_000) for value in handoffs]
    shuffled = random.Random(5).sample(rows, len(rows))
    for start in range(0, len(shuffled), batch):
        writer.write([], [], handoff_events=shuffled[start : start + batch])
    writer.write([], [], handoff_events=rows)


def test_every_speed_to_lead_view_equals_the_same_measure_computed_from_the_handoffs(
    clickhouse: Any, database: str, sample: tuple[list[dict[str, Any]], list[bytes]]
) -> None:
    events, changes = sample
    latest = effective(changes)
    handoffs = handoff_log(latest.values())
    kinds = Counter(orjson.loads(value)["kind"] for value in handoffs)
    assert kinds["withdrawn"] > 0, "want MQLs retracted after their handoff opened"
    assert kinds["assigned"] > len({orjson.loads(v)["mql_change_id"] for v in handoffs})
    writer = ProjectionWriter(clickhouse, database)
    writer.write(
        [stage_change_row(value, 1_700_000_000_000) for value in changes],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES, 1_700_000_000_000) for e in events],
    )
    write_handoffs(writer, handoffs)

    found = normalised(read_funnel(clickhouse, database, HANDOFF_VIEWS))
    expected = normalised(expected_metrics(latest.values(), events, handoffs))
    for view in HANDOFF_VIEWS:
        assert found[view], f"{view} is empty: the handoffs do not exercise it"
        assert found[view] == expected[view], view
    bands = {row["band"] for row in found["response_time_conversion"]}
    assert bands == set(BANDS), "want every response band"
    curve = response_curve(found)
    assert sum(row["became_sql"] for row in curve) > 0 and sum(row["won"] for row in curve) > 0
    dimensions = {row["dimension"] for row in found["speed_to_lead"]}
    assert dimensions == set(DIMENSIONS)


T_MQL = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _touched(
    mql: str, minutes: float, lead: str | None = None, touch: str = "attempt", **fields: Any
) -> bytes:
    at = T_MQL + timedelta(minutes=minutes)
    return handoff_event(
        "touched",
        mql,
        lead or f"lead-{mql}",
        at,
        T_MQL,
        touch=touch,
        response_wall_minutes=minutes,
        response_business_minutes=minutes / 2,
        within_target=at <= T_MQL + timedelta(minutes=60),
        **fields,
    )


def _assigned(mql: str, lead: str | None = None, **fields: Any) -> bytes:
    return handoff_event("assigned", mql, lead or f"lead-{mql}", T_MQL, T_MQL, **fields)


def test_response_bands_hold_their_lower_bound(clickhouse: Any, database: str) -> None:
    # One MQL per boundary, each a lead of its own; `never` was assigned and not touched.
    minutes = {"b0": 0.0, "b4": 4.999, "b5": 5.0, "b15": 15.0, "b59": 59.999, "b60": 60.0}
    minutes |= {"b1439": 1439.999, "b1440": 1440.0, "b5000": 5000.0}
    handoffs = [_assigned("never")]
    for mql, value in minutes.items():
        handoffs += [_assigned(mql), _touched(mql, value)]
    write_handoffs(ProjectionWriter(clickhouse, database), handoffs, batch=3)

    rows = read_funnel(clickhouse, database, HANDOFF_VIEWS)["response_time_conversion"]
    assert [(row["band"], row["leads"]) for row in rows] == [
        ("under 5 min", 2),  # 0 and 4.999
        ("5-15 min", 1),  # exactly 5
        ("15-60 min", 2),  # exactly 15, and 59.999
        ("1-24 h", 2),  # exactly 60, and 1439.999
        ("over a day", 2),  # exactly 1440, and 5000
        ("never", 1),
    ]
    assert [band_of(value) for value in (4.999, 5, 15, 60, 1440)] == [1, 2, 3, 4, 5]


def test_a_handoff_counts_once_as_its_latest_state(clickhouse: Any, database: str) -> None:
    now = datetime.now(UTC)
    handoffs = [
        # The CRM gives the lead to ben after the rules gave it to ana; ben touches it in 7 min.
        _assigned("crm", assigned_by="rules", owner="ana", queue="emea"),
        handoff_event(
            "assigned",
            "crm",
            "lead-crm",
            T_MQL + timedelta(minutes=2),
            T_MQL,
            1,
            assigned_by="crm",
            owner="ben",
            queue=None,
        ),
        _touched("crm", 7.0, owner="ben", queue=None),
        # Retracted by a late event: its handoff is withdrawn and drops out of every measure.
        _assigned("gone", owner="carl", queue="americas"),
        _touched("gone", 1.0, owner="carl", queue="americas"),
        handoff_event("withdrawn", "gone", "lead-gone", T_MQL + timedelta(days=1), T_MQL),
        # Past its deadline with no touch (no `breached` event yet): an open breach now.
        _assigned("late", owner="eva", queue="emea"),
        # Due in a month: pending, neither met nor missed yet.
        handoff_event(
            "assigned", "soon", "lead-soon", now, now, owner="eva", due_at=now + timedelta(days=30)
        ),
        # Touched late, after a `breached` event, with a contact after the attempt.
        _assigned("slow", owner="eva", queue="emea"),
        handoff_event("breached", "slow", "lead-slow", T_MQL + timedelta(minutes=60), T_MQL),
        _touched("slow", 90.0, owner="eva"),
        _touched("slow", 200.0, touch="contact", number=1, owner="eva"),
    ]
    writer = ProjectionWriter(clickhouse, database)
    for _ in range(2):  # every handoff event delivered four times, newest first
        write_handoffs(writer, handoffs[::-1], batch=3)

    status = {
        row[0]: row[1:]
        for row in clickhouse.query(
            f"SELECT mql_change_id, owner, queue, first_attempt_wall_minutes, "
            f"first_contact_wall_minutes FROM {database}.handoff_status"
        ).result_rows
    }
    assert status == {
        "crm": ("ben", "emea", 7.0, None),  # the CRM's owner; the rules' queue kept
        "late": ("eva", "emea", None, None),
        "soon": ("eva", "emea", None, None),
        "slow": ("eva", "emea", 90.0, 200.0),
    }
    found = read_funnel(clickhouse, database, HANDOFF_VIEWS)
    everyone = [r for r in found["speed_to_lead"] if r["week"] is None and r["dimension"] == "all"]
    assert [(r["mqls"], r["touched"], r["contacted"]) for r in everyone] == [(4, 2, 1)]
    owners = {
        r["value"]: r["mqls"]
        for r in found["speed_to_lead"]
        if r["week"] is None and r["dimension"] == "owner"
    }
    assert owners == {"ben": 1, "eva": 3}
    sla = {
        (row["owner"], str(row["week"])): (
            row["within_target"],
            row["late"],
            row["open_past_due"],
            row["pending"],
            row["breached"],
            row["attainment"],
        )
        for row in found["handoff_sla_weekly"]
    }
    assert sla[("ben", "2026-03-02")] == (1, 0, 0, 0, 0, 1.0)
    assert sla[("eva", "2026-03-02")] == (0, 1, 1, 0, 1, 0.0)
    assert sla[("eva", str(now.date() - timedelta(days=now.weekday())))] == (0, 0, 0, 1, 0, None)
    assert [(r["owner"], r["open_breaches"]) for r in found["handoff_open_breaches"]] == [
        ("eva", 1)
    ]
    assert normalised(found) == normalised(
        expected_handoff_metrics(handoffs, [], datetime.now(UTC))
    )


def test_rebuild_empties_the_handoff_table_too(clickhouse: Any, database: str) -> None:
    writer = ProjectionWriter(clickhouse, database)
    write_handoffs(writer, [_assigned("one"), _touched("one", 3.0)])
    writer.truncate()
    assert clickhouse.query(f"SELECT count() FROM {database}.handoff_events").result_rows == [(0,)]


def test_the_report_shows_speed_to_lead_once_handoffs_are_projected(
    clickhouse: Any,
    database: str,
    sample: tuple[list[dict[str, Any]], list[bytes]],
    tmp_path: Path,
) -> None:
    _, changes = sample
    writer = ProjectionWriter(clickhouse, database)
    writer.write([stage_change_row(c) for c in changes], [])
    page = tmp_path / "funnel.html"
    write_html(read_funnel(clickhouse, database, REPORT_VIEWS), page)
    assert "Speed to lead" not in page.read_text(), "no section before any handoff"
    write_handoffs(writer, handoff_log(effective(changes).values()))
    metrics = read_funnel(clickhouse, database, REPORT_VIEWS)
    titles = [title for title, _ in speed_to_lead_sections(metrics)]
    write_html(metrics, page)
    html = page.read_text()
    assert html.count("data:image/svg+xml;base64,") == 4  # the response-time curve too
    for title in titles:
        assert f"<h2>{escape(title)}</h2>" in html
    curve = response_curve(metrics)
    assert [row["band"] for row in curve] == list(BANDS)
    for row in curve:
        assert f"<td>{row['band']}</td><td>{row['leads']}</td>" in html
    everyone = next(r for r in metrics["speed_to_lead"] if r["week"] is None)
    median = f"{everyone['attempt_wall_p50']:,.1f} / {everyone['attempt_wall_p90']:,.1f}"
    assert f"<td>{median}</td>" in html
    console = Console(record=True, width=250)
    print_report(metrics, console)
    text = console.export_text()
    assert all(title in text for title in (SPEED_TITLE, OPEN_BREACHES_TITLE, SLA_OWNER_TITLE))
    assert median in text and "over a day" in text
