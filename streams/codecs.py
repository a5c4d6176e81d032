"""Bytes in and out: events, stage changes and lead states. Shared by replay and the workers."""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, EVENT_TYPES, Event
from schemas.stage_changes import StageChange
from streams.errors import InvalidEventError, InvalidStateError
from streams.lifecycle import (
    Attribution,
    Change,
    Entry,
    Fold,
    LeadState,
    Transition,
)

DEFAULT_MAX_EVENT_BYTES: Final = 64 * 1024
STATE_FORMAT: Final = 1


def decode_event(raw: bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """Validate one JSON event; raise InvalidEventError with a one-line reason."""
    if len(raw) > max_bytes:
        raise InvalidEventError(f"message too large: {len(raw)} bytes > {max_bytes}")
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise InvalidEventError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """A short, stable description of why a payload is not a valid event."""
    reasons = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        location = error["loc"]
        if location and location[0] in EVENT_TYPES:
            location = location[1:]  # the union's tag, not a field
        where = ".".join(str(part) for part in location)
        kind = error["type"]
        if kind == "json_invalid":
            reasons.append(f"not JSON: {(error.get('ctx') or {}).get('error', error['msg'])}")
        elif kind == "union_tag_invalid":
            reasons.append(f"unknown type {(error.get('ctx') or {}).get('tag')!r}")
        elif kind == "union_tag_not_found":
            reasons.append("missing field 'type'")
        elif kind == "missing":
            reasons.append(f"missing field {where!r}")
        else:
            reasons.append(f"{where or 'event'}: {error['msg']}")
    return "; ".join(reasons) or "invalid event"


def encode_change(change: Change) -> bytes:
    """One stage change as compact JSON in the `schemas.StageChange` contract.

    The same change gives the same bytes, always: replays compare byte for byte."""
    return orjson.dumps(dict(zip(Change._fields, change, strict=True)), option=orjson.OPT_UTC_Z)


def decode_stage_change(raw: bytes) -> StageChange:
    return StageChange.model_validate_json(raw)


def encode_state(state: LeadState) -> bytes:
    """A lead state as compact JSON; `event_ids` is derived from the history, not stored."""
    return orjson.dumps(
        [STATE_FORMAT, state.lead_id, state.history, state.attribution, state.fold],
        default=_named_tuple_as_list,
    )


def _named_tuple_as_list(value: object) -> list[object]:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a lead state")


def decode_state(raw: bytes) -> LeadState:
    try:
        version, lead_id, history, attribution, fold = orjson.loads(raw)
        if version != STATE_FORMAT:
            raise InvalidStateError(f"state format {version}, expected {STATE_FORMAT}")
        entries = tuple(Entry(*entry) for entry in history)
        return LeadState(
            lead_id,
            entries,
            frozenset(entry.event_id for entry in entries),
            Attribution(*attribution) if attribution is not None else None,
            _decode_fold(fold),
        )
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise InvalidStateError(f"cannot decode lead state: {exc}") from exc


def _decode_fold(fields: list[Any]) -> Fold:
    fold = Fold(*fields)
    return fold._replace(transitions=tuple(Transition(*t) for t in fold.transitions))


DEAD_LETTER_HEADER_PREFIX: Final = "leadflow-"


def dead_letter_headers(
    topic: str, partition: int, offset: int, kind: str, reason: str
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: why it was rejected, and where the original came from."""
    prefix = DEAD_LETTER_HEADER_PREFIX
    return [
        (f"{prefix}reason", reason.encode()),
        (f"{prefix}kind", kind.encode()),
        (f"{prefix}topic", topic.encode()),
        (f"{prefix}partition", str(partition).encode()),
        (f"{prefix}offset", str(offset).encode()),
    ]
