"""Bytes in and out: events, stage changes, account signals and changes, and the states the
worker stores. Shared by replay, the worker, the collector and the projector.

The same record gives the same bytes, always: replays compare byte for byte."""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import ValidationError

from schemas.accounts import AccountSignal
from schemas.events import EVENT_ADAPTER, EVENT_TYPES, Event
from schemas.stage_changes import StageChange
from streams.core.accounts import (
    AccountFold,
    AccountStageChange,
    AccountState,
    AccountTransition,
    Makeup,
    Member,
    Signal,
)
from streams.core.lifecycle import (
    Attribution,
    Entry,
    Fold,
    LeadStageChange,
    LeadState,
    Transition,
)
from streams.core.revisions import instant_of, micros_of
from streams.errors import InvalidEventError, InvalidStateError

STATE_FORMAT: Final = 1


def decode_event(raw: bytes, max_bytes: int) -> Event:
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


def encode_change(change: LeadStageChange) -> bytes:
    """One lead stage change as compact JSON in the `schemas.StageChange` contract (event time
    in UTC, with microseconds only when it has some)."""
    fields: dict[str, Any] = dict(zip(LeadStageChange._fields, change, strict=True))
    fields["occurred_at"] = instant_of(change.occurred_at)
    return orjson.dumps(fields, option=orjson.OPT_UTC_Z)


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


def _iso(micros: int) -> str:
    return instant_of(micros).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_account_signal(signal: Signal) -> bytes:
    """One account signal as compact JSON in the `schemas.AccountSignal` contract."""
    fields = dict(zip(Signal._fields, signal, strict=True))
    fields["occurred_at"] = _iso(signal.occurred_at)
    return orjson.dumps(fields)


def decode_account_signal(raw: bytes) -> Signal:
    """Validate one account signal; raise InvalidEventError with a one-line reason."""
    try:
        valid = AccountSignal.model_validate_json(raw)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        raise InvalidEventError(f"not an account signal: {reason}") from None
    return Signal(
        valid.account_id,
        valid.lead_id,
        valid.revision,
        micros_of(valid.occurred_at),
        valid.causation_event_id,
        valid.causation_change_id,
        valid.member,
        valid.stage,
        valid.seniority,
        valid.engagement_score,
    )


def encode_account_change(change: AccountStageChange) -> bytes:
    """One account change as compact JSON in the `schemas.AccountChange` contract."""
    fields = dict(zip(AccountStageChange._fields, change, strict=True))
    fields["occurred_at"] = _iso(change.occurred_at)
    return orjson.dumps(fields)


def encode_account_state(state: AccountState) -> bytes:
    """An account state as compact JSON; `seen` is derived from the signals, not stored."""
    return orjson.dumps(
        [STATE_FORMAT, state.account_id, state.signals, state.fold],
        default=_named_tuple_as_list,
    )


def decode_account_state(raw: bytes) -> AccountState:
    try:
        version, account_id, signals, fold = orjson.loads(raw)
        if version != STATE_FORMAT:
            raise InvalidStateError(f"state format {version}, expected {STATE_FORMAT}")
        decoded = tuple(Signal(*signal) for signal in signals)
        stage, members, transitions = fold
        return AccountState(
            account_id,
            decoded,
            frozenset((signal.lead_id, signal.revision) for signal in decoded),
            AccountFold(
                stage,
                {lead_id: Member(*member) for lead_id, member in members.items()},
                tuple(_decode_account_transition(t) for t in transitions),
            ),
        )
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise InvalidStateError(f"cannot decode account state: {exc}") from exc


def _decode_account_transition(fields: list[Any]) -> AccountTransition:
    transition = AccountTransition(*fields)
    makeup = Makeup(*transition.makeup)
    return transition._replace(makeup=makeup._replace(seniorities=tuple(makeup.seniorities)))


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
