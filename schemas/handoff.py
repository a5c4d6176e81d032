"""The handoff contract: what happens between an MQL and sales' first touch, on the handoff
topic, keyed by `lead_id` (docs/handoff.md).

A handoff opens with each MQL the lead publishes and follows it: who owns it (`assigned`, by the
rules' routing or by the CRM), a warning before its response target (`due_soon`), the target
missed while nothing touched the lead (`breached`), and the first attempt and the first contact
(`touched`, with the response time). An MQL retracted by a late event closes its handoff
(`withdrawn`). Handoff events are facts, never revised: `handoff_id` is deterministic, so a
receiver drops repeats by it, and the same log gives the same handoff events.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import EventTime
from schemas.stage_changes import MqlKind

HandoffKind: TypeAlias = Literal["assigned", "due_soon", "breached", "touched", "withdrawn"]
TouchKind: TypeAlias = Literal["attempt", "contact"]
HANDOFF_KINDS: Final[tuple[str, ...]] = HandoffKind.__args__  # type: ignore[attr-defined]
ALERT_KINDS: Final[tuple[str, ...]] = ("assigned", "due_soon", "breached")
"""The kinds a person acts on; `leadflow notify` delivers these by default."""


class HandoffEvent(BaseModel):
    """One step of an MQL's handoff to sales."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    handoff_id: str = Field(
        description="Deterministic id of this step (the idempotency key of its alerts)."
    )
    lead_id: str
    kind: HandoffKind
    at: EventTime = Field(
        description="When it happened: the MQL or the CRM's assignment (assigned), the warning"
        " time (due_soon), the deadline (breached), the touch (touched), the retraction's event"
        " (withdrawn)."
    )
    mql_change_id: str = Field(description="The MQL stage change this handoff follows.")
    causation_event_id: str | None = Field(
        default=None, description="The event behind this step; None for the clock's steps."
    )
    owner: str | None = Field(description="Who owns the MQL now (None: no queue took it).")
    queue: str | None = None
    assigned_by: Literal["rules", "crm"] | None = Field(
        default=None, description="assigned only: the rules' routing, or the CRM."
    )
    team: str | None = Field(default=None, description="The CRM's team, when it gave one.")
    mql_kind: MqlKind
    grade: str | None = None
    source: str | None = Field(default=None, description="The lead's first-touch source.")
    campaign: str | None = Field(default=None, description="The lead's first-touch campaign.")
    mql_at: EventTime = Field(description="When the lead became an MQL: the clock's start.")
    due_at: EventTime | None = Field(
        default=None, description="The response deadline, in the owner's working time."
    )
    target_minutes: float | None = Field(
        default=None, description="The response target, minutes of the owner's working time."
    )
    touch: TouchKind | None = Field(
        default=None,
        description="touched only: the first attempt (a call or email, reached or not) or the"
        " first contact (sales talked to the lead).",
    )
    response_business_minutes: float | None = Field(
        default=None, description="touched only: MQL to touch, in the owner's working minutes."
    )
    response_wall_minutes: float | None = Field(
        default=None, description="touched only: MQL to touch, in wall-clock minutes."
    )
    within_target: bool | None = Field(
        default=None, description="touched only: the touch came by the deadline."
    )
    rules_version: str


class HandoffClock(BaseModel):
    """The worker's own record on the events topic, keyed by lead: a handoff deadline of this
    lead has come (`at`, UTC). The lead's agent applies it like an event, so the clock's steps
    are in the log and a replay of the topic gives the same handoff events. Never accepted
    from a tracker or the CRM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["handoff_clock"]
    lead_id: str
    at: EventTime
