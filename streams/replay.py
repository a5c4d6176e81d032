"""Offline replay: run the core over an event log, exactly as the workers do, without Kafka."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.events import LINK_TYPES
from streams.common.events_codec import decode_event
from streams.common.handoff_codec import decode_clock, is_clock
from streams.core.account import AccountDecision, AccountStageChange, AccountState, Signal
from streams.core.accounts import decide_account
from streams.core.lead import Entry, LeadStageChange, LeadState, LinkRequest, Summary
from streams.core.lifecycle import linked_identity
from streams.core.qualify import (
    Qualified,
    qualify,
    qualify_clock,
    qualify_request,
    qualify_summary,
)
from streams.core.revisions import latest_revisions
from streams.core.rules import Rules
from streams.core.sla import HandoffStep
from streams.errors import InvalidEventError

Replayed = LeadStageChange | Signal | AccountStageChange | HandoffStep


class BadLine(NamedTuple):
    """An input line that is not a valid event, and why."""

    line_number: int
    reason: str


@dataclass
class ReplayCounts:
    lines: int = 0
    events: int = 0
    duplicates: int = 0
    bad: int = 0
    stage_changes: int = 0
    account_signals: int = 0
    account_signals_late: int = 0
    account_changes: int = 0
    links: int = 0
    """Link events applied to their identity (given, or implied by an event)."""
    summaries: int = 0
    """Summaries of linked identities applied to their known lead."""
    identity_conflicts: int = 0
    """Links that disagreed with another of their identity (refused, or replacing it)."""
    handoffs: int = 0
    """Handoff events (docs/handoff.md)."""
    clock_records: int = 0
    """The worker's handoff clock records read (in a log taken from the events topic)."""


@dataclass
class Replayer:
    """Folds events into per-lead states in arrival order and yields the stage changes; with
    `accounts`, also each account signal and the account changes it causes, right after the
    stage changes of the event behind it."""

    rules: Rules
    max_event_bytes: int
    accounts: bool = False
    keep_compacted: bool = False
    """Keep the entries each lead folded into its snapshot (`compacted`), for `explain`."""
    handoffs: bool = False
    """Also yield the handoff events, right after the stage changes of the event behind them."""
    states: dict[str, LeadState] = field(default_factory=dict)
    account_states: dict[str, AccountState] = field(default_factory=dict)
    compacted: dict[str, list[Entry]] = field(default_factory=dict)
    counts: ReplayCounts = field(default_factory=ReplayCounts)

    def run(self, lines: Iterable[bytes]) -> Iterator[Replayed | BadLine]:
        """Yield what the workers publish, and a BadLine for each invalid line, in input order."""
        with _cyclic_gc_paused():
            yield from self._run(lines)

    def _run(self, lines: Iterable[bytes]) -> Iterator[Replayed | BadLine]:
        counts = self.counts
        states = self.states
        rules = self.rules
        for number, raw in enumerate(lines, start=1):
            counts.lines += 1
            if not raw.strip():
                continue
            if is_clock(raw):
                yield from self._clock(number, raw)
                continue
            try:
                event = decode_event(raw, self.max_event_bytes)
            except InvalidEventError as exc:
                counts.bad += 1
                yield BadLine(number, exc.reason)
                continue
            before = states.get(event.lead_id)
            try:
                qualified = qualify(before, event, rules, self.accounts)
                rolled_up = self._roll_up(qualified.signals)
            except Exception as exc:  # as the worker does: report it, keep the lead as it was
                counts.bad += 1
                yield BadLine(number, f"internal_error: {type(exc).__name__}: {exc}")
                continue
            if qualified.duplicate:
                counts.duplicates += 1
                continue
            counts.identity_conflicts += qualified.conflict
            if qualified.refused is not None:
                counts.bad += 1
                yield BadLine(number, qualified.refused[1])
                continue
            counts.events += 1
            counts.links += event.type in LINK_TYPES
            yield from self._applied(event.lead_id, qualified, rolled_up)
            if qualified.requests or qualified.summaries:
                yield from self._stitched(number, qualified)

    def _applied(
        self, lead_id: str, qualified: Qualified, rolled_up: list[AccountDecision]
    ) -> Iterator[Replayed]:
        counts = self.counts
        self.states[lead_id] = qualified.state
        if self.keep_compacted and qualified.compacted:
            self.compacted.setdefault(lead_id, []).extend(qualified.compacted)
        counts.stage_changes += len(qualified.changes)
        yield from qualified.changes
        counts.handoffs += len(qualified.handoffs)
        if self.handoffs:
            yield from qualified.handoffs
        for signal, account in zip(qualified.signals, rolled_up, strict=True):
            counts.account_signals += 1
            yield signal
            self.account_states[signal.account_id] = account.state
            counts.account_signals_late += account.late
            counts.account_changes += len(account.changes)
            yield from account.changes

    def _clock(self, number: int, raw: bytes) -> Iterator[HandoffStep | BadLine]:
        """A clock record of the worker's (a log read from the events topic): the deadline it
        names came for its lead, as the worker applied it."""
        try:
            lead_id, at = decode_clock(raw)
        except InvalidEventError as exc:
            self.counts.bad += 1
            yield BadLine(number, exc.reason)
            return
        self.counts.clock_records += 1
        done = qualify_clock(self.states.get(lead_id), lead_id, at, self.rules)
        if done.duplicate:
            return
        self.states[lead_id] = done.state
        self.counts.handoffs += len(done.handoffs)
        if self.handoffs:
            yield from done.handoffs

    def _stitched(self, number: int, qualified: Qualified) -> Iterator[Replayed | BadLine]:
        """What the workers route after an event: a lead's link requests, to their identities,
        and the summaries of linked identities, to their known leads (at once here; the
        stream routes them through a topic, and the outcome does not depend on when they
        arrive)."""
        pending: list[LinkRequest | Summary] = [*qualified.requests, *qualified.summaries]
        counts = self.counts
        while pending:
            item = pending.pop(0)
            if isinstance(item, Summary):
                done = qualify_summary(self.states.get(item.to_id), item, self.rules, self.accounts)
                key = item.to_id
            else:
                done = qualify_request(self.states.get(item.identity), item, self.rules)
                key = item.identity
            counts.identity_conflicts += done.conflict
            if done.duplicate:
                continue
            if done.refused is not None:
                yield BadLine(number, done.refused[1])
                continue
            if isinstance(item, Summary):
                counts.summaries += 1
            else:
                counts.links += 1
            yield from self._applied(key, done, self._roll_up(done.signals))
            pending.extend(done.summaries)

    def _roll_up(self, signals: tuple[Signal, ...]) -> list[AccountDecision]:
        """Each signal's account decision, in order, without storing any of them yet."""
        pending: dict[str, AccountState] = {}
        decisions = []
        for signal in signals:
            account_id = signal.account_id
            state = pending.get(account_id, self.account_states.get(account_id))
            decision = decide_account(state, signal, self.rules)
            pending[account_id] = decision.state
            decisions.append(decision)
        return decisions


