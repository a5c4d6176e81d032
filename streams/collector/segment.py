"""Segment Tracking API messages -> leadflow events. Pure: no I/O, no clock but the one passed in.

`identify` traits (`traits`, then `context.traits`) become `profile_updated`; `page` becomes
`page_view`, or `pricing_page_view` when its URL matches the rules file's pattern; `track` event
names map to event types through the rules file's table; `alias` (`previousId` -> `userId`)
becomes `identity_linked`. `messageId` is the `event_id`, `userId` (else `anonymousId`) the
`lead_id`, `anonymousId` the `anonymous_id` (alone: a visitor not identified yet; beside a
`userId`: the link of the two), `timestamp` (else `originalTimestamp`, else the
time the collector received it) the `occurred_at`; `context.campaign.source` / `.name` are the
source and campaign.

The write key of these endpoints is public (it sits in every page that loads the tracker), so
they carry only what a browser may say: engagement and profile facts. Sales activity (every type
of the contract's sales group) enters through the signed CRM webhook or the events topic: a
track call that names one is refused, whatever the rules file maps (and the rules file cannot
map a track name to one).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

from schemas.events import SALES_TYPES
from streams.core.rules import Rules
from streams.errors import InvalidEventError, LeadflowError

ALIASES: Final = {"i": "identify", "t": "track", "p": "page", "a": "alias"}
_NON_WORD: Final = re.compile(r"[^a-z0-9]+")


class UnmappedMessage(LeadflowError):
    """A valid Segment message leadflow has no event type for (e.g. an unlisted track name)."""


class SalesActivityRefused(InvalidEventError):
    """A write-key call that would carry sales activity ("Deal Won"...): refused."""


def to_event(message: Any, kind: str, rules: Rules, received_at: datetime) -> dict[str, Any]:
    """One Segment message as a leadflow event document (JSON-ready; the caller validates it
    against the contract).

    Raises InvalidEventError (reject the request; SalesActivityRefused for sales activity) or
    UnmappedMessage (dead-letter it)."""
    if not isinstance(message, dict):
        raise InvalidEventError("a message must be a JSON object")
    message_id = message.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise InvalidEventError("missing field 'messageId'")
    if kind == "alias":
        return _alias(message, message_id, received_at)
    lead_id = message.get("userId") or message.get("anonymousId")
    if not isinstance(lead_id, str | int) or isinstance(lead_id, bool):
        raise InvalidEventError("missing field 'userId' or 'anonymousId'")
    event: dict[str, Any] = {
        "event_id": message_id,
        "lead_id": str(lead_id),
        "occurred_at": _occurred_at(message, received_at),
    }
    anonymous_id = _identifier(message.get("anonymousId"))
    user_id = _identifier(message.get("userId"))
    if anonymous_id is not None and anonymous_id != user_id:
        # Alone, it names a visitor not identified yet; beside a userId, it links the two.
        event["anonymous_id"] = anonymous_id
    campaign = _dict(_dict(message.get("context")).get("campaign"))
    if isinstance(campaign.get("source"), str):
        event["source"] = campaign["source"]
    if isinstance(campaign.get("name"), str):
        event["campaign"] = campaign["name"]
    if kind == "identify":
        event["type"] = "profile_updated"
        # Any call may carry the user's traits in `context.traits`, and some trackers send an
        # identify's only there; where both name a field, the call's own `traits` win.
        context_traits = _dict(_dict(message.get("context")).get("traits"))
        event["properties"] = _profile({**context_traits, **_dict(message.get("traits"))})
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
        named = _NON_WORD.sub("_", name.lower()).strip("_")
        if event_type in SALES_TYPES or named in SALES_TYPES:
            raise SalesActivityRefused(
                f"track event {name!r} is sales activity: send it through the signed CRM "
                "webhook (/v1/crm/events), not with a write key"
            )
        if event_type is None:
            raise UnmappedMessage(f"track event {name!r} is not in the rules' collector table")
        event["type"] = event_type
        event["properties"] = _dict(message.get("properties"))
    else:
        raise InvalidEventError(f"unsupported message type {kind!r}")
    return event


def _alias(message: dict[str, Any], message_id: str, received_at: datetime) -> dict[str, Any]:
    """Segment's alias: `previousId` (the anonymous id, or a former user id) is `userId`."""
    user_id = _identifier(message.get("userId"))
    previous_id = _identifier(message.get("previousId"))
    if user_id is None or previous_id is None:
        raise InvalidEventError("an alias needs 'userId' and 'previousId'")
    if user_id == previous_id:
        raise InvalidEventError("an alias needs a 'previousId' other than its 'userId'")
    return {
        "event_id": message_id,
        "lead_id": user_id,
        "anonymous_id": previous_id,
        "type": "identity_linked",
        "occurred_at": _occurred_at(message, received_at),
        "properties": {},
    }


def _occurred_at(message: dict[str, Any], received_at: datetime) -> Any:
    return message.get("timestamp") or message.get("originalTimestamp") or received_at.isoformat()


def _identifier(value: Any) -> str | None:
    """A Segment id as leadflow's identifier, or None (absent, empty, too long, not an id)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value)
    return text if 0 < len(text) <= 256 else None


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
