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
from typing import Any, Final, Protocol

from kafka.partitioner.default import murmur2

from schemas.events import Event
from streams.common.account_signals_codec import decode_account_signal, encode_account_signal
from streams.common.account_state_codec import decode_account_state, encode_account_state
from streams.common.events_codec import (
    HISTORY_HEADERS,
    dead_letter_headers,
    decode_event,
    is_history,
)
from streams.common.handoff_codec import decode_clock, encode_handoff, is_clock
from streams.common.identity_records_codec import (
    decode_identity_record,
    encode_link_request,
    encode_summary,
)
from streams.common.lead_state_codec import decode_state, encode_state
from streams.common.stage_changes_codec import encode_account_change, encode_change
from streams.core.account import AccountState, Signal
from streams.core.accounts import compact_account, decide_account
from streams.core.compaction import compact
from streams.core.lead import LeadState, Summary
from streams.core.qualify import (
    Qualified,
    qualify,
    qualify_clock,
    qualify_request,
    qualify_summary,
)
from streams.core.rules import Rules
from streams.core.sla import next_deadline
from streams.errors import InvalidEventError
from streams.worker.clock import DeadlineIndex
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
    headers: Any


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


@dataclass(frozen=True)
class Output:
    """A message that a decision sends, acknowledged before the state it came from is written."""

    send: Send
    key: bytes
    value: bytes
    partition: int | None = None
    """Named when the message changes another state, which lives on the partition of its key."""


@dataclass
class Step:
    """What the core decided for one message, in the shell's terms."""

    state: Any
    outputs: list[Output]
    growth: int
    """An upper bound of the bytes this message adds to the encoded state."""
    unchanged: bool = False
    """A duplicate, or a message the core refused: the state is written again, nothing sent."""
    dead_letter: tuple[str, str] | None = None
    """(kind, reason) of a message the core refused."""
    count: Callable[[], None] = lambda: None
    """Counts what was decided, once the decision stands."""


@dataclass
class Route:
    """One kind of input of an agent: how a message is read and decided; the loop is shared."""

    invalid: str
    """The dead-letter kind of a message that cannot be read."""
    decode: Callable[[bytes], tuple[str, Any]]
    """The id of the state the message changes, and the message as the core takes it."""
    decide: Callable[[bytes, Any, Any], Step]
    """From the state's key, its state (None for a new one) and the message: the step."""
    forward: Send | None
    """Where a message on another partition than its state's goes; None: skipped."""
    received: Callable[[Message], None] = lambda message: None
    timed: bool = False
    """Its messages' Kafka timestamps feed the latency metric."""
    with_history: bool = False
    """`decide` takes the message with whether it is history: (message, history)."""


@dataclass(frozen=True)
class StateCodec:
    """How an agent's states are read from and written to its table."""

    what: str
    """What a state is, for the messages: "lead", "account"."""
    decode: Callable[[bytes, str], Any]
    encode: Callable[[bytes, Any], bytes]
    """Compacts, encodes and remembers the state (see StateCache)."""
    size: Callable[[Any], int]
    """The exact encoded size of a state (for the limit)."""


