"""`leadflow notify` against the real local broker and real HTTP receivers on 127.0.0.1: every
alert delivered, signed, in order per lead and webhook, whatever the receivers do; history never
alerts; what a receiver never takes is dead-lettered with its answer; `kill -9` loses nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from kafka import KafkaProducer

from schemas.handoff import HandoffEvent
from schemas.stage_changes import StageChange
from streams.common.events_codec import HISTORY_HEADERS
from streams.common.kafka_clients import create_topics
from streams.local.broker import free_port
from streams.local.processes import LeadflowProcess, scrape_metrics
from tests.support.harness import Pipeline, settings_from
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Received, Reply, WebhookReceiver, always

SECRET = "notify-integration-secret"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HANDOFF_STEPS = ("assigned", "due_soon", "breached")


def _handoff(lead: str, kind: str, step: int = 0) -> HandoffEvent:
    return HandoffEvent.model_validate(
        {
            "handoff_id": f"{lead}:{kind}:{step}",
            "lead_id": lead,
            "kind": kind,
            "at": T0 + timedelta(minutes=step),
            "mql_change_id": f"{lead}:mql",
            "owner": "ana",
            "queue": "emea",
            "mql_kind": "active",
            "grade": "A1",
            "mql_at": T0,
            "due_at": T0 + timedelta(minutes=15),
            "target_minutes": 15.0,
            "rules_version": "test",
        }
    )


def _change(lead: str, to_stage: str = "mql", revision: int = 0, retracted: bool = False) -> Any:
    return StageChange.model_validate(
        {
            "change_id": f"{lead}:{to_stage}",
            "lead_id": lead,
            "from_stage": "lead",
            "to_stage": to_stage,
            "occurred_at": T0,
            "causation_event_id": f"{lead}:event",
            "rule": "mql.active_form",
            "rules_version": "test",
            "mql_kind": "active" if to_stage == "mql" else None,
            "fit_score": 55.0,
            "engagement_score": 72.5,
            "owner": "ana",
            "queue": "emea",
            "sequence": 1,
            "revision": revision,
            "retracted": retracted,
        }
    )


class Notify:
    """One test's notifier: its settings, topics, publisher and process."""

    def __init__(self, pipeline: Pipeline, urls: list[str], **settings: str) -> None:
        self.pipeline = pipeline
        self.metrics_port = free_port()
        self.handoff_topic = f"{pipeline.name}.handoff"
        defaults = {
            "LEADFLOW_TOPICS__HANDOFF": self.handoff_topic,
            "LEADFLOW_NOTIFY__GROUP_ID": f"{pipeline.name}-notify",
            "LEADFLOW_NOTIFY__URLS": json.dumps(urls),
            "LEADFLOW_NOTIFY__SECRET": SECRET,
            "LEADFLOW_NOTIFY__START": "earliest",
            "LEADFLOW_NOTIFY__FETCH_MAX_WAIT": "0.01",
            "LEADFLOW_NOTIFY__COMMIT_INTERVAL": "0.2",
            "LEADFLOW_NOTIFY__BACKOFF_BASE": "0.05",
            "LEADFLOW_NOTIFY__BACKOFF_CAP": "0.4",
            "LEADFLOW_NOTIFY__TIMEOUT": "5",
            "LEADFLOW_NOTIFY__METRICS_PORT": str(self.metrics_port),
        }
        chosen = {f"LEADFLOW_NOTIFY__{name.upper()}": value for name, value in settings.items()}
        self.env = pipeline.env(**{**defaults, **chosen})
        self.settings = settings_from(self.env)
        create_topics(self.settings)
        self.producer = KafkaProducer(bootstrap_servers=pipeline.bootstrap_servers, acks="all")
        self.process: LeadflowProcess | None = None

    def start(self) -> LeadflowProcess:
        self.process = self.pipeline.command(["notify"], self.env, log="notify").start()
        return self.process

    def publish(self, records: Iterable[HandoffEvent | StageChange], history: bool = False) -> None:
        for record in records:
            topic = (
                self.handoff_topic
                if isinstance(record, HandoffEvent)
                else self.settings.topics.stage_changes
            )
            self.producer.send(
                topic,
                key=record.lead_id.encode(),
                value=record.model_dump_json().encode(),
                headers=list(HISTORY_HEADERS) if history else None,
            )
        self.producer.flush()

    def metrics(self) -> dict[str, float]:
        try:
            return scrape_metrics(self.metrics_port)
        except OSError:
            return {}

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.producer.close()


