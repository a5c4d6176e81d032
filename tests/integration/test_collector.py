"""The HTTP collector as a real server on 127.0.0.1, in front of the real broker."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import http.client
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.rules import Rules
from streams.local.broker import LocalBroker
from tests.support.collector_server import (
    WEBHOOK_SECRET,
    WRITE_KEY,
    Server,
    segment_message,
    start_collector,
)
from tests.support.harness import Pipeline, in_effect, replay_bytes
from tests.support.waiting import wait_for


@pytest.fixture
def server(pipeline: Pipeline) -> Iterator[Server]:
    started = start_collector(pipeline)
    yield started
    started.process.stop()


def test_the_official_segment_client_works_unchanged_and_moves_stages(
    pipeline: Pipeline, server: Server
) -> None:
    from segment.analytics import Client

    errors: list[Any] = []
    client = Client(
        WRITE_KEY, host=server.url, sync_mode=True, max_retries=0, on_error=errors.append
    )
    lead = f"lead-{uuid.uuid4().hex[:6]}"
    client.identify(
        lead,
        {
            "email": "ana@acme-corp.example",
            "title": "VP Marketing",
            "company": {"name": "Acme Corp", "employee_count": 800},
            "industry": "software",
        },
        timestamp=_at(0),
    )
    client.page(
        lead, name="Pricing", properties={"url": "https://x.example/pricing"}, timestamp=_at(1)
    )
    client.track(
        lead, "Whitepaper Downloaded", {"content_category": "whitepaper"}, timestamp=_at(2)
    )
    client.track(lead, "Demo Requested", timestamp=_at(3))
    client.flush()
    assert errors == []

    events = wait_for(
        lambda: [e for e in server.events() if e["lead_id"] == lead],
        lambda found: len(found) == 4,
        timeout=30,
        what="the four messages on the events topic",
    )
    assert [e["type"] for e in events] == [
        "profile_updated",
        "pricing_page_view",
        "content_download",
        "demo_request",
    ]
    assert events[0]["properties"]["company_size"] == 800
    worker = pipeline.worker().start()
    try:
        stages = pipeline.reader(pipeline.settings.topics.stage_changes)
        changes = wait_for(
            lambda: [orjson.loads(v) for v in stages.values()],
            lambda found: any(c["to_stage"] == "mql" for c in found),
            timeout=120,
            what="the lead to become an MQL",
        )
    finally:
        worker.kill()
    assert [c["to_stage"] for c in changes] == ["subscriber", "lead", "mql"]
    assert changes[-1]["mql_kind"] == "active"


def test_segment_page_views_before_an_identify_count_for_the_lead_as_replay_says(
    pipeline: Pipeline, server: Server, rules: Rules
) -> None:
    from datetime import UTC, datetime, timedelta

    from segment.analytics import Client

    errors: list[Any] = []
    client = Client(
        WRITE_KEY, host=server.url, sync_mode=True, max_retries=0, on_error=errors.append
    )
    visitor = f"anon-{uuid.uuid4().hex[:6]}"
    lead = f"lead-{uuid.uuid4().hex[:6]}"
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    for hour in range(8):
        client.track(
            event="Whitepaper Downloaded",
            properties={"content_category": "case_study"},
            anonymous_id=visitor,
            timestamp=start + timedelta(hours=hour),
        )
    for hour in range(8, 12):
        client.page(
            anonymous_id=visitor,
            properties={"url": "https://x.example/pricing"},
            timestamp=start + timedelta(hours=hour),
        )
    identify_id = str(uuid.uuid4())
    client.identify(
        lead,
        {"email": "ana@acme-corp.example", "title": "VP Marketing", "industry": "software"},
        anonymous_id=visitor,
        timestamp=start + timedelta(hours=20),
        message_id=identify_id,
    )
    client.flush()
    assert errors == []
    events = wait_for(
        server.events,
        lambda found: (
            len([e for e in found if visitor in (e["lead_id"], e.get("anonymous_id"))]) == 13
        ),
        timeout=30,
        what="the thirteen messages on the events topic",
    )
    published = [e for e in events if visitor in (e["lead_id"], e.get("anonymous_id"))]
    expected = in_effect(replay_bytes(published, rules))
    alone = in_effect(replay_bytes([e for e in published if e["lead_id"] == lead], rules))
    assert [orjson.loads(c)["to_stage"] for c in alone.values()] == ["subscriber", "lead"]
    worker = pipeline.worker().start()
    try:
        stages = pipeline.reader(pipeline.settings.topics.stage_changes)
        wait_for(
            lambda: in_effect(stages.values()),
            lambda found: found == expected,
            timeout=120,
            what="the stage changes in effect to equal replay of the same events",
        )
    finally:
        worker.kill()
    changes = sorted((orjson.loads(c) for c in expected.values()), key=lambda c: c["sequence"])
    assert [c["to_stage"] for c in changes] == ["subscriber", "lead", "mql"]
    # The visitor's downloads and pricing looks, before the identify, made the MQL.
    assert (changes[-1]["rule"], changes[-1]["causation_event_id"]) == (
        "mql.passive_score",
        identify_id,
    )
    assert {c["lead_id"] for c in changes} == {lead}


def _at(minute: int) -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 3, 1, 12, minute, tzinfo=UTC)


def test_every_endpoint_and_alias_maps_its_message(server: Server) -> None:
    lead = f"lead-{uuid.uuid4().hex[:6]}"
    sent = {
        "/v1/identify": segment_message("identify", lead, traits={"email": "a@b.example"}),
        "/v1/i": segment_message("identify", lead, traits={"title": "CTO"}),
        "/v1/page": segment_message("page", lead, properties={"url": "https://x.example/docs"}),
        "/v1/p": segment_message("page", lead, context={"page": {"url": "https://x/pricing"}}),
        "/v1/track": segment_message("track", lead, event="Newsletter Subscribed"),
        "/v1/t": segment_message("track", lead, event="Webinar Attended"),
        "/v1/alias": segment_message("alias", lead, previousId=f"anon-{lead}"),
        "/v1/a": segment_message("alias", lead, previousId=f"old-{lead}"),
    }
    for path, message in sent.items():
        status, body, _ = server.post(path, message)
        assert (status, body) == (200, {"success": True}), path
    batch = [segment_message("track", lead, event="Email Clicked") for _ in range(3)]
    compressed = gzip.compress(orjson.dumps({"batch": batch}))
    status, _, _ = server.post("/v1/batch", compressed, {"Content-Encoding": "gzip"})
    assert status == 200
    events = wait_for(
        lambda: [e for e in server.events() if e["lead_id"] == lead],
        lambda found: len(found) == 11,
        timeout=30,
        what="eleven events",
    )
    assert [e["type"] for e in events] == [
        "profile_updated",
        "profile_updated",
        "page_view",
        "pricing_page_view",
        "newsletter_subscribe",
        "webinar_attended",
        "identity_linked",
        "identity_linked",
        "email_click",
        "email_click",
        "email_click",
    ]
    assert [e["event_id"] for e in events[:8]] == [m["messageId"] for m in sent.values()]
    assert [e["anonymous_id"] for e in events[6:8]] == [f"anon-{lead}", f"old-{lead}"]


def test_auth_failures_publish_nothing(server: Server) -> None:
    lead = f"lead-{uuid.uuid4().hex[:6]}"
    message = segment_message("track", lead, event="Demo Requested")
    assert server.post("/v1/track", message, write_key="wrong")[0] == 401
    assert server.post("/v1/track", message, write_key=None)[0] == 401
    assert (
        server.post("/v1/track", message, {"Authorization": "Basic !!!"}, write_key=None)[0] == 401
    )
    crm = orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "lead_id": lead,
            "type": "sales_contacted",
            "occurred_at": "2026-03-02T10:00:00Z",
            "properties": {"channel": "call"},
        }
    )
    assert server.post("/v1/crm/events", crm, {"X-Leadflow-Signature": "sha256=00"})[0] == 401
    assert server.post("/v1/crm/events", crm, write_key=None)[0] == 401
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), crm, hashlib.sha256).hexdigest()
    status, _, _ = server.post("/v1/crm/events", crm, {"X-Leadflow-Signature": signature})
    assert status == 200
    # Only the signed CRM event arrived; everything refused above published nothing.
    events = wait_for(
        lambda: [e for e in server.events() if e["lead_id"] == lead],
        lambda found: len(found) >= 1,
        timeout=30,
        what="the signed CRM event",
    )
    assert [e["type"] for e in events] == ["sales_contacted"]


def test_oversized_and_malformed_bodies_get_400_with_the_reason(server: Server) -> None:
    lead = "lead-big"
    big = segment_message("track", lead, event="Demo Requested", properties={"x": "y" * 33_000})
    status, body, _ = server.post("/v1/track", big)
    assert (status, body["code"]) == (400, "too_large")
    batch = [
        segment_message("track", lead, event="Email Opened", properties={"x": "y" * 20_000})
        for _ in range(30)
    ]
    status, body, _ = server.post("/v1/batch", {"batch": batch})
    assert (status, body["code"]) == (400, "too_large")
    bomb = gzip.compress(b'{"batch": [' + b" " * 5_000_000 + b"]}")
    status, body, _ = server.post("/v1/batch", bomb, {"Content-Encoding": "gzip"})
    assert (status, body["code"]) == (400, "too_large")
    status, body, _ = server.post("/v1/track", b"{not json")
    assert (status, body["code"]) == (400, "invalid_json")
    status, body, _ = server.post("/v1/track", {**segment_message("track", lead), "event": ""})
    assert status == 400 and "event" in body["message"]
    no_id = segment_message("identify", lead)
    del no_id["messageId"]
    status, body, _ = server.post("/v1/identify", no_id)
    assert (status, body["message"]) == (400, "message 0: missing field 'messageId'")
    bad_time = segment_message("track", lead, event="Demo Requested", timestamp="yesterday")
    status, body, _ = server.post("/v1/track", bad_time)
    assert status == 400 and "occurred_at" in body["message"]


def _raw_post(server: Server, path: str, body: bytes, headers: dict[str, bytes]) -> int:
    """POST with header values sent as the bytes given (urllib would refuse non-Latin-1)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", path)
        token = base64.b64encode(f"{WRITE_KEY}:".encode())
        for name, value in {
            "Authorization": b"Basic " + token,
            "Content-Type": b"application/json",
            "Content-Length": str(len(body)).encode(),
            **headers,
        }.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


