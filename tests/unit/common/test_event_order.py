"""Events in event-time order: one total order whatever the input order, in bounded memory."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from streams.common.event_order import (
    Origin,
    RejectedLine,
    numbered,
    sorted_by_event_time,
)
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.local.generator import generate


def _log() -> list[bytes]:
    return [orjson.dumps(document) + b"\n" for document in generate(60, seed=5)]


def _sorted(
    lines: list[bytes], run_bytes: int = 64 * 1024 * 1024, temp_dir: Path | None = None
) -> tuple[list[bytes], list[RejectedLine], int]:
    rejected: list[RejectedLine] = []
    with sorted_by_event_time(
        numbered("log", lines), DEFAULT_MAX_EVENT_BYTES, rejected.append, run_bytes, temp_dir
    ) as ordered:
        return [raw for _, raw in ordered], rejected, ordered.spilled_runs


def test_any_order_of_the_lines_gives_the_same_bytes_in_event_time_order() -> None:
    lines = _log()
    expected, _, _ = _sorted(lines)
    assert len(expected) == len(lines)
    keys = [(orjson.loads(raw)["occurred_at"], orjson.loads(raw)["event_id"]) for raw in expected]
    times = [orjson.loads(raw)["occurred_at"] for raw in expected]
    assert times == sorted(times) and len(set(keys)) < len(keys), "copies sit together"
    for seed in range(3):
        shuffled = list(lines)
        random.Random(seed).shuffle(shuffled)
        assert _sorted(shuffled)[0] == expected
    # The last line without its line ending is the same event.
    assert _sorted([*lines[:-1], lines[-1].rstrip(b"\n")])[0] == expected


def test_times_in_other_offsets_sort_as_instants() -> None:
    envelope = b'{"lead_id":"l","type":"page_view",'
    early = envelope + b'"event_id":"b","occurred_at":"2026-01-01T10:00:00+02:00"}'
    late = envelope + b'"event_id":"a","occurred_at":"2026-01-01T09:00:00Z"}'
    assert _sorted([late, early])[0] == [early, late]


def test_a_small_budget_spills_runs_to_disk_and_merges_them_to_the_same_order(
    tmp_path: Path,
) -> None:
    lines = _log()
    random.Random(1).shuffle(lines)
    in_memory, _, none_spilled = _sorted(lines)
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    merged, _, spilled = _sorted(lines, run_bytes=4096, temp_dir=spill_dir)
    assert none_spilled == 0
    assert spilled > 5
    assert merged == in_memory
    assert list(spill_dir.iterdir()) == [], "the runs are removed afterwards"


def test_a_log_that_fits_in_one_run_touches_no_disk(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"  # does not exist: any write there would fail
    assert _sorted(_log(), temp_dir=spill_dir)[2] == 0


def test_bad_lines_are_reported_with_their_origin_and_left_out() -> None:
    good = _log()[:3]
    lines = [good[0], b"not json\n", b"\n", good[1], b'{"event_id": "x"}\n', good[2]]
    ordered, rejected, _ = _sorted(lines)
    assert sorted(ordered) == sorted(raw.rstrip(b"\n") for raw in good)
    assert [bad.origin for bad in rejected] == [Origin("log", 2), Origin("log", 5)]
    assert rejected[0].reason.startswith("not JSON")
    assert rejected[1].reason == "missing field 'type'"


def test_the_fingerprint_is_the_same_for_any_split_and_order_and_changes_with_the_content() -> None:
    lines = _log()

    def fingerprint(*sources: list[bytes]) -> str:
        numbered_lines = [
            item for i, part in enumerate(sources) for item in numbered(f"f{i}", part)
        ]
        with sorted_by_event_time(
            numbered_lines, DEFAULT_MAX_EVENT_BYTES, lambda _: None
        ) as ordered:
            return ordered.fingerprint

    shuffled = list(lines)
    random.Random(2).shuffle(shuffled)
    whole = fingerprint(lines)
    assert fingerprint(shuffled[:20], shuffled[20:]) == whole
    assert fingerprint(lines[:-1]) != whole
    assert fingerprint([*lines, lines[0]]) != whole
