"""`--jobs N`: replay, what-if and the import's sort in several processes give exactly what one
process gives (stdout, stderr, exit code), and a lead never leaves its identities or accounts."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.common.event_order import (
    RejectedLine,
    SortedEvents,
    check_lines,
    numbered,
    sorted_by_event_time,
)
from streams.common.handoff_codec import encode_clock
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.rules import load_rules
from streams.local.generator import TrafficShape, generate
from streams.offline.replay import (
    BadLine,
    Replayed,
    Replayer,
    in_line_order,
    plan_shards,
    replay_sharded,
    total_counts,
)
from streams.offline.whatif import what_if
from tests.support.factories import BUYER, event

RULES = load_rules()
SHAPE = TrafficShape(anonymous_browsing=0.6, duplicate_fraction=0.05, late_fraction=0.05)


def messy_log(leads: int, seed: int) -> list[bytes]:
    """Generated traffic with anonymous visitors, duplicates, bad lines, blank lines, clock
    records and a merge, in a shuffled arrival order."""
    documents = generate(leads, seed=seed, shape=SHAPE)
    lines = [orjson.dumps(document) for document in documents]
    first, second = documents[0]["lead_id"], documents[-1]["lead_id"]
    merge = event("leads_merged", timedelta(days=30), lead=first, merged_lead_id=second)
    lines += [
        orjson.dumps(merge),
        b"not json",
        b'{"lead_id": "ghost"}',
        b"",
        b"[1, 2]",
        encode_clock(first, 1_780_000_000_000_000),
        lines[3],
    ]
    random.Random(seed).shuffle(lines)
    return lines


def write(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


@pytest.fixture
def no_fallback(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The shards were replayed as planned: none shared a state (no second replay)."""
    with caplog.at_level(logging.WARNING, logger="streams.offline.replay"):
        yield
    assert not [r for r in caplog.records if "shared a state" in r.getMessage()]


def run_cli(*args: str) -> tuple[bytes, bytes, int]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.stdout_bytes, result.stderr_bytes, result.exit_code


@pytest.mark.parametrize(
    "options",
    [[], ["--accounts"], ["--handoffs"], ["--arrival-order"], ["--arrival-order", "--accounts"]],
)
def test_replay_prints_the_same_bytes_with_any_number_of_jobs(
    tmp_path: Path, options: list[str], no_fallback: None
) -> None:
    log = write(tmp_path / "events.jsonl", messy_log(60, seed=7))
    one = run_cli("replay", log, *options, "--jobs", "1")
    assert one[2] == 0 and one[0] and b"line " in one[1]
    for jobs in ("2", "3"):
        assert run_cli("replay", log, *options, "--jobs", jobs) == one


def test_a_log_of_bad_lines_fails_the_same_with_jobs(tmp_path: Path) -> None:
    log = write(tmp_path / "events.jsonl", [b"{}", b"[]", b'{"lead_id": "x"}'])
    one = run_cli("replay", log, "--arrival-order", "--jobs", "1")
    assert one[2] == 1
    assert run_cli("replay", log, "--arrival-order", "--jobs", "2") == one


def _whole_and_sharded(
    lines: list[bytes], accounts: bool, jobs: int
) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]], Replayer, list[Replayer]]:
    def make() -> Replayer:
        return Replayer(RULES, DEFAULT_MAX_EVENT_BYTES, accounts=accounts, handoffs=True)

    def work(
        replayer: Replayer, items: Iterator[tuple[int, Replayed | BadLine]]
    ) -> tuple[list[tuple[int, Any]], Replayer]:
        return list(items), replayer

    whole = make()
    expected = list(whole.run_numbered(enumerate(lines, start=1)))
    [parts] = replay_sharded(lines, jobs, [make], work)
    merged = list(in_line_order(outputs for outputs, _ in parts))
    return expected, merged, whole, [replayer for _, replayer in parts]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("accounts", [False, True])
def test_the_shards_together_are_the_whole_replay(
    seed: int, accounts: bool, no_fallback: None
) -> None:
    lines = messy_log(50, seed)
    expected, merged, whole, shards = _whole_and_sharded(lines, accounts, jobs=3)
    assert len(shards) == 3, "the log was split"
    assert merged == expected
    assert total_counts(shard.counts for shard in shards) == whole.counts
    states = {key: state for shard in shards for key, state in shard.states.items()}
    assert states == whole.states
    assert sum(len(shard.states) for shard in shards) == len(whole.states)
    accounts_held = {k: v for shard in shards for k, v in shard.account_states.items()}
    assert accounts_held == whole.account_states


def _visitor_log() -> list[bytes]:
    """Lead A browsed as visitor V (V's events come first, under V's own id), then signed up
    carrying V's id; B and C are unrelated leads at one company; D is alone."""
    visits = []
    for index in range(5):
        visit = event("pricing_page_view", timedelta(hours=index), lead="V", event_id=f"v{index}")
        visit["anonymous_id"] = "V"
        visits.append(visit)
    buyer: dict[str, Any] = BUYER
    sign_up = event("profile_updated", timedelta(days=1), lead="A", event_id="a0", **buyer)
    sign_up["anonymous_id"] = "V"
    colleague = {**buyer, "email": "joe@acme.com"}
    others = [
        event("profile_updated", timedelta(days=2), lead="B", event_id="b0", **colleague),
        event("profile_updated", timedelta(days=2), lead="C", event_id="c0", **buyer),
        event("page_view", timedelta(days=3), lead="D", event_id="d0"),
        event("page_view", timedelta(days=3), lead="E", event_id="e0"),
    ]
    return [orjson.dumps(d) for d in [*visits, sign_up, *others]]


