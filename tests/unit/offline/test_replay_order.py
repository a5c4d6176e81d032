"""`replay`, `whatif` and `explain` give the same result for any line order of a log (issue 29):
a history export comes one object type at a time, each sorted by time, the file as a whole not."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from schemas.events import ENGAGEMENT_TYPES, PROFILE_TYPES
from tests.support.command_line import leadflow

SHIPPED_RULES = Path(__file__).parents[3] / "streams" / "core" / "rules.toml"


def _kind(line: bytes) -> int:
    kind = orjson.loads(line)["type"]
    return 0 if kind in PROFILE_TYPES else 1 if kind in ENGAGEMENT_TYPES else 2


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("order")
    generated = leadflow("generate", "--leads", "150", "--seed", "11")
    assert generated.returncode == 0
    lines = generated.stdout.splitlines(keepends=True)
    shuffled = list(lines)
    random.Random(29).shuffle(shuffled)
    # The CRM-export shape: profiles, then web visits, then sales, each in time order.
    grouped = sorted(lines, key=_kind)
    paths = {}
    for name, content in (("sorted", lines), ("shuffled", shuffled), ("grouped", grouped)):
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_bytes(b"".join(content))
    return paths


@pytest.mark.parametrize("options", [[], ["--accounts"]], ids=["stages", "accounts"])
def test_replay_gives_the_same_bytes_for_any_line_order(
    logs: dict[str, Path], options: list[str]
) -> None:
    outputs = {name: leadflow("replay", *options, str(path)) for name, path in logs.items()}
    assert all(result.returncode == 0 for result in outputs.values())
    assert outputs["sorted"].stdout.count(b"\n") > 30
    assert outputs["shuffled"].stdout == outputs["sorted"].stdout
    assert outputs["grouped"].stdout == outputs["sorted"].stdout
    assert outputs["shuffled"].stderr == outputs["sorted"].stderr


def test_arrival_order_replays_the_lines_as_a_live_stream_saw_them(logs: dict[str, Path]) -> None:
    sorted_run = leadflow("replay", str(logs["sorted"]))
    arrival = leadflow("replay", "--arrival-order", str(logs["shuffled"]))
    assert arrival.returncode == 0
    assert arrival.stdout != sorted_run.stdout  # revisions, retractions: what the stream saw
    assert b" 0 bad lines" in arrival.stderr  # however late, every valid event is applied
    assert b'"applied_late":true' in arrival.stdout


def test_bad_lines_keep_their_numbers_once_sorted(logs: dict[str, Path], tmp_path: Path) -> None:
    lines = logs["shuffled"].read_bytes().splitlines(keepends=True)
    lines.insert(6, b"not json\n")
    lines.insert(40, b'{"event_id": "x"}\n')
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"".join(lines))
    for options in ([], ["--arrival-order"]):
        result = leadflow("replay", *options, str(mixed))
        errors = result.stderr.decode().splitlines()
        assert errors[0].startswith("line 7: not JSON"), errors[:3]
        assert errors[1] == "line 41: missing field 'type'", errors[:3]
        if not options:
            ids = [
                orjson.loads(line)["event_id"] for line in logs["sorted"].read_bytes().splitlines()
            ]
            redelivered = len(ids) - len(set(ids))
            assert f"({redelivered} duplicates, 2 bad lines)" in errors[-1], errors[-1]


def test_whatif_and_explain_give_the_same_result_for_any_line_order(
    logs: dict[str, Path],
) -> None:
    whatifs = [
        leadflow("whatif", "--rules", str(SHIPPED_RULES), str(logs[name]), "--json").stdout
        for name in ("sorted", "shuffled", "grouped")
    ]
    assert whatifs[0] and whatifs[1] == whatifs[0] and whatifs[2] == whatifs[0]
    lead = orjson.loads(logs["sorted"].read_bytes().splitlines()[0])["lead_id"]
    explained = [
        leadflow("explain", lead, str(logs[name]), "--ledger").stdout
        for name in ("sorted", "shuffled", "grouped")
    ]
    assert explained[0] and explained[1] == explained[0] and explained[2] == explained[0]
