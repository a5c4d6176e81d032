"""Bad input never stops the pipeline and is never silently dropped."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.rules import Rules
from streams.local.broker import LocalBroker
from streams.local.processes import WorkerProcess as Worker
from streams.worker.agents import partition_for
from tests.support.event_times import OUT_OF_RANGE, control_lead, edge_times, in_range, odd_types
from tests.support.factories import event
from tests.support.harness import Pipeline, raw_producer, replay_bytes, unique
from tests.support.waiting import wait_for

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


def test_bad_or_misrouted_account_signals_do_not_stop_the_roll_up(pipeline: Pipeline) -> None:
    signal = {
        "account_id": "acme.com",
        "lead_id": "cto-1",
        "revision": 1,
        "occurred_at": "2026-03-02T09:00:00.000000Z",
        "causation_event_id": "evt-1",
        "member": True,
        "stage": "mql",
        "seniority": "c_level",
        "engagement_score": 70.0,
    }
    home = partition_for(b"acme.com", pipeline.partitions)
    worker: Worker = pipeline.worker().start()
    try:
        worker.wait_assigned()
        producer = raw_producer(pipeline.bootstrap_servers)
        topics = pipeline.settings.topics
        producer.send(topics.account_signals, key=b"acme.com", value=b"{}", partition=home)
        wrong = (home + 1) % pipeline.partitions
        producer.send(
            topics.account_signals, key=b"acme.com", value=orjson.dumps(signal), partition=wrong
        ).get(timeout=30)
        producer.close()

        dead = pipeline.reader(topics.dead_letter)
        (letter,) = wait_for(dead.poll, lambda m: len(m) >= 1, 60, "the bad signal's dead letter")
        headers = {name: value.decode() for name, value in letter.headers}
        assert headers["leadflow-kind"] == "invalid_signal"
        assert headers["leadflow-reason"].startswith("not an account signal: missing field")
        # The misrouted signal reaches its account's partition and is applied there.
        changes = pipeline.reader(topics.account_changes)
        wait_for(changes.values, lambda v: len(v) == 2, 60, "the account's two changes")
        assert [orjson.loads(v)["rule"] for v in changes.values()] == [
            "account.engaged_score",
            "account.sales_ready_decision_maker",
        ]
        assert {m.partition for m in changes.messages} == {home}
        metrics = worker.metrics()
        assert metrics["leadflow_events_rerouted_total"] == 1
        assert metrics['leadflow_account_signals_total{direction="received"}'] == 1
    finally:
        worker.kill()


@pytest.fixture(scope="module")
def odd_times_pipeline(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pipeline, Worker]]:
    pipeline = Pipeline(broker.bootstrap_servers, tmp_path_factory.mktemp("odd-times"))
    worker: Worker = pipeline.worker().start()
    worker.wait_assigned()
    yield pipeline, worker
    worker.kill()
    pipeline.close()


@settings(max_examples=8, deadline=None)
@given(odd=st.lists(st.tuples(edge_times, odd_types), min_size=1, max_size=4))
def test_odd_event_times_on_the_topic_never_freeze_a_lead(
    odd_times_pipeline: tuple[Pipeline, Worker], rules: Rules, odd: list[tuple[str, str]]
) -> None:
    """Out of range: a dead letter with the reason. In range, however odd: applied. Either way
    the lead's later events go on as `replay` says, and nothing fails inside the worker."""
    pipeline, worker = odd_times_pipeline
    lead = unique("odd")
    documents = []
    for timestamp, event_type in odd:
        document = event(event_type, lead=lead)
        document["occurred_at"] = timestamp
        documents.append(document)
    documents += control_lead(lead)
    producer = raw_producer(pipeline.bootstrap_servers)
    topics = pipeline.settings.topics
    for document in documents:
        producer.send(topics.events, key=lead.encode(), value=orjson.dumps(document))
    producer.flush()
    producer.close()

    expected = [c for c in replay_bytes(documents, rules)]
    changes = pipeline.reader(topics.stage_changes)
    found = wait_for(
        lambda: [v for v in changes.values() if orjson.loads(v)["lead_id"] == lead],
        lambda values: len(values) >= len(expected),
        60,
        "the lead's stage changes",
    )
    assert found == expected
    assert [orjson.loads(v)["to_stage"] for v in found][-1] == "sql"
    refused = sum(not in_range(d["occurred_at"]) for d in documents)
    dead = pipeline.reader(topics.dead_letter)
    letters = wait_for(
        lambda: [m for m in dead.poll() if m.key == lead.encode()],
        lambda found: len(found) >= refused,
        60,
        "a dead letter for each out-of-range event",
    )
    assert len(letters) == refused
    for letter in letters:
        headers = {name: value.decode() for name, value in letter.headers}
        assert headers["leadflow-kind"] == "invalid_event"
        assert headers["leadflow-reason"].startswith(OUT_OF_RANGE)
    assert worker.metrics().get('leadflow_dead_letters_total{kind="internal_error"}', 0) == 0