def test_hostile_encodings_nesting_and_signatures_get_a_4xx_not_a_500(server: Server) -> None:
    track = orjson.dumps(segment_message("track", "lead-hostile", event="Demo Requested"))
    assert _raw_post(server, "/v1/track", b"not gzip at all", {"Content-Encoding": b"gzip"}) == 400
    assert _raw_post(server, "/v1/track", b"\x28\xb5garbage", {"Content-Encoding": b"zstd"}) in (
        400,
        415,
    )
    assert _raw_post(server, "/v1/track", track, {"Content-Encoding": b"br, snappy"}) in (400, 415)
    head = orjson.dumps(segment_message("track", "lead-hostile", event="Demo Requested"))[:-1]
    nested = head + b',"properties":' + b'{"x":' * 900 + b'"leaf"' + b"}" * 900 + b"}"
    assert _raw_post(server, "/v1/track", nested, {}) == 400
    signature = "sha256=ünïcödé".encode()
    crm = orjson.dumps({"event_id": "e-1", "lead_id": "l-1", "type": "deal_won"})
    assert _raw_post(server, "/v1/crm/events", crm, {"X-Leadflow-Signature": signature}) == 401
    assert all(event["lead_id"] != "lead-hostile" for event in server.events())
    assert all(event["lead_id"] != "l-1" for event in server.events())
    assert "Traceback" not in Path(server.process.log_path).read_text()


