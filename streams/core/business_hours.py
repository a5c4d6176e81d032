"""Business hours: how much of an owner's working time lies between two instants, and when a
response target counted in working time falls due. Pure and deterministic, no I/O.

An owner works, in their own time zone, the hours their week gives each weekday (wall-clock
times, so a working day is as long in summer as in winter), except on their holidays. Time is
counted in whole seconds. A window's ends are read in the zone as the clock shows them on that
day; a clock time the zone skips (a spring-forward gap) is read as the offset before the jump.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DAYS: Final = 3_700
"""How far (about ten years) a deadline is looked for: past it, there is none."""


MINUTES_PER_DAY: Final = 24 * 60


class Window(NamedTuple):
    """Working time on one weekday: from `start` to `end`, minutes after midnight on the wall
    clock of the owner's zone (`end` up to 1440, midnight at the day's end)."""

    start: int
    end: int


class Calendar(NamedTuple):
    """An owner's working time: zone, the window of each weekday (Monday first; None: not a
    working day) and holidays (dates in the zone)."""

    zone: ZoneInfo
    week: tuple[Window | None, ...]
    holidays: frozenset[date] = frozenset()


def calendar(zone: str, week: str, holidays: frozenset[date] = frozenset()) -> Calendar:
    """A calendar from a zone name and a week such as "mon-fri 09:00-17:00, sat 10:00-14:00".

    Raises ValueError with what is wrong."""
    windows: list[Window | None] = [None] * 7
    for part in (p.strip() for p in week.split(",")):
        if not part:
            continue
        try:
            days, hours = part.split()
            first, _, last = days.lower().partition("-")
            begin, end = hours.split("-")
            start_at, end_at = _clock(begin), _clock(end)
            indexes = range(WEEKDAYS.index(first), WEEKDAYS.index(last or first) + 1)
        except ValueError:
            raise ValueError(
                f"working hours {part!r}: write days and hours as 'mon-fri 09:00-17:00'"
            ) from None
        if not indexes or start_at >= end_at:
            raise ValueError(f"working hours {part!r}: the days or the hours run backwards")
        for index in indexes:
            windows[index] = Window(start_at, end_at)
    if not any(windows):
        raise ValueError(f"working hours {week!r}: no working day")
    return Calendar(ZoneInfo(zone), tuple(windows), holidays)


def _clock(text: str) -> int:
    hours, minutes = text.split(":")
    if len(minutes) != 2 or not 0 <= int(minutes) < 60:
        raise ValueError(text)
    clock = int(hours) * 60 + int(minutes)
    if not 0 <= clock <= MINUTES_PER_DAY:
        raise ValueError(text)
    return clock


def business_seconds(calendar: Calendar, start: datetime, end: datetime) -> int:
    """Working seconds of `calendar` in [start, end) (aware instants; 0 if end <= start)."""
    if end <= start:
        return 0
    total = 0
    for open_at, close_at in _working_spans(calendar, start):
        if open_at >= end:
            break
        total += _seconds(max(open_at, start), min(close_at, end))
    return total


def due_at(calendar: Calendar, start: datetime, seconds: int) -> datetime | None:
    """The instant at which `seconds` of `calendar`'s working time have passed since `start`
    (at once if 0), or None past `MAX_DAYS`."""
    if seconds <= 0:
        return start
    left = seconds
    for open_at, close_at in _working_spans(calendar, start):
        begin = max(open_at, start)
        available = _seconds(begin, close_at)
        if left <= available:
            return begin + timedelta(seconds=left)
        left -= available
    return None


def _working_spans(calendar: Calendar, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The working spans (UTC) that end after `start`, in order, for up to `MAX_DAYS`."""
    zone = calendar.zone
    day = start.astimezone(zone).date() - timedelta(days=1)
    for offset in range(MAX_DAYS):
        current = day + timedelta(days=offset)
        window = calendar.week[current.weekday()]
        if window is None or current in calendar.holidays:
            continue
        open_at = _instant(current, window.start, zone)
        close_at = _instant(current, window.end, zone)
        if close_at > start and close_at > open_at:
            yield open_at, close_at


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock minute of `day` in `zone` (1440: the next midnight)."""
    if minute == MINUTES_PER_DAY:
        day, minute = day + timedelta(days=1), 0
    return datetime.combine(day, time(minute // 60, minute % 60), zone).astimezone(UTC)


def _seconds(begin: datetime, end: datetime) -> int:
    return max(0, int((end - begin).total_seconds()))
