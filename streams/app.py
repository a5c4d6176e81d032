"""The Faust app: topics, the per-lead table and the agent, wired from settings."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

import faust
import faust.streams as faust_streams
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP, FutureMessage, ProducerT
from faust.web import Request, Response, View
from faust.worker import Worker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.agents import AccountRollup, Consumed, LeadQualifier, Step
from streams.kafka_clients import ssl_context
from streams.metrics import PipelineMetrics
from streams.recovery import table_manager_for
from streams.rules import Rules
from streams.settings import KafkaSettings, Settings, WorkerSettings

LEADS_TABLE = "leads"
ACCOUNTS_TABLE = "accounts"
RAW_BYTES: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
"""Topic options: keys and values stay bytes (the agents decode and encode them)."""
log = logging.getLogger(__name__)


def create_app(
    settings: Settings, rules: Rules, metrics: PipelineMetrics | None = None
) -> faust.App:
    """Build the worker's Faust app. Importing this module starts nothing."""
    metrics = metrics or PipelineMetrics()
    topics = settings.topics
    worker = settings.worker
    app = faust_app(settings)
    events = app.topic(topics.events, partitions=topics.partitions, **RAW_BYTES)
    stage_changes = app.topic(topics.stage_changes, **RAW_BYTES)
    dead_letters = app.topic(topics.dead_letter, **RAW_BYTES)
    leads = _state_table(app, LEADS_TABLE, topics.partitions, "Per-lead state.")
    account_signals = app.topic(topics.account_signals, partitions=topics.partitions, **RAW_BYTES)
    qualifier = LeadQualifier(
        rules=rules,
        send_change=stage_changes.send,
        send_dead_letter=dead_letters.send,
        send_event=events.send,
        partitions=topics.partitions,
        max_event_bytes=settings.max_event_bytes,
        metrics=metrics,
        send_account_signal=account_signals.send if worker.accounts else None,
    )

    @app.agent(events, name="qualify", concurrency=1)
    async def qualify(stream: faust.StreamT[bytes]) -> None:
        await _apply_in_steps(stream, qualifier, leads, worker)

    if worker.accounts:
        accounts = _state_table(app, ACCOUNTS_TABLE, topics.partitions, "Per-account state.")
        rollup = AccountRollup(
            rules=rules,
            send_change=app.topic(topics.account_changes, **RAW_BYTES).send,
            send_dead_letter=dead_letters.send,
            send_signal=account_signals.send,
            partitions=topics.partitions,
            metrics=metrics,
        )

        @app.agent(account_signals, name="roll_up", concurrency=1)
        async def roll_up(stream: faust.StreamT[bytes]) -> None:
            await _apply_in_steps(stream, rollup, accounts, worker)

    @app.timer(interval=2.0)  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        for tp in app.consumer.assignment():
            if tp.topic == topics.events:
                position = qualifier.positions.get(tp.partition, -1)
                behind = app.consumer.highwater(tp) - position - 1
                # The local broker's high watermark can undercount (see README): never below 0.
                metrics.consumer_lag.labels(str(tp.partition)).set(max(0, behind))

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            assigned = sorted(
                tp.partition for tp in app.consumer.assignment() if tp.topic == topics.events
            )
            return self.json(
                {
                    "status": "ok",
                    "partitions": assigned,
                    "positions": {p: qualifier.positions.get(p) for p in assigned},
                    "fetch_max_wait_ms": getattr(_fetcher(app), "_fetch_max_wait_ms", None),
                }
            )

    registry = metrics.registry
    if worker.faust_metrics:
        app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, "faust"))

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset in `content_type`; Prometheus' type carries one.
            headers = {"Content-Type": CONTENT_TYPE_LATEST}
            return self.bytes(generate_latest(registry), headers=headers)

    return app


def faust_worker(app: faust.App, loglevel: str) -> Worker:
    """Faust's worker for `app`, logging at `loglevel` and up."""
    worker = Worker(app, loglevel=loglevel)
    # Faust's terminal spinner, on at WARN and above, sets the root logger to DEBUG so that every
    # record spins it: aiokafka then builds a debug record for each message it sends (7% of the
    # samples of a profiled Faust agent). The log level asked for is the level used.
    worker.spinner = None
    return worker