def test_compressed_bodies_are_inflated_and_broken_streams_refused_at_once(
    server: Server,
) -> None:
    """A large body that is not what its encoding says is a 400 at once (it used to wait out
    the body timeout for a 408); zlib and raw deflate are both read; a stream cut short or
    followed by more bytes is refused."""
    not_deflate = b'{"batch": [' + b" " * 445_000 + b"]}"
    assert _raw_post(server, "/v1/batch", not_deflate, {"Content-Encoding": b"deflate"}) == 400
    assert _raw_post(server, "/v1/batch", not_deflate, {"Content-Encoding": b"gzip"}) == 400
    lead = "lead-deflated"
    zlib_wrapped = zlib.compress(orjson.dumps(segment_message("track", lead, event="Email Opened")))
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = (
        raw.compress(orjson.dumps(segment_message("track", lead, event="Email Clicked")))
        + raw.flush()
    )
    assert _raw_post(server, "/v1/track", zlib_wrapped, {"Content-Encoding": b"deflate"}) == 200
    assert _raw_post(server, "/v1/track", raw_deflate, {"Content-Encoding": b"Deflate"}) == 200
    whole = gzip.compress(orjson.dumps(segment_message("track", lead, event="Demo Requested")))
    assert _raw_post(server, "/v1/track", whole[:-6], {"Content-Encoding": b"gzip"}) == 400
    assert _raw_post(server, "/v1/track", whole + b"junk", {"Content-Encoding": b"gzip"}) == 400
    wait_for(
        lambda: sorted(e["type"] for e in server.events() if e["lead_id"] == lead),
        lambda types: types == ["email_click", "email_open"],
        timeout=15,
        what="both deflated calls on the events topic, and neither gzip one",
    )


