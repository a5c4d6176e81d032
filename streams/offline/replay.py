"""Offline replay: run the core over an event log, exactly as the workers do, without Kafka."""

from __future__ import annotations

import gc
import heapq
import logging
import multiprocessing
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import compress, count, repeat
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

import orjson

from schemas.events import LINK_TYPES
from streams.common.events_codec import decode_event
from streams.common.handoff_codec import decode_clock, encode_handoff, is_clock
from streams.common.stage_changes_codec import encode_account_change, encode_change
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
from streams.core.signals import account_of
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
            for _, item in self._run(enumerate(lines, start=1)):
                yield item

    def run_numbered(
        self, lines: Iterable[tuple[int, bytes]]
    ) -> Iterator[tuple[int, Replayed | BadLine]]:
        """`run` over lines given with their numbers (a shard of a log: `replay_sharded`),
        each output with the number of the line behind it."""
        with _cyclic_gc_paused():
            yield from self._run(lines)

    def _run(self, lines: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, Replayed | BadLine]]:
        counts = self.counts
        states = self.states
        rules = self.rules
        for number, raw in lines:
            counts.lines += 1
            if not raw.strip():
                continue
            if is_clock(raw):
                for step in self._clock(number, raw):
                    yield number, step
                continue
            try:
                event = decode_event(raw, self.max_event_bytes)
            except InvalidEventError as exc:
                counts.bad += 1
                yield number, BadLine(number, exc.reason)
                continue
            before = states.get(event.lead_id)
            try:
                qualified = qualify(before, event, rules, self.accounts)
                rolled_up = self._roll_up(qualified.signals)
            except Exception as exc:  # as the worker does: report it, keep the lead as it was
                counts.bad += 1
                yield number, BadLine(number, f"internal_error: {type(exc).__name__}: {exc}")
                continue
            if qualified.duplicate:
                counts.duplicates += 1
                continue
            counts.identity_conflicts += qualified.conflict
            if qualified.refused is not None:
                counts.bad += 1
                yield number, BadLine(number, qualified.refused[1])
                continue
            counts.events += 1
            counts.links += event.type in LINK_TYPES
            for output in self._applied(event.lead_id, qualified, rolled_up):
                yield number, output
            if qualified.requests or qualified.summaries:
                for linked in self._stitched(number, qualified):
                    yield number, linked

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


# Several processes (`--jobs`): the log is cut into shards that share no state, each replayed
# by its own process over its lines in the log's order, and the outputs put back in that order.

T = TypeVar("T")
_V = TypeVar("_V")
ShardWork = Callable[[Replayer, Iterator[tuple[int, Replayed | BadLine]]], T]
"""What one process makes of its shard's replay (the replayer, and each output with the number
of the line behind it): the caller's results, to merge."""

StateKey = str | tuple[str, str]
"""A lead's or an identity's id, or ("account", account id)."""


def jobs_wanted(jobs: int) -> int:
    """How many processes `--jobs` asks for: 0 means one per core."""
    return jobs if jobs > 0 else os.cpu_count() or 1