def _metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        value
        for sample, value in samples.items()
        if sample.split("{")[0] == name and all(label in sample for label in wanted)
    )


def _assert_signed(requests: list[Received]) -> None:
    for request in requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.signature, expected), request
        document = orjson.loads(request.body)
        key = document.get("handoff_id") or document["change_id"]
        assert request.key == key, "a repeat carries the same idempotency key"


def _keys_by_lead(requests: list[Received], kind_of_topic: str) -> dict[str, list[str]]:
    """Each lead's keys of one topic (handoff or mql) in the order they came, a repeat right
    after its own attempt counted once."""
    by_lead: dict[str, list[str]] = {}
    for request in requests:
        if (request.kind == "mql") != (kind_of_topic == "mql"):
            continue
        keys = by_lead.setdefault(orjson.loads(request.body)["lead_id"], [])
        if not keys or keys[-1] != request.key:
            keys.append(request.key)
    return by_lead


def _handoff_order(leads: list[str]) -> dict[str, list[str]]:
    return {
        lead: [_handoff(lead, kind, n).handoff_id for n, kind in enumerate(HANDOFF_STEPS)]
        for lead in leads
    }


def _alerts(leads: list[str]) -> list[HandoffEvent | StageChange]:
    records: list[HandoffEvent | StageChange] = []
    for lead in leads:
        records.append(_change(lead))
        records += [_handoff(lead, kind, n) for n, kind in enumerate(HANDOFF_STEPS)]
    return records


def test_failing_throttling_and_stalling_receivers_get_every_alert_in_order(
    pipeline: Pipeline,
) -> None:
    flaky = WebhookReceiver(lambda seen: Reply(500, body=b"oops") if seen == 0 else Reply())
    throttled = WebhookReceiver(
        lambda seen: Reply(429, {"Retry-After": "1"}) if seen == 0 else Reply()
    )
    stalling = WebhookReceiver(lambda seen: Reply(delay=2.5) if seen == 0 else Reply())
    receivers = [flaky.start(), throttled.start(), stalling.start()]
    notify = Notify(pipeline, [receiver.url for receiver in receivers], TIMEOUT="1.5")
    leads = [f"lead-{n}" for n in range(6)]
    try:
        published = time.monotonic()
        notify.publish(_alerts(leads))
        notify.start()
        expected = set(_expected_keys(leads))
        samples = wait_for(
            notify.metrics,
            lambda s: _metric(s, "leadflow_notify_deliveries_total") == 3 * len(expected),
            45,
            "every alert delivered to every receiver",
        )
        assert _metric(samples, "leadflow_notify_retries_total") == 3 * len(expected)
        assert _metric(samples, "leadflow_notify_latency_seconds_count") == 3 * len(expected)
        # Retry-After: 1 was honoured: no second request for a key came sooner.
        for key in expected:
            times = [r.at for r in throttled.requests if r.key == key]
            assert len(times) == 2 and times[1] - times[0] >= 0.95, (key, times)
        assert all(r.at - published < 45 for r in throttled.requests)
        for receiver in receivers:
            requests = receiver.requests
            _assert_signed(requests)
            assert _keys_by_lead(requests, "handoff") == _handoff_order(leads)
            assert _keys_by_lead(requests, "mql") == {lead: [f"{lead}:mql"] for lead in leads}
        # Each receiver took each alert once; the stalling one's first answer came too late.
        assert sorted(r.key for r in flaky.delivered()) == sorted(expected)
        assert len(stalling.requests) == 2 * len(expected)
    finally:
        notify.close()
        for receiver in receivers:
            receiver.stop()


