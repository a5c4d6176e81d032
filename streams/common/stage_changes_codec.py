"""Changes out: a lead's stage change (`schemas.StageChange`) and an account's
(`schemas.AccountChange`) as compact JSON. The same change gives the same bytes, always:
replays compare byte for byte."""

from __future__ import annotations

from typing import Any

import orjson

from streams.common.codec_parts import instant_text
from streams.core.account import AccountStageChange
from streams.core.lead import LeadStageChange
from streams.core.revisions import instant_of


def encode_change(change: LeadStageChange) -> bytes:
    """One lead stage change as compact JSON in the `schemas.StageChange` contract (event time
    in UTC, with microseconds only when it has some)."""
    fields: dict[str, Any] = dict(zip(LeadStageChange._fields, change, strict=True))
    fields["occurred_at"] = instant_of(change.occurred_at)
    return orjson.dumps(fields, option=orjson.OPT_UTC_Z)


def encode_account_change(change: AccountStageChange) -> bytes:
    """One account change as compact JSON in the `schemas.AccountChange` contract (event time
    in UTC, always with microseconds)."""
    fields = dict(zip(AccountStageChange._fields, change, strict=True))
    fields["occurred_at"] = instant_text(change.occurred_at)
    return orjson.dumps(fields)