def test_a_track_name_without_a_mapping_goes_to_the_dead_letter_topic(
    pipeline: Pipeline, server: Server
) -> None:
    message = segment_message("track", "lead-x", event="Logged In")
    assert server.post("/v1/track", message)[0] == 200
    dead = pipeline.reader(pipeline.settings.topics.dead_letter)
    records = wait_for(dead.poll, lambda found: len(found) == 1, timeout=30, what="a dead letter")
    headers = {name: value.decode() for name, value in records[0].headers}
    assert orjson.loads(records[0].value)["messageId"] == message["messageId"]
    assert headers["leadflow-kind"] == "unmapped"
    assert "Logged In" in headers["leadflow-reason"]


_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_json = st.recursive(
    st.none() | st.booleans() | _int64 | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_segment_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "t", "x"]),
        "messageId": st.text(max_size=8) | _int64,
        "userId": st.text(max_size=8) | _int64 | st.none(),
        "anonymousId": st.text(max_size=8),
        "timestamp": st.text(max_size=25) | st.just("2026-03-01T12:00:00Z"),
        "event": st.sampled_from(["Demo Requested", "Deal Won", "", "Nope"]) | _int64,
        "properties": _json,
        "traits": _json,
        "context": _json,
    },
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/track", "/v1/identify", "/v1/page", "/v1/batch", "/v1/t"]),
    body=_segment_like.map(orjson.dumps)
    | _json.map(orjson.dumps)
    | st.binary(max_size=200)
    | st.just(b'{"type": "track", "messageId": "m", "userId": 123456789012345678901234567890}')
    | st.lists(_segment_like, max_size=3).map(lambda b: orjson.dumps({"batch": b})),
)
def test_fuzzed_requests_never_get_a_500(fuzz_server: Server, path: str, body: bytes) -> None:
    status, answer, _ = fuzz_server.post(path, body)
    assert status in (200, 400), (status, answer)


@pytest.fixture(scope="module")
def fuzz_server(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pipeline = Pipeline(broker.bootstrap_servers, tmp_path_factory.mktemp("fuzz"))
    started = start_collector(pipeline)
    yield started
    started.process.stop()
    assert not started.process.process or started.process.process.returncode == 0
    pipeline.close()


def test_a_burst_beyond_the_in_flight_budget_gets_503_not_memory(pipeline: Pipeline) -> None:
    server = start_collector(pipeline, LEADFLOW_COLLECTOR__MAX_IN_FLIGHT_BYTES="4000")
    try:
        batches = [
            [segment_message("track", f"lead-{i}-{j}", event="Email Opened") for j in range(10)]
            for i in range(60)
        ]
        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(lambda b: server.post("/v1/batch", {"batch": b}), batches))
        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {200, 503} and statuses.count(503) > 0, statuses
        assert all(headers.get("Retry-After") == "1" for s, _, headers in answers if s == 503)
        accepted = {
            m["messageId"]
            for batch, (s, _, _) in zip(batches, answers, strict=True)
            if s == 200
            for m in batch
        }
        wait_for(
            lambda: {e["event_id"] for e in server.events()},
            lambda found: accepted <= found,
            timeout=30,
            what="every acknowledged event on the topic",
        )
    finally:
        server.process.stop()


