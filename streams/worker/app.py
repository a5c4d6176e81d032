"""The Faust app: topics, the lead and account tables and their agents, wired from settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import faust
from faust.exceptions import ConsistencyError
from faust.worker import Worker

from streams.common.handoff_codec import encode_clock
from streams.common.kafka_clients import ssl_context
from streams.common.lead_state_codec import stored_deadline
from streams.common.logs import quiet_client_repeats
from streams.common.settings import KafkaSettings, Settings, WorkerSettings
from streams.core.revisions import micros_of
from streams.core.rules import Rules
from streams.errors import WorkerCrashedError
from streams.worker.agents import (
    AccountRollup,
    Batch,
    Consumed,
    LeadQualifier,
    Send,
    StateCache,
    partition_for,
)
from streams.worker.clock import DeadlineIndex
from streams.worker.consumer import consumer_class
from streams.worker.metrics import PipelineMetrics
from streams.worker.monitoring import add_monitoring
from streams.worker.preflight import DATA_DIR_SETTING, check_web_port, claim_data_dir
from streams.worker.recovery import table_manager_for
from streams.worker.tables import AckedTable, DirectTopic

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
    settings: Settings, rules: Rules, metrics: PipelineMetrics | None = None, shadow: bool = False
) -> faust.App:
    """Build the worker's Faust app. Importing this module starts nothing. A `shadow` app is
    a challenger's (`processes.challenger_settings`): it publishes stage changes only."""
    metrics = metrics or PipelineMetrics()
    topics = settings.topics
    worker = settings.worker
    app = faust_app(settings)
    events = app.topic(topics.events, partitions=topics.partitions, **RAW_BYTES)
    # The identity topic (LEADFLOW_TOPICS__IDENTITY_SUMMARIES): link requests and summaries.
    identity = app.topic(topics.identity_summaries, partitions=topics.partitions, **RAW_BYTES)
    # The lead agent reads both: an identity record changes a lead's (or an identity's) state,
    # which only the agent of its partition may write (the topics are co-partitioned).
    lead_input = app.topic(
        topics.events, topics.identity_summaries, partitions=topics.partitions, **RAW_BYTES
    )
    stage_changes = app.topic(topics.stage_changes, **RAW_BYTES)
    dead_letters = app.topic(topics.dead_letter, **RAW_BYTES)
    leads = _state_table(app, LEADS_TABLE, topics.partitions, "Per-lead state.")
    account_signals = app.topic(topics.account_signals, partitions=topics.partitions, **RAW_BYTES)
    qualifier = LeadQualifier(
        rules=rules,
        send_change=producer_send(app, stage_changes),
        send_dead_letter=producer_send(app, dead_letters),
        send_event=producer_send(app, events),
        partitions=topics.partitions,
        max_event_bytes=settings.max_event_bytes,
        metrics=metrics,
        max_state_bytes=worker.max_state_bytes,
        cache=StateCache(worker.lead_cache),
        send_account_signal=producer_send(app, account_signals) if worker.accounts else None,
        shadow=shadow,
        send_identity=producer_send(app, identity),
        identity_topic=topics.identity_summaries,
    )
    if rules.handoff is not None and not shadow:
        qualifier.send_handoff = producer_send(app, app.topic(topics.handoff, **RAW_BYTES))
        qualifier.deadlines = DeadlineIndex()
        _run_the_clock(app, qualifier.deadlines, leads, events, rules, worker, topics.partitions)

    @app.agent(lead_input, name="qualify", concurrency=1)
    async def qualify(stream: faust.StreamT[bytes]) -> None:
        await _apply_in_batches(stream, qualifier, leads, worker)

    if worker.accounts:
        accounts = _state_table(app, ACCOUNTS_TABLE, topics.partitions, "Per-account state.")
        rollup = AccountRollup(
            rules=rules,
            send_change=producer_send(app, app.topic(topics.account_changes, **RAW_BYTES)),
            send_dead_letter=producer_send(app, dead_letters),
            send_signal=producer_send(app, account_signals),
            partitions=topics.partitions,
            metrics=metrics,
            max_state_bytes=worker.max_state_bytes,
            cache=StateCache(worker.account_cache),
        )

        @app.agent(account_signals, name="roll_up", concurrency=1)
        async def roll_up(stream: faust.StreamT[bytes]) -> None:
            await _apply_in_batches(stream, rollup, accounts, worker)

    add_monitoring(
        app, topics.events, qualifier.positions, metrics, faust_metrics=worker.faust_metrics
    )
    return app


