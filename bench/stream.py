"""Stream pipeline throughput and publish-to-stage-change latency, on the local broker.

- raw limit: aiokafka consuming the events and producing each one again, unchanged (acks=all,
  aiokafka's default batching, as the worker's), no processing;
- Faust alone: the worker's Faust configuration copying the events in the worker's batches,
  with no processing (`bench/faust_floor.py`): the most a Faust worker can do here;
- end to end: the same events pre-published, a `leadflow worker` subprocess started, timed from
  the moment it owns its partitions until the stage-change topic holds what replay predicts;
  then two raw clients in two processes against `leadflow worker --processes 2`, so that the
  ratio stays per core;
- the core alone: the same events decoded and replayed in this process (CPU time), without
  Faust, Kafka or state encoding. A worker pays at least Faust alone's cost per event plus
  this, so the two bound the share of Faust alone any worker shell can reach;
- latency: with the worker running, events published at a steady rate (half of the capacity
  measured with accounts in the same run, then 1,000 events/s); for each stage change, its
  record's timestamp minus the timestamp of the event record whose processing published it
  (replay says which: a late event republishes changes caused by earlier events). The first
  half second of traffic, the worker's first fetches, is not counted.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from bench import topics_named
from streams.common.kafka_clients import aiokafka_config, create_topics
from streams.common.publish import make_producer, publish_events
from streams.common.settings import (
    DEFAULT_MAX_EVENT_BYTES,
    KafkaSettings,
    Settings,
    WorkerSettings,
    environment_of,
)
from streams.common.stage_changes_codec import encode_account_change, encode_change
from streams.core.account import AccountStageChange
from streams.core.lead import LeadStageChange
from streams.core.rules import load_rules
from streams.local.broker import FETCH_MAX_WAIT, LocalBroker, free_port
from streams.local.generator import TrafficShape, generate
from streams.local.processes import TopicReader, WorkerProcess
from streams.offline.replay import Replayer, account_changes_in_effect, effective_changes

LATENCY_RATE = 1_000
"""Events/s published in the second latency run (the figure of earlier reports), beside half
of the capacity measured in the same run (the goal's)."""
LATENCY_GOAL_MS = 100
LEADS_ONLY_GOAL = 0.8
"""Of Faust alone: what leadflow's own work may cost over Faust's (issue: speed)."""
WITH_ACCOUNTS_GOAL = 0.6
PROCESSES_GOAL = 1.8
"""`--processes 2` over one process, on two cores."""
WARM_UP_MS = 500  # traffic not counted in the latency: the worker's first fetches


def _settings(bootstrap: str, workdir: Path) -> Settings:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=topics_named(name),
        worker=WorkerSettings(
            app_id=name,
            data_dir=workdir / name,
            web_port=free_port(),
            fetch_max_wait=FETCH_MAX_WAIT,  # what the local broker needs (docs/operations.md)
        ),
    )


