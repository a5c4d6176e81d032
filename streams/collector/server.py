"""`leadflow collect`: the HTTP edge. Segment-compatible tracking endpoints and a CRM webhook.

A request is answered 200 only after the broker acknowledged every event it carried (acks=all)
and its topics were still there; a broker away, a missing topic, a full in-flight budget or a
stop answers 503 so the client retries later; an invalid request answers 400 with the reason and
publishes nothing. Valid Segment messages leadflow has no event type for go to the dead-letter
topic with the reason (counted), never silently away. docs/collector.md says what it promises
under faults.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import signal
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from schemas.events import SALES_TYPES, Event
from streams.collector.connections import Listener, quiet_malformed_requests
from streams.collector.segment import ALIASES, SalesActivityRefused, UnmappedMessage, to_event
from streams.collector.topics import TopicWatch
from streams.common.events_codec import dead_letter_headers, decode_event
from streams.common.logs import quiet_client_repeats
from streams.common.preflight import check_can_listen
from streams.common.settings import Settings
from streams.common.spend import decode_spend, encode_spend
from streams.core.rules import Rules
from streams.errors import InvalidEventError, LeadflowError

log = logging.getLogger(__name__)

SEGMENT_MAX_MESSAGE_BYTES: Final = 32 * 1024
"""Segment's documented limit per call, and per message of a batch."""
SEGMENT_MAX_BATCH_BYTES: Final = 500 * 1024
SIGNATURE_HEADER: Final = "X-Leadflow-Signature"
PRODUCER_BATCH_BYTES: Final = SEGMENT_MAX_BATCH_BYTES * 2
"""Largest record batch (and produce request) the collector's producer builds."""
STOP_DRAIN: Final = 1.0
"""Seconds a stopping collector still answers new connections and requests (503) before it
closes its socket and its idle connections."""


class RequestError(LeadflowError):
    """A request to refuse; `status` and `code` go back to the client with the message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Stopping(Exception):
    """Put into the body stream of a request still arriving when the collector stops."""


@dataclass
class CollectorMetrics:
    """The collector's counters (Prometheus, on `/metrics`)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "leadflow_collector_requests",
            "HTTP requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "leadflow_collector_events",
            "Events acknowledged by the broker, by type.",
            ["type"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "leadflow_collector_dead_letters",
            "Valid messages with no leadflow event type, sent to the dead-letter topic.",
            registry=self.registry,
        )
        self.latency = Histogram(
            "leadflow_collector_request_seconds",
            "From request received to answer (acks included).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.connections_dropped = Counter(
            "leadflow_collector_connections_dropped",
            "Connections closed before a request: over_limit (answered 503) or header_timeout.",
            ["reason"],
            registry=self.registry,
        )