def producer_send(app: faust.App, topic: faust.TopicT) -> Send:
    """Send to `topic` through the app's producer (Faust's `Producer.send`): what `Topic.send`
    ends in, without its per-message channel, future and sensor work (a quarter of the time
    of a Faust agent that only copies messages, measured). Keys and values are bytes already."""
    (name,) = topic.topics

    async def send(
        key: bytes | None = None,
        value: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        acknowledged: Awaitable[Any] = await app.producer.send(
            name, key, value, partition, None, headers
        )
        return acknowledged

    return send


class LeadflowWorker(Worker):
    """Faust's worker, with the client libraries' repeated log records held back (one line per
    kind per interval while the broker is away, not a flood: `streams/common/logs.py`)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        quiet_client_repeats(logger)


def faust_worker(app: faust.App, loglevel: str) -> Worker:
    """Faust's worker for `app`, logging at `loglevel` and up."""
    worker = LeadflowWorker(app, loglevel=loglevel)
    # Faust's terminal spinner, on at WARN and above, sets the root logger to DEBUG so that every
    # record spins it: aiokafka then builds a debug record for each message it sends (7% of the
    # samples of a profiled Faust agent). The log level asked for is the level used.
    worker.spinner = None
    return worker


def run_worker(app: faust.App, loglevel: str) -> None:
    """Run the worker until it is stopped. A worker that crashed raises `WorkerCrashedError`
    with the reason in one line (Faust leaves only exit code 1 and a traceback in the log).

    Before Faust starts, it claims the data directory (creating it; a second worker on the
    same directory raises `DataDirError`) and checks that its pages' port is free
    (`CannotListenError`): each says in one line which setting to change."""
    with claim_data_dir(Path(app.conf.datadir)):
        check_web_port(app.conf.web_bind, app.conf.web_port)
        worker = faust_worker(app, loglevel)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit:
            if exit.code in (0, None) or worker.crash_reason is None:
                raise
            raise WorkerCrashedError(crash_explained(worker.crash_reason, app)) from None


def crash_explained(reason: BaseException, app: faust.App) -> str:
    """What stopped the worker, in one line, with what to do where leadflow knows it."""
    if isinstance(reason, ConsistencyError):
        return (
            "a table's changelog on the broker ends before what this worker stored in "
            f"{app.conf.datadir}: the broker lost the topics' data (a broker that keeps "
            "nothing across a restart, or topics deleted and created again). Restore the "
            f"topics, or start again from what the broker holds with an empty {DATA_DIR_SETTING}"
        )
    first_line = (str(reason).strip().splitlines() or [""])[0]
    return f"the worker crashed: {type(reason).__name__}: {first_line}"


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
        # web_host only makes Faust's canonical URL (how others reach this worker); web_bind
        # is where its web server listens, every interface by Faust's default.
        web_host=worker.web_host,
        web_bind=worker.web_host,
        web_port=worker.web_port,
        web_in_thread=False,
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        processing_guarantee="at_least_once",
        table_standby_replicas=worker.standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=worker.max_request_bytes,
        TableManager=table_manager_for(settings.kafka),
        Topic=DirectTopic,
    )

    # Our consumer class, set before Faust makes the consumer (when the worker starts).
    app.transport.Consumer = consumer_class(worker.fetch_max_wait)  # type: ignore[misc]
    return app


class _Agent(Protocol):
    async def apply(self, consumed: Consumed, batch: Batch) -> None: ...
    async def finish(self, batch: Batch) -> None: ...


async def _apply_in_batches(
    stream: faust.StreamT[bytes], agent: _Agent, table: AckedTable, worker: WorkerSettings
) -> None:
    """Apply the stream's messages a batch at a time (see streams/worker/agents.py).

    Faust acks the messages of a batch when this loop's body ends, so the body ends only once
    everything the batch wrote is acknowledged by the broker, changelog records included."""
    # faust.Stream has take_events; the StreamT protocol that noack() returns does not say so.
    noack = cast(Any, stream).noack()
    batches = noack.take_events(worker.batch_size, within=worker.batch_wait)
    async for events in batches:
        handling = asyncio.ensure_future(_apply_batch(agent, events, Batch(table)))
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


async def _apply_batch(agent: _Agent, events: Sequence[Consumed], batch: Batch) -> None:
    for event in events:
        await agent.apply(event, batch)
    await agent.finish(batch)


def _run_the_clock(
    app: faust.App,
    deadlines: DeadlineIndex,
    leads: AckedTable,
    events: faust.TopicT,
    rules: Rules,
    worker: WorkerSettings,
    partitions: int,
) -> None:
    """Every `worker.handoff_clock_seconds`, a clock record for each lead whose handoff
    deadline came (see streams/worker/clock.py)."""
    send = producer_send(app, events)
    stale = True

    def leads_moved(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        nonlocal stale
        stale = True

    app.on_rebalance_complete.connect(leads_moved)

    @app.timer(interval=worker.handoff_clock_seconds)  # type: ignore[untyped-decorator]
    async def handoff_clock() -> None:
        nonlocal stale
        recovered = cast(Any, app.tables).recovery.completed.is_set()
        if stale and recovered and not app.rebalancing:
            stale = False
            deadlines.rebuild(_held_deadlines(leads, rules))
            log.info("handoff clock: %d leads with a deadline ahead", len(deadlines))
        now = micros_of(datetime.now(UTC))
        sent = []
        for key, at in deadlines.due(now):
            record = encode_clock(key.decode(), at)
            sent.append(await send(key=key, value=record, partition=partition_for(key, partitions)))
        await asyncio.gather(*sent)


def _held_deadlines(leads: AckedTable, rules: Rules) -> Iterator[tuple[bytes, int]]:
    for key, stored in leads.items():
        deadline = stored_deadline(stored, rules)
        if deadline is not None:
            yield key, deadline


def _state_table(app: faust.App, name: str, partitions: int, help: str) -> AckedTable:
    # A table derives its (raw) serializers from its key and value types.
    table = AckedTable(
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
