"""The stream shell around the core: validate -> qualify -> emit, a batch of messages at a time.

Delivery is at least once, and exactly once in effect:
- an agent takes a batch of messages and applies each in order (a key's latest state is kept
  in the `Batch`, so the next message of the same lead sees it), sending their outputs (stage
  changes, account signals, account changes, dead letters) as it goes;
- only once the broker has acknowledged every output of the batch are the new states written to
  the tables, so a crash can never keep a state whose outputs were lost (the messages are
  processed again and send the same bytes again, same `change_id`);
- the batch ends only once the changelog records of those states are acknowledged; Faust acks
  (lets the consumer commit) the messages of a batch when it ends. Faust's own flush
  before a commit cannot be trusted for this: its producer buffer's `flush()` returns after
  0.1 s without progress even when records are still waiting, so offsets could be committed
  ahead of the changelog, and a worker rebuilding from it would miss those states;
- the core ignores an event_id the lead already accepted, so redelivered events change nothing,
  except that the lead's state is written again: the crash that caused the redelivery may have
  lost the changelog record of the state the local store already had.
One batch costs one round trip to the broker for its outputs and one for its states, whatever
the number of messages in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka.partitioner.default import murmur2

from streams.common.codecs import (
    dead_letter_headers,
    decode_account_signal,
    decode_account_state,
    decode_event,
    decode_identity_record,
    decode_state,
    encode_account_change,
    encode_account_signal,
    encode_account_state,
    encode_change,
    encode_link_request,
    encode_state,
    encode_summary,
)
from streams.core.accounts import AccountState, Signal, compact_account, decide_account
from streams.core.lifecycle import LeadState, Summary, compact
from streams.core.qualify import Qualified, qualify, qualify_request, qualify_summary
from streams.core.rules import Rules
from streams.errors import InvalidEventError
from streams.worker.metrics import PipelineMetrics

log = logging.getLogger(__name__)


class Message(Protocol):
    """What the shell reads of a consumed Kafka message (Faust's `Message` has it)."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None


class Consumed(Protocol):
    """A consumed message as Faust hands it to an agent (its `Event`)."""

    @property
    def message(self) -> Message: ...


Send = Callable[..., Awaitable[Awaitable[Any]]]
"""`Topic.send`: buffers a message and returns an awaitable of its acknowledgement."""


class KeyedStates(Protocol):
    """States by key, as `streams.worker.tables.AckedTable` keeps them. A key is read and
    written on behalf of the consumed message it belongs to (its partition is the key's)."""

    def get_for(self, consumed: Consumed, key: bytes) -> bytes | None: ...
    def put_for(self, consumed: Consumed, key: bytes, value: bytes) -> asyncio.Future[Any]:
        """Store `value` and return the acknowledgement of its changelog record."""
        ...


Encode = Callable[[bytes, Any], bytes]
"""Encodes the state of a key (and may remember the pair, see `StateCache`)."""


@dataclass
class Batch:
    """The work of one batch of messages: outputs are sent as messages are applied, and each
    key's latest state is kept here, as its agent holds it, until `finish` encodes it once and
    writes it."""

    table: KeyedStates
    sent: list[Awaitable[Any]] = field(default_factory=list)
    states: dict[bytes, tuple[Any, Consumed, Encode | None]] = field(default_factory=dict)
    """Each key's latest state: bytes, or an object and the function that encodes it."""
    applied: list[float] = field(default_factory=list)
    """Kafka timestamps of the messages applied (for the latency metric)."""
    sizes: dict[bytes, int] = field(default_factory=dict)
    """An upper bound of the encoded size of a key's latest state."""

    def read(self, consumed: Consumed, key: bytes) -> bytes | None:
        """The key's stored bytes (what the table has, or what this batch wrote as bytes)."""
        if key in self.states:
            value, _, encode = self.states[key]
            if encode is None:
                return value  # type: ignore[no-any-return]
        return self.table.get_for(consumed, key)

    def held(self, key: bytes) -> Any:
        """The state this batch keeps for `key` as an object, or None."""
        found = self.states.get(key)
        return found[0] if found is not None and found[2] is not None else None

    def write(self, consumed: Consumed, key: bytes, value: bytes) -> None:
        self.states[key] = (value, consumed, None)

    def keep(self, consumed: Consumed, key: bytes, state: Any, encode: Encode) -> None:
        """Keep `state` for `key`; `finish` encodes it once, however many messages changed it."""
        self.states[key] = (state, consumed, encode)

    async def send(self, send: Send, **message: Any) -> None:
        self.sent.append(await send(**message))

    async def finish(self) -> None:
        """Wait for every output, then write the states and wait for their changelog records."""
        await asyncio.gather(*self.sent)
        writes = []
        for key, (value, consumed, encode) in self.states.items():
            if encode is not None:
                value = encode(key, value)
            writes.append(self.table.put_for(consumed, key, value))
        await asyncio.gather(*writes)


class StateCache:
    """The states a worker decoded or wrote last, with the bytes they were stored as: a state
    is reused only while the table still holds those very bytes, so the cache can never be
    stale (after a rebalance, another worker's write shows as other bytes)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: OrderedDict[bytes, tuple[bytes, Any]] = OrderedDict()

    def get(self, key: bytes, stored: bytes) -> Any:
        found = self._held.get(key)
        if found is None or found[0] != stored:
            return None
        self._held.move_to_end(key)
        return found[1]

    def put(self, key: bytes, stored: bytes, state: Any) -> None:
        if self.size <= 0:
            return
        self._held[key] = (stored, state)
        self._held.move_to_end(key)
        if len(self._held) > self.size:
            self._held.popitem(last=False)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives `key`: Java, kafka-python and
    aiokafka producers all agree on it."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass
class LeadQualifier:
    """Processes events of the partitions this worker owns; all decisions come from the core."""

    rules: Rules
    send_change: Send
    send_dead_letter: Send
    send_event: Send
    partitions: int
    max_event_bytes: int
    metrics: PipelineMetrics
    max_state_bytes: int
    send_account_signal: Send | None = None
    cache: StateCache = field(default_factory=lambda: StateCache(0))
    """Decoded states kept between batches (see StateCache)."""
    """Where the lead's account facts go; None when the account view is off."""
    positions: dict[int, int] = field(default_factory=dict)
    """The last offset handled, per partition of the events topic."""
    shadow: bool = False
    """A challenger: it publishes its stage changes and its own stitching only. The live worker
    dead-letters bad input and forwards misrouted events (this one counts the first and skips
    the second: it applies the forwarded copy)."""
    send_identity: Send | None = None
    """Where link requests (keyed by the identity) and summaries (keyed by the known lead) go:
    the identity-summaries topic; None: this worker does not stitch identities."""
    summaries_topic: str | None = None
    """The topic of summaries this agent reads beside the events."""

    async def apply(self, consumed: Consumed, batch: Batch) -> None:
        """Apply one consumed message within `batch`. Never raises for bad input: that goes to
        the dead letters."""
        message = consumed.message
        if message.topic == self.summaries_topic:
            await self._apply_summary(consumed, batch)
            return
        self.metrics.events_received.inc()
        self.positions[message.partition] = message.offset
        raw = message.value or b""
        try:
            event = decode_event(raw, self.max_event_bytes)
        except InvalidEventError as exc:
            kind = "too_large" if exc.reason.startswith("message too large") else "invalid_event"
            await self.dead_letter(batch, message, kind, exc.reason)
            return
        lead_key = event.lead_id.encode()
        home = partition_for(lead_key, self.partitions)
        if home != message.partition:
            if self.shadow:
                return
            # A producer with another partitioner (or no key) put it here; its lead's state lives
            # on `home`. Forward it unchanged; the worker that owns `home` applies it.
            await batch.send(self.send_event, key=lead_key, value=raw, partition=home)
            self.metrics.rerouted.inc()
            return
        held = batch.held(lead_key)
        stored = batch.read(consumed, lead_key) if held is None else None
        try:
            # Everything this event leads to is worked out before any of it is sent, so an
            # event the code cannot handle leaves its lead exactly as it was.
            state = held if held is not None else self._stored(lead_key, stored, event.lead_id)
            qualified = qualify(state, event, self.rules, self.send_account_signal is not None)
            unchanged = qualified.duplicate or qualified.too_late is not None
            changes = [(change, encode_change(change)) for change in qualified.changes]
            signals = [
                (signal.account_id.encode(), encode_account_signal(signal))
                for signal in qualified.signals
            ]
            # A lead's state is encoded once per batch; an event adds at most about twice its
            # own size to it, so it is measured for real only once it could be near the limit.
            size = batch.sizes.get(lead_key, len(stored) if stored is not None else 0)
            size += 2 * len(raw) + 64
            if not unchanged and size > self.max_state_bytes:
                size = len(encode_state(qualified.state, self.rules))
        except Exception as exc:  # a bug must not stop the pipeline: keep the event for replay
            log.exception("the core failed on event %s", event.event_id)
            await self.dead_letter(batch, message, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        if qualified.conflict:
            self.metrics.identity_conflicts.inc()
        if unchanged or qualified.refused is not None:
            # Written again all the same: the crash behind a redelivery may have lost the
            # changelog record of the state this worker's store already had.
            if held is None and stored is not None:
                batch.write(consumed, lead_key, stored)
            else:
                batch.keep(consumed, lead_key, qualified.state, self._encode)
            if qualified.duplicate:
                self.metrics.duplicates.inc()
            elif qualified.refused is not None:
                await self.dead_letter(batch, message, *qualified.refused)
            else:
                assert qualified.too_late is not None
                await self.dead_letter(batch, message, "too_late", qualified.too_late)
            return
        if size > self.max_state_bytes:
            reason = _too_large("lead", event.lead_id, size, self.max_state_bytes)
            await self.dead_letter(batch, message, "state_too_large", reason)
            return
        batch.sizes[lead_key] = size
        for change, value in changes:
            await batch.send(self.send_change, key=lead_key, value=value)
            self.metrics.stage_changes.labels(
                "retracted" if change.retracted else change.to_stage
            ).inc()
        if self.send_account_signal is not None:
            # The partition is named, not left to the producer: an account's state lives on
            # one partition of its table, so every signal of the account must reach that one.
            for account_key, value in signals:
                await batch.send(
                    self.send_account_signal,
                    key=account_key,
                    value=value,
                    partition=partition_for(account_key, self.partitions),
                )
            self.metrics.account_signals.labels("sent").inc(len(signals))
        await self._route_identities(batch, qualified)
        batch.keep(consumed, lead_key, qualified.state, self._encode)
        self.metrics.events_applied.inc()
        if message.timestamp:
            batch.applied.append(message.timestamp)

    async def _route_identities(self, batch: Batch, qualified: Qualified) -> None:
        """Send a lead's link requests to their identities and a linked identity's summaries
        to its known lead, on the identity topic keyed by the state each changes, to the
        partition that state lives on (as accounts' signals), acknowledged before the state
        that produced them is written."""
        if self.send_identity is None:
            return
        outgoing = [
            *((r.identity, encode_link_request(r), "link_sent") for r in qualified.requests),
            *((s.to_id, encode_summary(s), "summary_sent") for s in qualified.summaries),
        ]
        for owner, value, what in outgoing:
            key = owner.encode()
            await batch.send(
                self.send_identity,
                key=key,
                value=value,
                partition=partition_for(key, self.partitions),
            )
            self.metrics.identity.labels(what).inc()

    async def _apply_summary(self, consumed: Consumed, batch: Batch) -> None:
        """Apply a record of the identity topic: a link request to its identity, or a
        summary to its known lead."""
        message = consumed.message
        try:
            record = decode_identity_record(message.value or b"")
        except InvalidEventError as exc:
            await self.dead_letter(batch, message, "invalid_identity_record", exc.reason)
            return
        owner = record.to_id if isinstance(record, Summary) else record.identity
        lead_key = owner.encode()
        home = partition_for(lead_key, self.partitions)
        if home != message.partition:
            if self.send_identity is None:
                return
            await batch.send(self.send_identity, key=lead_key, value=message.value, partition=home)
            self.metrics.rerouted.inc()
            return
        held = batch.held(lead_key)
        stored = batch.read(consumed, lead_key) if held is None else None
        try:
            state = held if held is not None else self._stored(lead_key, stored, owner)
            if isinstance(record, Summary):
                qualified = qualify_summary(state, record, self.rules)
            else:
                qualified = qualify_request(state, record, self.rules)
            changes = [(change, encode_change(change)) for change in qualified.changes]
        except Exception as exc:  # a bug must not stop the pipeline: keep the record
            log.exception("the core failed on an identity record of %s", owner)
            await self.dead_letter(batch, message, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        if qualified.conflict:
            self.metrics.identity_conflicts.inc()
        if qualified.duplicate or qualified.refused is not None:
            if held is None and stored is not None:
                batch.write(consumed, lead_key, stored)
            elif held is not None:
                batch.keep(consumed, lead_key, held, self._encode)
            if qualified.refused is not None:
                await self.dead_letter(batch, message, *qualified.refused)
            return
        for change, value in changes:
            await batch.send(self.send_change, key=lead_key, value=value)
            self.metrics.stage_changes.labels(
                "retracted" if change.retracted else change.to_stage
            ).inc()
        await self._route_identities(batch, qualified)
        batch.keep(consumed, lead_key, qualified.state, self._encode)
        what = "summary_applied" if isinstance(record, Summary) else "link_applied"
        self.metrics.identity.labels(what).inc()

    def _stored(self, key: bytes, stored: bytes | None, lead_id: str) -> LeadState | None:
        if stored is None:
            return None
        state: LeadState | None = self.cache.get(key, stored)
        if state is None:
            state = decode_state(stored, lead_id, self.rules)
            self.cache.put(key, stored, state)
        return state

    def _encode(self, key: bytes, state: LeadState) -> bytes:
        _, compacted = compact(state, self.rules)
        stored = encode_state(compacted, self.rules)
        self.cache.put(key, stored, compacted)
        return stored

    async def finish(self, batch: Batch) -> None:
        """End a batch: outputs acknowledged, then states written and acknowledged."""
        await batch.finish()
        now = time.time()
        for timestamp in batch.applied:
            self.metrics.latency.observe(max(0.0, now - timestamp))

    async def dead_letter(self, batch: Batch, message: Message, kind: str, reason: str) -> None:
        if self.shadow:
            self.metrics.dead_letters.labels(kind).inc()
            return
        await send_dead_letter(batch, self.send_dead_letter, self.metrics, message, kind, reason)


@dataclass
class AccountRollup:
    """Folds lead signals into per-account states; the same delivery rules as the leads:
    account changes are acknowledged before the state that produced them is written."""

    rules: Rules
    send_change: Send
    send_dead_letter: Send
    send_signal: Send
    partitions: int
    metrics: PipelineMetrics
    max_state_bytes: int
    cache: StateCache = field(default_factory=lambda: StateCache(0))
    """Decoded states kept between batches (see StateCache)."""

    async def apply(self, consumed: Consumed, batch: Batch) -> None:
        """Apply one signal within `batch`."""
        message = consumed.message
        try:
            signal = decode_account_signal(message.value or b"")
        except InvalidEventError as exc:
            await self.dead_letter(batch, message, "invalid_signal", exc.reason)
            return
        account_key = signal.account_id.encode()
        home = partition_for(account_key, self.partitions)
        if home != message.partition:
            # Sent by hand to the wrong partition: the account's state lives on `home`.
            await batch.send(self.send_signal, key=account_key, value=message.value, partition=home)
            self.metrics.rerouted.inc()
            return
        held = batch.held(account_key)
        stored = batch.read(consumed, account_key) if held is None else None
        try:
            state = held if held is not None else self._stored(account_key, stored, signal)
            decision = decide_account(state, signal, self.rules)
            changes = [(change, encode_account_change(change)) for change in decision.changes]
            # An account's state grows with its people: encoded once per batch, not per signal,
            # and measured against the limit only once it could be near it.
            size = batch.sizes.get(account_key, len(stored) if stored is not None else 0)
            size += 2 * len(signal.lead_id) + 160
            if size > self.max_state_bytes:
                size = len(encode_account_state(decision.state, self.rules))
        except Exception as exc:  # a bug must not stop the pipeline: keep the signal
            log.exception("the account core failed on a signal of lead %s", signal.lead_id)
            await self.dead_letter(batch, message, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        self.metrics.account_signals.labels("received").inc()
        if decision.duplicate:
            if held is None and stored is not None:
                batch.write(consumed, account_key, stored)
            else:
                batch.keep(consumed, account_key, decision.state, self._encode)
            return
        if size > self.max_state_bytes:
            reason = _too_large("account", signal.account_id, size, self.max_state_bytes)
            await self.dead_letter(batch, message, "state_too_large", reason)
            return
        batch.sizes[account_key] = size
        if decision.late:
            self.metrics.account_signals.labels("late").inc()
        for change, value in changes:
            await batch.send(self.send_change, key=account_key, value=value)
            self.metrics.account_changes.labels(
                "retracted" if change.retracted else change.to_stage
            ).inc()
        batch.keep(consumed, account_key, decision.state, self._encode)

    def _stored(self, key: bytes, stored: bytes | None, signal: Signal) -> AccountState | None:
        if stored is None:
            return None
        state: AccountState | None = self.cache.get(key, stored)
        if state is None:
            state = decode_account_state(stored, signal.account_id, self.rules)
            self.cache.put(key, stored, state)
        return state

    def _encode(self, key: bytes, state: AccountState) -> bytes:
        compacted = compact_account(state, self.rules)
        stored = encode_account_state(compacted, self.rules)
        self.cache.put(key, stored, compacted)
        return stored

    async def finish(self, batch: Batch) -> None:
        await batch.finish()

    async def dead_letter(self, batch: Batch, message: Message, kind: str, reason: str) -> None:
        await send_dead_letter(batch, self.send_dead_letter, self.metrics, message, kind, reason)


def _too_large(what: str, key: str, size: int, limit: int) -> str:
    return (
        f"state_too_large: {what} {key}'s state would take {size:,} bytes, more than "
        f"LEADFLOW_WORKER__MAX_STATE_BYTES ({limit:,}); this message is not applied and the "
        f"{what} stays as it was"
    )


async def send_dead_letter(
    batch: Batch, send: Send, metrics: PipelineMetrics, message: Message, kind: str, reason: str
) -> None:
    """Keep the original bytes, with where they came from and why they were rejected."""
    headers = dead_letter_headers(message.topic, message.partition, message.offset, kind, reason)
    await batch.send(send, key=message.key, value=message.value, headers=headers)
    metrics.dead_letters.labels(kind).inc()
    log.warning(
        "dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason
    )