def _expected_keys(leads: list[str]) -> list[str]:
    return [f"{lead}:mql" for lead in leads] + [
        key for keys in _handoff_order(leads).values() for key in keys
    ]


def test_history_and_what_is_no_new_mql_never_alert(pipeline: Pipeline) -> None:
    receiver = WebhookReceiver().start()
    touched_only = WebhookReceiver().start()
    notify = Notify(
        pipeline,
        [receiver.url],
        ENDPOINTS=json.dumps({"touched": [touched_only.url]}),
    )
    dead_letters = pipeline.reader(notify.settings.topics.dead_letter)
    try:
        notify.publish(_alerts(["old-1", "old-2"]), history=True)
        notify.producer.send(notify.handoff_topic, key=b"live", value=b'{"kind": "breached"}')
        notify.publish(
            [
                _change("live", revision=1),  # a new MQL, whatever its revision
                _change("live", revision=2),  # a revision of one alerted: no new MQL
                _change("live", retracted=True),
                _change("live", to_stage="sql"),
                _handoff("live", "touched", 3),
                _handoff("live", "withdrawn", 4),
                _handoff("live", "assigned", 5),  # last: everything before it was read
            ]
        )
        notify.start()
        wait_for(receiver.delivered_keys, lambda keys: bool(keys), 30, "the live alert")
        wait_for(touched_only.delivered_keys, lambda keys: bool(keys), 10, "the touched alert")
        # Two topics: the MQL and the handoff events reach a webhook in each topic's order.
        wait_for(receiver.delivered_keys, lambda keys: len(keys) >= 2, 10, "both live alerts")
        assert sorted(r.key for r in receiver.requests) == ["live:assigned:5", "live:mql"]
        assert [r.key for r in touched_only.requests] == ["live:touched:3"]
        skipped = {"history": 8.0, "not_alert": 2.0, "repeat": 1.0}
        wait_for(
            notify.metrics,
            lambda s: (
                {
                    reason: _metric(s, "leadflow_notify_skipped_total", reason=reason)
                    for reason in skipped
                }
                == skipped
            ),
            10,
            "the history records, the stage changes that are no MQL and the repeat skipped",
        )
        letters = wait_for(dead_letters.poll, bool, 10, "the unreadable record's dead letter")
        assert [letter.value for letter in letters] == [b'{"kind": "breached"}']
        headers = dict(letters[0].headers)
        assert headers["leadflow-kind"] == b"notify_invalid"
        assert b"missing field 'handoff_id'" in headers["leadflow-reason"]
        process = notify.process
        assert process is not None and process.process is not None
        process.stop()
        assert process.process.returncode == 0, "SIGTERM: committed, then exit 0"
    finally:
        notify.close()
        receiver.stop()
        touched_only.stop()


