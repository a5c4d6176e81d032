"""What the notifier delivers: which records alert, the bodies, the signature, the routes."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.handoff import ALERT_KINDS, HANDOFF_KINDS, HandoffEvent
from schemas.stage_changes import StageChange
from streams.collector import server as collector
from streams.common.settings import NotifySettings
from streams.notify.alerts import (
    IDEMPOTENCY_HEADER,
    KIND_HEADER,
    SIGNATURE_HEADER,
    Alert,
    SeenChanges,
    Skip,
    body_of,
    endpoint_name,
    read_alert,
    request_headers,
    routes,
    signature,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def change(**fields: Any) -> bytes:
    document = {
        "change_id": "c-1",
        "lead_id": "crm-42",
        "from_stage": "lead",
        "to_stage": "mql",
        "occurred_at": T0,
        "causation_event_id": "evt-1",
        "rule": "mql.active_form",
        "rules_version": "v1",
        "mql_kind": "active",
        "fit_score": 55.0,
        "engagement_score": 72.5,
        "grade": "A1",
        "source": "linkedin",
        "owner": "ana",
        "queue": "emea",
        "sequence": 2,
        "revision": 0,
        **fields,
    }
    return StageChange.model_validate(document).model_dump_json().encode()


def handoff(kind: str, **fields: Any) -> HandoffEvent:
    document = {
        "handoff_id": f"h-{kind}",
        "lead_id": "crm-42",
        "kind": kind,
        "at": T0,
        "mql_change_id": "c-1",
        "owner": "ana",
        "queue": "emea",
        "mql_kind": "active",
        "mql_at": T0,
        "due_at": T0 + timedelta(minutes=15),
        "rules_version": "v1",
        **fields,
    }
    return HandoffEvent.model_validate(document)


def test_a_new_mql_alerts_under_its_change_id_with_the_record_as_published() -> None:
    record = change()
    alert = read_alert("stage_changes", record, history=False)
    assert isinstance(alert, Alert)
    assert (alert.kind, alert.lead_id, alert.idempotency_key) == ("mql", "crm-42", "c-1")
    assert alert.record == record
    assert body_of(alert, "json") == record


@pytest.mark.parametrize(
    "fields",
    [{"retracted": True}, {"to_stage": "sql", "mql_kind": None}],
    ids=["retracted", "not-mql"],
)
def test_a_retracted_or_other_stage_change_is_no_mql(fields: dict[str, Any]) -> None:
    assert read_alert("stage_changes", change(**fields), history=False) == Skip("not_alert")


def test_an_mql_alerts_whatever_its_revision_and_a_revision_of_one_seen_does_not() -> None:
    # A first publication's revision counts its lead's events: rarely 0.
    first = read_alert("stage_changes", change(revision=7), history=False)
    assert isinstance(first, Alert)
    seen = SeenChanges(size=2)
    assert seen.first_time("c-1") and not seen.first_time("c-1")
    assert seen.first_time("c-2") and seen.first_time("c-3")
    assert seen.first_time("c-1")  # forgotten past its bound: alerts again, same key


def test_history_never_alerts() -> None:
    assert read_alert("stage_changes", change(), history=True) == Skip("history")
    record = handoff("breached").model_dump_json().encode()
    assert read_alert("handoff", record, history=True) == Skip("history")


@pytest.mark.parametrize("kind", HANDOFF_KINDS)
def test_every_handoff_event_alerts_under_its_handoff_id(kind: str) -> None:
    alert = read_alert("handoff", handoff(kind).model_dump_json().encode(), history=False)
    assert isinstance(alert, Alert)
    assert (alert.kind, alert.idempotency_key) == (kind, f"h-{kind}")


def test_an_unreadable_record_says_why() -> None:
    skip = read_alert("handoff", b'{"kind": "assigned"}', history=False)
    assert isinstance(skip, Skip) and skip.reason == "invalid"
    assert "handoff_id" in skip.detail
    assert read_alert("handoff", b"not json", history=False).reason == "invalid"  # type: ignore[union-attr]
    assert read_alert("stage_changes", None, history=False) == Skip("invalid", "no value")


@pytest.mark.parametrize(
    ("record", "text"),
    [
        (
            handoff("assigned", assigned_by="rules"),
            "MQL crm-42 assigned to ana (emea) by the rules; first touch due 2026-03-02 09:15 UTC",
        ),
        (
            handoff("due_soon"),
            "Due soon: MQL crm-42 (ana (emea)) needs a first touch by 2026-03-02 09:15 UTC",
        ),
        (
            handoff("breached", owner=None, queue=None),
            "Breached: MQL crm-42 (nobody) was due 2026-03-02 09:15 UTC, not touched yet",
        ),
        (
            handoff("touched", touch="contact", response_business_minutes=12.5, within_target=True),
            "Touched: MQL crm-42 (ana (emea)), first contact after 12.5 working minutes, "
            "within target",
        ),
        (handoff("withdrawn"), "Withdrawn: MQL crm-42 (ana (emea)) no longer holds; nothing to do"),
    ],
)
def test_the_slack_body_is_one_line_for_people(record: HandoffEvent, text: str) -> None:
    alert = read_alert("handoff", record.model_dump_json().encode(), history=False)
    assert isinstance(alert, Alert)
    assert orjson.loads(body_of(alert, "slack")) == {"text": text}


def test_the_slack_text_of_a_new_mql() -> None:
    alert = read_alert("stage_changes", change(), history=False)
    assert isinstance(alert, Alert)
    assert alert.text == (
        "New MQL: crm-42 for ana (emea): active MQL, rule mql.active_form, grade A1, "
        "engagement 72.5, source linkedin"
    )


def test_deliveries_are_signed_as_the_crm_webhook_is_verified() -> None:
    body = change()
    secret = b"shared-secret"
    assert SIGNATURE_HEADER == collector.SIGNATURE_HEADER
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert signature(secret, body) == expected
    alert = read_alert("stage_changes", body, history=False)
    assert isinstance(alert, Alert)
    headers = request_headers(alert, body, secret)
    assert headers == {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: expected,
        IDEMPOTENCY_HEADER: "c-1",
        KIND_HEADER: "mql",
    }
    assert secret.decode() not in str(headers)


def test_urls_get_the_default_kinds_and_endpoints_add_kinds_per_webhook() -> None:
    assert NotifySettings().kinds == ("mql", *ALERT_KINDS)
    settings = NotifySettings(
        urls=("https://a.example/hook",),
        endpoints={
            "touched": ("https://a.example/hook", "https://b.example/hook"),
            "withdrawn": ("https://b.example/hook",),
        },
    )
    assert routes(settings) == {
        "https://a.example/hook": frozenset({"mql", *ALERT_KINDS, "touched"}),
        "https://b.example/hook": frozenset({"touched", "withdrawn"}),
    }
    assert routes(NotifySettings(urls=("https://a.example/",), kinds=())) == {}


def test_a_webhooks_name_keeps_no_token() -> None:
    url = "https://user:pw@hooks.slack.com/services/T000/B000/XXXXSECRET"
    name = endpoint_name(url)
    assert name.startswith("https://hooks.slack.com#")
    assert "SECRET" not in name and "pw" not in name and "services" not in name
    assert endpoint_name(url) != endpoint_name(url + "2")
