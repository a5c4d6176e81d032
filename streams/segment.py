"""Segment Tracking API messages -> leadflow events. Pure: no I/O, no clock but the one passed in.

`identify` traits become `profile_updated`; `page` becomes `page_view`, or `pricing_page_view`
when its URL matches the rules file's pattern; `track` event names map to event types through
the rules file's table. `messageId` is the `event_id`, `userId` (else `anonymousId`) the
`lead_id`, `timestamp` (else `originalTimestamp`, else the time the collector received it) the
`occurred_at`; `context.campaign.source` / `.name` are the source and campaign.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

import orjson

from streams.codecs import decode_event
from streams.errors import InvalidEventError
from streams.rules import Rules

ALIASES: Final = {"i": "identify", "t": "track", "p": "page"}


class UnmappedMessage(Exception):
    """A valid Segment message leadflow has no event type for (e.g. an unlisted track name)."""


def to_event(message: Any, kind: str, rules: Rules, received_at: datetime) -> bytes:
    """One Segment message as a contract-valid leadflow event (JSON bytes).

    Raises InvalidEventError (reject the request) or UnmappedMessage (dead-letter it)."""
    if not isinstance(message, dict):
        raise InvalidEventError("a message must be a JSON object")
    message_id = message.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise InvalidEventError("missing field 'messageId'")
    lead_id = message.get("userId") or message.get("anonymousId")
    if not isinstance(lead_id, str | int) or isinstance(lead_id, bool):
        raise InvalidEventError("missing field 'userId' or 'anonymousId'")
    event: dict[str, Any] = {
        "event_id": message_id,
        "lead_id": str(lead_id),
        "occurred_at": message.get("timestamp")
        or message.get("originalTimestamp")
        or received_at.isoformat(),
    }
    campaign = _dict(_dict(message.get("context")).get("campaign"))
    if isinstance(campaign.get("source"), str):
        event["source"] = campaign["source"]
    if isinstance(campaign.get("name"), str):
        event["campaign"] = campaign["name"]
    if kind == "identify":
        event["type"] = "profile_updated"
        event["properties"] = _profile(_dict(message.get("traits")))
    elif kind == "page":
        properties = _dict(message.get("properties"))
        url = properties.get("url") or _dict(_dict(message.get("context")).get("page")).get("url")
        pattern = rules.collector.pricing_url_pattern
        pricing = isinstance(url, str) and re.search(pattern, url) is not None
        event["type"] = "pricing_page_view" if pricing else "page_view"
        event["properties"] = {"url": url} if isinstance(url, str) else {}
    elif kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name:
            raise InvalidEventError("a track message needs an 'event' name")
        event_type = rules.collector.track_events.get(name)
        if event_type is None:
            raise UnmappedMessage(f"track event {name!r} is not in the rules' collector table")
        event["type"] = event_type
        event["properties"] = _dict(message.get("properties"))
    else:
        raise InvalidEventError(f"unsupported message type {kind!r}")
    raw = orjson.dumps(event)
    decode_event(raw)  # the contract decides; its reason goes back to the sender
    return raw


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _profile(traits: dict[str, Any]) -> dict[str, Any]:
    company = traits.get("company")
    company_traits = _dict(company)
    address = _dict(traits.get("address"))
    candidates = {
        "email": traits.get("email"),
        "job_title": traits.get("title") or traits.get("job_title"),
        "seniority": traits.get("seniority"),
        "company": company_traits.get("name") if company_traits else company,
        "company_size": company_traits.get("employee_count")
        or traits.get("employees")
        or traits.get("company_size"),
        "industry": traits.get("industry") or company_traits.get("industry"),
        "country": address.get("country") or traits.get("country"),
    }
    return {name: value for name, value in candidates.items() if value is not None}
