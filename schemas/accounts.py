"""The account contract: leads rolled up to their company (the buying committee).

A lead belongs to the account named by its profile: an explicit `account_id` profile fact, else
its email's company domain (free-mail domains of the rules file name no account).

- `AccountSignal`, on the account-signals topic keyed by `account_id`: what the lead worker tells
  an account about one of its people after an event of that lead changed what the account reads
  (stage, seniority, engagement, or the account itself). Internal, like a repartition topic, and
  also projected into ClickHouse as the account's membership.
- `AccountChange`, on the account-changes topic keyed by `account_id`: the account reached a stage.
  An upsert log keyed by `change_id`, like lead stage changes: the highest `revision` of a
  `change_id` is the truth about it, `retracted: true` says it no longer happens.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import EventTime
from schemas.stage_changes import Stage

AccountStage: TypeAlias = Literal["engaged", "sales_ready", "customer"]
ACCOUNT_STAGES: Final[tuple[str, ...]] = AccountStage.__args__  # type: ignore[attr-defined]


class AccountSignal(BaseModel):
    """One lead's facts as its account reads them, as of the lead's latest event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str
    lead_id: str
    revision: int = Field(ge=1, description="The lead's event count; higher supersedes lower.")
    occurred_at: EventTime = Field(description="Event time of the lead's latest event.")
    causation_event_id: str = Field(description="The lead event that made the facts change.")
    causation_change_id: str | None = Field(
        default=None, description="The lead stage change that event caused, if any."
    )
    member: bool = Field(description="False: the lead now belongs to another account, or none.")
    stage: Stage | None
    seniority: str | None = Field(description="From the profile, or read from the job title.")
    engagement_score: float = Field(description="The lead's engagement score at occurred_at.")


class AccountChange(BaseModel):
    """An account moved to a stage, and why; with the account's make-up at that moment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    change_id: str = Field(description="Deterministic id: same account, stages and occurrence.")
    account_id: str
    from_stage: AccountStage | None
    to_stage: AccountStage
    occurred_at: EventTime = Field(description="Event time of the causing lead event.")
    rule: str = Field(description="Id of the rule in the rules file that fired.")
    rules_version: str
    causation_lead_id: str
    causation_event_id: str
    causation_change_id: str | None = Field(
        default=None, description="The lead stage change behind it, if a lead changed stage."
    )
    people: int = Field(ge=0, description="Known people at the account.")
    leads: int = Field(ge=0, description="People at stage lead or further (not disqualified).")
    mqls: int = Field(ge=0, description="People at MQL or further (not disqualified).")
    sqls: int = Field(ge=0, description="People at SQL or further (not disqualified).")
    engagement_score: float = Field(description="Sum of its people's decayed engagement.")
    seniorities: tuple[str, ...] = Field(description="Seniorities present, sorted, with repeats.")
    sequence: int = Field(ge=0, description="Position of this change in the account's history.")
    revision: int = Field(ge=0, description="Higher revision of a change_id supersedes lower.")
    retracted: bool = False
    applied_late: bool = Field(
        default=False,
        description=(
            "True: a signal older than the account's detailed past caused it; it was applied "
            "at the account's newest moment (occurred_at), not its own time (docs/rules.md)."
        ),
    )
