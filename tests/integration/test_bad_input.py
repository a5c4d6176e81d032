"""Bad input never stops the pipeline and is never silently dropped."""

from __future__ import annotations

import orjson

from streams.local_pipeline import WorkerProcess as Worker
from tests.factories import event
from tests.integration.harness import Pipeline, raw_producer
from tests.waiting import wait_for

VALID = event("newsletter_subscribe", lead="after-the-bad-ones", event_id="good-1")
BAD = {
    b"this is not json": "not JSON",
    orjson.dumps({k: v for k, v in VALID.items() if k != "lead_id"}): "missing field 'lead_id'",
    orjson.dumps({**VALID, "type": "fax_received"}): "unknown type 'fax_received'",
    orjson.dumps({**VALID, "occurred_at": "2026-13-45"}): "occurred_at:",
    orjson.dumps({**VALID, "properties": {"blob": "x" * 2_000_000}}): "message too large",
}


def test_rejected_messages_go_to_the_dead_letter_topic_with_reasons(pipeline: Pipeline) -> None:
    worker: Worker = pipeline.worker().start()
    try:
        worker.wait_assigned()
        producer = raw_producer(pipeline.bootstrap_servers)
        topics = pipeline.settings.topics
        for value in [*BAD, orjson.dumps(VALID)]:
            producer.send(topics.events, key=b"after-the-bad-ones", value=value).get(timeout=30)
        producer.close()

        dead = pipeline.reader(topics.dead_letter)
        letters = wait_for(dead.poll, lambda m: len(m) >= len(BAD), 60, "every bad message")
        assert len(letters) == len(BAD)
        for letter in letters:
            headers = {name: value.decode() for name, value in letter.headers}
            assert headers["leadflow-reason"].startswith(BAD[letter.value]), headers
            assert headers["leadflow-topic"] == topics.events
            assert int(headers["leadflow-offset"]) >= 0 and "leadflow-partition" in headers
            assert letter.key == b"after-the-bad-ones"
        kinds = sorted(dict(letter.headers)["leadflow-kind"] for letter in letters)
        assert kinds == [b"invalid_event"] * 4 + [b"too_large"]

        changes = pipeline.reader(topics.stage_changes)
        wait_for(changes.values, lambda v: len(v) == 1, 60, "the valid event's stage change")
        assert orjson.loads(changes.values()[0])["causation_event_id"] == "good-1"
        metrics = worker.metrics()
        assert metrics['leadflow_dead_letters_total{kind="invalid_event"}'] == 4
        assert metrics['leadflow_dead_letters_total{kind="too_large"}'] == 1
        assert metrics["leadflow_events_applied_total"] == 1
    finally:
        worker.kill()
