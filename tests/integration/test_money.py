"""The funnel's money: spend in (CSV import, CRM webhook, topic), its projection, and the CAC
and pipeline velocity views against a plain-Python reference."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from projections.projector import Projector
from projections.report import MONEY_VIEWS, read_funnel
from projections.rows import event_row, spend_row, stage_change_row
from projections.writer import ProjectionWriter
from schemas.spend import CampaignSpend
from streams.common.kafka_clients import create_topics
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.spend import encode_spend, spend_csv_text
from streams.core.rules import Rules
from streams.local.generator import generate
from streams.local.spend_traffic import generate_spend
from tests.support.collector_server import WEBHOOK_SECRET, WRITE_KEY, start_collector
from tests.support.command_line import leadflow
from tests.support.funnel_reference import normalised
from tests.support.harness import Pipeline, effective, raw_producer, replay_bytes, settings_from
from tests.support.money_reference import expected_money
from tests.support.waiting import wait_for

BEFORE_THE_TRAFFIC = CampaignSpend(
    source="linkedin", campaign="data-leaders", day=date(2025, 12, 15), amount=500, currency="USD"
)
"""Spend in a month no lead arrived in: CAC NULL, never a division by zero."""

Sample = tuple[list[dict[str, Any]], list[bytes], list[CampaignSpend]]


@pytest.fixture(scope="module")
def sample(rules: Rules) -> Sample:
    events = generate(400, seed=21)
    spend = [BEFORE_THE_TRAFFIC, *generate_spend(events, 21)]
    return events, replay_bytes(events, rules), spend


def write_sample(client: Any, database: str, sample: Sample) -> None:
    events, changes, spend = sample
    writer = ProjectionWriter(client, database)
    writer.write(
        [stage_change_row(c) for c in changes],
        [event_row(orjson.dumps(e), DEFAULT_MAX_EVENT_BYTES) for e in events],
    )
    rows = [spend_row(encode_spend(s), 1_700_000_000_000) for s in spend]
    # Every record twice, in other batches: a file loaded twice counts once.
    for start in range(0, len(rows), 700):
        writer.write([], [], spend=rows[start : start + 700])
    writer.write([], [], spend=rows)


def test_every_money_view_equals_the_reference(
    clickhouse: Any, database: str, sample: Sample
) -> None:
    write_sample(clickhouse, database, sample)
    events, changes, spend = sample
    found = normalised(read_funnel(clickhouse, database, MONEY_VIEWS))
    expected = normalised(expected_money(effective(changes).values(), events, spend))
    for view in MONEY_VIEWS:
        assert found[view], f"{view} is empty: the sample does not exercise it"
        assert found[view] == expected[view], view
    monthly = found["cac_monthly"]
    assert {row["currency"] for row in monthly} == {"EUR", "USD"}
    december = [row for row in monthly if row["month"] == "2025-12-01"]
    assert december == [
        {
            "month": "2025-12-01",
            "currency": "USD",
            "spend": 500.0,
            "customers": 0,
            "cac": None,
            "leads": 0,
            "cost_per_lead": None,
            "mqls": 0,
            "cost_per_mql": None,
            "sqls": 0,
            "cost_per_sql": None,
        }
    ]
    assert any(row["cac"] is not None for row in found["cac_by_source"])
    assert any(row["cac"] is not None for row in found["cac_by_lead_touch"])
    assert any(row["velocity"] is not None for row in found["pipeline_velocity"])


def test_spend_sent_again_replaces_the_earlier_amount(clickhouse: Any, database: str) -> None:
    writer = ProjectionWriter(clickhouse, database)
    first = BEFORE_THE_TRAFFIC
    corrected = first.model_copy(update={"amount": 650.0})
    other_currency = first.model_copy(update={"currency": "EUR", "amount": 80.0})
    writer.write([], [], spend=[spend_row(encode_spend(first), 1_000)])
    writer.write([], [], spend=[spend_row(encode_spend(corrected), 2_000)])
    writer.write([], [], spend=[spend_row(encode_spend(other_currency), 2_000)])
    writer.write([], [], spend=[spend_row(encode_spend(first), 1_000)])  # a stale redelivery
    monthly = read_funnel(clickhouse, database, {"cac_monthly": "currency"})["cac_monthly"]
    assert [(row["currency"], row["spend"], row["cac"]) for row in monthly] == [
        ("EUR", 80.0, None),
        ("USD", 650.0, None),
    ]
    writer.truncate()  # what `leadflow rebuild` does first
    assert clickhouse.query(f"SELECT count() FROM {database}.campaign_spend").result_rows == [(0,)]


def test_spend_imported_twice_counts_once_and_bad_records_go_to_the_dead_letter(
    pipeline: Pipeline, clickhouse: Any, database: str, tmp_path: Path
) -> None:
    env = pipeline.env(
        LEADFLOW_CLICKHOUSE__DATABASE=database, LEADFLOW_PRIVACY__HASH_KEY="money-test-key"
    )
    settings = settings_from(env)
    create_topics(settings)
    records = list(generate_spend(generate(40, seed=4), 4))[:300]
    export = tmp_path / "spend.csv"
    export.write_text(spend_csv_text(records))
    for _ in range(2):
        done = leadflow("spend", "import", str(export), variables=env)
        assert done.returncode == 0, done.stderr.decode()
        assert f"published {len(records)} spend records".encode() in done.stderr
    producer = raw_producer(pipeline.bootstrap_servers)
    producer.send(settings.topics.spend, key=b"bad", value=b'{"source": "x"}').get(timeout=30)
    producer.close()
    stats = Projector(settings, clickhouse).run(until_caught_up=True)
    assert stats.spend == 2 * len(records)
    assert stats.dead_letters == 1
    rows, total = clickhouse.query(
        f"SELECT count(), sum(amount) FROM {database}.campaign_spend FINAL"
    ).result_rows[0]
    assert rows == len(records)
    assert total == pytest.approx(sum(round(r.amount, 2) for r in records))
    dead = pipeline.reader(settings.topics.dead_letter).values()
    assert dead == [b'{"source": "x"}']


def test_the_crm_webhook_takes_signed_spend_and_refuses_the_rest(pipeline: Pipeline) -> None:
    server = start_collector(pipeline)
    try:
        records = [
            BEFORE_THE_TRAFFIC.model_dump(mode="json"),
            {**BEFORE_THE_TRAFFIC.model_dump(mode="json"), "campaign": "webinar-promo"},
        ]
        body = orjson.dumps(records)
        signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        signed = {"X-Leadflow-Signature": signature}
        assert server.post("/v1/crm/spend", body, write_key=WRITE_KEY)[0] == 401
        assert server.post("/v1/crm/spend", body, {"X-Leadflow-Signature": "sha256=00"})[0] == 401
        bad = orjson.dumps([{**records[0], "currency": "euro"}])
        bad_signature = hmac.new(WEBHOOK_SECRET.encode(), bad, hashlib.sha256).hexdigest()
        status, answer, _ = server.post(
            "/v1/crm/spend", bad, {"X-Leadflow-Signature": "sha256=" + bad_signature}
        )
        assert status == 400 and answer["code"] == "invalid_spend"
        assert answer["message"].startswith("record 0: not a spend record: currency")
        status, answer, _ = server.post("/v1/crm/spend", body, signed)
        assert (status, answer) == (200, {"success": True})
        reader = pipeline.reader(pipeline.settings.topics.spend)
        published = wait_for(
            reader.values, lambda found: len(found) == 2, timeout=30, what="two spend records"
        )
        assert sorted(orjson.loads(v)["campaign"] for v in published) == [
            "data-leaders",
            "webinar-promo",
        ]
    finally:
        server.process.stop()