def keys_of(raw: bytes, account_rules: Sequence[Rules] = ()) -> list[StateKey]:
    """The states a line's replay may read or write: its lead (a clock record's too), the
    identity it links (`anonymous_id`, `merged_lead_id`: the link request, then the summaries
    go between the two), and, with accounts (`account_rules`, the rules of each replay), every
    account a profile fact of it can name (`account_of` of its `account_id`, of its email).
    More keys than the replay uses only make a shard bigger; none for a line that is not a
    JSON object (the replay reports it, whichever shard it is in)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict):
        return []
    keys: list[StateKey] = []
    for name in ("lead_id", "anonymous_id"):
        value = document.get(name)
        if isinstance(value, str):
            keys.append(value)
    properties = document.get("properties")
    if isinstance(properties, dict):
        merged = properties.get("merged_lead_id")
        if isinstance(merged, str):
            keys.append(merged)
        if account_rules and document.get("type") == "profile_updated":
            for rules in account_rules:
                for fact in ("account_id", "email"):
                    account = account_of({fact: properties.get(fact)}, rules)
                    if account is not None:
                        keys.append(("account", account))
    return keys


def plan_shards(
    lines: Sequence[bytes],
    shards: int,
    account_rules: Sequence[Rules] = (),
    keys: Iterable[list[StateKey]] | None = None,
) -> list[list[int]]:
    """The positions of `lines` (from 0, ascending) in each of `shards` shards: the lines of
    states that meet (`keys_of`: a lead, its identities, their accounts) in one shard, the
    shards as even in lines as whole groups allow, the same for the same lines. Lines without
    a key (not JSON, blank) go to shard 0. `keys`: each line's, when known already."""
    parent: dict[StateKey, StateKey] = {}

    def root_of(key: StateKey) -> StateKey:
        root = key
        while (up := parent[root]) != root:
            root = up
        while key != root:  # path compression
            parent[key], key = root, parent[key]
        return root

    firsts: list[StateKey | None] = []
    if keys is None:
        keys = (keys_of(raw, account_rules) for raw in lines)
    for line_keys in keys:
        if not line_keys:
            firsts.append(None)
            continue
        first = line_keys[0]
        firsts.append(first)
        if first not in parent:
            parent[first] = first
        if len(line_keys) > 1:
            root = root_of(first)
            for other in line_keys[1:]:
                if other not in parent:
                    parent[other] = root
                elif (other_root := root_of(other)) != root:
                    parent[other_root] = root
    roots: dict[StateKey | None, StateKey | None] = {key: root_of(key) for key in parent}
    roots[None] = None
    group_of = list(map(roots.__getitem__, firsts))
    sizes = Counter(group_of)  # first seen first: a stable order
    loads = [(sizes.pop(None, 0), 0)] + [(0, shard) for shard in range(1, shards)]
    heapq.heapify(loads)
    shard_of: dict[StateKey | None, int] = {None: 0}
    for group, size in sorted(sizes.items(), key=lambda item: -item[1]):
        load, shard = heapq.heappop(loads)
        shard_of[group] = shard
        heapq.heappush(loads, (load + size, shard))
    shard_of_line = list(map(shard_of.__getitem__, group_of))
    planned = [list(compress(count(), map(shard.__eq__, shard_of_line))) for shard in range(shards)]
    return planned