def ids_bearing_on(lines: Iterable[bytes], lead_id: str, max_event_bytes: int) -> frozenset[str]:
    """The lead's id and those of every identity its events link to it, through chains of
    links (a visitor of a CRM duplicate merged into the lead): whose events a replay of one
    lead needs (`explain`). Only lines that can name a link are decoded."""
    named: dict[str, set[str]] = {}
    for raw in lines:
        if b"anonymous_id" not in raw and b"merged_lead_id" not in raw:
            continue
        try:
            event = decode_event(raw, max_event_bytes)
        except InvalidEventError:
            continue
        identity = linked_identity(event)
        if identity is not None:
            named.setdefault(event.lead_id, set()).add(identity)
    found = {lead_id}
    todo = [lead_id]
    while todo:
        for identity in named.get(todo.pop(), ()):
            if identity not in found:
                found.add(identity)
                todo.append(identity)
    return frozenset(found)


def lines_naming(lines: Iterable[bytes], ids: frozenset[str]) -> Iterator[bytes]:
    """The lines that contain one of `ids`: their events, and other leads' links to them (an
    identity belongs to the earliest link). A few more may come along (an id inside another):
    they change nothing for these ids."""
    wanted = [identity.encode() for identity in ids]
    return (line for line in lines if any(identity in line for identity in wanted))


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    # Lead states are acyclic tuples and dicts, freed by reference counting; the cyclic
    # collector would only re-scan them as they pile up (about 1.8x slower on large logs).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def effective_changes(changes: Iterable[LeadStageChange]) -> dict[str, LeadStageChange]:
    """The latest revision of every change_id, retracted ones removed: what consumers keep."""
    latest = latest_revisions(changes, lambda change: (change.change_id, change.revision))
    return {cid: change for cid, change in latest.items() if not change.retracted}


def account_changes_in_effect(changes: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Account changes (decoded JSON) as consumers keep them: the latest revision of each
    change_id, retracted ones removed, and without the revision, which stamps the order signals
    arrived in: that differs from run to run, the account's history does not."""
    latest = latest_revisions(changes, lambda change: (change["change_id"], change["revision"]))
    return {
        change_id: {name: value for name, value in change.items() if name != "revision"}
        for change_id, change in latest.items()
        if not change["retracted"]
    }
