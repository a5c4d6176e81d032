"""The funnel tables and views on the embedded ClickHouse engine, fed directly (no Kafka)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from projections.clickhouse import ClickHouseError, connect, migrate, migrations
from projections.report import VIEWS, print_report, read_metrics, write_html
from projections.writer import ProjectionWriter, RejectedRecord, event_row, stage_change_row
from streams.generator import generate
from streams.rules import Rules
from streams.settings import ClickHouseSettings
from tests.funnel_reference import expected_metrics, normalised
from tests.integration.harness import effective, replay_bytes, unique

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "funnel.json"


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The embedded engine: one data directory for this whole process (chDB allows one)."""
    path = tmp_path_factory.mktemp("clickhouse")
    return connect(ClickHouseSettings(url=f"chdb://{path}"))


@pytest.fixture
def database(clickhouse: Any) -> Iterator[str]:
    name = unique("funnel").replace("-", "_")
    migrate(clickhouse, name)
    yield name
    clickhouse.command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def sample(rules: Rules) -> tuple[list[dict[str, Any]], list[bytes]]:
    # Arrival order shuffled: many events are late, so the log has rewrites and retractions.
    events = random.Random(7).sample(generate(600, seed=7), k=len(generate(600, seed=7)))
    return events, replay_bytes(events, rules)


def test_every_view_equals_the_same_metric_computed_from_replay(
    clickhouse: Any, database: str, sample: tuple[list[dict[str, Any]], list[bytes]]
) -> None:
    events, changes = sample
    assert any(orjson.loads(c)["revision"] > 1 for c in changes), "want rewrites in the log"
    assert any(orjson.loads(c)["retracted"] for c in changes), "want retractions in the log"
    writer = ProjectionWriter(clickhouse, database)
    change_rows = [stage_change_row(value, 1_700_000_000_000) for value in changes]
    event_rows = [event_row(orjson.dumps(event), 1_700_000_000_000) for event in events]
    # Every revision, in a shuffled order, then all of it again in other batches: a redelivery.
    shuffled = random.Random(3).sample(change_rows, len(change_rows))
    for start in range(0, len(shuffled), 1000):
        writer.write(shuffled[start : start + 1000], event_rows[start : start + 1000])
    writer.write(change_rows, event_rows)

    found = normalised(read_metrics(clickhouse, database))
    expected = normalised(expected_metrics(effective(changes).values(), events))
    assert list(found) == list(VIEWS)
    for view in VIEWS:
        assert found[view], f"{view} is empty: the sample does not exercise it"
        assert found[view] == expected[view], view


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
        event_row(b"\xff\xfe")


def test_every_dashboard_query_runs_on_the_embedded_engine(
    clickhouse: Any, database: str, sample: tuple[list[dict[str, Any]], list[bytes]]
) -> None:
    events, changes = sample
    ProjectionWriter(clickhouse, database).write(
        [stage_change_row(c) for c in changes], [event_row(orjson.dumps(e)) for e in events]
    )
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["rawSql"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(queries) >= 8
    for query in queries:
        assert "funnel." in query
        result = clickhouse.query(query.replace("funnel.", f"{database}."))
        assert result.result_rows, query


def test_the_html_report_is_one_self_contained_page(
    clickhouse: Any,
    database: str,
    sample: tuple[list[dict[str, Any]], list[bytes]],
    tmp_path: Path,
) -> None:
    events, changes = sample
    ProjectionWriter(clickhouse, database).write(
        [stage_change_row(c) for c in changes], [event_row(orjson.dumps(e)) for e in events]
    )
    page = tmp_path / "funnel.html"
    write_html(read_metrics(clickhouse, database), page)
    text = page.read_text()
    assert text.count("data:image/svg+xml;base64,") == 3
    assert "http://" not in text and "https://" not in text  # opens offline
    for heading in ("Funnel", "Conversion", "Bottlenecks", "Scoring feedback"):
        assert f"<h2>{heading}" in text


def test_the_terminal_report_shows_every_section(
    clickhouse: Any, database: str, sample: tuple[list[dict[str, Any]], list[bytes]]
) -> None:
    events, changes = sample
    ProjectionWriter(clickhouse, database).write(
        [stage_change_row(c) for c in changes], [event_row(orjson.dumps(e)) for e in events]
    )
    console = Console(record=True, width=200)
    print_report(read_metrics(clickhouse, database), console)
    text = console.export_text()
    for title in ("Funnel", "Conversion", "MQL kinds", "Bottlenecks", "Purchase value"):
        assert title in text
    assert "mql_to_sql" in text and "passive" in text
