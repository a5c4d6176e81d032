"""Sends the broker refuses: never counted as sent, never committed past.

The local broker refuses records for real when its schema registry says a topic's values must
match a JSON schema (it answers INVALID_RECORD for the whole batch that holds one). It does not
enforce `max.message.bytes`, and it creates a deleted topic again on the next send, so those
cannot make a send fail here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.common.kafka_clients import create_topics, read_whole_topic
from streams.common.publish import publish_events
from streams.local.broker import LocalBroker, free_port
from tests.support.factories import days, event
from tests.support.harness import Pipeline

ACCEPTED_LEADS = {"type": "string", "pattern": "^ok-"}
NOTHING_ACCEPTED = {"type": "object", "required": ["a field no record has"]}


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline on its own broker, whose events topic accepts only the events of leads named
    `ok-...` and whose dead-letter topic accepts nothing."""
    port = free_port()
    pipeline = Pipeline(bootstrap_servers=f"127.0.0.1:{port}", workdir=tmp_path, partitions=2)
    topics = pipeline.settings.topics
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for topic, value in (
        (topics.events, {"type": "object", "properties": {"lead_id": ACCEPTED_LEADS}}),
        (topics.dead_letter, NOTHING_ACCEPTED),
    ):
        schema = {"type": "object", "properties": {"value": value}}
        (schemas / f"{topic}.json").write_bytes(orjson.dumps(schema))
    with LocalBroker(port, tmp_path / "broker.log", schema_registry=schemas):
        create_topics(pipeline.settings)
        try:
            yield pipeline
        finally:
            pipeline.close()


def test_publish_counts_only_what_the_broker_acknowledged(refusing: Pipeline) -> None:
    settings = refusing.settings
    accepted = [event("page_view", days(n / 10), lead=f"ok-{n % 3}") for n in range(6)]
    first = publish_events(accepted, settings)
    assert (first.sent, first.failed, first.rejected) == (6, [], [])

    refused = event("page_view", days(1), lead="bad-1")
    documents = [*accepted[:3], refused, *accepted[3:], {"not": "an event"}]
    report = publish_events(documents, settings)

    assert [position for position, _ in report.rejected] == [7]
    on_topic = read_whole_topic(settings, settings.topics.events)
    assert len(on_topic) == first.sent + report.sent, "counted as sent, but not on the topic"
    failed = dict(report.failed)
    assert 3 in failed, "the refused event must be reported as not sent"
    assert all(reason.startswith("InvalidRecordError") for reason in failed.values()), failed
    assert report.sent + len(report.failed) == 7
    # The topic holds the first publish, and exactly what the second counted as sent.
    acknowledged = [
        orjson.dumps(document)
        for position, document in enumerate(documents[:7])
        if position not in failed
    ]
    assert sorted(on_topic) == sorted([orjson.dumps(d) for d in accepted] + acknowledged)


def test_a_dead_letter_the_broker_refuses_stops_the_projector_before_its_commit(
    refusing: Pipeline,
) -> None:
    settings = refusing.settings
    unreadable = b'{"lead_id": "ok-1"}'  # valid JSON, not a stage change
    producer = KafkaProducer(bootstrap_servers=refusing.bootstrap_servers, acks="all")
    try:
        sent = producer.send(settings.topics.stage_changes, key=b"ok-1", value=unreadable)
        producer.flush()
        where = sent.get(timeout=0)
    finally:
        producer.close()
    env = refusing.projector_env("refused")
    projector = refusing.command(["project", "--until-caught-up"], env, "projector-refused")
    assert projector.start().wait(timeout=120) == 1
    said = projector.log_path.read_text()
    assert (
        f"error: the dead letter of {settings.topics.stage_changes}[{where.partition}]@"
        f"{where.offset} was not sent to {settings.topics.dead_letter}: InvalidRecordError"
    ) in " ".join(said.split()), said
    committed = KafkaConsumer(
        bootstrap_servers=refusing.bootstrap_servers,
        group_id=env["LEADFLOW_PROJECTOR__GROUP_ID"],
        enable_auto_commit=False,
    )
    try:
        offset = committed.committed(TopicPartition(where.topic, where.partition))
    finally:
        committed.close()
    assert offset is None or offset <= where.offset
