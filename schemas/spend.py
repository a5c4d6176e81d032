"""The spend contract: what a campaign cost on one day, from an ad platform or the CRM.

A spend record is a fact that replaces: the same (source, campaign, day, currency) sent again
(a corrected export, the same file loaded twice) is the same record with its new amount, never
spend added twice. `spend_id` is derived from those four, so every consumer keys by it.
"""

from __future__ import annotations

import hashlib
from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NonEmpty = Annotated[str, Field(min_length=1, max_length=200)]


class CampaignSpend(BaseModel):
    """What one campaign of one source cost on one day, in one currency."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    source: NonEmpty = Field(description="The touch's source, as events name it (`linkedin`).")
    campaign: NonEmpty = Field(description="The campaign, as events name it (`data-leaders`).")
    day: date = Field(description="The day the money was spent (UTC), ISO 8601: 2026-03-01.")
    amount: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        description="What the campaign cost that day, in `currency`."
    )
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = Field(
        description="ISO 4217 code (`EUR`); amounts in different currencies are never added."
    )

    @property
    def spend_id(self) -> str:
        """The record's key: the same source, campaign, day and currency, the same id."""
        return spend_id(self.source, self.campaign, self.day, self.currency)


def spend_id(source: str, campaign: str, day: date, currency: str) -> str:
    """The deterministic id of the spend of (source, campaign, day, currency)."""
    text = "\x1f".join((source, campaign, day.isoformat(), currency))
    return "spend-" + hashlib.sha256(text.encode()).hexdigest()[:32]
