"""The Faust app: topics, the per-lead table and the agent, wired from settings."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View

from streams.agents import LeadQualifier
from streams.kafka_clients import ssl_context
from streams.metrics import PipelineMetrics
from streams.rules import Rules
from streams.settings import KafkaSettings, Settings

LEADS_TABLE = "leads"


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
        **_broker_workarounds(settings),
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
    # A table derives its (raw) serializers from its key and value types.
    leads = app.Table(
        LEADS_TABLE,
        partitions=topics.partitions,
        help="Per-lead state.",
        key_type=bytes,
        value_type=bytes,
    )
    qualifier = LeadQualifier(
        rules=rules,
        table=leads,
        send_change=stage_changes.send,
        send_dead_letter=dead_letters.send,
        send_event=events.send,
        partitions=topics.partitions,
        max_event_bytes=settings.max_event_bytes,
        metrics=metrics,
    )

    @app.agent(events, name="qualify", concurrency=1)
    async def qualify(stream: faust.StreamT[bytes]) -> None:
        # Ack only after the event is fully handled: Faust's automatic ack also fires when a
        # shutdown cancels the agent mid-event, which would commit an event never applied.
        async for event in stream.events():
            # Faust acks the current event even when a shutdown cancels the agent in the middle
            # of it, and would then commit an event never applied: finish it first.
            handling = asyncio.ensure_future(qualifier.handle(event.message))
            try:
                await asyncio.shield(handling)
            except asyncio.CancelledError:
                await asyncio.wait_for(handling, timeout=worker.session_timeout)
                raise

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
                }
            )

    setup_prometheus_sensors(app, registry=metrics.registry, name_prefix="faust")
    return app


def _broker_workarounds(settings: Settings) -> dict[str, Any]:
    if settings.worker.single_record_batches:
        # aiokafka always puts a batch's first record in, and no second one past this size.
        return {"producer_max_batch_size": 1}
    return {}


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
