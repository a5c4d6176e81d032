"""Identity stitching in the stream: anonymous visitors who sign up, through real workers.

A visitor's events live on the anonymous id's partition, the lead's on its own: the lead's
link requests travel on the identity topic keyed by the anonymous id, the visitor's summaries
on the same topic keyed by the lead. The stage changes in effect must equal `leadflow replay`
of the same log, after a kill -9 too, and with two workers sharing the partitions.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from streams.core.rules import Rules
from streams.local.generator import TrafficShape, generate
from streams.local.processes import WorkerProcess as Worker
from tests.support.factories import event
from tests.support.harness import Pipeline, difference, in_effect, replay_bytes
from tests.support.waiting import wait_for

LEADS = 500  # about 6,500 events, a fifth of them anonymous visits


@pytest.fixture(scope="module")
def traffic() -> list[dict[str, object]]:
    documents = generate(LEADS, seed=2027, shape=TrafficShape(anonymous_browsing=0.6))
    visitor = next(d["lead_id"] for d in documents if str(d["lead_id"]).startswith("anon-"))
    # A second, later link of a visitor to another lead: refused wherever it arrives.
    conflict = event("identity_linked", lead="someone-else", event_id="conflict-1")
    conflict["anonymous_id"] = visitor
    conflict["occurred_at"] = "2026-12-01T00:00:00Z"
    return [*documents, conflict]


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def expected_changes(traffic: list[dict[str, object]], rules: Rules) -> dict[str, bytes]:
    expected = in_effect(replay_bytes(traffic, rules))
    decoded = [orjson.loads(value) for value in expected.values()]
    # The log exercises stitching: visitors publish nothing, their leads' scores include them.
    assert not [c for c in decoded if c["lead_id"].startswith("anon-")]
    assert len([c for c in decoded if c["to_stage"] == "mql"]) > 40
    return expected


def wait_for_replay(pipeline: Pipeline, expected: dict[str, bytes], timeout: float) -> None:
    reader = pipeline.reader(pipeline.settings.topics.stage_changes)
    wait_for(
        lambda: difference(in_effect(reader.values()), expected),
        lambda diff: diff is None,
        timeout=timeout,
        what="the stage changes in effect to equal replay",
    )


def test_stitched_stage_changes_equal_replay_of_the_same_log(
    pipeline: Pipeline, traffic: list[dict[str, object]], rules: Rules, workers: list[Worker]
) -> None:
    expected = expected_changes(traffic, rules)
    without_stitching = in_effect(
        replay_bytes([d for d in traffic if not str(d["lead_id"]).startswith("anon-")], rules)
    )
    assert expected != without_stitching, "the visitors' engagement must count for their leads"
    worker = pipeline.worker()
    workers.append(worker.start())
    worker.wait_assigned()
    pipeline.publish(traffic)
    wait_for_replay(pipeline, expected, timeout=150)
    metrics = worker.metrics()
    assert metrics["leadflow_identity_conflicts_total"] == 1
    assert metrics['leadflow_identity_total{what="summary_applied"}'] > 0


def test_a_stitching_worker_killed_and_restarted_loses_and_doubles_nothing(
    pipeline: Pipeline, traffic: list[dict[str, object]], rules: Rules, workers: list[Worker]
) -> None:
    expected = expected_changes(traffic, rules)
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
    assert difference(in_effect(reader.values()), expected) is not None, "crash mid-stream"
    second = pipeline.worker(label="b")
    workers.append(second.start())
    wait_for_replay(pipeline, expected, timeout=200)


def test_two_stitching_workers_give_the_same_result(
    pipeline: Pipeline, traffic: list[dict[str, object]], rules: Rules, workers: list[Worker]
) -> None:
    expected = expected_changes(traffic, rules)
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
    wait_for_replay(pipeline, expected, timeout=200)
