"""The projector: stage changes, events, accounts, handoffs and spend from Kafka into ClickHouse.

It reads its topics (with a challenger running, its stage changes too) in batches, inserts each
batch, and commits the offsets only after ClickHouse accepted it. A crash between insert and
commit re-reads the batch; the tables are keyed by `change_id` / `event_id` / (`account_id`,
`lead_id`) / `handoff_id` / `spend_id` and read with FINAL, so nothing is counted twice.
A message it cannot read goes to the dead-letter topic with the reason, and is counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Histogram

from projections.privacy import lead_id_for_storage
from projections.rows import (
    ACCOUNT_CHANGES,
    ACCOUNT_MEMBERS,
    CAMPAIGN_SPEND,
    CAUSATION_LEAD_ID,
    CHALLENGER_STAGE_CHANGES,
    EVENTS,
    HANDOFF_EVENTS,
    IDENTITY_IDS,
    LEAD_ID,
    STAGE_CHANGES,
    RejectedRecord,
    account_change_row,
    account_member_row,
    event_row,
    handoff_event_row,
    spend_row,
    stage_change_row,
)
from projections.writer import ProjectionWriter
from streams.common.events_codec import dead_letter_headers
from streams.common.handoff_codec import is_clock
from streams.common.kafka_clients import (
    connection_config,
    end_offsets_read,
    reaching,
    send_failure,
    unacknowledged,
)
from streams.common.settings import Settings
from streams.core.rules import Rules, load_rules
from streams.errors import SendFailedError

log = logging.getLogger(__name__)

PARTITION_CHECK_INTERVAL = 30.0
"""Seconds between two looks for partitions added to the topics (every second while one of
the topics does not exist yet)."""


@dataclass
class ProjectorMetrics:
    """The projector's counters (Prometheus)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.rows = Counter(
            "leadflow_projector_rows",
            "Rows written to ClickHouse, by table.",
            ["table"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "leadflow_projector_dead_letters",
            "Messages the projector could not read, sent to the dead-letter topic, by topic.",
            ["topic"],
            registry=self.registry,
        )
        self.batches = Histogram(
            "leadflow_projector_batch_seconds",
            "Time to insert one batch and commit its offsets.",
            registry=self.registry,
        )


@dataclass
class ProjectorStats:
    """What one run did."""

    stage_changes: int = 0
    events: int = 0
    account_changes: int = 0
    account_signals: int = 0
    challenger_changes: int = 0
    handoff_events: int = 0
    spend: int = 0
    dead_letters: int = 0
    batches: int = 0
    clock_records: int = 0
    """The worker's handoff clock records read on the events topic (they make no row)."""

    @property
    def records(self) -> int:
        """Records written, of every topic."""
        return (
            self.stage_changes
            + self.events
            + self.account_changes
            + self.account_signals
            + self.challenger_changes
            + self.handoff_events
            + self.spend
        )


@dataclass
class _Batch:
    stage_changes: list[list[Any]] = field(default_factory=list)
    events: list[list[Any]] = field(default_factory=list)
    account_changes: list[list[Any]] = field(default_factory=list)
    account_members: list[list[Any]] = field(default_factory=list)
    challenger_changes: list[list[Any]] = field(default_factory=list)
    handoff_events: list[list[Any]] = field(default_factory=list)
    spend: list[list[Any]] = field(default_factory=list)
    rejected: int = 0
    started: float = 0.0

    def __len__(self) -> int:
        return (
            len(self.stage_changes)
            + len(self.events)
            + len(self.account_changes)
            + len(self.account_members)
            + len(self.challenger_changes)
            + len(self.handoff_events)
            + len(self.spend)
            + self.rejected
        )


