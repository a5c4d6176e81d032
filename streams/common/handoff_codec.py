"""Handoff records: the steps of an MQL's handoff out (`schemas.HandoffEvent`) and the clock's
records in (`schemas.handoff.HandoffClock`), as compact JSON. The same step gives the same bytes,
always: replays compare byte for byte."""

from __future__ import annotations

from typing import Any, Final

import orjson

from schemas.handoff import HandoffClock
from streams.core.revisions import instant_of, micros_of
from streams.core.sla import HandoffStep
from streams.errors import InvalidEventError

CLOCK_PREFIX: Final = b'{"type":"handoff_clock",'
"""How every clock record starts (the worker writes them): tells one from an event at a glance."""


def encode_handoff(step: HandoffStep) -> bytes:
    """One handoff step as JSON in the `schemas.HandoffEvent` contract (times in UTC)."""
    fields: dict[str, Any] = dict(zip(HandoffStep._fields, step, strict=True))
    for name in ("at", "mql_at", "due_at"):
        value = fields[name]
        if value is not None:
            fields[name] = instant_of(value)
    return orjson.dumps(fields, option=orjson.OPT_UTC_Z)


def encode_clock(lead_id: str, at: int) -> bytes:
    """The clock's record that a handoff deadline of `lead_id` came at `at` (microseconds)."""
    return (
        CLOCK_PREFIX
        + orjson.dumps({"lead_id": lead_id, "at": instant_of(at)}, option=orjson.OPT_UTC_Z)[1:]
    )


def is_clock(raw: bytes) -> bool:
    """Whether a message of the events topic is one of the clock's records."""
    return raw.startswith(CLOCK_PREFIX)


def decode_clock(raw: bytes) -> tuple[str, int]:
    """A clock record's lead and moment (microseconds); InvalidEventError when it is not one."""
    try:
        clock = HandoffClock.model_validate_json(raw)
    except ValueError as exc:
        raise InvalidEventError(f"invalid handoff clock record: {exc}") from exc
    return clock.lead_id, micros_of(clock.at)