@dataclass
class _Outgoing:
    events: list[tuple[bytes, bytes, str]] = field(default_factory=list)
    """(key, value, type) of each event to publish."""
    dead_letters: list[tuple[bytes, str]] = field(default_factory=list)
    """(original message, reason) of each message to dead-letter."""
    spend: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(key, value) of each campaign spend record to publish on the spend topic."""

    @property
    def size(self) -> int:
        return (
            sum(len(v) for _, v, _ in self.events)
            + sum(len(v) for v, _ in self.dead_letters)
            + sum(len(v) for _, v in self.spend)
        )


class Collector:
    """The aiohttp application around one Kafka producer."""

    def __init__(
        self,
        settings: Settings,
        rules: Rules,
        producer: Any,
        watch: TopicWatch,
        metrics: CollectorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.producer = producer
        self.watch = watch
        self.metrics = metrics or CollectorMetrics()
        self.in_flight_bytes = 0
        self.stopping = False
        self.on_request: Callable[[Any], None] = lambda connection: None
        """Told of each request's connection (the listener's header deadline)."""
        self.open_connections: Callable[[], int] = lambda: 0
        self._receiving: dict[int, web.Request] = {}
        """Requests whose body is still arriving, by id (a request is not hashable)."""
        collector = settings.collector
        self._write_keys = [key.get_secret_value().encode() for key in collector.write_keys]
        self._webhook_secret = (
            collector.webhook_secret.get_secret_value().encode()
            if collector.webhook_secret
            else None
        )
        self._max_clock_skew = timedelta(seconds=collector.max_clock_skew)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=SEGMENT_MAX_BATCH_BYTES * 4, middlewares=[self._seen])
        for kind in ("track", "identify", "page", "alias"):
            app.router.add_post(f"/v1/{kind}", self._single(kind))
        for alias, kind in ALIASES.items():
            app.router.add_post(f"/v1/{alias}", self._single(kind))
        app.router.add_post("/v1/batch", self._batch)
        app.router.add_post("/v1/crm/events", self._crm)
        app.router.add_post("/v1/crm/spend", self._crm_spend)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    @web.middleware
    async def _seen(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.on_request(request.protocol)
        response: web.StreamResponse = await handler(request)
        return response

    def stop(self) -> None:
        """From now on every request gets 503; a body still arriving is not waited for."""
        self.stopping = True
        for request in self._receiving.values():
            request.content.set_exception(_Stopping())

    def _single(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            return await self._answer(request, f"/v1/{kind}", self._segment_request, kind)

        return handle

    async def _batch(self, request: web.Request) -> web.Response:
        return await self._answer(request, "/v1/batch", self._segment_request, "batch")

    async def _crm(self, request: web.Request) -> web.Response:
        return await self._answer(request, "/v1/crm/events", self._crm_request, "crm")

    async def _crm_spend(self, request: web.Request) -> web.Response:
        return await self._answer(request, "/v1/crm/spend", self._crm_spend_request, "crm")

    async def _answer(
        self, request: web.Request, endpoint: str, build: Any, kind: str
    ) -> web.Response:
        started = time.perf_counter()
        try:
            if self.stopping:
                raise RequestError(503, "stopping", "the collector is stopping; retry")
            outgoing = await build(request, kind)
            await self._publish(outgoing, endpoint)
            response = web.json_response({"success": True})
        except RequestError as exc:
            response = web.json_response(
                {"code": exc.code, "message": exc.message}, status=exc.status
            )
            if exc.status == 503:
                response.headers["Retry-After"] = "1"
        self.metrics.requests.labels(endpoint, str(response.status)).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _segment_request(self, request: web.Request, kind: str) -> _Outgoing:
        limit = SEGMENT_MAX_BATCH_BYTES if kind == "batch" else SEGMENT_MAX_MESSAGE_BYTES
        header_key = _basic_auth_user(request.headers.get("Authorization"))
        if header_key is not None and not self._known_write_key(header_key):
            raise RequestError(401, "unauthorized", "unknown write key")
        body = _parse_json(await self._read_body(request, limit))
        if header_key is None:
            body_key = body.get("writeKey") if isinstance(body, dict) else None
            if not isinstance(body_key, str) or not self._known_write_key(body_key.encode()):
                raise RequestError(401, "unauthorized", "a write key is required (Basic auth)")
        received_at = datetime.now(UTC)
        if kind == "batch":
            if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
                raise RequestError(400, "invalid_request", "a batch needs a 'batch' list")
            messages = [(m, _message_kind(m)) for m in body["batch"]]
        else:
            messages = [(body, kind)]
        outgoing = _Outgoing()
        for position, (message, message_kind) in enumerate(messages):
            original = orjson.dumps(message)
            if len(original) > SEGMENT_MAX_MESSAGE_BYTES:
                raise RequestError(
                    400, "too_large", f"message {position}: {len(original)} bytes > 32KB"
                )
            try:
                value = orjson.dumps(to_event(message, message_kind, self.rules, received_at))
                event = self._valid_event(value, received_at)
            except SalesActivityRefused as exc:
                raise RequestError(
                    400, "sales_activity_refused", f"message {position}: {exc.reason}"
                ) from None
            except InvalidEventError as exc:
                raise RequestError(
                    400, "invalid_event", f"message {position}: {exc.reason}"
                ) from None
            except UnmappedMessage as exc:
                outgoing.dead_letters.append((original, str(exc)))
                continue
            outgoing.events.append((event.lead_id.encode(), value, event.type))
        return outgoing

    def _valid_event(self, value: bytes, received_at: datetime) -> Event:
        """The contract decides; its reason goes back to the sender. Past the contract's range,
        an event may not lie further ahead of the time it was received than the clock skew
        allowed (a sender whose clock runs fast, not one that invents the future)."""
        event = decode_event(value, self.settings.max_event_bytes)
        if event.occurred_at > received_at + self._max_clock_skew:
            raise InvalidEventError(
                f"occurred_at: {event.occurred_at.isoformat()} is more than "
                f"{self.settings.collector.max_clock_skew:g}s ahead of the time received "
                f"({received_at.isoformat(timespec='seconds')})"
            )
        return event

    async def _signed_body(self, request: web.Request) -> Any:
        """The CRM webhook's body, parsed, once its signature is checked."""
        if self._webhook_secret is None:
            raise RequestError(404, "not_configured", "the CRM webhook has no secret configured")
        raw = await self._read_body(request, SEGMENT_MAX_BATCH_BYTES)
        expected = "sha256=" + hmac.new(self._webhook_secret, raw, hashlib.sha256).hexdigest()
        given = request.headers.get(SIGNATURE_HEADER, "")
        # A header that is not ASCII cannot be the digest; aiohttp keeps its bytes as surrogates.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            raise RequestError(401, "bad_signature", f"missing or wrong {SIGNATURE_HEADER}")
        return _parse_json(raw)

    async def _crm_spend_request(self, request: web.Request, kind: str) -> _Outgoing:
        body = await self._signed_body(request)
        documents = body if isinstance(body, list) else [body]
        outgoing = _Outgoing()
        for position, document in enumerate(documents):
            if not isinstance(document, dict):
                raise RequestError(400, "invalid_spend", f"record {position}: not a JSON object")
            try:
                spend = decode_spend(document)
            except InvalidEventError as exc:
                raise RequestError(
                    400, "invalid_spend", f"record {position}: {exc.reason}"
                ) from None
            outgoing.spend.append((spend.spend_id.encode(), encode_spend(spend)))
        return outgoing

    async def _crm_request(self, request: web.Request, kind: str) -> _Outgoing:
        body = await self._signed_body(request)
        documents = body if isinstance(body, list) else [body]
        received_at = datetime.now(UTC)
        outgoing = _Outgoing()
        for position, document in enumerate(documents):
            value = orjson.dumps(document)
            try:
                event = self._valid_event(value, received_at)
            except InvalidEventError as exc:
                raise RequestError(
                    400, "invalid_event", f"event {position}: {exc.reason}"
                ) from None
            if event.type not in SALES_TYPES:
                raise RequestError(
                    400, "invalid_event", f"event {position}: the CRM webhook takes sales events"
                )
            outgoing.events.append((event.lead_id.encode(), value, event.type))
        return outgoing

    def _known_write_key(self, candidate: bytes) -> bool:
        # Compare with every key, in constant time, so timing tells nothing about any of them.
        found = False
        for key in self._write_keys:
            found |= hmac.compare_digest(candidate, key)
        return found

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        timeout = self.settings.collector.body_timeout
        self._receiving[id(request)] = request
        try:
            async with asyncio.timeout(timeout):
                return await _read_body(request, limit)
        except TimeoutError:
            raise RequestError(
                408, "timeout", f"the body did not arrive within {timeout:g}s"
            ) from None
        except _Stopping:
            raise RequestError(503, "stopping", "the collector is stopping; retry") from None
        finally:
            self._receiving.pop(id(request), None)

    async def _publish(self, outgoing: _Outgoing, endpoint: str) -> None:
        if self.watch.problem is not None:
            raise RequestError(503, "unavailable", f"{self.watch.problem}; retry")
        size = outgoing.size
        budget = self.settings.collector.max_in_flight_bytes
        if self.in_flight_bytes and self.in_flight_bytes + size > budget:
            raise RequestError(503, "overloaded", "too much in flight; retry shortly")
        self.in_flight_bytes += size
        try:
            await asyncio.wait_for(
                self._send_all(outgoing, endpoint), timeout=self.settings.collector.publish_timeout
            )
        except RequestError:
            raise
        except Exception as exc:  # the broker is down or slow: the client must retry
            log.warning("publish failed: %r", exc)
            raise RequestError(503, "unavailable", "the broker did not acknowledge; retry") from exc
        finally:
            self.in_flight_bytes -= size
        problem = await self.watch.confirmed()
        if problem is not None:
            raise RequestError(503, "unavailable", f"{problem}; retry")
        for _, _, event_type in outgoing.events:
            self.metrics.events.labels(event_type).inc()
        if outgoing.spend:
            self.metrics.events.labels("campaign_spend").inc(len(outgoing.spend))
        self.metrics.dead_letters.inc(len(outgoing.dead_letters))

    async def _send_all(self, outgoing: _Outgoing, endpoint: str) -> None:
        topics = self.settings.topics
        pending: list[asyncio.Future[Any]] = []
        try:
            for key, value, _ in outgoing.events:
                self._require_sendable(topics.events)
                pending.append(await self.producer.send(topics.events, value=value, key=key))
            for original, reason in outgoing.dead_letters:
                headers = dead_letter_headers(f"collector:{endpoint}", -1, -1, "unmapped", reason)
                self._require_sendable(topics.dead_letter)
                pending.append(
                    await self.producer.send(topics.dead_letter, value=original, headers=headers)
                )
            for key, value in outgoing.spend:
                self._require_sendable(topics.spend)
                pending.append(await self.producer.send(topics.spend, value=value, key=key))
        except BaseException:
            for future in pending:
                future.add_done_callback(_retrieved)
            raise
        await asyncio.gather(*pending)

    def _require_sendable(self, topic: str) -> None:
        # Checked right before each send, with no await in between: a send to a topic the
        # producer's metadata does not list would name it to the broker, which may create it.
        if not self.watch.sendable(topic):
            raise RequestError(503, "unavailable", f"topic {topic} is unknown; retry")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "stopping" if self.stopping else "ok",
                "refusing": self.watch.problem,
                "in_flight_bytes": self.in_flight_bytes,
                "connections": self.open_connections(),
            }
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": "text/plain; version=0.0.4"},
        )