class Projector:
    """Consumes stage changes, events, account changes, account signals, handoff events and
    campaign spend into one database.

    It owns every partition of its topics (one projector per database). `from_beginning` reads
    them from offset 0 and commits nothing (rebuild); otherwise it goes on from the offsets
    committed under its group id. Each event's engagement points are scored with `rules`
    (default: `settings.rules_file`, the shipped rules when unset), as the workers score it."""

    def __init__(
        self,
        settings: Settings,
        client: Any,
        metrics: ProjectorMetrics | None = None,
        from_beginning: bool = False,
        rules: Rules | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules if rules is not None else load_rules(settings.rules_file)
        """What scores the events' points (by default the rules file the workers run with)."""
        self.writer = ProjectionWriter(client, settings.clickhouse.database)
        self.stored_lead_id = lead_id_for_storage(settings.privacy)
        self.metrics = metrics or ProjectorMetrics()
        self.from_beginning = from_beginning
        self.topics = (
            settings.topics.stage_changes,
            settings.topics.events,
            settings.topics.account_changes,
            settings.topics.account_signals,
            settings.topics.challenger_stage_changes,
            settings.topics.handoff,
            settings.topics.spend,
        )
        self.stats = ProjectorStats()
        self.assigned = threading.Event()
        """Set once the consumer owns its partitions (joining a group takes a while)."""
        self._producer: KafkaProducer | None = None
        self._dead_letters_sent: list[tuple[str, Any]] = []
        """Each dead letter of the batch (where its record was) and the future of its send."""
        self._missing: set[str] = set()

    def run(
        self,
        stop: threading.Event | None = None,
        until_caught_up: bool = False,
        on_batch: Callable[[ProjectorStats], None] | None = None,
        on_assigned: Callable[[set[TopicPartition]], None] | None = None,
    ) -> ProjectorStats:
        """Project until `stop` is set, or (with `until_caught_up`) until every partition of
        the topics is read to the end it had when the run began.

        `on_assigned` is called with the partitions once the broker answered and before the
        first record is read (rebuild empties the tables there, not before). Whatever was read
        is written and committed before returning."""
        stop = stop or threading.Event()
        if stop.is_set():
            return self.stats
        consumer = self._consumer()
        batch = _Batch()
        try:
            partitions = self._assign(consumer)
            if on_assigned is not None:
                on_assigned(partitions)
            checked_at = time.monotonic()
            targets = self._ends(partitions) if until_caught_up else {}
            while not stop.is_set():
                if until_caught_up and not batch and _read_to(consumer, targets):
                    break
                if not until_caught_up and time.monotonic() - checked_at >= self._check_every(
                    partitions
                ):
                    partitions = self._assign(consumer)
                    checked_at = time.monotonic()
                polled = consumer.poll(
                    timeout_ms=100, max_records=self.settings.projector.batch_size
                )
                for tp, records in polled.items():
                    if not batch:
                        batch.started = time.monotonic()
                    for record in records:
                        self._add(batch, tp.topic, record)
                due = batch and (
                    len(batch) >= self.settings.projector.batch_size
                    or time.monotonic() - batch.started >= self.settings.projector.flush_interval
                    or not polled
                )
                if due:
                    self._flush(consumer, batch)
                    if on_batch:
                        on_batch(self.stats)
                    batch = _Batch()
            if batch:
                self._flush(consumer, batch)
        finally:
            consumer.close(autocommit=False)
            if self._producer is not None:
                self._producer.close()
        return self.stats

    def _consumer(self) -> KafkaConsumer:
        # Partitions are assigned, not taken from a group: a group join waits out the rebalance
        # timeout, and after a kill -9 the dead member's session as well (79 s were seen), and
        # a member that joined while a dead one was still in the group owned only part of the
        # partitions. The group id only names where the offsets are committed.
        config: dict[str, Any] = {
            **connection_config(self.settings.kafka),
            "group_id": None if self.from_beginning else self.settings.projector.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": self.settings.topics.max_dead_letter_bytes,
            "fetch_max_bytes": 64 * 1024 * 1024,
        }
        with reaching(self.settings.kafka):
            return KafkaConsumer(**config)

    def _assign(self, consumer: KafkaConsumer) -> set[TopicPartition]:
        """Assign every partition of the topics that exist (a missing topic is logged once and
        looked for again); return the assignment."""
        partitions = set(consumer.assignment())
        try:
            for topic in self.topics:
                found = consumer.partitions_for_topic(topic)
                if not found and topic not in self._missing:
                    self._missing.add(topic)
                    log.warning("topic %s does not exist (yet); nothing to read from it", topic)
                elif found:
                    self._missing.discard(topic)
                    partitions.update(TopicPartition(topic, partition) for partition in found)
        except KafkaError as exc:  # the broker is away: keep what is assigned, look again later
            log.warning("cannot read the topics' partitions: %s", exc)
            return partitions
        added = partitions - consumer.assignment()
        if added:
            consumer.assign(sorted(partitions))
            if self.from_beginning:
                consumer.seek_to_beginning(*added)
        if partitions:
            self.assigned.set()
        return partitions

    def _check_every(self, partitions: set[TopicPartition]) -> float:
        return PARTITION_CHECK_INTERVAL if partitions and not self._missing else 1.0

    def _ends(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        ends = end_offsets_read(self.settings.kafka, partitions)
        log.info(
            "reading %d partitions to their ends, offsets %d in all", len(ends), sum(ends.values())
        )
        return ends

    def _add(self, batch: _Batch, topic: str, record: Any) -> None:
        topics = self.settings.topics
        lead_id = LEAD_ID
        try:
            if topic == topics.spend:
                # No person in a spend record: nothing to store as a lead id.
                batch.spend.append(spend_row(record.value, record.timestamp))
                return
            if topic == topics.stage_changes:
                row = stage_change_row(record.value, record.timestamp)
                batch.stage_changes.append(row)
            elif topic == topics.account_changes:
                row = account_change_row(record.value, record.timestamp)
                batch.account_changes.append(row)
                lead_id = CAUSATION_LEAD_ID
            elif topic == topics.account_signals:
                row = account_member_row(record.value, record.timestamp)
                batch.account_members.append(row)
            elif topic == topics.challenger_stage_changes:
                row = stage_change_row(record.value, record.timestamp)
                batch.challenger_changes.append(row)
            elif topic == topics.handoff:
                row = handoff_event_row(record.value, record.timestamp)
                batch.handoff_events.append(row)
            elif is_clock(record.value):
                # The worker's handoff clock shares the events topic: no event, no row.
                self.stats.clock_records += 1
                return
            else:
                row = event_row(
                    record.value, self.settings.max_event_bytes, record.timestamp, self.rules
                )
                batch.events.append(row)
                for position in IDENTITY_IDS:
                    if row[position] is not None:
                        # A visitor's or a merged duplicate's id is a person's too: stored as
                        # the lead ids are.
                        row[position] = self.stored_lead_id(row[position])
            row[lead_id] = self.stored_lead_id(row[lead_id])
        except RejectedRecord as exc:
            batch.rejected += 1
            self._dead_letter(record, exc.reason)

    def _dead_letter(self, record: Any, reason: str) -> None:
        if topic_is_events := record.topic == self.settings.topics.events:
            # The worker already sent this one to the dead-letter topic; count it, don't repeat it.
            pass
        else:
            if self._producer is None:
                with reaching(self.settings.kafka):
                    self._producer = KafkaProducer(
                        **connection_config(self.settings.kafka),
                        acks="all",
                        max_request_size=self.settings.topics.max_dead_letter_bytes,
                    )
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            try:
                sending = self._producer.send(
                    self.settings.topics.dead_letter,
                    key=record.key,
                    value=record.value,
                    headers=dead_letter_headers(
                        record.topic, record.partition, record.offset, "projector_rejected", reason
                    ),
                )
            except KafkaError as exc:
                raise self._not_sent([(where, send_failure(exc))]) from exc
            self._dead_letters_sent.append((where, sending))
        self.stats.dead_letters += 1
        self.metrics.dead_letters.labels(record.topic).inc()
        log.warning(
            "%s %s[%d]@%d: %s",
            "skipped invalid event" if topic_is_events else "dead letter",
            record.topic,
            record.partition,
            record.offset,
            reason,
        )

    def _not_sent(self, failed: list[tuple[str, str]]) -> SendFailedError:
        where, reason = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return SendFailedError(
            f"the dead letter of {where}{more} was not sent to {self.settings.topics.dead_letter}:"
            f" {reason}; the offsets were not committed, so the projector reads these records"
            " again when it starts again"
        )

    def _flush(self, consumer: KafkaConsumer, batch: _Batch) -> None:
        started = time.perf_counter()
        self.writer.write(
            batch.stage_changes,
            batch.events,
            batch.account_changes,
            batch.account_members,
            batch.challenger_changes,
            batch.handoff_events,
            batch.spend,
        )
        if self._producer is not None:
            self._producer.flush()
            failed = unacknowledged(self._dead_letters_sent)
            self._dead_letters_sent = []
            if failed:
                # Before the commit: the batch, its dead letters too, is read again on restart.
                raise self._not_sent(failed)
        if not self.from_beginning:
            consumer.commit()
        self.metrics.batches.observe(time.perf_counter() - started)
        self.metrics.rows.labels(STAGE_CHANGES.name).inc(len(batch.stage_changes))
        self.metrics.rows.labels(EVENTS.name).inc(len(batch.events))
        self.metrics.rows.labels(ACCOUNT_CHANGES.name).inc(len(batch.account_changes))
        self.metrics.rows.labels(ACCOUNT_MEMBERS.name).inc(len(batch.account_members))
        self.metrics.rows.labels(CHALLENGER_STAGE_CHANGES.name).inc(len(batch.challenger_changes))
        self.metrics.rows.labels(HANDOFF_EVENTS.name).inc(len(batch.handoff_events))
        self.metrics.rows.labels(CAMPAIGN_SPEND.name).inc(len(batch.spend))
        self.stats.stage_changes += len(batch.stage_changes)
        self.stats.events += len(batch.events)
        self.stats.account_changes += len(batch.account_changes)
        self.stats.account_signals += len(batch.account_members)
        self.stats.challenger_changes += len(batch.challenger_changes)
        self.stats.handoff_events += len(batch.handoff_events)
        self.stats.spend += len(batch.spend)
        self.stats.batches += 1


def _read_to(consumer: KafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Every partition is read up to its end in `ends` (from `end_offsets_read`: on the local
    broker the high watermark alone can stop short)."""
    return all(consumer.position(tp) >= end for tp, end in ends.items())
