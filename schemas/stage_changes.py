"""The output contract: stage-change events on the stage-changes topic, keyed by `lead_id`.

The topic is an upsert log keyed by `change_id`: the record with the highest `revision` of a
`change_id` is the current truth about that change. Events in order produce each change once
(revision = the lead's event count when it fired). An event that arrives late is applied at its
own time; if that rewrites the lead's past, the changes it alters are published again with a
higher revision, and the ones that no longer happen are published with `retracted: true`.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import EventTime

Stage: TypeAlias = Literal[
    "subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist", "disqualified"
]
MqlKind: TypeAlias = Literal["active", "passive"]

STAGES: Final[tuple[str, ...]] = Stage.__args__  # type: ignore[attr-defined]
FUNNEL_STAGES: Final[tuple[str, ...]] = STAGES[:-1]


class StageChange(BaseModel):
    """A lead moved from one lifecycle stage to another, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    change_id: str = Field(description="Deterministic id: same lead, stages and occurrence.")
    lead_id: str
    from_stage: Stage | None = Field(description="None for the lead's first stage.")
    to_stage: Stage
    occurred_at: EventTime = Field(description="Event time of the causing event (UTC).")
    causation_event_id: str
    rule: str = Field(description="Id of the rule in the rules file that fired.")
    rules_version: str
    mql_kind: MqlKind | None = Field(default=None, description="mql only.")
    reason: str | None = Field(default=None, description="disqualified only.")
    fit_score: float
    engagement_score: float
    grade: str | None = Field(
        default=None,
        description="The fit band's letter and the engagement band's number at the change"
        " (the rules' [grade]), e.g. A1; None when the rules define no grade.",
    )
    source: str | None = Field(default=None, description="The lead's first-touch source.")
    campaign: str | None = Field(default=None, description="The lead's first-touch campaign.")
    owner: str | None = Field(
        default=None,
        description="mql only: who owns the lead, from its queue (the rules' [handoff]).",
    )
    queue: str | None = Field(
        default=None, description="mql only: the queue that took the MQL (the rules' [handoff])."
    )
    sequence: int = Field(ge=0, description="Position of this change in the lead's history.")
    revision: int = Field(ge=0, description="Higher revision of a change_id supersedes lower.")
    retracted: bool = Field(default=False, description="True: this change no longer happens.")
    applied_late: bool = Field(
        default=False,
        description=(
            "True: an event older than the lead's detailed past moved it, and its moment or"
            " scores are approximate (docs/rules.md); its stage and rule are exact."
        ),
    )