def faust_app(settings: Settings) -> faust.App:
    """A Faust app with the worker's configuration and no agent (`bench/stream.py` measures
    Faust alone with it)."""
    topics = settings.topics
    worker = settings.worker
    app = faust.App(
        worker.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.servers],
        broker_credentials=_credentials(settings.kafka),
        broker_client_id=settings.kafka.client_id,
        broker_session_timeout=worker.session_timeout,
        broker_heartbeat_interval=worker.heartbeat_interval,
        store=f"{worker.store}://",
        datadir=str(worker.data_dir),
        web_host=worker.web_host,
        web_port=worker.web_port,
        web_in_thread=False,
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=worker.max_request_bytes,
        TableManager=table_manager_for(settings.kafka),
        Topic=DirectTopic,
    )

    def limit_fetch_wait(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        _limit_fetch_wait(app, worker.fetch_max_wait)

    app.on_partitions_assigned.connect(limit_fetch_wait)
    return app


class _Agent(Protocol):
    async def apply(self, consumed: Consumed, step: Step) -> None: ...
    async def finish(self, step: Step) -> None: ...


async def _apply_in_steps(
    stream: faust.StreamT[bytes], agent: _Agent, table: StateTable, worker: WorkerSettings
) -> None:
    """Apply the stream's messages a batch at a time (see streams/agents.py).

    Faust acks the messages of a batch when this loop's body ends, so the body ends only once
    everything the batch wrote is acknowledged by the broker, changelog records included."""
    # faust.Stream has take_events; the StreamT protocol that noack() returns does not say so.
    noack = cast(Any, stream).noack()
    batches = noack.take_events(worker.batch_size, within=worker.batch_wait)
    async for events in batches:
        step = Step(table)
        handling = asyncio.ensure_future(_apply_batch(agent, events, step))
        try:
            # A shutdown cancels the agent wherever it is: finish the batch first, so that no
            # state is stored locally without the outputs that led to it being sent.
            await asyncio.shield(handling)
        except asyncio.CancelledError:
            await asyncio.wait_for(handling, timeout=worker.session_timeout)
            raise
        except BaseException:
            # Faust would ack (and later commit) the batch on the way out: a batch that did not
            # finish must be read again by the next owner of its partitions.
            for event in events:
                event.message.acked = True
            raise


async def _apply_batch(agent: _Agent, events: Sequence[Consumed], step: Step) -> None:
    for event in events:
        await agent.apply(event, step)
    await agent.finish(step)


def _state_table(app: faust.App, name: str, partitions: int, help: str) -> StateTable:
    # A table derives its (raw) serializers from its key and value types.
    table = StateTable(
        app,
        name=name,
        beacon=app.tables.beacon,
        partitions=partitions,
        help=help,
        key_type=bytes,
        value_type=bytes,
    )
    app.tables.add(table)
    return table


def _limit_fetch_wait(app: faust.App, seconds: float) -> None:
    """Set how long a fetch may wait for records. Faust builds its aiokafka consumer with a fixed
    1.5 s; aiokafka reads the value from its fetcher for every request, so it is set there."""
    fetcher = _fetcher(app)
    if fetcher is None:
        log.warning("cannot set the consumer's fetch wait; Faust's default applies")
    else:
        fetcher._fetch_max_wait_ms = round(seconds * 1000)


def _fetcher(app: faust.App) -> Any:
    """The started aiokafka consumer's fetcher, or None (not started, or another layout)."""
    try:
        return cast(Any, app.consumer)._thread._ensure_consumer()._fetcher
    except AttributeError:
        return None


class DirectTopic(faust.Topic):
    """Faust's topic, without three turns of the event loop for every message it sends.

    Faust finds the producer for each message through a stampede guard that yields to the
    event loop three times (`asyncio.sleep(0)`) even when the producer is long started. A Faust
    agent copying 12k messages spent 2.2 s in `Topic.send`, against 0.34 s in the aiokafka
    `send` underneath; changelog records take the same path. The guard is kept for the start-up
    case and for transactions."""

    async def _get_producer(self) -> ProducerT:
        producer = self.app.producer
        if producer.started and not self.app.in_transaction:
            return producer
        return await super()._get_producer()


class StateTable(faust.Table[bytes, bytes]):
    """Faust's table, with `put`: store a value and get the acknowledgement of its changelog
    record (Faust sends it from a buffer and does not hand it back to the writer); and a
    recovery that cannot skip events (below)."""

    _last_changelog_record: FutureMessage | None = None

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        # After recovery, Faust resumes the stream partitions and only then seeks them to their
        # committed offsets. Records fetched in between moved its read offsets on, so records
        # fetched again after the seek were dropped: a new worker skipped dozens of events
        # (test_a_new_worker_recovers_every_lead_state_from_the_changelog; faust-streaming #216
        # and #221 describe the same race). Faust calls this hook before it resumes the
        # partitions: stop the flow of records here, and the recovery starts it again only
        # once the seek is done.
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(active_tps, standby_tps)

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        record: FutureMessage = super().send_changelog(*args, **kwargs)
        self._last_changelog_record = record
        return record

    def get_for(self, consumed: Consumed, key: bytes) -> bytes | None:
        with _current(consumed):
            value: bytes | None = self.get(key)
            return value

    def put_for(self, consumed: Consumed, key: bytes, value: bytes) -> FutureMessage:
        with _current(consumed):
            self[key] = value
        record = self._last_changelog_record
        assert record is not None
        return record


@contextmanager
def _current(consumed: Consumed) -> Iterator[None]:
    # Faust's table and RocksDB store find a key's partition (its changelog partition and its
    # database) from the stream's current event; in a batch, that is the batch's last event,
    # not necessarily the one the key belongs to.
    token = faust_streams._current_event.set(weakref.ref(cast(faust.EventT[bytes], consumed)))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


def _credentials(kafka: KafkaSettings) -> faust.auth.Credentials | None:
    """Faust's credentials for the connection settings (same TLS context as the other clients)."""
    context = ssl_context(kafka) if kafka.security_protocol in ("SSL", "SASL_SSL") else None
    if kafka.sasl_mechanism is not None:
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
