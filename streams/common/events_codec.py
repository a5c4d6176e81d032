"""Events in: the JSON of `schemas.Event`, validated, with a one-line reason when invalid; and
the headers of a dead letter, which say why a message was rejected and where it came from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, EVENT_TYPES, Event
from streams.errors import InvalidEventError

TOO_LARGE: Final = "too_large"
"""The dead-letter kind of a message over LEADFLOW_MAX_EVENT_BYTES."""
DEAD_LETTER_HEADER_PREFIX: Final = "leadflow-"


def decode_event(raw: bytes, max_bytes: int) -> Event:
    """Validate one JSON event; raise InvalidEventError with a one-line reason."""
    if len(raw) > max_bytes:
        raise InvalidEventError(
            f"message too large: {len(raw)} bytes > {max_bytes}", kind=TOO_LARGE
        )
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


HISTORY_HEADER: Final = "leadflow-history"
"""A Kafka header marking a message as history (an import, a backfill), not something that
happened now: what it causes is marked the same way, and nothing alerts on it."""
HISTORY_HEADERS: Final = [(HISTORY_HEADER, b"1")]


def is_history(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> bool:
    """Whether a message's headers (pairs, or a mapping as Faust may give them) mark it as
    history."""
    if isinstance(headers, Mapping):
        return HISTORY_HEADER in headers
    return any(name == HISTORY_HEADER for name, _ in headers or ())


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