class StateAgent:
    """The one loop of every agent: read a message, find the state it changes (forwarding it when
    a producer put it on another partition), let the core decide, check the state's size, send
    the outputs and keep the state for the batch's end. Bad input and the core's failures go to
    the dead letters; nothing raises."""

    def __init__(
        self,
        routes: dict[str | None, Route],
        codec: StateCodec,
        partitions: int,
        max_state_bytes: int,
        metrics: PipelineMetrics,
        send_dead_letter: Send,
        cache: StateCache,
        shadow: bool = False,
    ) -> None:
        self.routes = routes
        """Routes by topic; the None route takes every other topic."""
        self.codec = codec
        self.partitions = partitions
        self.max_state_bytes = max_state_bytes
        self.metrics = metrics
        self.send_dead_letter = send_dead_letter
        self.cache = cache
        self.shadow = shadow
        """A challenger: dead letters are counted, not sent."""

    async def apply(self, consumed: Consumed, batch: Batch) -> None:
        """Apply one consumed message within `batch`. Never raises for bad input: that goes to
        the dead letters."""
        message = consumed.message
        route = self.routes.get(message.topic) or self.routes[None]
        route.received(message)
        raw = message.value or b""
        try:
            owner, payload = route.decode(raw)
        except InvalidEventError as exc:
            await self.dead_letter(batch, message, exc.kind or route.invalid, exc.reason)
            return
        key = owner.encode()
        home = partition_for(key, self.partitions)
        if home != message.partition:
            if route.forward is not None:
                # A producer with another partitioner (or no key) put it here; the state lives
                # on `home`. Forward it unchanged; the worker that owns `home` applies it.
                headers = HISTORY_HEADERS if is_history(message.headers) else None
                await batch.send(route.forward, key=key, value=raw, partition=home, headers=headers)
                self.metrics.rerouted.inc()
            return
        held = batch.held(key)
        stored = batch.read(consumed, key) if held is None else None
        try:
            # Everything this message leads to is worked out before any of it is sent, so a
            # message the code cannot handle leaves its state exactly as it was.
            state = held if held is not None else self._stored(key, stored, owner)
            if route.with_history:
                payload = (payload, is_history(message.headers))
            step = route.decide(key, state, payload)
            # A state is encoded once per batch; it is measured for real only once the bound
            # of its growth could bring it near the limit.
            size = batch.sizes.get(key, len(stored) if stored is not None else 0) + step.growth
            if not step.unchanged and size > self.max_state_bytes:
                size = self.codec.size(step.state)
        except Exception as exc:  # a bug must not stop the pipeline: keep the message
            log.exception("the core failed on a message of %s %s", self.codec.what, owner)
            await self.dead_letter(batch, message, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        step.count()
        if step.unchanged:
            # Written again all the same: the crash behind a redelivery may have lost the
            # changelog record of the state this worker's store already had.
            if held is None and stored is not None:
                batch.write(consumed, key, stored)
            else:
                batch.keep(consumed, key, step.state, self.codec.encode)
            if step.dead_letter is not None:
                await self.dead_letter(batch, message, *step.dead_letter)
            return
        if size > self.max_state_bytes:
            reason = _too_large(self.codec.what, owner, size, self.max_state_bytes)
            await self.dead_letter(batch, message, "state_too_large", reason)
            return
        batch.sizes[key] = size
        # What history causes is history too: stage changes, signals and identity records of
        # an imported event carry the mark on, and nothing downstream alerts on them.
        headers = HISTORY_HEADERS if is_history(message.headers) else None
        for output in step.outputs:
            await batch.send(
                output.send,
                key=output.key,
                value=output.value,
                partition=output.partition,
                headers=headers,
            )
        batch.keep(consumed, key, step.state, self.codec.encode)
        if route.timed and message.timestamp:
            batch.applied.append(message.timestamp)

    def _stored(self, key: bytes, stored: bytes | None, owner: str) -> Any:
        if stored is None:
            return None
        state = self.cache.get(key, stored)
        if state is None:
            state = self.codec.decode(stored, owner)
            self.cache.put(key, stored, state)
        return state

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
class LeadQualifier:
    """The lead agent: events and identity records into lead states; all decisions come from
    the core."""

    rules: Rules
    send_change: Send
    send_dead_letter: Send
    send_event: Send
    partitions: int
    max_event_bytes: int
    metrics: PipelineMetrics
    max_state_bytes: int
    send_account_signal: Send | None = None
    """Where the lead's account facts go; None when the account view is off."""
    cache: StateCache = field(default_factory=lambda: StateCache(0))
    """Decoded states kept between batches (see StateCache)."""
    positions: dict[int, int] = field(default_factory=dict)
    """The last offset handled, per partition of the events topic."""
    shadow: bool = False
    """A challenger: it publishes its stage changes and its own stitching only. The live worker
    dead-letters bad input and forwards misrouted events (this one counts the first and skips
    the second: it applies the forwarded copy)."""
    send_identity: Send | None = None
    """Where link requests (keyed by the identity) and summaries (keyed by the known lead) go:
    the identity topic; None: this worker does not stitch identities."""
    identity_topic: str | None = None
    """The identity topic, which this agent reads beside the events."""
    send_handoff: Send | None = None
    """Where handoff events go (the handoff topic); None: this worker publishes none."""
    deadlines: DeadlineIndex | None = None
    """The handoff deadlines of the leads this worker holds, for the clock (`clock.py`)."""

    def __post_init__(self) -> None:
        events = Route(
            invalid="invalid_event",
            decode=self._decode_event,
            decide=self._decide_event,
            forward=None if self.shadow else self.send_event,
            received=self._received,
            timed=True,
            with_history=True,
        )
        identity = Route(
            invalid="invalid_identity_record",
            decode=_decode_identity_record,
            decide=self._decide_identity_record,
            forward=self.send_identity,
        )
        codec = StateCodec("lead", self._decode_state, self._encode_state, self._state_size)
        routes: dict[str | None, Route] = {None: events}
        if self.identity_topic is not None:
            routes[self.identity_topic] = identity
        self.agent = StateAgent(
            routes,
            codec,
            self.partitions,
            self.max_state_bytes,
            self.metrics,
            self.send_dead_letter,
            self.cache,
            shadow=self.shadow,
        )

    async def apply(self, consumed: Consumed, batch: Batch) -> None:
        """Apply one consumed message (an event, or a record of the identity topic)."""
        await self.agent.apply(consumed, batch)

    async def finish(self, batch: Batch) -> None:
        """End a batch: outputs acknowledged, then states written and acknowledged."""
        await self.agent.finish(batch)

    def _received(self, message: Message) -> None:
        self.metrics.events_received.inc()
        self.positions[message.partition] = message.offset

    def _decode_event(self, raw: bytes) -> tuple[str, Any]:
        if is_clock(raw):
            lead_id, at = decode_clock(raw)
            return lead_id, (at, 0)
        event = decode_event(raw, self.max_event_bytes)
        return event.lead_id, (event, len(raw))

    def _decide_event(
        self, key: bytes, state: LeadState | None, payload: tuple[tuple[Event | int, int], bool]
    ) -> Step:
        (event, size), history = payload
        if isinstance(event, int):
            qualified = qualify_clock(state, key.decode(), event, self.rules)
            step = self._step(key, qualified, growth=0)
            step.count = self._counter(qualified, self.metrics.handoff_clock.inc)
            return step
        accounts = self.send_account_signal is not None
        qualified = qualify(state, event, self.rules, accounts, history)
        # An event adds at most about twice its own size to its lead's state.
        step = self._step(key, qualified, growth=2 * size + 64)
        if qualified.duplicate:
            step.count = self.metrics.duplicates.inc
        elif not step.unchanged:
            step.count = self._counter(qualified, self.metrics.events_applied.inc)
        elif qualified.conflict:
            step.count = self.metrics.identity_conflicts.inc
        return step

    def _decide_identity_record(self, key: bytes, state: LeadState | None, record: Any) -> Step:
        if isinstance(record, Summary):
            accounts = self.send_account_signal is not None
            qualified = qualify_summary(state, record, self.rules, accounts)
            applied = "summary_applied"
        else:
            qualified = qualify_request(state, record, self.rules)
            applied = "link_applied"
        step = self._step(key, qualified, growth=_IDENTITY_RECORD_GROWTH)
        if not step.unchanged:
            step.count = self._counter(qualified, self.metrics.identity.labels(applied).inc)
        elif qualified.conflict:
            step.count = self.metrics.identity_conflicts.inc
        return step

    def _step(self, key: bytes, qualified: Qualified, growth: int) -> Step:
        """The stage changes and the identity records a decision sends, in that order."""
        step = Step(
            qualified.state,
            [],
            growth,
            unchanged=qualified.duplicate or qualified.refused is not None,
            dead_letter=qualified.refused,
        )
        if step.unchanged:
            return step
        for change in qualified.changes:
            step.outputs.append(Output(self.send_change, key, encode_change(change)))
        if self.send_handoff is not None:
            for handoff in qualified.handoffs:
                step.outputs.append(Output(self.send_handoff, key, encode_handoff(handoff)))
            if self.deadlines is not None and qualified.state.handoff is not None:
                self.deadlines.set(key, next_deadline(qualified.state.handoff))
        if self.send_account_signal is not None:
            for signal in qualified.signals:
                step.outputs.append(
                    self._to_owner(
                        self.send_account_signal, signal.account_id, encode_account_signal(signal)
                    )
                )
        if self.send_identity is not None:
            for request in qualified.requests:
                step.outputs.append(
                    self._to_owner(
                        self.send_identity, request.identity, encode_link_request(request)
                    )
                )
            for summary in qualified.summaries:
                step.outputs.append(
                    self._to_owner(self.send_identity, summary.to_id, encode_summary(summary))
                )
        return step

    def _to_owner(self, send: Send, owner: str, value: bytes) -> Output:
        """A message for another state, keyed by its owner. The partition is named, not left to
        the producer: the owner's state lives on one partition of its table, so every message
        for it must reach that one."""
        key = owner.encode()
        return Output(send, key, value, partition_for(key, self.partitions))

    def _counter(self, qualified: Qualified, applied: Callable[[], None]) -> Callable[[], None]:
        metrics = self.metrics
        identity_sent = len(qualified.requests) + len(qualified.summaries)

        def count() -> None:
            for change in qualified.changes:
                stage = "retracted" if change.retracted else change.to_stage
                metrics.stage_changes.labels(stage).inc()
            if self.send_account_signal is not None and qualified.signals:
                metrics.account_signals.labels("sent").inc(len(qualified.signals))
            if self.send_identity is not None and identity_sent:
                metrics.identity.labels("link_sent").inc(len(qualified.requests))
                metrics.identity.labels("summary_sent").inc(len(qualified.summaries))
            if qualified.conflict:
                metrics.identity_conflicts.inc()
            if self.send_handoff is not None:
                for handoff in qualified.handoffs:
                    metrics.handoffs.labels(handoff.kind).inc()
            applied()

        return count

    def _decode_state(self, stored: bytes, lead_id: str) -> LeadState:
        return decode_state(stored, lead_id, self.rules)

    def _encode_state(self, key: bytes, state: LeadState) -> bytes:
        _, compacted = compact(state, self.rules)
        stored = encode_state(compacted, self.rules)
        self.cache.put(key, stored, compacted)
        return stored

    def _state_size(self, state: LeadState) -> int:
        return len(encode_state(state, self.rules))


_IDENTITY_RECORD_GROWTH: Final = 1024
"""An upper bound of what one link request or summary adds to a lead's state."""


def _decode_identity_record(raw: bytes) -> tuple[str, Any]:
    record = decode_identity_record(raw)
    owner = record.to_id if isinstance(record, Summary) else record.identity
    return owner, record


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

    def __post_init__(self) -> None:
        signals = Route(
            invalid="invalid_signal",
            decode=_decode_signal,
            decide=self._decide,
            forward=self.send_signal,
        )
        codec = StateCodec("account", self._decode_state, self._encode_state, self._state_size)
        self.agent = StateAgent(
            {None: signals},
            codec,
            self.partitions,
            self.max_state_bytes,
            self.metrics,
            self.send_dead_letter,
            self.cache,
        )

    async def apply(self, consumed: Consumed, batch: Batch) -> None:
        """Apply one signal within `batch`."""
        await self.agent.apply(consumed, batch)

    async def finish(self, batch: Batch) -> None:
        await self.agent.finish(batch)

    def _decide(self, key: bytes, state: AccountState | None, signal: Signal) -> Step:
        decision = decide_account(state, signal, self.rules)
        outputs = [
            Output(self.send_change, key, encode_account_change(change))
            for change in decision.changes
        ]
        # A signal adds at most one person's summary to its account's state.
        step = Step(decision.state, outputs, 2 * len(signal.lead_id) + 160, decision.duplicate)
        metrics = self.metrics

        def count() -> None:
            metrics.account_signals.labels("received").inc()
            if decision.duplicate:
                return
            if decision.late:
                metrics.account_signals.labels("late").inc()
            for change in decision.changes:
                stage = "retracted" if change.retracted else change.to_stage
                metrics.account_changes.labels(stage).inc()

        step.count = count
        return step

    def _decode_state(self, stored: bytes, account_id: str) -> AccountState:
        return decode_account_state(stored, account_id, self.rules)

    def _encode_state(self, key: bytes, state: AccountState) -> bytes:
        compacted = compact_account(state, self.rules)
        stored = encode_account_state(compacted, self.rules)
        self.cache.put(key, stored, compacted)
        return stored

    def _state_size(self, state: AccountState) -> int:
        return len(encode_account_state(state, self.rules))


def _decode_signal(raw: bytes) -> tuple[str, Signal]:
    signal = decode_account_signal(raw)
    return signal.account_id, signal


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
