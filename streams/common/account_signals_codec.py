"""Account signals: what a lead tells its account (`schemas.AccountSignal`), as compact JSON
on the account-signals topic."""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from schemas.accounts import AccountSignal
from streams.common.codec_parts import instant_text
from streams.common.events_codec import describe_validation_error
from streams.core.account import Signal
from streams.core.revisions import micros_of
from streams.errors import InvalidEventError


def encode_account_signal(signal: Signal) -> bytes:
    """One account signal as compact JSON in the `schemas.AccountSignal` contract."""
    fields = dict(zip(Signal._fields, signal, strict=True))
    fields["occurred_at"] = instant_text(signal.occurred_at)
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