def _retrieved(future: asyncio.Future[Any]) -> None:
    # A send abandoned with its request: its outcome is nobody's, but must not be logged.
    if not future.cancelled():
        future.exception()


def _basic_auth_user(header: str | None) -> bytes | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, _ = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        raise RequestError(401, "unauthorized", "malformed Basic credentials") from None
    return user


BODY_ENCODINGS: Final = frozenset({"identity", "gzip", "deflate"})
"""What a request body may be sent as: none, Segment's gzip, or deflate (zlib or raw)."""


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, inflated, refusing anything over `limit` bytes after inflating. The body is
    inflated here as it streams in, not by aiohttp (its parser can leave a handler waiting on a
    body it failed to inflate), so a bad stream is a prompt 400 and a bomb stops early."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in BODY_ENCODINGS:
        raise RequestError(
            415, "unsupported_encoding", f"Content-Encoding {encoding[:40]!r}: use gzip or none"
        )
    inflating = _Inflating(encoding) if encoding != "identity" else None
    chunks, size = [], 0
    while size <= limit:
        try:
            chunk = await request.content.read(limit + 1 - size if inflating is None else 65536)
        except web.RequestPayloadError:
            raise RequestError(400, "bad_encoding", "the body ended early") from None
        if not chunk:
            break
        if inflating is not None:
            chunk = inflating.feed(chunk, limit + 1 - size)
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestError(400, "too_large", f"request body over {limit // 1024}KB")
    if inflating is not None:
        inflating.finish()
    return b"".join(chunks)