def replay_sharded(
    lines: Sequence[bytes],
    jobs: int,
    makes: Sequence[Callable[[], Replayer]],
    work: ShardWork[T],
    keys: Sequence[list[StateKey]] | None = None,
) -> list[list[T]]:
    """For each replayer `makes` builds (several rule sets: `whatif`), `work`'s result on each
    shard of `lines` (`plan_shards`), replayed in up to `jobs` processes at once; the lines
    keep their numbers in `lines` (from 1). Merged, the results are those of one replay of
    the whole log: every state a line reads is in its shard. That is checked (the states each
    shard read are disjoint); should it ever fail, that rule set is replayed again in one
    process, with a warning.

    `keys`: each line's `keys_of`, when known already (found in the processes otherwise).
    The processes are forked (they inherit the lines); without fork, one process."""
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [[_whole(make, lines, work)] for make in makes]
    prototypes = [make() for make in makes]
    account_rules = [replayer.rules for replayer in prototypes if replayer.accounts]
    per_replay = max(1, jobs // len(makes))
    if per_replay == 1 and len(makes) == 1:
        return [[_whole(makes[0], lines, work)]]
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_inherit,
        initargs=(_Shared(lines, makes, work, account_rules),),
    ) as pool:
        shards: list[Sequence[int]] = [range(len(lines))]
        if per_replay > 1:
            if keys is None:
                # Each line's keys in the processes (they read the lines they inherited),
                # the groups and shards here.
                step = max(1, -(-len(lines) // (4 * jobs)))
                found = pool.map(_keys_task, range(0, len(lines), step), repeat(step))
                keys = [line_keys for part in found for line_keys in part]
            planned = plan_shards(lines, per_replay, account_rules, keys)
            shards = [shard for shard in planned if shard] or shards
        # With one shard per replay there is nothing to check: its states are not watched.
        watched = len(shards) > 1
        tasks = [(replay, shard, watched) for replay in range(len(makes)) for shard in shards]
        if len(tasks) == 1:
            return [[_whole(makes[0], lines, work)]]
        done: list[tuple[T, frozenset[StateKey]]] = list(pool.map(_shard_task, tasks))
    results: list[list[T]] = []
    for replay, make in enumerate(makes):
        outcomes = [outcome for (of, *_), outcome in zip(tasks, done, strict=True) if of == replay]
        read = [keys for _, keys in outcomes]
        if sum(map(len, read)) == len(frozenset[StateKey]().union(*read)):
            results.append([result for result, _ in outcomes])
        else:
            _log.warning("shards of the log shared a state: replayed again in one process")
            results.append([_whole(make, lines, work)])
    return results


def in_line_order(parts: Iterable[Iterable[tuple[int, T]]]) -> Iterator[tuple[int, T]]:
    """Outputs of shards, each (line number, output) in its shard's order, in the order of
    one replay of the whole log (a line's outputs all come from one shard)."""
    return heapq.merge(*parts, key=itemgetter(0))


def total_counts(counts: Iterable[ReplayCounts]) -> ReplayCounts:
    """The counts of the shards of one replay, added up."""
    summed = ReplayCounts()
    for part in counts:
        for name in fields(ReplayCounts):
            setattr(summed, name.name, getattr(summed, name.name) + getattr(part, name.name))
    return summed


class PrintedShard(NamedTuple):
    """What one process of `replay --jobs` prints, and counts. The printed lines travel back
    as one bytes object and two arrays: a list of small objects costs the parent far more to
    unpickle than the shard's replay saves."""

    numbers: array[int]
    """The line behind each printed line, in the shard's order; negative: a bad line's reason."""
    ends: array[int]
    """Where each printed line ends in `printed`."""
    printed: bytes
    counts: ReplayCounts
    leads: int
    accounts: int

    def shown(self) -> Iterator[tuple[int, bytes | str]]:
        """(line number, a printed line or the reason of a bad line), in the shard's order."""
        printed = self.printed
        start = 0
        for number, end in zip(self.numbers, self.ends, strict=True):
            if number > 0:
                yield number, printed[start:end]
            else:
                yield -number, printed[start:end].decode()
            start = end


def printed_line(item: Replayed | BadLine, accounts: bool, handoffs: bool) -> bytes | str | None:
    """What `replay` prints of one output: a JSON line, or the reason of a bad line (stderr)."""
    if isinstance(item, BadLine):
        return item.reason
    if isinstance(item, AccountStageChange):
        return encode_account_change(item)
    if isinstance(item, HandoffStep):
        return encode_handoff(item)
    if isinstance(item, LeadStageChange) and not accounts and not handoffs:
        return encode_change(item)
    return None


def printed_shard(
    replayer: Replayer, items: Iterator[tuple[int, Replayed | BadLine]]
) -> PrintedShard:
    """`replay --jobs`: one shard's printed lines, encoded where they are made."""
    accounts, handoffs = replayer.accounts, replayer.handoffs
    numbers, ends, chunks = array("q"), array("q"), []
    size = 0
    for number, item in items:
        shown = printed_line(item, accounts, handoffs)
        if shown is None:
            continue
        if isinstance(shown, str):
            shown, number = shown.encode(), -number
        chunks.append(shown)
        size += len(shown)
        numbers.append(number)
        ends.append(size)
    return PrintedShard(
        numbers,
        ends,
        b"".join(chunks),
        replayer.counts,
        len(replayer.states),
        len(replayer.account_states),
    )


@dataclass(frozen=True)
class _Shared:
    lines: Sequence[bytes]
    makes: Sequence[Callable[[], Replayer]]
    work: Callable[[Replayer, Iterator[tuple[int, Replayed | BadLine]]], Any]
    account_rules: Sequence[Rules]


_inherited: list[_Shared] = []
"""In a forked process: what its parent shared (set once, by `_inherit`)."""
_log = logging.getLogger(__name__)


def _inherit(shared: _Shared) -> None:
    _inherited.append(shared)


class _Watched(dict[str, _V]):
    """States that remember every key asked for (each key written is asked for first)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def _keys_task(start: int, count: int) -> list[list[StateKey]]:
    shared = _inherited[-1]
    rules = shared.account_rules
    return [keys_of(raw, rules) for raw in shared.lines[start : start + count]]


def _shard_task(task: tuple[int, Sequence[int], bool]) -> tuple[Any, frozenset[StateKey]]:
    shared = _inherited[-1]
    replay, shard, watched = task
    replayer = shared.makes[replay]()
    states, accounts = _Watched[LeadState](), _Watched[AccountState]()
    if watched:  # unwatched, the replayer keeps plain dicts and nothing is asked
        replayer.states = states
        replayer.account_states = accounts
    lines = shared.lines
    numbered = ((position + 1, lines[position]) for position in shard)
    result = shared.work(replayer, replayer.run_numbered(numbered))
    asked: set[StateKey] = {("account", key) for key in accounts.asked}
    asked.update(states.asked)
    return result, frozenset(asked)


def _whole(make: Callable[[], Replayer], lines: Sequence[bytes], work: ShardWork[T]) -> T:
    replayer = make()
    return work(replayer, replayer.run_numbered(enumerate(lines, start=1)))
