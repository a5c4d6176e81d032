"""Builders for readable tests: events as the contract defines them, runs of the core."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.events import EVENT_ADAPTER, Event
from streams.core.lead import LeadStageChange, LeadState
from streams.core.lifecycle import decide
from streams.core.rules import Rules

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)

STUDENT = {"email": "sam@mit.edu", "job_title": "PhD Candidate"}
COMPETITOR = {"email": "spy@rivalfunnel.com", "job_title": "VP Marketing", "company_size": 300}
VENDOR = {"email": "rep@adsagency.example", "job_title": "Director of Sales", "company_size": 80}
WEAK = {"email": "kim@gmail.com", "job_title": "Freelancer"}
BUYER = {
    "email": "jane@acme.com",
    "job_title": "VP Marketing",
    "company": "Acme",
    "company_size": 400,
    "industry": "software",
    "country": "US",
}


def event(
    event_type: str,
    at: timedelta | datetime = timedelta(0),
    lead: str = "lead-1",
    event_id: str | None = None,
    source: str | None = None,
    campaign: str | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A JSON-ready event; `at` is an offset from T0 or an absolute time."""
    occurred_at = T0 + at if isinstance(at, timedelta) else at
    document: dict[str, Any] = {
        "event_id": event_id or f"evt-{next(_ids)}",
        "lead_id": lead,
        "type": event_type,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "properties": properties,
    }
    if source is not None:
        document["source"] = source
    if campaign is not None:
        document["campaign"] = campaign
    return document


def days(n: float) -> timedelta:
    return timedelta(days=n)


def as_event(document: dict[str, Any]) -> Event:
    return EVENT_ADAPTER.validate_python(document)


def as_lines(documents: Iterable[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(d) for d in documents]


def run(
    documents: Iterable[dict[str, Any]], rules: Rules
) -> tuple[dict[str, LeadState], list[LeadStageChange]]:
    """Fold documents in the given order; return final states and every published change."""
    states: dict[str, LeadState] = {}
    changes: list[LeadStageChange] = []
    for document in documents:
        parsed = as_event(document)
        decision = decide(states.get(parsed.lead_id), parsed, rules)
        states[parsed.lead_id] = decision.state
        changes.extend(decision.changes)
    return states, changes


def stages(changes: Iterable[LeadStageChange]) -> list[str]:
    """The to_stage of each live change, in publication order."""
    return [c.to_stage for c in changes if not c.retracted]