class _Inflating:
    """A gzip or deflate body inflated chunk by chunk, never more than asked for at once."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._inflater: Any = None
        self._start = b""
        """What arrived before the inflater could be chosen (deflate needs two bytes)."""

    def feed(self, compressed: bytes, wanted: int) -> bytes:
        """What `compressed` inflates to, at most `wanted` bytes (more means over the limit)."""
        if self._inflater is None:
            self._start += compressed
            if self.encoding == "deflate" and len(self._start) < 2:
                return b""
            self._inflater = zlib.decompressobj(self._window_bits(self._start))
            compressed, self._start = self._start, b""
        try:
            inflated: bytes = self._inflater.decompress(compressed, wanted)
        except zlib.error:
            raise self._bad() from None
        if self._inflater.unused_data:
            raise self._bad()
        return inflated

    def finish(self) -> None:
        """Refuse a stream that stopped before its end, or that goes on after it."""
        if self._inflater is None:
            if self._start:
                raise self._bad()
            return
        if not self._inflater.eof or self._inflater.unused_data:
            raise self._bad()

    def _window_bits(self, start: bytes) -> int:
        if self.encoding == "gzip":
            return 16 + zlib.MAX_WBITS
        # "deflate" should be zlib-wrapped (RFC 9110), but some clients send raw deflate.
        zlib_header = start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS

    def _bad(self) -> RequestError:
        return RequestError(400, "bad_encoding", f"the body is not valid {self.encoding} data")


MAX_JSON_DEPTH: Final = 64
"""How deeply a request's JSON may nest. Tracking calls are a few levels deep; a body nested
hundreds deep cannot be encoded again as an event (orjson stops at 255 levels)."""


def _parse_json(raw: bytes) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"not JSON: {exc}") from None
    if _deeper_than(body, MAX_JSON_DEPTH):
        raise RequestError(400, "too_deep", f"JSON nested more than {MAX_JSON_DEPTH} levels")
    return body


def _deeper_than(value: Any, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _message_kind(message: Any) -> str:
    kind = message.get("type") if isinstance(message, dict) else None
    return ALIASES.get(kind, kind) if isinstance(kind, str) else ""


def check_can_start(settings: Settings) -> None:
    """Raise one LeadflowError naming the setting when the collector cannot start: no write
    keys, or an address it cannot listen on (aiohttp's bind error would come after the
    producer, as a traceback)."""
    config = settings.collector
    if not config.write_keys:
        raise LeadflowError("set LEADFLOW_COLLECTOR__WRITE_KEYS (a JSON list of write keys)")
    check_can_listen(
        config.host,
        config.port,
        host_setting="LEADFLOW_COLLECTOR__HOST",
        port_setting="LEADFLOW_COLLECTOR__PORT",
    )


async def run_collector(settings: Settings, rules: Rules) -> None:
    """Serve until SIGTERM or SIGINT: one aiokafka producer (acks=all), one aiohttp server."""
    from aiokafka import AIOKafkaProducer

    from streams.common.kafka_clients import aiokafka_config

    config = settings.collector
    check_can_start(settings)
    # While the broker is away its client fails many times a second: one line per kind per
    # interval says so.
    quiet_client_repeats(logging.getLogger())
    quiet_malformed_requests()
    producer = AIOKafkaProducer(
        **aiokafka_config(settings.kafka),
        acks="all",
        linger_ms=2,
        # One batch per partition fills while the previous one awaits its acks; a send that finds
        # it full waits, and every waiter wakes at each drain. At aiokafka's 16 KB (about 50
        # events) 200 requests of 100 events queued there; a batch as large as a request is not.
        max_batch_size=PRODUCER_BATCH_BYTES,
        max_request_size=PRODUCER_BATCH_BYTES,
        request_timeout_ms=int(config.publish_timeout * 1000),
    )
    await producer.start()
    topics = (settings.topics.events, settings.topics.dead_letter, settings.topics.spend)
    watch = TopicWatch(producer.client, topics, config.topic_check_interval)
    await watch.check()
    watching = asyncio.create_task(watch.run())
    collector = Collector(settings, rules, producer, watch)
    # A refused request's unread body is not drained after the answer (aiohttp's "lingering"
    # would read, and inflate, what the client still sends, and log a traceback when it cannot
    # be inflated): the connection is closed instead.
    runner = web.AppRunner(
        collector.app(),
        access_log=None,
        lingering_time=0,
        auto_decompress=False,
        keepalive_timeout=config.idle_timeout,
        shutdown_timeout=config.publish_timeout + 1,
    )
    await runner.setup()
    assert runner.server is not None
    dropped = collector.metrics.connections_dropped
    listener = Listener(
        runner.server,
        config.max_connections,
        config.header_timeout,
        dropped=lambda reason: dropped.labels(reason).inc(),
    )
    collector.on_request = listener.request_started
    collector.open_connections = lambda: listener.open_connections
    await listener.listen(config.host, config.port)
    log.info("collecting on http://%s:%d", config.host, config.port)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("stopping: in-flight requests get their answers")
    finally:
        # New connections and requests get 503 for a moment, so that a request already sent is
        # answered rather than reset; then idle connections close, requests with the broker
        # wait for their acks (at most the publish timeout), and the producer sends what it holds.
        listener.refuse()
        collector.stop()
        await asyncio.sleep(STOP_DRAIN)
        listener.close()
        await runner.cleanup()
        watching.cancel()
        await producer.stop()
    log.info("stopped")
