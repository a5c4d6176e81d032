"""What the notifier delivers, decided without I/O: which records are alerts, to which webhooks,
with which body and headers."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError

from schemas.handoff import HandoffEvent
from schemas.stage_changes import StageChange
from streams.common.events_codec import describe_validation_error
from streams.common.settings import NotifyKind, NotifySettings

SIGNATURE_HEADER: Final = "X-Leadflow-Signature"
"""The header the CRM webhook is verified by (`streams.collector.server`), signed the same way:
`sha256=` and the hex HMAC-SHA256 of the body."""
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
KIND_HEADER: Final = "X-Leadflow-Kind"

Source = Literal["stage_changes", "handoff"]
SkipReason = Literal["history", "not_alert", "invalid", "repeat"]


@dataclass(frozen=True)
class Alert:
    """One record to deliver: its kind, its lead, the key a receiver drops repeats by, the
    record as published and a line for people."""

    kind: NotifyKind
    lead_id: str
    idempotency_key: str
    record: bytes
    text: str


@dataclass(frozen=True)
class Skip:
    """A record that alerts nobody, and why (`invalid`: `detail` says what is wrong)."""

    reason: SkipReason
    detail: str = ""


def read_alert(source: Source, value: bytes | None, history: bool) -> Alert | Skip:
    """The alert a record of `source` makes, or why it makes none. History never alerts; of the
    stage changes only an MQL does (not retracted). A revision of an MQL already alerted is
    no new one: `SeenChanges` tells (a change's `revision` counts its lead's events, it does
    not say whether the change was published before)."""
    if history:
        return Skip("history")
    if value is None:
        return Skip("invalid", "no value")
    try:
        if source == "stage_changes":
            change = StageChange.model_validate_json(value)
            if change.to_stage != "mql" or change.retracted:
                return Skip("not_alert")
            return Alert("mql", change.lead_id, change.change_id, value, mql_text(change))
        event = HandoffEvent.model_validate_json(value)
    except ValidationError as exc:
        return Skip("invalid", describe_validation_error(exc))
    return Alert(event.kind, event.lead_id, event.handoff_id, value, handoff_text(event))


class SeenChanges:
    """The change ids alerted last (at most `size`): a revision of one of them is no new MQL.
    Bounded, and empty after a restart: an MQL revised long after, or revised just after a
    restart, alerts again under its change_id, which the receiver drops as a repeat."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: dict[str, None] = {}

    def first_time(self, change_id: str) -> bool:
        """Whether `change_id` is new here (and remember it)."""
        if change_id in self._seen:
            return False
        self._seen[change_id] = None
        if len(self._seen) > self.size:
            del self._seen[next(iter(self._seen))]
        return True


def _moment(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "no deadline"


def _owner(owner: str | None, queue: str | None) -> str:
    who = owner or "nobody"
    return f"{who} ({queue})" if queue else who


def mql_text(change: StageChange) -> str:
    """A new MQL, in one line for people."""
    details = [f"{change.mql_kind} MQL" if change.mql_kind else "MQL", f"rule {change.rule}"]
    if change.grade:
        details.append(f"grade {change.grade}")
    details.append(f"engagement {change.engagement_score:g}")
    if change.source:
        details.append(f"source {change.source}")
    return f"New MQL: {change.lead_id} for {_owner(change.owner, change.queue)}: " + ", ".join(
        details
    )


def handoff_text(event: HandoffEvent) -> str:
    """A handoff event, in one line for people."""
    owner = _owner(event.owner, event.queue)
    lead = event.lead_id
    if event.kind == "assigned":
        by = f" by the {event.assigned_by}" if event.assigned_by else ""
        return f"MQL {lead} assigned to {owner}{by}; first touch due {_moment(event.due_at)}"
    if event.kind == "due_soon":
        return f"Due soon: MQL {lead} ({owner}) needs a first touch by {_moment(event.due_at)}"
    if event.kind == "breached":
        return f"Breached: MQL {lead} ({owner}) was due {_moment(event.due_at)}, not touched yet"
    if event.kind == "touched":
        minutes = event.response_business_minutes
        after = f" after {minutes:g} working minutes" if minutes is not None else ""
        verdict = {True: ", within target", False: ", late", None: ""}[event.within_target]
        return f"Touched: MQL {lead} ({owner}), first {event.touch or 'touch'}{after}{verdict}"
    return f"Withdrawn: MQL {lead} ({owner}) no longer holds; nothing to do"


def body_of(alert: Alert, body_format: Literal["json", "slack"]) -> bytes:
    """What is POSTed: the record as published, or a Slack-compatible `{"text": ...}`."""
    if body_format == "slack":
        return orjson.dumps({"text": alert.text})
    return alert.record


def signature(secret: bytes, body: bytes) -> str:
    """The value of SIGNATURE_HEADER for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def request_headers(alert: Alert, body: bytes, secret: bytes) -> dict[str, str]:
    """The headers of a delivery: JSON, signed, with its idempotency key and kind."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body),
        IDEMPOTENCY_HEADER: alert.idempotency_key,
        KIND_HEADER: alert.kind,
    }


def routes(settings: NotifySettings) -> dict[str, frozenset[NotifyKind]]:
    """Every webhook, with the kinds it receives (`urls` get `kinds`, plus `endpoints`)."""
    kinds: dict[str, set[NotifyKind]] = {url: set(settings.kinds) for url in settings.urls}
    for kind, urls in settings.endpoints:
        for url in urls:
            kinds.setdefault(url, set()).add(kind)
    return {url: frozenset(received) for url, received in kinds.items() if received}


def endpoint_name(url: str) -> str:
    """A webhook's name for logs, metrics and dead letters. A URL may hold a token (Slack's
    do): the name keeps its scheme and host, and tells webhooks apart by a hash of the rest."""
    parts = urlsplit(url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:8]
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}#{digest}"