def test_a_visitor_is_in_the_shard_of_its_lead_and_a_company_in_one_shard() -> None:
    lines = _visitor_log()
    lead_of = [orjson.loads(line)["lead_id"] for line in lines]

    def shard_of(planned: list[list[int]]) -> dict[str, set[int]]:
        found: dict[str, set[int]] = {}
        for shard, positions in enumerate(planned):
            for position in positions:
                found.setdefault(lead_of[position], set()).add(shard)
        return found

    without_accounts = shard_of(plan_shards(lines, 4))
    assert without_accounts["V"] == without_accounts["A"] and len(without_accounts["A"]) == 1
    assert len({min(shards) for shards in without_accounts.values()}) == 4, "spread"
    with_accounts = shard_of(plan_shards(lines, 4, [RULES]))
    # A, B and C name acme.com: one shard, with A's visitor.
    assert with_accounts["A"] == with_accounts["B"] == with_accounts["C"] == with_accounts["V"]


def test_shards_that_share_a_state_are_caught_and_replayed_again_in_one_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lines = _visitor_log() * 2  # the duplicates are in the other shard too

    def round_robin(lines: list[bytes], shards: int, *_: Any) -> list[list[int]]:
        return [list(range(shard, len(lines), shards)) for shard in range(shards)]

    monkeypatch.setattr("streams.offline.replay.plan_shards", round_robin)
    with caplog.at_level(logging.WARNING, logger="streams.offline.replay"):
        expected, merged, whole, shards = _whole_and_sharded(lines, accounts=True, jobs=2)
    assert any("shared a state" in record.getMessage() for record in caplog.records)
    assert merged == expected and len(shards) == 1
    assert shards[0].states == whole.states


def test_whatif_is_the_same_with_any_number_of_jobs(tmp_path: Path, no_fallback: None) -> None:
    lines = messy_log(50, seed=4)
    draft_rules = RULES.model_copy(
        update={"engagement": RULES.engagement.model_copy(update={"mql_threshold": 45.0})}
    )
    one = what_if(lines, RULES, draft_rules, DEFAULT_MAX_EVENT_BYTES)
    assert one.differences
    for jobs in (2, 4):
        assert what_if(lines, RULES, draft_rules, DEFAULT_MAX_EVENT_BYTES, jobs) == one
    log = write(tmp_path / "events.jsonl", lines)
    draft = tmp_path / "draft.toml"
    text = resources.files("streams.core").joinpath("rules.toml").read_text()
    draft.write_text(text.replace("mql_threshold = 60.0", "mql_threshold = 45.0"))
    for options, processes in (([], "2"), (["--arrival-order"], "3")):
        args = ["whatif", "--rules", str(draft), log, "--json", *options]
        printed = run_cli(*args, "--jobs", "1")
        assert printed[2] == 0
        assert run_cli(*args, "--jobs", processes) == printed


def _sort(
    lines: list[bytes], jobs: int, run_bytes: int, checked: bool = False
) -> tuple[list[Any], list[RejectedLine], SortedEvents]:
    rejected: list[RejectedLine] = []
    with sorted_by_event_time(
        numbered("log", lines),
        DEFAULT_MAX_EVENT_BYTES,
        rejected.append,
        run_bytes,
        jobs=jobs,
        checked=check_lines(lines, DEFAULT_MAX_EVENT_BYTES, jobs) if checked else None,
    ) as ordered:
        return list(ordered), rejected, ordered


@pytest.mark.parametrize("run_bytes", [64 * 1024 * 1024, 20_000])
def test_the_sort_is_the_same_with_any_number_of_jobs(
    run_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streams.common.event_order._CHUNK_LINES", 100)  # many chunks in flight
    lines = messy_log(150, seed=9)
    assert len(lines) > 3 * 3 * 100
    events, rejected, one = _sort(lines, 1, run_bytes)
    assert rejected and (one.spilled_runs > 0) == (run_bytes < 1_000_000)
    for jobs, checked in ((2, False), (3, False), (2, True)):
        again, again_rejected, other = _sort(lines, jobs, run_bytes, checked)
        assert (again, again_rejected) == (events, rejected)
        # Checked beforehand, the lines are all in memory: they are sorted there.
        assert other.spilled_runs == (0 if checked else one.spilled_runs)
        assert (other.fingerprint, other.lines, other.events, other.rejected) == (
            one.fingerprint,
            one.lines,
            one.events,
            one.rejected,
        )


def test_lines_read_before_a_read_error_are_reported_first_with_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = messy_log(60, seed=2)

    def failing() -> Iterator[tuple[str, int, bytes]]:
        yield from numbered("log", lines)
        raise OSError("disk gone")

    monkeypatch.setattr("streams.common.event_order._CHUNK_LINES", 50)
    for jobs in (1, 2):
        rejected: list[RejectedLine] = []
        with (
            pytest.raises(OSError, match="disk gone"),
            sorted_by_event_time(failing(), DEFAULT_MAX_EVENT_BYTES, rejected.append, jobs=jobs),
        ):
            pass
        assert len(rejected) == 4, jobs
