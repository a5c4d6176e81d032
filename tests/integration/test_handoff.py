"""The handoff clock end to end: a real broker and real worker processes, no mocks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.common.handoff_codec import encode_handoff
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.rules import Rules, load_rules
from streams.core.sla import HandoffStep
from streams.local.processes import WorkerProcess
from streams.offline.replay import Replayer
from tests.support.factories import BUYER, event
from tests.support.harness import Pipeline
from tests.support.waiting import wait_for

TARGET_MINUTES = 0.1
"""6 s: every owner works around the clock, so the deadline is 6 s after the MQL."""


@pytest.fixture
def fast_rules(tmp_path: Path) -> tuple[Path, Rules]:
    text = resources.files("streams.core").joinpath("rules.toml").read_text()
    text = re.sub(r'hours = "[^"]*"', 'hours = "mon-sun 00:00-24:00"', text)
    text = re.sub(r"holidays = \[[^\]]*\]", "holidays = []", text)
    text = re.sub(
        r"^active = \{.*\}$", f"active = {{ default = {TARGET_MINUTES} }}", text, flags=re.M
    )
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path, load_rules(path)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def mql(lead: str, at: datetime) -> list[dict[str, Any]]:
    return [
        event("profile_updated", at, lead=lead, **BUYER),
        event("demo_request", at + timedelta(seconds=1), lead=lead),
    ]


def kinds_by_lead(values: list[bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for value in values:
        step = orjson.loads(value)
        found.setdefault(step["lead_id"], []).append(step["kind"])
    return found


def test_deadlines_come_on_time_across_a_crash_and_replay_of_the_topic_agrees(
    pipeline: Pipeline, fast_rules: tuple[Path, Rules], workers: list[WorkerProcess]
) -> None:
    path, rules = fast_rules
    env = {"LEADFLOW_RULES_FILE": str(path), "LEADFLOW_WORKER__HANDOFF_CLOCK_SECONDS": "0.2"}
    worker = pipeline.worker("a")
    worker.env.update(env)
    workers.append(worker.start())
    worker.wait_assigned()
    now = datetime.now(UTC)
    pipeline.publish(
        [
            *mql("quiet", now),
            *mql("answered", now),
            event("sales_attempted", now + timedelta(seconds=2), lead="answered"),
        ]
    )
    handoff = pipeline.reader(pipeline.settings.topics.handoff)

    def kinds() -> dict[str, list[str]]:
        return kinds_by_lead(handoff.values())

    wait_for(
        kinds,
        lambda found: (
            found.get("quiet") == ["assigned", "due_soon", "breached"]
            and found.get("answered") == ["assigned", "touched"]
        ),
        timeout=60,
        what="quiet to breach and answered to be touched",
    )
    # A worker killed between a lead's MQL and its deadline: its successor rebuilds the
    # deadlines from the lead table and the breach still comes.
    pipeline.publish(mql("crashed", datetime.now(UTC)))
    wait_for(kinds, lambda found: "crashed" in found, timeout=60, what="crashed's assignment")
    worker.kill()
    successor = pipeline.worker("b")
    successor.env.update(env)
    workers.append(successor.start())
    wait_for(
        kinds,
        lambda found: found.get("crashed", [])[-1:] == ["breached"],
        timeout=90,
        what="crashed's breach after the restart",
    )
    # The clock's records are in the events topic: replaying it gives the same handoff events.
    events = pipeline.reader(pipeline.settings.topics.events)
    log = [m.value for m in sorted(events.poll(), key=lambda m: (m.partition, m.offset))]
    replayed = Replayer(rules, DEFAULT_MAX_EVENT_BYTES, handoffs=True).run(log)
    expected = sorted(encode_handoff(s) for s in replayed if isinstance(s, HandoffStep))
    assert sorted(set(handoff.values())) == expected
