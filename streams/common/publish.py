"""Publishing events to leadflow: a small API for upstream systems, and `leadflow publish`.

Events are validated against the contract before anything is sent, keyed by `lead_id` (Kafka's
default partitioner), with acks from all in-sync replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from streams.common.codecs import decode_event
from streams.common.kafka_clients import connection_config, reaching
from streams.common.settings import DEAD_LETTER_HEADROOM, Settings
from streams.errors import InvalidEventError


@dataclass
class PublishReport:
    """What was sent, and what was refused (with the position of each and why)."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def publish_events(
    events: Iterable[dict[str, Any] | BaseModel | bytes],
    settings: Settings,
    producer: Any = None,
) -> PublishReport:
    """Validate each event, send the valid ones, and return once the broker acknowledged them all.

    `events` may be dicts, contract models or raw JSON bytes. Invalid events are not sent; their
    positions and reasons are in the report. Raises kafka-python errors if the broker fails.
    """
    own_producer = producer is None
    if own_producer:
        producer = make_producer(settings)
    report = PublishReport()
    try:
        for position, raw in enumerate(_as_bytes(events)):
            try:
                event = decode_event(raw, settings.max_event_bytes)
            except InvalidEventError as exc:
                report.rejected.append((position, exc.reason))
                continue
            producer.send(settings.topics.events, key=event.lead_id.encode(), value=raw)
            report.sent += 1
        producer.flush()
    finally:
        if own_producer:
            producer.close()
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
