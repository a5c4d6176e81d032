"""What the projector makes of one record before it writes it (no Kafka, no ClickHouse)."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from projections.privacy import lead_id_for_storage
from projections.projector import Projector, _Batch
from projections.rows import EVENTS
from streams.common.settings import PrivacySettings, Settings
from tests.support.factories import event


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int


def test_every_person_id_of_an_event_is_stored_as_the_lead_ids_are() -> None:
    settings = Settings(privacy=PrivacySettings(hash_key="k"))
    projector = Projector(settings, client=None)
    merge = {**event("leads_merged", lead="crm-1", merged_lead_id="crm-9"), "anonymous_id": "a-1"}
    batch = _Batch()
    projector._add(batch, settings.topics.events, _record(settings, merge))
    stored = lead_id_for_storage(settings.privacy)
    row: list[Any] = batch.events[0]
    assert row[EVENTS.position("lead_id")] == stored("crm-1")
    assert row[EVENTS.position("anonymous_id")] == stored("a-1")
    assert row[EVENTS.position("linked_id")] == stored("crm-9")


def _record(settings: Settings, document: dict[str, Any]) -> Record:
    return Record(settings.topics.events, 0, 0, b"", orjson.dumps(document), 1_700_000_000_000)
