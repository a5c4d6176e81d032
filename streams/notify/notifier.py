"""The notifier's I/O shell: reads the stage-change and handoff topics, delivers each alert to
its webhooks over HTTP, dead-letters what cannot be delivered, and commits the offsets of what
is done.

Every webhook has its own queues and workers, so a slow or dead receiver holds back nobody
else's deliveries. Within a webhook, each lead's alerts go one after the other, in the order
they were read; different leads go side by side (`concurrency`), and a lead waiting for its
retry holds no worker. The partitions are assigned, not taken from a consumer group: one
notifier reads every partition, and the group id names where its offsets are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streams.common.events_codec import dead_letter_headers, is_history
from streams.common.kafka_clients import aiokafka_config, connection_config, reaching
from streams.common.logs import quiet_client_repeats
from streams.common.settings import NotifyKind, Settings
from streams.errors import LeadflowError, TopicMissingError
from streams.notify.alerts import (
    Alert,
    SeenChanges,
    Skip,
    Source,
    body_of,
    endpoint_name,
    read_alert,
    request_headers,
    routes,
)
from streams.notify.metrics import NotifyMetrics
from streams.notify.offsets import PendingOffsets
from streams.notify.retry import Answer, Delivered, RetryIn, next_step

log = logging.getLogger(__name__)

EXCERPT_BYTES: Final = 300
"""How much of a failing receiver's answer a dead letter and the log keep."""
UNDELIVERABLE: Final = "undeliverable"
"""The dead-letter kind of an alert a webhook did not take."""
INVALID: Final = "notify_invalid"
"""The dead-letter kind of a record the notifier cannot read."""
READ_BATCH: Final = 1000


def check_can_start(settings: Settings) -> None:
    """Raise one LeadflowError naming the setting when the notifier has nothing to do or
    cannot sign."""
    notify = settings.notify
    if not routes(notify):
        raise LeadflowError(
            "set LEADFLOW_NOTIFY__URLS (a JSON list of webhook URLs) or LEADFLOW_NOTIFY__ENDPOINTS"
            ' (JSON: {"breached": ["https://..."]}): there is nowhere to deliver'
        )
    if notify.secret is None or not notify.secret.get_secret_value():
        raise LeadflowError(
            "set LEADFLOW_NOTIFY__SECRET: the HMAC key every delivery is signed with"
        )


@dataclass(eq=False)
class Delivery:
    """One alert on its way to one webhook."""

    alert: Alert
    partition: TopicPartition
    offset: int
    key: bytes | None
    published: float
    """The record's Kafka timestamp (epoch seconds): the start of its latency and max age."""
    attempts: int = 0
    gave_up: str | None = None
    """Why it is given up, once it is; its dead letter may still wait for the broker."""


class Endpoint:
    """One webhook: the leads with alerts for it, each lead's in order."""

    def __init__(self, url: str, kinds: frozenset[NotifyKind], notifier: Notifier) -> None:
        self.url = url
        self.kinds = kinds
        self.name = endpoint_name(url)
        self._notifier = notifier
        self._waiting: dict[str, deque[Delivery]] = {}
        self._ready: asyncio.Queue[str] = asyncio.Queue()

    def add(self, delivery: Delivery) -> None:
        """Queue `delivery` behind the lead's earlier alerts for this webhook."""
        lead = delivery.alert.lead_id
        queue = self._waiting.get(lead)
        if queue is None:
            self._waiting[lead] = deque([delivery])
            self._ready.put_nowait(lead)
        else:
            queue.append(delivery)

    async def work(self) -> None:
        """Deliver the head of each ready lead's queue, until cancelled. A lead is in the ready
        queue, in a worker or waiting for its retry, never two of these at once: that keeps
        its alerts in order."""
        loop = asyncio.get_running_loop()
        while True:
            lead = await self._ready.get()
            queue = self._waiting[lead]
            delay = await self._notifier.attempt(self, queue[0])
            if delay is not None:
                loop.call_later(delay, self._ready.put_nowait, lead)
                continue
            queue.popleft()
            if queue:
                self._ready.put_nowait(lead)
            else:
                del self._waiting[lead]


