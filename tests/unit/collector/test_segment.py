"""Segment Tracking API messages -> leadflow event documents (pure: no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.collector.segment import SalesActivityRefused, UnmappedMessage, to_event
from streams.common.events_codec import decode_event
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.rules import Rules
from streams.errors import InvalidEventError

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def message(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": "m-1", "userId": "u-1", **fields}


def mapped(rules: Rules, kind: str, **fields: Any) -> dict[str, Any]:
    document = to_event(message(kind, **fields), kind, rules, RECEIVED)
    decode_event(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES)  # always contract-valid here
    return document


def test_identify_traits_sent_only_in_the_context_become_profile_facts(rules: Rules) -> None:
    traits = {"email": "ana@acme.example", "title": "VP Marketing", "company": "Acme"}
    document = mapped(rules, "identify", context={"traits": traits})
    assert document["properties"] == {
        "email": "ana@acme.example",
        "job_title": "VP Marketing",
        "company": "Acme",
    }


def test_the_calls_own_traits_win_over_the_context_traits(rules: Rules) -> None:
    document = mapped(
        rules,
        "identify",
        traits={"title": "CTO"},
        context={"traits": {"title": "Engineer", "email": "ana@acme.example"}},
    )
    assert document["properties"] == {"email": "ana@acme.example", "job_title": "CTO"}


def test_identify_traits_become_profile_facts(rules: Rules) -> None:
    document = mapped(
        rules,
        "identify",
        timestamp="2026-02-28T10:00:00Z",
        traits={
            "email": "ana@acme.example",
            "title": "VP Marketing",
            "company": {"name": "Acme", "employee_count": 800, "industry": "software"},
            "address": {"country": "DE"},
            "favourite_colour": "green",
        },
        context={"campaign": {"source": "linkedin", "name": "data-leaders"}},
    )
    assert document == {
        "event_id": "m-1",
        "lead_id": "u-1",
        "occurred_at": "2026-02-28T10:00:00Z",
        "source": "linkedin",
        "campaign": "data-leaders",
        "type": "profile_updated",
        "properties": {
            "email": "ana@acme.example",
            "job_title": "VP Marketing",
            "company": "Acme",
            "company_size": 800,
            "industry": "software",
            "country": "DE",
        },
    }


def test_a_page_is_a_pricing_view_when_its_url_matches_the_rules(rules: Rules) -> None:
    assert mapped(rules, "page", properties={"url": "https://x.example/docs"})["type"] == (
        "page_view"
    )
    pricing = mapped(rules, "page", context={"page": {"url": "https://x.example/pricing"}})
    assert (pricing["type"], pricing["properties"]) == (
        "pricing_page_view",
        {"url": "https://x.example/pricing"},
    )


def test_track_names_map_through_the_rules_file(rules: Rules) -> None:
    document = mapped(rules, "track", event="Demo Requested", properties={"plan": "team"})
    assert (document["type"], document["properties"]) == ("demo_request", {"plan": "team"})
    with pytest.raises(UnmappedMessage, match="'Logged In' is not in the rules"):
        to_event(message("track", event="Logged In"), "track", rules, RECEIVED)


@pytest.mark.parametrize("name", ["Deal Won", "Quote Requested", "sales_contacted", "Advocacy"])
def test_sales_activity_is_refused_whatever_the_rules_map(rules: Rules, name: str) -> None:
    with pytest.raises(SalesActivityRefused, match="signed CRM webhook"):
        to_event(message("track", event=name), "track", rules, RECEIVED)


def test_a_rules_object_that_maps_a_sales_type_anyway_is_still_refused(rules: Rules) -> None:
    sneaky = rules.model_copy(
        update={
            "collector": rules.collector.model_copy(
                update={"track_events": {"Order Completed": "deal_won"}}
            )
        }
    )
    with pytest.raises(SalesActivityRefused):
        to_event(message("track", event="Order Completed"), "track", sneaky, RECEIVED)


def test_ids_and_times_fall_back_as_segment_documents_them(rules: Rules) -> None:
    anonymous = message("page", originalTimestamp="2026-02-01T00:00:00Z", anonymousId="anon-7")
    del anonymous["userId"]
    document = to_event(anonymous, "page", rules, RECEIVED)
    assert (document["lead_id"], document["occurred_at"]) == ("anon-7", "2026-02-01T00:00:00Z")
    untimed = to_event(message("page", userId=42), "page", rules, RECEIVED)
    assert (untimed["lead_id"], untimed["occurred_at"]) == ("42", RECEIVED.isoformat())


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"messageId": ""}, "missing field 'messageId'"),
        ({"userId": None}, "missing field 'userId' or 'anonymousId'"),
        ({"userId": True}, "missing field 'userId' or 'anonymousId'"),
        ({"event": ""}, "a track message needs an 'event' name"),
    ],
)
def test_messages_leadflow_cannot_read_are_refused_with_the_reason(
    rules: Rules, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEventError) as refused:
        to_event({**message("track", event="Demo Requested"), **fields}, "track", rules, RECEIVED)
    assert refused.value.reason == reason


def test_a_message_that_is_not_an_object_is_refused(rules: Rules) -> None:
    with pytest.raises(InvalidEventError, match="JSON object"):
        to_event(["track"], "track", rules, RECEIVED)
    with pytest.raises(InvalidEventError, match="unsupported message type 'screen'"):
        to_event(message("screen"), "screen", rules, RECEIVED)


def test_an_anonymous_id_alone_names_a_visitor_and_beside_a_user_id_links_them(
    rules: Rules,
) -> None:
    visit = message("page", anonymousId="anon-7")
    del visit["userId"]
    document = to_event(visit, "page", rules, RECEIVED)
    assert (document["lead_id"], document["anonymous_id"]) == ("anon-7", "anon-7")
    both = to_event(
        message("identify", userId="u-1", anonymousId="anon-7"), "identify", rules, RECEIVED
    )
    assert (both["lead_id"], both["anonymous_id"]) == ("u-1", "anon-7")
    same = to_event(message("page", userId="u-1", anonymousId="u-1"), "page", rules, RECEIVED)
    assert "anonymous_id" not in same


def test_an_alias_links_the_previous_id_to_the_user(rules: Rules) -> None:
    alias = message("alias", userId="u-1", previousId="anon-7")
    document = to_event(alias, "alias", rules, RECEIVED)
    assert (document["type"], document["lead_id"], document["anonymous_id"]) == (
        "identity_linked",
        "u-1",
        "anon-7",
    )
    with pytest.raises(InvalidEventError):
        to_event(message("alias", userId="u-1"), "alias", rules, RECEIVED)
