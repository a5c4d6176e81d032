"""Event times at and past the edges of the contract's range, for the core, worker and collector."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas.events import EARLIEST_EVENT_TIME, LATEST_EVENT_TIME
from streams.core.rules import MICROS_PER_DAY
from tests.support.factories import BUYER, days, event

OUT_OF_RANGE = (
    "occurred_at: Input should be greater than or equal to 1970-01-01T00:00:00Z",
    "occurred_at: Input should be less than 2100-01-01T00:00:00Z",
)
"""The reasons an event out of the contract's range gets (`str.startswith` takes the pair)."""
FAR_OFF = [
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00+23:59",
    "1969-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00Z",
]


def _render(instant: datetime, offset_minutes: int) -> str:
    return instant.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()


edge_times = st.one_of(
    st.sampled_from(FAR_OFF),
    st.builds(
        _render,
        st.sampled_from([EARLIEST_EVENT_TIME, LATEST_EVENT_TIME]).flatmap(
            lambda edge: st.integers(-3 * MICROS_PER_DAY, 3 * MICROS_PER_DAY).map(
                lambda micros: edge + timedelta(microseconds=micros)
            )
        ),
        st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    ),
)
odd_types = st.sampled_from(
    ["page_view", "pricing_page_view", "newsletter_subscribe", "demo_request", "profile_updated"]
)


def in_range(timestamp: str) -> bool:
    try:
        instant = datetime.fromisoformat(timestamp)
    except ValueError:  # past year 9999 or before year 1 once in UTC: out of range anyway
        return False
    try:
        return EARLIEST_EVENT_TIME <= instant < LATEST_EVENT_TIME
    except OverflowError:
        return False


def control_lead(lead: str) -> list[dict[str, Any]]:
    """A buyer who asks for a demo and talks to sales: an SQL, whatever else it does."""
    return [
        event("profile_updated", lead=lead, **BUYER),
        event("newsletter_subscribe", at=days(1), lead=lead),
        event("demo_request", at=days(2), lead=lead),
        event("sales_contacted", at=days(3), lead=lead),
    ]