class Notifier:
    """Reads alerts from the topics and hands each to its webhooks; commits what is done."""

    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        session: aiohttp.ClientSession,
        metrics: NotifyMetrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._consumer = consumer
        self._producer = producer
        self._session = session
        self._secret = (
            settings.notify.secret.get_secret_value().encode() if settings.notify.secret else b""
        )
        self._sources: dict[str, Source] = {
            settings.topics.stage_changes: "stage_changes",
            settings.topics.handoff: "handoff",
        }
        self.endpoints = [
            Endpoint(url, kinds, self) for url, kinds in routes(settings.notify).items()
        ]
        self.offsets: PendingOffsets[TopicPartition] = PendingOffsets()
        self._alerted_mqls = SeenChanges()
        self._committed: dict[TopicPartition, int] = {}
        self._settled = asyncio.Event()
        self._random = random.Random()

    async def run(self, stop: asyncio.Event) -> None:
        """Read and deliver until `stop` is set; then commit what is done and return (what is
        not done is read again at the next start)."""
        notify = self.settings.notify
        workers = [
            asyncio.create_task(endpoint.work(), name=f"notify {endpoint.name}")
            for endpoint in self.endpoints
            for _ in range(notify.concurrency)
        ]
        loop = asyncio.get_running_loop()
        committed_at = loop.time()
        try:
            while not stop.is_set():
                room = notify.max_pending - self.offsets.pending
                if room > 0:
                    batches = await self._consumer.getmany(
                        timeout_ms=200, max_records=min(room, READ_BATCH)
                    )
                    for partition, messages in batches.items():
                        for message in messages:
                            await self._read(partition, message)
                else:
                    self._settled.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._settled.wait(), notify.commit_interval)
                if loop.time() - committed_at >= notify.commit_interval:
                    await self.commit()
                    committed_at = loop.time()
                    for worker in workers:
                        if worker.done():  # a worker that failed stops the notifier, loudly
                            worker.result()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self.commit()

    async def _read(self, partition: TopicPartition, message: Any) -> None:
        history = is_history(message.headers)
        alert = read_alert(self._sources[partition.topic], message.value, history)
        if (
            isinstance(alert, Alert)
            and alert.kind == "mql"
            and not self._alerted_mqls.first_time(alert.idempotency_key)
        ):
            alert = Skip("repeat")
        if isinstance(alert, Skip):
            self.metrics.skipped.labels(alert.reason).inc()
            if alert.reason == "invalid":
                await self._send_invalid(partition, message, alert.detail)
            self.offsets.read(partition, message.offset, 0)
            return
        targets = [endpoint for endpoint in self.endpoints if alert.kind in endpoint.kinds]
        self.offsets.read(partition, message.offset, len(targets))
        published = message.timestamp / 1000 if message.timestamp is not None else time.time()
        for endpoint in targets:
            endpoint.add(Delivery(alert, partition, message.offset, message.key, published))
        self.metrics.pending.set(self.offsets.pending)

    async def _send_invalid(self, partition: TopicPartition, message: Any, reason: str) -> None:
        headers = dead_letter_headers(
            partition.topic, partition.partition, message.offset, INVALID, reason
        )
        retry = 0
        while True:
            try:
                await self._producer.send_and_wait(
                    self.settings.topics.dead_letter,
                    key=message.key,
                    value=message.value,
                    headers=headers,
                )
                break
            except KafkaError as exc:
                retry += 1
                log.warning("dead letter not sent (%s); trying again", exc)
                notify = self.settings.notify
                await asyncio.sleep(min(notify.backoff_cap, notify.backoff_base * 2**retry))
        self.metrics.dead_letters.labels(INVALID).inc()
        log.warning(
            "dead letter %s[%d]@%d: %s",
            partition.topic,
            partition.partition,
            message.offset,
            reason,
        )

    async def attempt(self, endpoint: Endpoint, delivery: Delivery) -> float | None:
        """Try `delivery` once (or send its dead letter, once it is given up); return the
        seconds to wait before trying again, or None once it is done."""
        notify = self.settings.notify
        kind = delivery.alert.kind
        if delivery.gave_up is None:
            answer = await self._post(endpoint, delivery.alert)
            delivery.attempts += 1
            now = time.time()
            remaining = delivery.published + notify.max_age - now
            step = next_step(
                answer, delivery.attempts, remaining, notify, now, self._random.uniform
            )
            if isinstance(step, Delivered):
                self.metrics.deliveries.labels(endpoint.name, kind, "delivered").inc()
                self.metrics.latency.labels(kind).observe(max(0.0, now - delivery.published))
                self._settle(delivery)
                return None
            if isinstance(step, RetryIn):
                self.metrics.retries.labels(endpoint.name, kind).inc()
                log.info(
                    "%s %s to %s: %s; attempt %d in %.1f s",
                    kind,
                    delivery.alert.idempotency_key,
                    endpoint.name,
                    answer.status or answer.detail,
                    delivery.attempts + 1,
                    step.delay,
                )
                return step.delay
            delivery.gave_up = f"{endpoint.name}: {step.reason}"
        partition = delivery.partition
        headers = dead_letter_headers(
            partition.topic, partition.partition, delivery.offset, UNDELIVERABLE, delivery.gave_up
        )
        try:
            await self._producer.send_and_wait(
                self.settings.topics.dead_letter,
                key=delivery.key,
                value=delivery.alert.record,
                headers=headers,
            )
        except KafkaError as exc:
            log.warning("dead letter not sent (%s); trying again", exc)
            return notify.backoff_cap
        self.metrics.deliveries.labels(endpoint.name, kind, "dead_lettered").inc()
        self.metrics.dead_letters.labels(UNDELIVERABLE).inc()
        log.warning("dead letter %s: %s", delivery.alert.idempotency_key, delivery.gave_up)
        self._settle(delivery)
        return None

    async def _post(self, endpoint: Endpoint, alert: Alert) -> Answer:
        body = body_of(alert, self.settings.notify.body_format)
        headers = request_headers(alert, body, self._secret)
        try:
            async with self._session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                excerpt = await response.content.read(EXCERPT_BYTES)
                return Answer(
                    response.status,
                    " ".join(excerpt.decode("utf-8", "replace").split()),
                    response.headers.get("Retry-After"),
                )
        except TimeoutError:
            return Answer(None, f"no answer within {self.settings.notify.timeout:g} s")
        except aiohttp.ClientError as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}")

    def _settle(self, delivery: Delivery) -> None:
        self.offsets.settle(delivery.partition, delivery.offset)
        self.metrics.pending.set(self.offsets.pending)
        self._settled.set()

    async def commit(self) -> None:
        """Commit, for each partition, the offset of its first record not done (when it
        moved); a broker that does not answer gets the same commit at the next interval."""
        positions = {
            partition: offset
            for partition, offset in self.offsets.committable().items()
            if self._committed.get(partition) != offset
        }
        if not positions:
            return
        try:
            await self._consumer.commit(positions)
        except KafkaError as exc:
            log.warning("offsets not committed (%s); trying again", exc)
            return
        self._committed.update(positions)