def test_a_dead_receiver_holds_back_no_other_and_is_dead_lettered_with_its_answer(
    pipeline: Pipeline,
) -> None:
    dead = WebhookReceiver(always(Reply(500, body=b"receiver on fire:\n database down"))).start()
    gone = WebhookReceiver(always(Reply(404, body=b"no such hook"))).start()
    healthy = WebhookReceiver().start()
    notify = Notify(
        pipeline,
        [dead.url, gone.url, healthy.url],
        MAX_ATTEMPTS="4",
        BACKOFF_BASE="0.5",
        BACKOFF_CAP="1",
    )
    leads = [f"lead-{n}" for n in range(8)]
    expected = set(_expected_keys(leads))
    dead_letters = pipeline.reader(notify.settings.topics.dead_letter)
    try:
        notify.publish(_alerts(leads))
        notify.start()
        wait_for(healthy.delivered_keys, lambda keys: keys == expected, 30, "healthy: all")
        # The healthy receiver got everything at once, while the dead one was still retried.
        arrivals = [request.at for request in healthy.requests]
        assert max(arrivals) - min(arrivals) < 5
        assert len(dead.requests) < 4 * len(expected)
        letters = wait_for(
            dead_letters.poll,
            lambda found: len(found) >= 2 * len(expected),
            30,
            "a dead letter per alert and failing receiver",
        )
        assert len(letters) == 2 * len(expected)
        reasons = []
        for letter in letters:
            headers = dict(letter.headers)
            assert headers["leadflow-kind"] == b"undeliverable"
            reasons.append(headers["leadflow-reason"].decode())
            document = orjson.loads(letter.value)
            assert document.get("handoff_id", document.get("change_id")) in expected
        failing = "HTTP 500: receiver on fire: database down after 4 attempts"
        assert sum(failing in r for r in reasons) == len(expected)
        assert sum("HTTP 404: no such hook (not retried)" in r for r in reasons) == len(expected)
        assert all(SECRET not in r and "/hook" not in r for r in reasons)
        # Each alert was tried 4 times at most on the failing receiver, once on the one that
        # answered 404 (an attempt that got no answer in time is one the receiver never saw).
        assert set(Counter(r.key for r in dead.requests).values()) <= {1, 2, 3, 4}
        assert Counter(r.key for r in gone.requests).keys() == expected
        assert max(Counter(r.key for r in gone.requests).values()) <= 2
        assert Counter(r.key for r in healthy.requests).keys() == expected
    finally:
        notify.close()
        for receiver in (dead, gone, healthy):
            receiver.stop()


def test_a_receiver_that_is_down_gets_everything_once_it_is_back(pipeline: Pipeline) -> None:
    receiver = WebhookReceiver(port=free_port())
    notify = Notify(pipeline, [receiver.url], MAX_ATTEMPTS="1000")
    leads = [f"lead-{n}" for n in range(4)]
    try:
        notify.publish(_alerts(leads))
        notify.start()
        wait_for(
            notify.metrics,
            lambda s: _metric(s, "leadflow_notify_retries_total") >= 3 * len(leads),
            30,
            "attempts refused",
        )
        receiver.start()
        wait_for(
            receiver.delivered_keys,
            lambda keys: keys == set(_expected_keys(leads)),
            30,
            "every alert once the receiver is back",
        )
        _assert_signed(receiver.requests)
        assert _keys_by_lead(receiver.requests, "handoff") == _handoff_order(leads)
    finally:
        notify.close()
        receiver.stop()


def test_kill_9_mid_delivery_loses_nothing_and_repeats_carry_the_same_key(
    pipeline: Pipeline,
) -> None:
    receiver = WebhookReceiver(always(Reply(delay=0.03))).start()
    notify = Notify(pipeline, [receiver.url], CONCURRENCY="2")
    leads = [f"lead-{n}" for n in range(15)]
    expected = set(_expected_keys(leads))
    try:
        notify.publish(_alerts(leads))
        first = notify.start()
        wait_for(receiver.delivered_keys, lambda keys: len(keys) >= 15, 30, "some deliveries")
        first.kill()
        killed_at = time.monotonic()
        assert len(receiver.delivered_keys()) < len(expected), "killed mid-delivery"
        notify.start()
        wait_for(receiver.delivered_keys, lambda keys: keys == expected, 45, "every alert")
        requests = receiver.requests
        _assert_signed(requests)
        for run in (
            [r for r in requests if r.at < killed_at],
            [r for r in requests if r.at >= killed_at],
        ):
            # Within each run, each lead's alerts came in order.
            for lead, keys in _keys_by_lead(run, "handoff").items():
                order = _handoff_order([lead])[lead]
                assert keys == sorted(keys, key=order.index), (lead, keys)
    finally:
        notify.close()
        receiver.stop()
