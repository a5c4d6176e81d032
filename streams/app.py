"""The Faust app: topics, the per-lead table and the agent, wired from settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import TP, FutureMessage
from faust.web import Request, Response, View

from streams.agents import AccountRollup, LeadQualifier, Message
from streams.kafka_clients import ssl_context
from streams.metrics import PipelineMetrics
from streams.recovery import table_manager_for
from streams.rules import Rules
from streams.settings import KafkaSettings, Settings

LEADS_TABLE = "leads"
ACCOUNTS_TABLE = "accounts"
log = logging.getLogger(__name__)


def create_app(
    settings: Settings, rules: Rules, metrics: PipelineMetrics | None = None
) -> faust.App:
    """Build the worker's Faust app. Importing this module starts nothing."""
    metrics = metrics or PipelineMetrics()
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
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    events = app.topic(topics.events, partitions=topics.partitions, **raw)
    stage_changes = app.topic(topics.stage_changes, **raw)
    dead_letters = app.topic(topics.dead_letter, **raw)
    leads = _state_table(app, LEADS_TABLE, topics.partitions, "Per-lead state.")
    account_signals = app.topic(topics.account_signals, partitions=topics.partitions, **raw)
    qualifier = LeadQualifier(
        rules=rules,
        table=leads,
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
        await _apply_each(stream, qualifier.handle, worker.session_timeout)

    if worker.accounts:
        rollup = AccountRollup(
            rules=rules,
            table=_state_table(app, ACCOUNTS_TABLE, topics.partitions, "Per-account state."),
            send_change=app.topic(topics.account_changes, **raw).send,
            send_dead_letter=dead_letters.send,
            send_signal=account_signals.send,
            partitions=topics.partitions,
            metrics=metrics,
        )

        @app.agent(account_signals, name="roll_up", concurrency=1)
        async def roll_up(stream: faust.StreamT[bytes]) -> None:
            await _apply_each(stream, rollup.handle, worker.session_timeout)

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

    def limit_fetch_wait(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        _limit_fetch_wait(app, worker.fetch_max_wait)

    app.on_partitions_assigned.connect(limit_fetch_wait)

    setup_prometheus_sensors(app, registry=metrics.registry, name_prefix="faust")
    return app


async def _apply_each(
    stream: faust.StreamT[bytes],
    handle: Callable[[Message], Awaitable[asyncio.Future[Any] | None]],
    shutdown_timeout: float,
) -> None:
    """Run `handle` on each message and ack it once what it wrote is acknowledged.

    Manual acks: a message may be committed only once everything it wrote is acknowledged by
    the broker, its table's changelog record included (see streams/agents.py)."""
    async for event in cast(faust.Stream[bytes], stream).noack().events():
        # A shutdown cancels the agent wherever it is: finish the message first, so that no
        # state is stored locally without the changes that led to it being sent.
        handling = asyncio.ensure_future(handle(event.message))
        try:
            written = await asyncio.shield(handling)
        except asyncio.CancelledError:
            await asyncio.wait_for(handling, timeout=shutdown_timeout)
            raise
        if written is None:
            event.ack()
        else:
            written.add_done_callback(partial(_ack_once_written, event))


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

    def put(self, key: bytes, value: bytes) -> FutureMessage:
        self[key] = value
        record = self._last_changelog_record
        assert record is not None
        return record


def _ack_once_written(event: faust.EventT[bytes], record: asyncio.Future[Any]) -> None:
    # A failed changelog write leaves the event unacked: the next owner of the partition
    # processes it again (Faust stops the worker when its producer fails).
    if not record.cancelled() and record.exception() is None:
        event.ack()


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
