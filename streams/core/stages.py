"""Stage sets the rules read, derived once from the contract's order of stages."""

from __future__ import annotations

from typing import Final

from schemas.accounts import ACCOUNT_STAGES
from schemas.stage_changes import FUNNEL_STAGES


def at_or_past(stage: str) -> frozenset[str]:
    """`stage` and every funnel stage after it (disqualified is none of them)."""
    return frozenset(FUNNEL_STAGES[FUNNEL_STAGES.index(stage) :])


LEAD_OR_FURTHER: Final = at_or_past("lead")
MQL_OR_FURTHER: Final = at_or_past("mql")
SQL_OR_FURTHER: Final = at_or_past("sql")
CUSTOMERS: Final = at_or_past("customer")
BEFORE_CUSTOMER: Final = frozenset(FUNNEL_STAGES) - CUSTOMERS
"""Stages a lead can still be disqualified from."""
LOSABLE: Final = MQL_OR_FURTHER & BEFORE_CUSTOMER
"""Stages with a deal in play, which a lost deal disqualifies."""
ACCOUNT_STAGE_ORDER: Final = ACCOUNT_STAGES
