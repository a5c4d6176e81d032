"""Business-hours arithmetic against an independent reference: a walk, minute by minute, of
the owner's wall clock (time zones, DST changes, weekends, holidays)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.business_hours import WEEKDAYS, Calendar, business_seconds, calendar, due_at

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",  # a 30-minute DST change
    "America/St_Johns",  # a half-hour offset
]
# Days around this year's DST changes in those zones, and an ordinary week.
AROUND = [
    datetime(2026, 3, 6, tzinfo=UTC),
    datetime(2026, 3, 27, tzinfo=UTC),
    datetime(2026, 4, 3, tzinfo=UTC),
    datetime(2026, 10, 2, tzinfo=UTC),
    datetime(2026, 10, 23, tzinfo=UTC),
    datetime(2026, 10, 30, tzinfo=UTC),
    datetime(2026, 6, 10, tzinfo=UTC),
]


def working(calendar: Calendar, instant: datetime) -> bool:
    """Whether the owner works at `instant`: the reference, read off the wall clock."""
    local = instant.astimezone(calendar.zone)
    if local.date() in calendar.holidays:
        return False
    window = calendar.week[local.weekday()]
    minute = local.hour * 60 + local.minute
    return window is not None and window.start <= minute < window.end


def reference_seconds(calendar: Calendar, start: datetime, end: datetime) -> int:
    minutes = 0
    instant = start
    while instant < end:
        minutes += working(calendar, instant)
        instant += timedelta(minutes=1)
    return minutes * 60


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    zone = draw(st.sampled_from(ZONES))
    parts = []
    for day in WEEKDAYS:
        if draw(st.booleans()):
            # Working hours between 05:00 and 23:00: no zone here skips or repeats those.
            start = draw(st.integers(5 * 4, 22 * 4)) * 15
            end = draw(st.integers(start // 15 + 1, 23 * 4)) * 15
            parts.append(f"{day} {start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}")
    if not parts:
        parts.append("mon 09:00-17:00")
    holidays = draw(st.frozensets(st.dates(date(2026, 3, 1), date(2026, 11, 15)), max_size=3))
    return calendar(zone, ", ".join(parts), holidays)


instants = st.builds(
    lambda base, minutes: base + timedelta(minutes=minutes),
    st.sampled_from(AROUND),
    st.integers(0, 10 * 24 * 60),
)


@given(calendars(), instants, st.integers(0, 5 * 24 * 60))
def test_working_time_between_two_instants_is_what_the_wall_clock_says(
    owner: Calendar, start: datetime, minutes: int
) -> None:
    end = start + timedelta(minutes=minutes)
    assert business_seconds(owner, start, end) == reference_seconds(owner, start, end)


@given(calendars(), instants, st.integers(0, 3 * 8 * 3600))
def test_a_deadline_is_the_first_instant_with_that_much_working_time(
    owner: Calendar, start: datetime, seconds: int
) -> None:
    due = due_at(owner, start, seconds)
    assert due is not None
    assert business_seconds(owner, start, due) == seconds
    if seconds:
        assert business_seconds(owner, start, due - timedelta(seconds=1)) == seconds - 1


def test_an_mql_at_23_59_on_a_friday_is_due_on_monday_morning() -> None:
    berlin = calendar("Europe/Berlin", "mon-fri 09:00-17:00")
    friday = datetime(2026, 3, 27, 23, 59, tzinfo=ZoneInfo("Europe/Berlin"))
    due = due_at(berlin, friday, 15 * 60)
    # The clocks go forward on Sunday the 29th: Monday 09:15 is 07:15 UTC, not 08:15.
    assert due == datetime(2026, 3, 30, 7, 15, tzinfo=UTC)


def test_a_holiday_and_a_weekend_do_not_count() -> None:
    owner = calendar("America/New_York", "mon-fri 09:00-17:00", frozenset({date(2026, 7, 3)}))
    thursday_noon = datetime(2026, 7, 2, 12, tzinfo=ZoneInfo("America/New_York"))
    monday_noon = datetime(2026, 7, 6, 12, tzinfo=ZoneInfo("America/New_York"))
    assert business_seconds(owner, thursday_noon, monday_noon) == 8 * 3600


def test_an_owner_with_no_working_time_left_has_no_deadline() -> None:
    owner = calendar("UTC", "mon 09:00-17:00", frozenset())
    owner = owner._replace(
        holidays=frozenset(date(2026, 1, 1) + timedelta(days=n) for n in range(4000))
    )
    assert due_at(owner, datetime(2026, 1, 1, tzinfo=UTC), 60) is None


@pytest.mark.parametrize(
    ("week", "problem"),
    [
        ("mon-fri 9-17", "write days and hours"),
        ("fri-mon 09:00-17:00", "run backwards"),
        ("mon 17:00-09:00", "run backwards"),
        ("", "no working day"),
        ("someday 09:00-17:00", "write days and hours"),
    ],
)
def test_working_hours_that_cannot_be_read_say_why(week: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        calendar("UTC", week)
