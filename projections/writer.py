"""Rows for the funnel tables, from stage-change and event messages, and their inserts.

The tables are ReplacingMergeTree keyed by `change_id` / `event_id` and every view reads them with
FINAL, so writing a row twice (a redelivery, a replay, a rebuild) never counts it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

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


LEAD_ID: Final = 1
"""Position of `lead_id` in both kinds of rows."""
assert STAGE_CHANGE_COLUMNS[LEAD_ID] == EVENT_COLUMNS[LEAD_ID] == "lead_id"


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


class ProjectionWriter:
    """Inserts rows into the funnel tables of one database."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database

    def write(self, stage_changes: Sequence[list[Any]], events: Sequence[list[Any]]) -> None:
        """Insert both kinds of rows; each insert is one block (all or nothing)."""
        if stage_changes:
            self.client.insert(
                f"{self.database}.stage_changes", stage_changes, column_names=STAGE_CHANGE_COLUMNS
            )
        if events:
            self.client.insert(f"{self.database}.events", events, column_names=EVENT_COLUMNS)