def topic_partitions(settings: Settings) -> list[TopicPartition]:
    """Every partition of the stage-change and handoff topics (TopicMissingError if one of
    them does not exist)."""
    from kafka import KafkaConsumer

    with reaching(settings.kafka):
        probe = KafkaConsumer(
            **connection_config(settings.kafka), group_id=None, enable_auto_commit=False
        )
    try:
        found = []
        for topic in (settings.topics.stage_changes, settings.topics.handoff):
            numbers = probe.partitions_for_topic(topic)
            if not numbers:
                raise TopicMissingError(
                    f"topic {topic!r} not found on {settings.kafka.bootstrap_servers}: "
                    "`leadflow topics create` creates leadflow's topics"
                )
            found += [TopicPartition(topic, number) for number in sorted(numbers)]
        return found
    finally:
        probe.close()


async def _start_positions(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
    # A partition with no committed offset starts where `start` says; committing that at once
    # means a crash before the first delivery resumes there, not at a later end.
    fresh = {}
    for partition in partitions:
        if await consumer.committed(partition) is None:
            fresh[partition] = await consumer.position(partition)
    if fresh:
        await consumer.commit(fresh)


async def run_notifier(
    settings: Settings, metrics: NotifyMetrics, stop: asyncio.Event | None = None
) -> None:
    """Deliver alerts until SIGTERM or SIGINT (or `stop`): one consumer of every partition of
    the stage-change and handoff topics, one producer for dead letters, one HTTP session."""
    check_can_start(settings)
    quiet_client_repeats(logging.getLogger())
    notify = settings.notify
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    partitions = await asyncio.to_thread(topic_partitions, settings)
    consumer = AIOKafkaConsumer(
        **aiokafka_config(settings.kafka),
        group_id=notify.group_id,
        enable_auto_commit=False,
        auto_offset_reset=notify.start,
        fetch_max_wait_ms=round(notify.fetch_max_wait * 1000),
        max_partition_fetch_bytes=settings.topics.max_message_bytes,
    )
    producer = AIOKafkaProducer(
        **aiokafka_config(settings.kafka),
        acks="all",
        max_request_size=settings.topics.max_dead_letter_bytes,
    )
    await consumer.start()
    try:
        await producer.start()
        try:
            consumer.assign(partitions)
            await _start_positions(consumer, partitions)
            timeout = aiohttp.ClientTimeout(total=notify.timeout)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                notifier = Notifier(settings, consumer, producer, session, metrics)
                log.info(
                    "notifying %d webhooks of %d partitions",
                    len(notifier.endpoints),
                    len(partitions),
                )
                await notifier.run(stop)
        finally:
            await producer.stop()
    finally:
        await consumer.stop()
    log.info("stopped")
