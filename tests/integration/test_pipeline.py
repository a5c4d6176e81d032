"""The stream pipeline end to end: real broker, real worker processes, no mocks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.core.rules import Rules
from streams.local.broker import FETCH_MAX_WAIT
from streams.local.generator import account_events, generate, lead_events
from streams.local.processes import WorkerProcess as Worker
from streams.worker.agents import partition_for
from tests.support.factories import event
from tests.support.harness import (
    Pipeline,
    difference,
    effective,
    effective_accounts,
    replay_accounts,
    replay_bytes,
    replay_signals,
    settings_from,
)
from tests.support.waiting import WaitTimeout, wait_for

LEADS = 2_000  # about 24k events


@pytest.fixture(scope="module")
def traffic() -> list[dict[str, object]]:
    return generate(LEADS, seed=2026)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def test_stage_changes_equal_replay_of_the_same_log(
    pipeline: Pipeline, traffic: list[dict[str, object]], rules: Rules, workers: list[Worker]
) -> None:
    assert len(traffic) >= 20_000
    expected = replay_bytes(traffic, rules)
    worker = pipeline.worker()
    workers.append(worker.start())
    waits = set()

    def assigned() -> list[int]:
        health = worker.health() or {}
        waits.add(health.get("fetch_max_wait_ms"))
        return list(health.get("partitions") or [])

    wait_for(assigned, bool, timeout=60, what="the worker to own partitions", interval=0.05)
    # From its first fetch on, the consumer waits as configured, not Faust's fixed 1.5 s
    # (docs/operations.md): the wait was once set only after the first assignment.
    assert waits - {None} == {round(FETCH_MAX_WAIT * 1000)}, waits
    pipeline.publish(traffic)
    reader = pipeline.reader(pipeline.settings.topics.stage_changes)
    wait_for(
        reader.values,
        lambda values: len(values) >= len(expected),
        timeout=240,
        what="as many stage changes as replay gives",
    )
    assert sorted(reader.values()) == sorted(expected)
    assert effective(reader.values()) == effective(expected)
    wait_for_accounts(pipeline, traffic, rules)


def wait_for_accounts(
    pipeline: Pipeline,
    traffic: list[dict[str, object]],
    rules: Rules,
    timeout: float = 120,
    minimum: int = 100,
) -> None:
    """Wait until the account changes in effect equal those of `replay --accounts`."""
    expected = replay_accounts(traffic, rules)
    assert len(expected) >= minimum
    reader = pipeline.reader(pipeline.settings.topics.account_changes)
    try:
        wait_for(
            lambda: difference(effective_accounts(reader.values()), expected, owner="account_id"),
            lambda diff: diff is None,
            timeout=timeout,
            what="the account changes in effect to equal replay --accounts",
        )
    except WaitTimeout as exc:
        # Say which side went wrong: the signals the leads sent, or the accounts' fold of them.
        signals = set(pipeline.reader(pipeline.settings.topics.account_signals).values())
        sent = replay_signals(traffic, rules)
        raise AssertionError(
            f"{exc}; signals: {len(sent - signals)} missing, {len(signals - sent)} unexpected, "
            f"e.g. {sorted(sent ^ signals)[:2]!r}"
        ) from exc


@pytest.mark.parametrize(
    "restart_on", ["same-disk", "new-disk"], ids=["restart-same-disk", "restart-new-disk"]
)
def test_a_worker_killed_mid_stream_and_restarted_loses_and_doubles_nothing(
    pipeline: Pipeline,
    traffic: list[dict[str, object]],
    rules: Rules,
    workers: list[Worker],
    restart_on: str,
) -> None:
    expected = effective(replay_bytes(traffic, rules))
    first = pipeline.worker()
    workers.append(first.start())
    first.wait_assigned()
    pipeline.publish(traffic)
    reader = pipeline.reader(pipeline.settings.topics.stage_changes)
    wait_for(
        reader.values,
        lambda values: len(values) >= len(expected) // 3,
        timeout=120,
        what="a third of the stage changes before the crash",
    )
    first.kill()
    seen_at_crash = len(reader.values())
    assert seen_at_crash < len(expected), "the crash must come mid-stream"
    # Same consumer group; on a new disk the lead states come back from the changelog topic only.
    second = pipeline.worker(label="a" if restart_on == "same-disk" else "b")
    workers.append(second.start())
    wait_for(
        lambda: difference(effective(reader.values()), expected),
        lambda diff: diff is None,
        timeout=240,
        what="the effective stage changes to equal replay after the restart",
    )
    wait_for_accounts(pipeline, traffic, rules)


def test_a_new_worker_recovers_every_lead_state_from_the_changelog(
    pipeline: Pipeline, traffic: list[dict[str, object]], rules: Rules, workers: list[Worker]
) -> None:
    # Half the traffic, a clean stop (everything committed), then a worker on a new disk that
    # must rebuild every lead's state from the changelog topic before the second half arrives.
    half = len(traffic) // 2
    expected_first = effective(replay_bytes(traffic[:half], rules))
    expected = effective(replay_bytes(traffic, rules))
    first = pipeline.worker(label="a")
    workers.append(first.start())
    first.wait_assigned()
    pipeline.publish(traffic[:half])
    reader = pipeline.reader(pipeline.settings.topics.stage_changes)
    wait_for(
        lambda: difference(effective(reader.values()), expected_first),
        lambda diff: diff is None,
        timeout=180,
        what="the first half's stage changes",
    )
    first.stop()
    second = pipeline.worker(label="b")
    workers.append(second.start())
    second.wait_assigned()
    pipeline.publish(traffic[half:])
    wait_for(
        lambda: difference(effective(reader.values()), expected),
        lambda diff: diff is None,
        timeout=180,
        what="the effective stage changes to equal replay of the whole log",
    )
    # The account table came back from its changelog as well.
    wait_for_accounts(pipeline, traffic, rules)


def test_two_workers_share_the_partitions_and_give_the_same_result(
    pipeline: Pipeline, traffic: list[dict[str, object]], rules: Rules, workers: list[Worker]
) -> None:
    expected = effective(replay_bytes(traffic, rules))
    pair = [pipeline.worker(label="a"), pipeline.worker(label="b")]
    for worker in pair:
        workers.append(worker.start())

    def assignments() -> list[set[int]]:
        return [set((worker.health() or {}).get("partitions", [])) for worker in pair]

    wait_for(
        assignments,
        lambda owned: (
            all(owned) and set.union(*owned) == {0, 1, 2, 3} and not set.intersection(*owned)
        ),
        timeout=90,
        what="both workers to own disjoint halves of the partitions",
    )
    pipeline.publish(traffic)
    reader = pipeline.reader(pipeline.settings.topics.stage_changes)
    wait_for(
        lambda: difference(effective(reader.values()), expected),
        lambda diff: diff is None,
        timeout=240,
        what="the effective stage changes to equal replay",
    )
    wait_for_accounts(pipeline, traffic, rules)
    received = [worker.metrics()["leadflow_events_received_total"] for worker in pair]
    assert all(count > 0 for count in received), received
    assert sum(received) >= len(traffic)


def test_a_heavy_lead_and_a_big_account_stop_nothing(
    pipeline: Pipeline, rules: Rules, workers: list[Worker]
) -> None:
    """A bot with 20,000 page views and a company of 300 people, among ordinary leads: the
    worker keeps going, an ordinary lead on the bot's partition still gets its stage change
    within a second once the burst is through, and everything equals replay."""
    bot = lead_events(1, 20_000, "bot")
    company = account_events(1, 300, by_person=True)
    ordinary = generate(300, seed=31)
    worker = pipeline.worker()
    workers.append(worker.start())
    worker.wait_assigned()
    pipeline.publish([*bot, *company, *ordinary])
    reader = pipeline.reader(pipeline.settings.topics.stage_changes)
    expected = effective(replay_bytes([*bot, *company, *ordinary], rules))
    wait_for(
        lambda: difference(effective(reader.values()), expected),
        lambda diff: diff is None,
        timeout=240,
        what="the stage changes of the burst to equal replay",
    )
    wait_for_accounts(pipeline, [*bot, *company, *ordinary], rules, minimum=1)
    # An ordinary lead on the bot's partition, after the burst.
    bot_partition = partition_for(b"bot-0", pipeline.partitions)
    neighbour = next(
        f"after-{n}"
        for n in range(1000)
        if partition_for(f"after-{n}".encode(), 4) == bot_partition
    )
    signup = event("newsletter_subscribe", lead=neighbour)
    started = time.monotonic()
    pipeline.publish([signup])
    found = wait_for(
        lambda: [v for v in reader.values() if orjson.loads(v)["lead_id"] == neighbour],
        lambda values: len(values) >= 1,
        timeout=30,
        what="the neighbour's stage change",
        interval=0.02,
    )
    took = time.monotonic() - started
    assert orjson.loads(found[0])["to_stage"] == "subscriber"
    assert took < 1.0, f"the neighbour waited {took:.2f}s"
    largest = max(len(v) for v in _changelog(pipeline, "leads"))
    assert largest < 16 * 1024, largest


def _changelog(pipeline: Pipeline, table: str) -> list[bytes]:
    """Every record of a table's changelog topic (read until nothing new comes for a second)."""
    topic = f"{pipeline.name}-{table}-changelog"
    consumer = KafkaConsumer(bootstrap_servers=pipeline.bootstrap_servers)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(pipeline.partitions)])
        consumer.seek_to_beginning()
        values: list[bytes] = []
        quiet_until = time.monotonic() + 1
        while time.monotonic() < quiet_until:
            for records in consumer.poll(timeout_ms=200, max_records=50_000).values():
                quiet_until = time.monotonic() + 1
                values.extend(r.value for r in records if r.value is not None)
        return values
    finally:
        consumer.close()