def test_a_broker_failure_answers_503_so_the_client_retries(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("doomed")
    with LocalBroker(log_path=workdir / "broker.log") as doomed:
        pipeline = Pipeline(doomed.bootstrap_servers, workdir)
        server = start_collector(pipeline, LEADFLOW_COLLECTOR__PUBLISH_TIMEOUT="2")
        message = segment_message("track", "lead-1", event="Demo Requested")
        assert server.post("/v1/track", message)[0] == 200
    try:
        status, body, headers = server.post(
            "/v1/track", segment_message("track", "lead-1", event="Demo Requested")
        )
        assert (status, body["code"], headers.get("Retry-After")) == (503, "unavailable", "1")
    finally:
        server.process.stop()


def test_sales_activity_never_enters_with_a_write_key(pipeline: Pipeline, server: Server) -> None:
    """The write key is public: a browser must not make anyone a customer (or an SQL...)."""
    from segment.analytics import Client
    from segment.analytics.request import APIError

    client = Client(WRITE_KEY, host=server.url, sync_mode=True, max_retries=0)
    lead = f"lead-{uuid.uuid4().hex[:6]}"
    for name, properties in [
        ("Deal Won", {"amount": 1e12, "currency": "USD"}),
        ("Quote Requested", {}),
        ("sales_contacted", {}),
    ]:
        with pytest.raises(APIError) as refused:
            client.track(lead, name, properties, timestamp=_at(0))
        assert (refused.value.status, refused.value.code) == (400, "sales_activity_refused")
        assert "signed CRM webhook" in refused.value.message
    batch = [
        segment_message("track", lead, event="Email Opened"),
        segment_message("track", lead, event="Deal Lost"),
    ]
    status, body, _ = server.post("/v1/batch", {"batch": batch})
    assert (status, body["code"]) == (400, "sales_activity_refused")
    assert body["message"].startswith("message 1: track event 'Deal Lost' is sales activity")
    # A later call of the same lead lands on the same partition, after anything sent before it.
    client.track(lead, "Demo Requested", timestamp=_at(3))
    events = wait_for(
        lambda: [e for e in server.events() if e["lead_id"] == lead],
        lambda found: len(found) >= 1,
        timeout=30,
        what="the demo request",
    )
    assert [e["type"] for e in events] == ["demo_request"]


def _collector_times() -> st.SearchStrategy[tuple[str, bool]]:
    """(timestamp, accepted) pairs near the edges the collector enforces: the contract's start
    and the clock skew ahead of now; far enough (10 minutes) from the moving edge to be sure."""
    from datetime import UTC, datetime, timedelta, timezone

    from schemas.events import EARLIEST_EVENT_TIME

    def near_start(micros: int, offset: int) -> tuple[str, bool]:
        instant = EARLIEST_EVENT_TIME + timedelta(microseconds=micros)
        text = instant.astimezone(timezone(timedelta(minutes=offset))).isoformat()
        return text, micros >= 0

    def near_skew(minutes: int, offset: int) -> tuple[str, bool]:
        instant = datetime.now(UTC) + timedelta(days=1, minutes=minutes)
        text = instant.astimezone(timezone(timedelta(minutes=offset))).isoformat()
        return text, minutes < 0

    offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59)
    micros = st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000)
    minutes = st.integers(10, 3 * 1440).flatmap(lambda m: st.sampled_from([m, -m]))
    return st.one_of(
        st.builds(near_start, micros, offsets),
        st.builds(near_skew, minutes, offsets),
        st.sampled_from(
            [
                ("9999-12-31T23:59:59-01:00", False),
                ("0001-01-01T00:00:00+01:00", False),
                ("2099-12-31T23:59:59Z", False),
            ]
        ),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(at=_collector_times(), path=st.sampled_from(["/v1/track", "/v1/crm/events"]))
def test_event_times_outside_the_range_are_refused_with_the_reason(
    fuzz_server: Server, at: tuple[str, bool], path: str
) -> None:
    timestamp, accepted = at
    lead = f"lead-{uuid.uuid4().hex[:6]}"
    if path == "/v1/track":
        status, body, _ = fuzz_server.post(
            path, segment_message("track", lead, event="Demo Requested", timestamp=timestamp)
        )
    else:
        crm = orjson.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "lead_id": lead,
                "type": "sales_contacted",
                "occurred_at": timestamp,
            }
        )
        signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), crm, hashlib.sha256).hexdigest()
        status, body, _ = fuzz_server.post(path, crm, {"X-Leadflow-Signature": signature})
    if accepted:
        assert status == 200, (timestamp, body)
    else:
        assert (status, body["code"]) == (400, "invalid_event"), (timestamp, body)
        assert "occurred_at" in body["message"], body