async def _raw_copy(settings: Settings, count: int) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(**aiokafka_config(settings.kafka), enable_auto_commit=False)
    producer = AIOKafkaProducer(**aiokafka_config(settings.kafka), acks="all")
    await consumer.start()
    await producer.start()
    try:
        partitions = [
            TopicPartition(settings.topics.events, p) for p in range(settings.topics.partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        copied, pending, started = 0, [], None
        while copied < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=2_000)
            for records in batches.values():
                started = started or time.perf_counter()
                for record in records:
                    pending.append(
                        await producer.send(
                            settings.topics.dead_letter, value=record.value, key=record.key
                        )
                    )
                copied += len(records)
        await asyncio.gather(*pending)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()


def _raw_copy_of(settings: Settings, partitions: list[int], count: int) -> float:
    """`_raw_copy` of some partitions only (for one of several raw clients)."""

    async def copy() -> float:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.structs import TopicPartition

        consumer = AIOKafkaConsumer(**aiokafka_config(settings.kafka), enable_auto_commit=False)
        producer = AIOKafkaProducer(**aiokafka_config(settings.kafka), acks="all")
        await consumer.start()
        await producer.start()
        try:
            consumer.assign([TopicPartition(settings.topics.events, p) for p in partitions])
            await consumer.seek_to_beginning()
            copied, pending, started = 0, [], None
            while copied < count:
                for records in (await consumer.getmany(timeout_ms=500, max_records=2_000)).values():
                    started = started or time.perf_counter()
                    for record in records:
                        pending.append(
                            await producer.send(
                                settings.topics.dead_letter, value=record.value, key=record.key
                            )
                        )
                    copied += len(records)
            await asyncio.gather(*pending)
            return time.perf_counter() - (started or time.perf_counter())
        finally:
            await consumer.stop()
            await producer.stop()

    return asyncio.run(copy())


def _raw_copies(settings: Settings, clients: int, counts: list[int]) -> float:
    """Seconds for `clients` raw clients in their own processes, each copying its share of the
    partitions, to copy them all."""
    create_topics(settings)
    shares = [
        [p for p in range(settings.topics.partitions) if p % clients == n] for n in range(clients)
    ]
    with ProcessPoolExecutor(clients) as pool:
        started = time.perf_counter()
        futures = [
            pool.submit(_raw_copy_of, settings, share, sum(counts[p] for p in share))
            for share in shares
        ]
        for future in futures:
            future.result()
        return time.perf_counter() - started


def _per_partition(settings: Settings, documents: list[dict[str, object]]) -> list[int]:
    from streams.worker.agents import partition_for

    counts = [0] * settings.topics.partitions
    for document in documents:
        counts[partition_for(str(document["lead_id"]).encode(), len(counts))] += 1
    return counts


def _end_to_end_processes(
    settings: Settings, workdir: Path, processes: int, expected: int, accounts: int
) -> float:
    """`_end_to_end` for `leadflow worker --processes N`, timed once every process owns
    partitions."""
    from streams.worker.processes import process_settings

    topics, bootstrap = settings.topics, settings.kafka.bootstrap_servers
    reader = TopicReader(bootstrap, topics.stage_changes, topics.partitions)
    account_reader = TopicReader(bootstrap, topics.account_changes, topics.partitions)
    supervisor = WorkerProcess(
        args=["worker", "--loglevel", "warning", "--processes", str(processes)],
        env=environment_of(settings),
        log_path=workdir / f"workers-{settings.worker.app_id}.log",
    ).start()
    try:
        probes = [
            WorkerProcess(port=process_settings(settings, n).worker.web_port)
            for n in range(processes)
        ]
        deadline = time.monotonic() + 120
        while True:
            owned = [set((probe.health() or {}).get("partitions", [])) for probe in probes]
            if all(owned) and set.union(*owned) == set(range(topics.partitions)):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers did not share the partitions: {owned}")
            time.sleep(0.1)
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while not (
            len(reader.values()) >= expected
            and len(account_changes_in_effect(orjson.loads(v) for v in account_reader.values()))
            >= accounts
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not done within 600s (log: {supervisor.log_path})")
        return time.perf_counter() - started
    finally:
        supervisor.stop()
        reader.close()
        account_reader.close()


def _rerun(settings: Settings, accounts: bool) -> Settings:
    """Another worker over the same events topic: its own group, outputs and disk."""
    fresh = _settings(settings.kafka.bootstrap_servers, settings.worker.data_dir.parent)
    return fresh.model_copy(
        update={
            "topics": fresh.topics.model_copy(update={"events": settings.topics.events}),
            "worker": fresh.worker.model_copy(update={"accounts": accounts}),
        }
    )


def _end_to_end(settings: Settings, workdir: Path, expected: int, accounts: int) -> float:
    """Seconds from the worker owning its partitions to all `expected` stage changes (and, if
    `accounts`, that many account changes in effect) being published."""
    topics, partitions = settings.topics, settings.topics.partitions
    reader = TopicReader(settings.kafka.bootstrap_servers, topics.stage_changes, partitions)
    account_reader = TopicReader(
        settings.kafka.bootstrap_servers, topics.account_changes, partitions
    )

    def done() -> bool:
        return len(reader.values()) >= expected and (
            not accounts
            or len(account_changes_in_effect(orjson.loads(v) for v in account_reader.values()))
            >= accounts
        )

    try:
        return _timed(WorkerProcess(), settings, workdir, done)
    finally:
        reader.close()
        account_reader.close()


def _stitching(bootstrap: str, workdir: Path, leads: int) -> str:
    """What identity stitching costs the worker: traffic where 60% of the people who browse
    before their form do it under an anonymous id (and the form links them), against the very
    same events with their `anonymous_id` left out (the visitors are then leads of their own:
    same events, no links, no summaries). Accounts off, so only stitching differs; each run is
    timed until the stage changes in effect equal replay's."""
    stitched = generate(leads, seed=9, shape=TrafficShape(anonymous_browsing=0.6))
    plain = [{k: v for k, v in d.items() if k != "anonymous_id"} for d in stitched]
    seconds: dict[int, float] = {}
    # Alternated, best of two each: the first worker of a run is slower whatever it does.
    for kind, documents in ((0, plain), (1, stitched), (1, stitched), (0, plain)):
        expected = {
            cid: {**orjson.loads(encode_change(change)), "revision": 0}
            for cid, change in effective_changes(
                item
                for item in Replayer(load_rules(), DEFAULT_MAX_EVENT_BYTES).run(
                    orjson.dumps(d) for d in documents
                )
                if isinstance(item, LeadStageChange)
            ).items()
        }
        settings = _rerun(_settings(bootstrap, workdir), accounts=False)
        create_topics(settings)
        publish_events(documents, settings)
        reader = TopicReader(bootstrap, settings.topics.stage_changes, settings.topics.partitions)
        try:
            done = functools.partial(_in_effect_equals, reader, expected)
            taken = _timed(WorkerProcess(), settings, workdir, done)
            seconds[kind] = min(taken, seconds.get(kind, taken))
        finally:
            reader.close()
    links = sum(1 for d in stitched if d.get("anonymous_id") not in (None, d["lead_id"]))
    rates = [len(stitched) / seconds[0], len(stitched) / seconds[1]]
    return (
        f"  identity stitching ({links:,} linking events, {len(stitched):,} events): "
        f"{rates[1]:,.0f} events/s against {rates[0]:,.0f} without the links, "
        f"{seconds[1] / seconds[0]:.2f}x the time"
    )


def _in_effect_equals(reader: TopicReader, expected: dict[str, dict[str, Any]]) -> bool:
    """Whether the stage changes in effect on `reader` (without revisions) are `expected`."""
    time.sleep(0.05)  # not a busy loop beside the worker it times
    latest: dict[str, dict[str, Any]] = {}
    for value in reader.values():
        change = orjson.loads(value)
        held = latest.get(change["change_id"])
        if held is None or change["revision"] >= held["revision"]:
            latest[change["change_id"]] = change
    live = {cid: {**c, "revision": 0} for cid, c in latest.items() if not c["retracted"]}
    return live == expected


def _core_alone(documents: list[dict[str, object]], accounts: bool, rounds: int = 3) -> float:
    """CPU seconds (best of `rounds`) the worker's core work takes over `documents`, without
    Faust, Kafka or state encoding: each event decoded from its bytes and replayed (as
    `leadflow replay --arrival-order`), identities and, with `accounts`, the account view."""
    raws = [orjson.dumps(document) for document in documents]
    rules = load_rules()
    best = float("inf")
    for _ in range(rounds):
        replayer = Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=accounts)
        started = time.process_time()
        for _ in replayer.run(raws):
            pass
        best = min(best, time.process_time() - started)
    return best


def _faust_alone(settings: Settings, workdir: Path, count: int) -> float:
    """Seconds from Faust owning its partitions to `count` messages copied (see the docstring)."""
    topics = settings.topics
    reader = TopicReader(settings.kafka.bootstrap_servers, topics.stage_changes, topics.partitions)
    try:
        floor = WorkerProcess(args=[], module="bench.faust_floor")
        return _timed(floor, settings, workdir, lambda: len(reader.poll()) >= count)
    finally:
        reader.close()


def _timed(
    process: WorkerProcess, settings: Settings, workdir: Path, done: Callable[[], bool]
) -> float:
    process.env = environment_of(settings)
    process.port = settings.worker.web_port
    process.log_path = workdir / f"worker-throughput-{settings.worker.app_id}.log"
    process.start()
    try:
        process.wait_assigned(timeout=90)
        started = time.perf_counter()
        deadline = time.monotonic() + 600
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not done within 600s (log: {process.log_path})")
        return time.perf_counter() - started
    finally:
        process.stop()


def _latency(bootstrap: str, workdir: Path, documents: list[dict[str, object]], rate: float) -> str:
    settings = _settings(bootstrap, workdir)
    create_topics(settings)
    worker = WorkerProcess(
        env=environment_of(settings),
        port=settings.worker.web_port,
        log_path=workdir / "worker-latency.log",
    ).start()
    changes = TopicReader(bootstrap, settings.topics.stage_changes, settings.topics.partitions)
    inputs = TopicReader(bootstrap, settings.topics.events, settings.topics.partitions)
    try:
        worker.wait_assigned(timeout=90)
        producer = make_producer(settings, linger_ms=0)
        started = time.perf_counter()
        for index, document in enumerate(documents):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            value = orjson.dumps(document)
            producer.send(
                settings.topics.events, key=str(document["lead_id"]).encode(), value=value
            )
        producer.flush()
        achieved = len(documents) / (time.perf_counter() - started)
        producer.close()
        sent_at = {
            orjson.loads(m.value)["event_id"]: m.timestamp for m in _all(inputs, len(documents))
        }
        deadline = time.monotonic() + 120
        while not (changes.poll() and _quiet(changes)) and time.monotonic() < deadline:
            pass
        published_by = _published_by(documents)
        warm_from = min(sent_at.values()) + WARM_UP_MS
        lags = []
        for record in changes.poll():
            change = orjson.loads(record.value)
            trigger_sent = sent_at[published_by[change["change_id"], change["revision"]]]
            if trigger_sent >= warm_from:
                lags.append(record.timestamp - trigger_sent)
    finally:
        worker.stop()
        changes.close()
        inputs.close()
    cuts = statistics.quantiles(lags, n=100)
    return (
        f"  latency at {achieved:,.0f} events/s published ({len(documents):,} events, "
        f"{len(lags):,} stage changes counted): p50 {cuts[49]:,.0f} ms, p99 {cuts[98]:,.0f} ms, "
        f"max {max(lags):,.0f} ms"
    )


def _published_by(documents: list[dict[str, object]]) -> dict[tuple[str, int], str]:
    """For each stage change (change_id, revision), the event whose processing published it."""
    replayer = Replayer(load_rules(), DEFAULT_MAX_EVENT_BYTES)
    found = {}
    for document in documents:
        for item in replayer.run([orjson.dumps(document)]):
            if isinstance(item, LeadStageChange):
                found[item.change_id, item.revision] = str(document["event_id"])
    return found


def _all(reader: TopicReader, count: int) -> list[Any]:
    deadline = time.monotonic() + 60
    while len(reader.poll()) < count and time.monotonic() < deadline:
        pass
    return reader.messages


def _quiet(reader: TopicReader, seconds: float = 2.0) -> bool:
    """Nothing new arrived for `seconds`."""
    before = len(reader.messages)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if len(reader.poll()) != before:
            return False
    return True


def main(quick: bool = False) -> None:
    leads = 1_000 if quick else 4_000
    documents = generate(leads, seed=9)
    replayed = list(
        Replayer(load_rules(), DEFAULT_MAX_EVENT_BYTES, accounts=True).run(
            orjson.dumps(d) for d in documents
        )
    )
    expected = sum(1 for item in replayed if isinstance(item, LeadStageChange))
    expected_accounts = len(
        account_changes_in_effect(
            orjson.loads(encode_account_change(item))
            for item in replayed
            if isinstance(item, AccountStageChange)
        )
    )
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    print(f"stream: {len(documents):,} events of {leads:,} leads, local broker, one worker")
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        settings = _settings(broker.bootstrap_servers, workdir)
        create_topics(settings)
        publish_events(documents, settings)
        raw_seconds = asyncio.run(_raw_copy(settings, len(documents)))
        faust_alone = _faust_alone(_rerun(settings, accounts=False), workdir, len(documents))
        leads_only = _end_to_end(_rerun(settings, accounts=False), workdir, expected, 0)
        with_accounts = _end_to_end(settings, workdir, expected, expected_accounts)
        raw_rate = len(documents) / raw_seconds
        print(f"  raw aiokafka consume+produce       {raw_rate:>8,.0f} events/s  (1.00)")
        faust_rate = len(documents) / faust_alone
        print(
            f"  Faust alone, no processing         {faust_rate:>8,.0f} events/s  "
            f"({faust_rate / raw_rate:.2f} of raw; the floor of the ratios below)"
        )
        for label, seconds, goal in (
            ("leads only", leads_only, LEADS_ONLY_GOAL),
            ("with accounts", with_accounts, WITH_ACCOUNTS_GOAL),
        ):
            rate = len(documents) / seconds
            print(
                f"  end to end, {label + ',':<14} worker  {rate:>8,.0f} events/s  "
                f"({rate / faust_rate:.2f} of Faust alone; goal >= {goal})"
            )
        print(
            f"  the account table's cost: {with_accounts / leads_only:.2f}x the time of leads "
            f"only ({expected_accounts:,} account changes in effect)"
        )
        for label, accounts, goal in (
            ("leads only", False, LEADS_ONLY_GOAL),
            ("with accounts", True, WITH_ACCOUNTS_GOAL),
        ):
            core_rate = len(documents) / _core_alone(documents, accounts)
            ceiling = core_rate / (core_rate + faust_rate)
            print(
                f"  the core alone, {label + ',':<14} no I/O {core_rate:>8,.0f} events/s: Faust's "
                f"cost and the core's alone allow at most {ceiling:.2f} of Faust alone "
                f"(goal >= {goal})"
            )
        print(_stitching(broker.bootstrap_servers, workdir, leads))
        counts = _per_partition(settings, documents)
        two_raw = len(documents) / _raw_copies(_rerun(settings, accounts=True), 2, counts)
        two_workers = len(documents) / _end_to_end_processes(
            _rerun(settings, accounts=True), workdir, 2, expected, expected_accounts
        )
        one_worker = len(documents) / with_accounts
        print(f"  two raw clients, two processes     {two_raw:>8,.0f} events/s  (1.00)")
        print(
            f"  with accounts, worker --processes 2 {two_workers:>7,.0f} events/s  "
            f"({two_workers / one_worker:.2f}x one process; goal >= {PROCESSES_GOAL}; "
            f"{two_workers / two_raw:.2f} of two raw clients)"
        )
        seconds = 4 if quick else 10
        half = one_worker / 2
        for rate in (half, LATENCY_RATE):
            sample = documents[: int(rate * seconds)]
            print(_latency(broker.bootstrap_servers, workdir, sample, rate))
        print(
            f"  goal: p99 <= {LATENCY_GOAL_MS} ms at half of one worker's capacity "
            f"(with accounts: {half:,.0f} events/s)"
        )