def test_worker_processes_share_the_partitions_and_stop_together(
    pipeline: Pipeline, rules: Rules
) -> None:
    """`leadflow worker --processes 2`: one consumer group on one machine, the same result as
    replay, and a stop signal ends every process."""
    from streams.worker.processes import process_settings

    traffic = generate(400, seed=41)
    one = pipeline.worker()
    supervisor = pipeline.command(
        ["worker", "--loglevel", "info", "--processes", "2"], one.env, "supervisor"
    ).start()
    settings = settings_from(one.env)
    probes = [
        Worker(port=process_settings(settings, n).worker.web_port, log_path=one.log_path)
        for n in range(2)
    ]
    try:
        owned = wait_for(
            lambda: [set((probe.health() or {}).get("partitions", [])) for probe in probes],
            lambda owned: all(owned) and set.union(*owned) == {0, 1, 2, 3},
            timeout=90,
            what="both processes to own partitions",
        )
        assert not set.intersection(*owned)
        pipeline.publish(traffic)
        reader = pipeline.reader(pipeline.settings.topics.stage_changes)
        expected = effective(replay_bytes(traffic, rules))
        wait_for(
            lambda: difference(effective(reader.values()), expected),
            lambda diff: diff is None,
            timeout=180,
            what="the stage changes of both processes to equal replay",
        )
    finally:
        supervisor.stop(timeout=60)
    assert supervisor.process is not None and supervisor.process.returncode == 0
    assert all(probe.health() is None for probe in probes)
