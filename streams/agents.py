"""The stream shell around the core: validate -> decide -> emit, one event at a time.

Delivery is at least once, and exactly once in effect:
- an event that produces stage changes waits for the broker to acknowledge them before the lead's
  new state is written to the table, so a crash can never keep a state whose changes were lost
  (the event is processed again and sends the same bytes again, same `change_id`);
- `handle` returns the acknowledgement of the state's changelog record, and the agent acks the
  event (lets Faust commit its offset) only once that resolves. Faust's own flush before a
  commit cannot be trusted for this: its producer buffer's `flush()` returns after 0.1 s without
  progress even when records are still waiting, so offsets could be committed ahead of the
  changelog, and a worker rebuilding from it would miss those states;
- the core ignores an event_id the lead already accepted, so redelivered events change nothing,
  except that the lead's state is written again: the crash that caused the redelivery may have
  lost the changelog record of the state the local store already had.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka.partitioner.default import murmur2

from streams.accounts import decide_account, signals_of
from streams.codecs import (
    dead_letter_headers,
    decode_account_signal,
    decode_account_state,
    decode_event,
    decode_state,
    encode_account_change,
    encode_account_signal,
    encode_account_state,
    encode_change,
    encode_state,
)
from streams.errors import InvalidEventError
from streams.lifecycle import decide
from streams.metrics import PipelineMetrics
from streams.rules import Rules

log = logging.getLogger(__name__)


class Message(Protocol):
    """What the shell reads of a consumed Kafka message (Faust's `Message` has it)."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None


Send = Callable[..., Awaitable[Awaitable[Any]]]
"""`Topic.send`: buffers a message and returns an awaitable of its acknowledgement."""


class StateTable(Protocol):
    """A Faust table of raw bytes, as `streams.app.StateTable` provides it."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> asyncio.Future[Any]:
        """Store `value` and return the acknowledgement of its changelog record."""
        ...


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives `key`: Java, kafka-python and
    aiokafka producers all agree on it."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass
class LeadQualifier:
    """Processes events of the partitions this worker owns; all decisions come from the core."""

    rules: Rules
    table: StateTable
    send_change: Send
    send_dead_letter: Send
    send_event: Send
    partitions: int
    max_event_bytes: int
    metrics: PipelineMetrics
    send_account_signal: Send | None = None
    """Where the lead's account facts go; None when the account view is off."""
    positions: dict[int, int] = field(default_factory=dict)
    """The last offset handled, per partition of the events topic."""

    async def handle(self, message: Message) -> asyncio.Future[Any] | None:
        """Apply one consumed message; return the acknowledgement of the lead state it wrote, if
        it wrote one (everything else is acknowledged on return).

        Never raises for bad input: that goes to the dead letters."""
        self.metrics.events_received.inc()
        self.positions[message.partition] = message.offset
        raw = message.value or b""
        try:
            event = decode_event(raw, self.max_event_bytes)
        except InvalidEventError as exc:
            kind = "too_large" if exc.reason.startswith("message too large") else "invalid_event"
            await self.dead_letter(message, kind, exc.reason)
            return None
        lead_key = event.lead_id.encode()
        home = partition_for(lead_key, self.partitions)
        if home != message.partition:
            # A producer with another partitioner (or no key) put it here; its lead's state lives
            # on `home`. Forward it unchanged; the worker that owns `home` applies it.
            await (await self.send_event(key=lead_key, value=raw, partition=home))
            self.metrics.rerouted.inc()
            return None
        stored = self.table.get(lead_key)
        state = decode_state(stored) if stored is not None else None
        try:
            decision = decide(state, event, self.rules)
        except Exception as exc:  # a bug must not stop the pipeline: keep the event for replay
            log.exception("the core failed on event %s", event.event_id)
            await self.dead_letter(message, "internal_error", f"{type(exc).__name__}: {exc}")
            return None
        if decision.duplicate:
            self.metrics.duplicates.inc()
            assert stored is not None  # only a known lead has seen an event before
            return self.table.put(lead_key, stored)
        acknowledgements = [
            await self.send_change(key=lead_key, value=encode_change(change))
            for change in decision.changes
        ]
        if self.send_account_signal is not None:
            signals = signals_of(state, event, decision, self.rules)
            # The partition is named, not left to the producer: an account's state lives on
            # one partition of its table, so every signal of the account must reach that one.
            for signal in signals:
                account_key = signal.account_id.encode()
                acknowledgements.append(
                    await self.send_account_signal(
                        key=account_key,
                        value=encode_account_signal(signal),
                        partition=partition_for(account_key, self.partitions),
                    )
                )
            self.metrics.account_signals.labels("sent").inc(len(signals))
        if acknowledgements:
            await asyncio.gather(*acknowledgements)
        for change in decision.changes:
            self.metrics.stage_changes.labels(
                "retracted" if change.retracted else change.to_stage
            ).inc()
        written = self.table.put(lead_key, encode_state(decision.state))
        self.metrics.events_applied.inc()
        if message.timestamp:
            self.metrics.latency.observe(max(0.0, time.time() - message.timestamp))
        return written

    async def dead_letter(self, message: Message, kind: str, reason: str) -> None:
        await send_dead_letter(self.send_dead_letter, self.metrics, message, kind, reason)


@dataclass
class AccountRollup:
    """Folds lead signals into per-account states; the same delivery rules as the leads:
    account changes are acknowledged before the state that produced them is written."""

    rules: Rules
    table: StateTable
    send_change: Send
    send_dead_letter: Send
    send_signal: Send
    partitions: int
    metrics: PipelineMetrics

    async def handle(self, message: Message) -> asyncio.Future[Any] | None:
        """Apply one signal; return the acknowledgement of the account state it wrote, if any."""
        try:
            signal = decode_account_signal(message.value or b"")
        except InvalidEventError as exc:
            await send_dead_letter(
                self.send_dead_letter, self.metrics, message, "invalid_signal", exc.reason
            )
            return None
        account_key = signal.account_id.encode()
        home = partition_for(account_key, self.partitions)
        if home != message.partition:
            # Sent by hand to the wrong partition: the account's state lives on `home`.
            await (await self.send_signal(key=account_key, value=message.value, partition=home))
            self.metrics.rerouted.inc()
            return None
        stored = self.table.get(account_key)
        state = decode_account_state(stored) if stored is not None else None
        try:
            decision = decide_account(state, signal, self.rules)
        except Exception as exc:  # a bug must not stop the pipeline: keep the signal
            log.exception("the account core failed on a signal of lead %s", signal.lead_id)
            await send_dead_letter(
                self.send_dead_letter,
                self.metrics,
                message,
                "internal_error",
                f"{type(exc).__name__}: {exc}",
            )
            return None
        self.metrics.account_signals.labels("received").inc()
        if decision.duplicate:
            assert stored is not None
            return self.table.put(account_key, stored)
        acknowledgements = [
            await self.send_change(key=account_key, value=encode_account_change(change))
            for change in decision.changes
        ]
        await asyncio.gather(*acknowledgements)
        for change in decision.changes:
            self.metrics.account_changes.labels(
                "retracted" if change.retracted else change.to_stage
            ).inc()
        return self.table.put(account_key, encode_account_state(decision.state))


async def send_dead_letter(
    send: Send, metrics: PipelineMetrics, message: Message, kind: str, reason: str
) -> None:
    """Keep the original bytes, with where they came from and why they were rejected."""
    headers = dead_letter_headers(message.topic, message.partition, message.offset, kind, reason)
    await (await send(key=message.key, value=message.value, headers=headers))
    metrics.dead_letters.labels(kind).inc()
    log.warning(
        "dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
    )
