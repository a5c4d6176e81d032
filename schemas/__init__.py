"""leadflow's public contract: pydantic v2 models of the events it reads and writes."""

from schemas.accounts import ACCOUNT_STAGES, AccountChange, AccountSignal
from schemas.events import (
    ENGAGEMENT_TYPES,
    EVENT_ADAPTER,
    EVENT_MODELS,
    EVENT_TYPES,
    PROFILE_TYPES,
    SALES_TYPES,
    Event,
)
from schemas.handoff import HANDOFF_KINDS, HandoffEvent
from schemas.stage_changes import FUNNEL_STAGES, STAGES, StageChange

__all__ = [
    "ACCOUNT_STAGES",
    "ENGAGEMENT_TYPES",
    "EVENT_ADAPTER",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "FUNNEL_STAGES",
    "HANDOFF_KINDS",
    "PROFILE_TYPES",
    "SALES_TYPES",
    "STAGES",
    "AccountChange",
    "AccountSignal",
    "Event",
    "HandoffEvent",
    "StageChange",
]
