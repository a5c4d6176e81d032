"""Rows of the funnel tables, built from topic messages. Pure: no ClickHouse, no Kafka.

Each table's columns are its contract model's fields (plus `published_at`, the Kafka timestamp of
the record), so a field added to the contract cannot be forgotten here. The events table keeps a
selection of the event: its envelope, a sale's value, the identity it links (the core's
reading of it) and its engagement points, never the other properties.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from pydantic import BaseModel, ValidationError

from schemas.accounts import AccountChange, AccountSignal
from schemas.events import ENGAGEMENT_TYPES, Event
from schemas.handoff import HandoffEvent
from schemas.spend import CampaignSpend
from schemas.stage_changes import StageChange
from streams.common.events_codec import decode_event, describe_validation_error
from streams.core.lifecycle import linked_identity
from streams.core.rules import EngagementRules, Rules
from streams.core.scoring import add_engagement, engagement_points
from streams.errors import InvalidEventError, LeadflowError

PUBLISHED_AT: Final = "published_at"


class Table(NamedTuple):
    """A funnel table: its name and the columns a row gives, in order."""

    name: str
    columns: tuple[str, ...]

    def position(self, column: str) -> int:
        return self.columns.index(column)


def _columns_of(model: type[BaseModel]) -> tuple[str, ...]:
    return (*model.model_fields, PUBLISHED_AT)


STAGE_CHANGES: Final = Table("stage_changes", _columns_of(StageChange))
EVENTS: Final = Table(
    "events",
    (
        "event_id",
        "lead_id",
        "type",
        "occurred_at",
        "source",
        "campaign",
        "amount",
        "currency",
        "anonymous_id",
        "linked_id",
        "points",
        PUBLISHED_AT,
    ),
)
ACCOUNT_CHANGES: Final = Table("account_changes", _columns_of(AccountChange))
ACCOUNT_MEMBERS: Final = Table("account_members", _columns_of(AccountSignal))
"""One row per account signal; ClickHouse keeps the latest per (account, lead): the member."""
CHALLENGER_STAGE_CHANGES: Final = Table("challenger_stage_changes", _columns_of(StageChange))
"""The challenger rules' stage changes (their own topic), as `stage_changes`."""
HANDOFF_EVENTS: Final = Table("handoff_events", _columns_of(HandoffEvent))
"""One row per handoff event; ClickHouse keeps one per `handoff_id` (a redelivery repeats it)."""
CAMPAIGN_SPEND: Final = Table("campaign_spend", ("spend_id", *_columns_of(CampaignSpend)))
"""One row per spend record; ClickHouse keeps the latest per `spend_id` (a reload replaces)."""
TABLES: Final = (
    STAGE_CHANGES,
    EVENTS,
    ACCOUNT_CHANGES,
    ACCOUNT_MEMBERS,
    CHALLENGER_STAGE_CHANGES,
    HANDOFF_EVENTS,
    CAMPAIGN_SPEND,
)


class RejectedRecord(LeadflowError):
    """A message the projector cannot turn into a row; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def published_at(timestamp_ms: int | None) -> datetime:
    """A Kafka record timestamp as an aware UTC datetime (epoch when the record has none)."""
    return datetime.fromtimestamp((timestamp_ms or 0) / 1000, tz=UTC)


def _row(model: BaseModel, timestamp_ms: int | None) -> list[Any]:
    # ClickHouse arrays take lists; the contract's tuples (seniorities) become lists.
    row = [
        list(value) if isinstance(value, tuple) else value
        for value in (getattr(model, name) for name in type(model).model_fields)
    ]
    row.append(published_at(timestamp_ms))
    return row


def stage_change_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `stage_changes` row of one message of the stage-changes topic."""
    try:
        change = StageChange.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not a stage change: {describe_validation_error(exc)}") from None
    return _row(change, timestamp_ms)


def event_points(event: Event, rules: EngagementRules) -> float:
    """The engagement points of one event alone, undecayed: its type's or content category's
    points, within what its type's cap (and its group's and the total cap) let one event add
    from nothing; 0 for an event that is not engagement (a profile, a sale, a link)."""
    if event.type not in ENGAGEMENT_TYPES:
        return 0.0
    category = getattr(event.properties, "content_category", None)
    points = engagement_points(event.type, category, rules)
    return sum(add_engagement({}, 0, event.type, points, rules).values())


def event_row(
    value: bytes, max_bytes: int, timestamp_ms: int | None = None, rules: Rules | None = None
) -> list[Any]:
    """The `events` row of one message of the events topic (no properties but a sale's value;
    `linked_id`: the identity the event links to its lead, as the core reads it; `points`: the
    event's engagement points under `rules`, None without rules)."""
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
        event.anonymous_id,
        linked_identity(event),
        None if rules is None else event_points(event, rules.engagement),
        published_at(timestamp_ms),
    ]


def account_change_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `account_changes` row of one message of the account-changes topic."""
    try:
        change = AccountChange.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not an account change: {describe_validation_error(exc)}") from None
    return _row(change, timestamp_ms)


def account_member_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `account_members` row of one message of the account-signals topic."""
    try:
        signal = AccountSignal.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not an account signal: {describe_validation_error(exc)}") from None
    return _row(signal, timestamp_ms)


def handoff_event_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `handoff_events` row of one message of the handoff topic."""
    try:
        handoff = HandoffEvent.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not a handoff event: {describe_validation_error(exc)}") from None
    return _row(handoff, timestamp_ms)


def spend_row(value: bytes, timestamp_ms: int | None = None) -> list[Any]:
    """The `campaign_spend` row of one message of the spend topic."""
    try:
        spend = CampaignSpend.model_validate_json(value)
    except ValidationError as exc:
        raise RejectedRecord(f"not a spend record: {describe_validation_error(exc)}") from None
    return [spend.spend_id, *_row(spend, timestamp_ms)]


LEAD_ID: Final = STAGE_CHANGES.position("lead_id")
"""Position of `lead_id` in stage-change, event, account-member and handoff rows."""
assert (
    LEAD_ID
    == EVENTS.position("lead_id")
    == ACCOUNT_MEMBERS.position("lead_id")
    == HANDOFF_EVENTS.position("lead_id")
)
CAUSATION_LEAD_ID: Final = ACCOUNT_CHANGES.position("causation_lead_id")
"""Position of the lead id in account-change rows."""
IDENTITY_IDS: Final = (EVENTS.position("anonymous_id"), EVENTS.position("linked_id"))
"""Positions of the other person ids of an event row (stored as lead ids are)."""
