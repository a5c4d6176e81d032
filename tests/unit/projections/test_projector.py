"""What the projector makes of one record before it writes it (no Kafka, no ClickHouse)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from projections.privacy import lead_id_for_storage
from projections.projector import Projector, _Batch
from projections.rows import EVENTS, HANDOFF_EVENTS
from streams.common.handoff_codec import encode_clock
from streams.common.settings import PrivacySettings, Settings
from tests.support.factories import event
from tests.support.handoff_records import handoff_event


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


def test_a_handoff_event_is_stored_with_its_lead_id_hashed_and_a_bad_one_is_dead_lettered() -> None:
    settings = Settings(privacy=PrivacySettings(hash_key="k"))
    projector = Projector(settings, client=None)
    letters: list[tuple[str, str]] = []
    projector._dead_letter = lambda record, reason: letters.append((record.value, reason))  # type: ignore[method-assign]
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    good = handoff_event("assigned", "mql-1", "crm-1", at, at, assigned_by="rules")
    bad = good.replace(b'"assigned"', b'"lost"')
    batch = _Batch()
    for value in (good, bad):
        projector._add(
            batch, settings.topics.handoff, Record(settings.topics.handoff, 0, 0, b"", value, 0)
        )
    assert len(batch.handoff_events) == 1 and batch.rejected == 1
    row: list[Any] = batch.handoff_events[0]
    assert row[HANDOFF_EVENTS.position("lead_id")] == lead_id_for_storage(settings.privacy)("crm-1")
    assert row[HANDOFF_EVENTS.position("handoff_id")] == "mql-1:assigned:0"
    assert letters == [(bad, letters[0][1])] and letters[0][1].startswith(
        "not a handoff event: kind"
    )


def test_the_handoff_clock_records_on_the_events_topic_are_neither_rows_nor_dead_letters() -> None:
    settings = Settings(privacy=PrivacySettings(hash_key="k"))
    projector = Projector(settings, client=None)
    batch = _Batch()
    clock = encode_clock("crm-1", 1_767_000_000_000_000)
    projector._add(
        batch, settings.topics.events, Record(settings.topics.events, 0, 0, b"", clock, 0)
    )
    assert len(batch) == 0 and projector.stats.dead_letters == 0
