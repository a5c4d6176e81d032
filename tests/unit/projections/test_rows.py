"""Rows of the funnel tables from topic messages (pure: no ClickHouse)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from projections.rows import (
    ACCOUNT_CHANGES,
    ACCOUNT_MEMBERS,
    CAMPAIGN_SPEND,
    CAUSATION_LEAD_ID,
    CHALLENGER_STAGE_CHANGES,
    EVENTS,
    HANDOFF_EVENTS,
    LEAD_ID,
    STAGE_CHANGES,
    TABLES,
    RejectedRecord,
    account_change_row,
    account_member_row,
    event_points,
    event_row,
    handoff_event_row,
    published_at,
    stage_change_row,
)
from schemas.accounts import AccountChange, AccountSignal
from schemas.handoff import HandoffEvent
from schemas.spend import CampaignSpend
from schemas.stage_changes import StageChange
from streams.common.account_signals_codec import encode_account_signal
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.stage_changes_codec import encode_account_change, encode_change
from streams.core.rules import Rules, load_rules
from streams.local.generator import generate
from streams.offline.replay import Replayer
from tests.support.factories import as_event, event
from tests.support.handoff_records import handoff_event

TIMESTAMP_MS = 1_767_000_000_123


@pytest.fixture(scope="module")
def replayed(rules: Rules) -> list[object]:
    lines = [orjson.dumps(d) for d in generate(120, seed=4)]
    return list(Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=True).run(lines))


def test_columns_are_the_contract_fields_then_the_kafka_timestamp() -> None:
    for table, model in (
        (STAGE_CHANGES, StageChange),
        (CHALLENGER_STAGE_CHANGES, StageChange),
        (ACCOUNT_CHANGES, AccountChange),
        (ACCOUNT_MEMBERS, AccountSignal),
        (HANDOFF_EVENTS, HandoffEvent),
    ):
        assert table.columns == (*model.model_fields, "published_at")
    assert [t.name for t in TABLES] == [
        "stage_changes",
        "events",
        "account_changes",
        "account_members",
        "challenger_stage_changes",
        "handoff_events",
        "campaign_spend",
    ]
    assert CAMPAIGN_SPEND.columns == ("spend_id", *CampaignSpend.model_fields, "published_at")
    assert STAGE_CHANGES.columns[LEAD_ID] == EVENTS.columns[LEAD_ID] == "lead_id"
    assert HANDOFF_EVENTS.columns[LEAD_ID] == "lead_id"
    assert ACCOUNT_CHANGES.columns[CAUSATION_LEAD_ID] == "causation_lead_id"


def test_each_row_holds_its_message_field_by_field(replayed: list[object]) -> None:
    encoders = {"LeadStageChange": encode_change, "AccountStageChange": encode_account_change}
    builders = {
        "LeadStageChange": (stage_change_row, StageChange, STAGE_CHANGES),
        "AccountStageChange": (account_change_row, AccountChange, ACCOUNT_CHANGES),
        "Signal": (account_member_row, AccountSignal, ACCOUNT_MEMBERS),
    }
    seen = set()
    for item in replayed:
        kind = type(item).__name__
        if kind not in builders:
            continue
        seen.add(kind)
        build, model, table = builders[kind]
        value = encoders.get(kind, encode_account_signal)(item)  # type: ignore[operator]
        row = build(value, TIMESTAMP_MS)
        assert len(row) == len(table.columns)
        parsed = model.model_validate_json(value).model_dump()
        for column, cell in zip(table.columns[:-1], row, strict=False):
            expected = parsed[column]
            assert cell == (list(expected) if isinstance(expected, tuple) else expected)
        assert row[-1] == published_at(TIMESTAMP_MS)
    assert seen == set(builders)


def test_an_event_row_keeps_the_envelope_and_a_sales_value_only() -> None:
    won = event("deal_won", amount=12_000.0, currency="EUR", source="crm", secret="kept on kafka")
    row = event_row(orjson.dumps(won), DEFAULT_MAX_EVENT_BYTES, TIMESTAMP_MS)
    assert dict(zip(EVENTS.columns, row, strict=True)) == {
        "event_id": won["event_id"],
        "lead_id": "lead-1",
        "type": "deal_won",
        "occurred_at": datetime.fromisoformat(won["occurred_at"]),
        "source": "crm",
        "campaign": None,
        "amount": 12_000.0,
        "currency": "EUR",
        "anonymous_id": None,
        "linked_id": None,
        "points": None,
        "published_at": datetime(2025, 12, 29, 9, 20, 0, 123_000, tzinfo=UTC),
    }
    seen = {**event("page_view", url="/x"), "anonymous_id": "anon-9"}
    view = event_row(orjson.dumps(seen), DEFAULT_MAX_EVENT_BYTES)
    assert view[EVENTS.position("amount")] is None
    assert view[EVENTS.position("anonymous_id")] == "anon-9"
    assert view[EVENTS.position("published_at")] == published_at(None)


@pytest.mark.parametrize(
    ("document", "linked"),
    [
        ({**event("page_view", lead="anon-1"), "anonymous_id": "anon-1"}, None),  # a visit
        ({**event("page_view"), "anonymous_id": "anon-1"}, "anon-1"),  # seen under it
        ({**event("identity_linked"), "anonymous_id": "anon-1"}, "anon-1"),
        (event("leads_merged", merged_lead_id="crm-9"), "crm-9"),
        # A merge links its duplicate, not the anonymous id it was seen under (the core's rule).
        ({**event("leads_merged", merged_lead_id="crm-9"), "anonymous_id": "anon-1"}, "crm-9"),
        (event("sales_contacted"), None),
    ],
)
def test_an_event_row_names_the_identity_it_links(
    document: dict[str, object], linked: str | None
) -> None:
    row = event_row(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES)
    assert row[EVENTS.position("linked_id")] == linked


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (stage_change_row, "not a stage change: "),
        (account_change_row, "not an account change: "),
        (account_member_row, "not an account signal: "),
    ],
)
def test_an_unreadable_message_is_rejected_with_the_reason(build: object, reason: str) -> None:
    with pytest.raises(RejectedRecord) as rejected:
        build(b'{"change_id": 1}')  # type: ignore[operator]
    assert rejected.value.reason.startswith(reason)
    with pytest.raises(RejectedRecord, match="not JSON"):
        event_row(b"\xff", DEFAULT_MAX_EVENT_BYTES)


@pytest.mark.parametrize(
    ("document", "points"),
    [
        (event("page_view", url="/x"), 1.0),
        (event("pricing_page_view"), 10.0),
        (event("content_download"), 5.0),  # no category: the type's points
        (event("content_download", content_category="pricing_guide"), 15.0),
        (event("content_download", content_category="careers"), -5.0),
        (event("unsubscribe"), -20.0),
        (event("demo_request"), 50.0),
        (event("profile_updated", email="a@acme.com"), 0.0),
        (event("deal_won", amount=1.0, currency="EUR"), 0.0),
        ({**event("identity_linked"), "anonymous_id": "anon-1"}, 0.0),
    ],
)
def test_an_event_scores_its_own_points_undecayed(
    rules: Rules, document: dict[str, object], points: float
) -> None:
    assert event_points(as_event(document), rules.engagement) == points
    row = event_row(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES, rules=rules)
    assert row[EVENTS.position("points")] == points


def test_an_event_scores_at_most_its_type_cap() -> None:
    shipped = load_rules()
    capped = shipped.engagement.model_copy(update={"caps": {"demo_request": 30.0}})
    assert event_points(as_event(event("demo_request")), capped) == 30.0
    assert event_points(as_event(event("unsubscribe")), capped) == -20.0


def test_a_handoff_row_holds_the_event_field_by_field() -> None:
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    value = handoff_event(
        "touched",
        "mql-1",
        "crm-1",
        at,
        at,
        touch="contact",
        response_business_minutes=4.0,
        response_wall_minutes=6.5,
        within_target=True,
    )
    row = handoff_event_row(value, TIMESTAMP_MS)
    handoff = HandoffEvent.model_validate_json(value)
    assert row == [
        *(getattr(handoff, name) for name in HandoffEvent.model_fields),
        published_at(TIMESTAMP_MS),
    ]
    with pytest.raises(RejectedRecord, match="not a handoff event: not JSON"):
        handoff_event_row(b"\xff")
    with pytest.raises(RejectedRecord, match="not a handoff event: missing field 'kind'"):
        handoff_event_row(b'{"handoff_id": "h", "lead_id": "l"}')
