"""A profile's country: normalised to its ISO 3166-1 alpha-2 code by the contract, or refused."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import orjson
import pytest

from schemas.events import ProfileUpdated
from streams.collector.segment import to_event
from streams.common.events_codec import decode_event
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.lead import entry_of
from streams.core.rules import Rules
from streams.core.scoring import fit_ledger
from streams.errors import InvalidEventError
from tests.support.factories import event


def profile_country(country: object) -> str | None:
    """The country of a profile_updated event, as the contract gives it to every process."""
    decoded = decode_event(
        orjson.dumps(event("profile_updated", country=country)), DEFAULT_MAX_EVENT_BYTES
    )
    assert isinstance(decoded, ProfileUpdated)
    return decoded.properties.country


def refusal(country: object) -> str:
    with pytest.raises(InvalidEventError) as failure:
        profile_country(country)
    return failure.value.reason


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("US", "US"),
        ("us", "US"),
        ("USA", "US"),
        ("usa", "US"),
        ("United States", "US"),
        ("united states of america", "US"),
        (" de ", "DE"),
        ("South Korea", "KR"),
        ("Korea, Republic of", "KR"),
        ("Viet Nam", "VN"),
        ("Vietnam", "VN"),
        ("Türkiye", "TR"),
        (unicodedata.normalize("NFD", "Türkiye"), "TR"),
        ("United Kingdom", "GB"),
        ("gbr", "GB"),
        # Not GB's code, but what everybody writes, and reserved by ISO for the United Kingdom.
        ("UK", "GB"),
        ("uk", "GB"),
    ],
)
def test_a_country_is_normalised_to_its_alpha_2_code(written: str, code: str) -> None:
    assert profile_country(written) == code


@pytest.mark.parametrize(
    "written",
    [
        "Narnia",
        "Deutschland",  # no translations: only ISO's English names
        "England",  # a part of GB, not a country of ISO 3166-1
        "Great Britain",
        "EU",  # reserved by ISO for the European Union, not a country
        "Untied States",  # no fuzzy matching: a typo is refused, not guessed
        "840",  # numeric codes are not accepted
        "   ",
    ],
)
def test_an_unknown_country_is_refused_with_a_reason_naming_field_and_value(
    written: str,
) -> None:
    assert refusal(written) == (
        f"properties.country: unknown country {written!r}: expected an ISO 3166-1 alpha-2 "
        "code (e.g. US), an alpha-3 code or a country's English name"
    )


def test_an_empty_country_is_refused() -> None:
    assert refusal("") == "properties.country: String should have at least 1 character"


def test_a_long_unknown_country_is_shortened_in_the_reason() -> None:
    reason = refusal("x" * 256)
    assert f"unknown country {'x' * 64 + '...'!r}:" in reason
    assert len(reason) < 200


def test_a_missing_or_null_country_is_still_no_country() -> None:
    assert profile_country(None) is None


def test_a_country_named_in_full_scores_its_country_points(rules: Rules) -> None:
    decoded = decode_event(
        orjson.dumps(event("profile_updated", country="United States")), DEFAULT_MAX_EVENT_BYTES
    )
    profile = entry_of(decoded).detail
    assert ("country", "US", rules.fit.country_points["US"]) in fit_ledger(profile, rules.fit)


def test_the_json_schema_says_what_a_country_may_be() -> None:
    country = ProfileUpdated.model_json_schema()["$defs"]["ProfileProperties"]["properties"][
        "country"
    ]
    assert "ISO 3166-1 alpha-2 code" in country["description"] and "UK" in country["examples"]


@pytest.mark.parametrize(
    "traits",
    [{"address": {"country": "United States"}}, {"country": "usa"}],
)
def test_a_segment_identify_country_goes_through_the_contract(
    rules: Rules, traits: dict[str, object]
) -> None:
    received = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    identify = {"type": "identify", "messageId": "m-1", "userId": "u-1", "traits": traits}
    document = to_event(identify, "identify", rules, received)
    decoded = decode_event(orjson.dumps(document), DEFAULT_MAX_EVENT_BYTES)
    assert isinstance(decoded, ProfileUpdated) and decoded.properties.country == "US"
    refused = {**identify, "traits": {"address": {"country": "Narnia"}}}
    with pytest.raises(InvalidEventError, match=r"^properties\.country: unknown country 'Narnia'"):
        decode_event(
            orjson.dumps(to_event(refused, "identify", rules, received)), DEFAULT_MAX_EVENT_BYTES
        )
