"""Publishing events to leadflow: a small API for upstream systems, and `leadflow publish`.

Events are validated against the contract before anything is sent, keyed by `lead_id` (Kafka's
default partitioner), with acks from all in-sync replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from streams.common.events_codec import decode_event
from streams.common.kafka_clients import (
    connection_config,
    reaching,
    send_failure,
    unacknowledged,
)
from streams.common.settings import DEAD_LETTER_HEADROOM, Settings
from streams.errors import InvalidEventError


@dataclass
class PublishReport:
    """What the broker acknowledged, what was invalid and not sent (`rejected`), and what was
    valid but not acknowledged (`failed`): the position of each, and why."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def publish_events(
    events: Iterable[dict[str, Any] | BaseModel | bytes],
    settings: Settings,
    producer: Any = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> PublishReport:
    """Validate each event, send the valid ones, and return once the broker answered for each.

    `events` may be dicts, contract models or raw JSON bytes. Only the events the broker
    acknowledged count as sent; invalid events (not sent) and events the broker did not take
    are in the report with their positions and reasons. Every message carries `headers`
    (e.g. the history mark of `leadflow import`). Raises BrokerUnreachableError when no broker
    answers at all.
    """
    from kafka.errors import KafkaError, KafkaTimeoutError

    own_producer = producer is None
    if own_producer:
        producer = make_producer(settings)
    report = PublishReport()
    sends: list[tuple[int, Any]] = []
    message_headers = list(headers) or None
    blocked: str | None = None
    try:
        for position, raw in enumerate(_as_bytes(events)):
            try:
                event = decode_event(raw, settings.max_event_bytes)
            except InvalidEventError as exc:
                report.rejected.append((position, exc.reason))
                continue
            if blocked is not None:
                report.failed.append((position, blocked))
                continue
            try:
                future = producer.send(
                    settings.topics.events,
                    key=event.lead_id.encode(),
                    value=raw,
                    headers=message_headers,
                )
            except KafkaTimeoutError as exc:
                # No metadata or no buffer within max_block_ms: every later send would wait
                # as long again, and fail the same way.
                blocked = send_failure(exc)
                report.failed.append((position, blocked))
            except KafkaError as exc:  # this record only (too large for the producer)
                report.failed.append((position, send_failure(exc)))
            else:
                sends.append((position, future))
        producer.flush()
    finally:
        if own_producer:
            producer.close()
    not_acknowledged = unacknowledged(sends)
    report.sent = len(sends) - len(not_acknowledged)
    report.failed = sorted(report.failed + not_acknowledged)
    return report


def make_producer(settings: Settings, **overrides: Any) -> Any:
    """A kafka-python producer for the events topic: acks=all, ordered per partition."""
    from kafka import KafkaProducer

    config = {
        **connection_config(settings.kafka),
        "acks": "all",
        "linger_ms": 5,
        "max_request_size": settings.max_event_bytes + DEAD_LETTER_HEADROOM,
        # Retries must not reorder a lead's events.
        "max_in_flight_requests_per_connection": 1,
        **overrides,
    }
    with reaching(settings.kafka):
        return KafkaProducer(**config)


def _as_bytes(events: Iterable[dict[str, Any] | BaseModel | bytes]) -> Iterator[bytes]:
    for event in events:
        if isinstance(event, bytes):
            yield event
        elif isinstance(event, BaseModel):
            yield event.model_dump_json().encode()
        else:
            yield orjson.dumps(event)
