"""Rows for the funnel tables, from stage-change, event and account messages, and their inserts.

The tables are ReplacingMergeTree keyed by `change_id` / `event_id` / (`account_id`, `lead_id`)
and every view reads them with FINAL, so writing a row twice (a redelivery, a replay, a rebuild)
never counts it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from schemas.accounts import AccountChange, AccountSignal
from schemas.stage_changes import StageChange
from streams.codecs import DEFAULT_MAX_EVENT_BYTES, decode_event, describe_validation_error
from streams.errors import InvalidEventError

STAGE_CHANGE_COLUMNS: Final = (
    "change_id",
    "lead_id",
    "from_stage",
    "to_stage",
    "occurred_at",
    "causation_event_id",
    "rule",
    "rules_version",
    "mql_kind",
    "reason",
    "fit_score",
    "engagement_score",
    "source",
    "campaign",
    "sequence",
    "revision",
    "retracted",
    "published_at",
)
EVENT_COLUMNS: Final = (
    "event_id",
    "lead_id",
    "type",
    "occurred_at",
    "source",
    "campaign",
    "amount",
    "currency",
    "published_at",
)
ACCOUNT_CHANGE_COLUMNS: Final = (
    "change_id",
    "account_id",
    "from_stage",
    "to_stage",
    "occurred_at",
    "rule",
    "rules_version",
    "causation_lead_id",
    "causation_event_id",
    "causation_change_id",
    "people",
    "leads",
    "mqls",
    "sqls",
    "engagement_score",
    "seniorities",
    "sequence",
    "revision",
    "retracted",
    "published_at",
)
ACCOUNT_SIGNAL_COLUMNS: Final = (
    "account_id",
    "lead_id",
    "revision",
    "occurred_at",
    "causation_event_id",
    "causation_change_id",
    "member",
    "stage",
    "seniority",
    "engagement_score",
    "published_at",
)


LEAD_ID: Final = 1
"""Position of `lead_id` in stage-change, event and account-signal rows."""
assert (
    STAGE_CHANGE_COLUMNS[LEAD_ID]
    == EVENT_COLUMNS[LEAD_ID]
    == ACCOUNT_SIGNAL_COLUMNS[LEAD_ID]
    == "lead_id"
)
CAUSATION_LEAD_ID: Final = ACCOUNT_CHANGE_COLUMNS.index("causation_lead_id")
"""Position of the lead id in account-change rows."""


class RejectedRecord(ValueError):
    """A message the projector cannot turn into a row; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def published_at(timestamp_ms: int | None) -> datetime:
    """A Kafka record timestamp as an aware UTC datetime (epoch when the record has none)."""
    return datetime.fromtimestamp((timestamp_ms or 0) / 1000, tz=UTC)


def stage_change_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `stage_changes` row of one message of the stage-changes topic."""
    try:
        change = StageChange.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not a stage change: {describe_validation_error(exc)}") from None
    return [
        change.change_id,
        change.lead_id,
        change.from_stage,
        change.to_stage,
        change.occurred_at,
        change.causation_event_id,
        change.rule,
        change.rules_version,
        change.mql_kind,
        change.reason,
        change.fit_score,
        change.engagement_score,
        change.source,
        change.campaign,
        change.sequence,
        change.revision,
        change.retracted,
        published_at(timestamp_ms),
    ]


def event_row(
    value: bytes, timestamp_ms: int | None = None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> list[Any]:
    """The `events` row of one message of the events topic (no properties but a sale's value)."""
    try:
        event = decode_event(value, max_bytes)
    except InvalidEventError as exc:
        raise RejectedRecord(exc.reason) from None
    amount = currency = None
    if event.type == "deal_won":
        amount, currency = event.properties.amount, event.properties.currency
    return [
        event.event_id,
        event.lead_id,
        event.type,
        event.occurred_at,
        event.source,
        event.campaign,
        amount,
        currency,
        published_at(timestamp_ms),
    ]


def account_change_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `account_changes` row of one message of the account-changes topic."""
    try:
        change = AccountChange.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not an account change: {describe_validation_error(exc)}") from None
    return [
        change.change_id,
        change.account_id,
        change.from_stage,
        change.to_stage,
        change.occurred_at,
        change.rule,
        change.rules_version,
        change.causation_lead_id,
        change.causation_event_id,
        change.causation_change_id,
        change.people,
        change.leads,
        change.mqls,
        change.sqls,
        change.engagement_score,
        list(change.seniorities),
        change.sequence,
        change.revision,
        change.retracted,
        published_at(timestamp_ms),
    ]


def account_signal_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `account_members` row of one message of the account-signals topic."""
    try:
        signal = AccountSignal.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not an account signal: {describe_validation_error(exc)}") from None
    return [
        signal.account_id,
        signal.lead_id,
        signal.revision,
        signal.occurred_at,
        signal.causation_event_id,
        signal.causation_change_id,
        signal.member,
        signal.stage,
        signal.seniority,
        signal.engagement_score,
        published_at(timestamp_ms),
    ]


class ProjectionWriter:
    """Inserts rows into the funnel tables of one database."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def write(
        self,
        stage_changes: Sequence[list[Any]],
        events: Sequence[list[Any]],
        account_changes: Sequence[list[Any]] = (),
        account_signals: Sequence[list[Any]] = (),
    ) -> None:
        """Insert every kind of row; each insert is one block (all or nothing)."""
        if stage_changes:
            self.client.insert(
                f"{self.database}.stage_changes", stage_changes, column_names=STAGE_CHANGE_COLUMNS
            )
        if events:
            self.client.insert(f"{self.database}.events", events, column_names=EVENT_COLUMNS)
        if account_changes:
            self.client.insert(
                f"{self.database}.account_changes",
                account_changes,
                column_names=ACCOUNT_CHANGE_COLUMNS,
            )
        if account_signals:
            self.client.insert(
                f"{self.database}.account_members",
                account_signals,
                column_names=ACCOUNT_SIGNAL_COLUMNS,
            )
