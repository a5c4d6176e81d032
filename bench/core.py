"""Core replay throughput on generated events, one core, and the size of per-lead state.

Figures are given as events/s and as a ratio to a baseline measured in the same run (plain
`orjson.loads` of the same lines), because this machine is shared and absolute speeds drift.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from streams.common.events_codec import decode_event
from streams.common.lead_state_codec import encode_state
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.stage_changes_codec import encode_change
from streams.core.lead import LeadStageChange
from streams.core.lifecycle import decide
from streams.core.rules import load_rules
from streams.local.generator import generate
from streams.offline.replay import Replayer

CACHE = Path(".leadflow/bench")
FULL_LEADS = 85_000  # about 1M events
QUICK_LEADS = 4_000
ROUNDS = 3


def events_file(leads: int) -> Path:
    path = CACHE / f"events-{leads}-seed1.jsonl"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for event in generate(leads, seed=1):
                out.write(orjson.dumps(event) + b"\n")
        tmp.rename(path)
    return path


def best_of(rounds: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(quick: bool = False) -> None:
    leads = QUICK_LEADS if quick else FULL_LEADS
    lines = events_file(leads).read_bytes().splitlines()
    rules = load_rules()
    events = [decode_event(line, DEFAULT_MAX_EVENT_BYTES) for line in lines]
    count = len(lines)

    def baseline() -> None:
        for line in lines:
            orjson.loads(line)

    def decode_only() -> None:
        for line in lines:
            decode_event(line, DEFAULT_MAX_EVENT_BYTES)

    def decide_only() -> None:
        states: dict[str, object] = {}
        gc.disable()
        for event in events:
            decision = decide(states.get(event.lead_id), event, rules)  # type: ignore[arg-type]
            states[event.lead_id] = decision.state
        gc.enable()

    def full_replay() -> None:
        replayer = Replayer(rules, DEFAULT_MAX_EVENT_BYTES)
        for item in replayer.run(lines):
            if isinstance(item, LeadStageChange):
                encode_change(item)

    print(f"core: {count:,} generated events of {leads:,} leads, best of {ROUNDS} rounds")
    base = best_of(ROUNDS, baseline)
    print(f"  baseline orjson.loads       {count / base:>10,.0f} events/s  (1.00)")
    for name, run in (
        ("decode (pydantic)", decode_only),
        ("decide (core only)", decide_only),
        ("replay (decode+decide+encode)", full_replay),
    ):
        took = best_of(ROUNDS, run)
        print(f"  {name:<28}{count / took:>10,.0f} events/s  ({base / took:.3f} of baseline)")

    replayer = Replayer(rules, DEFAULT_MAX_EVENT_BYTES)
    for _ in replayer.run(lines):
        pass
    sizes = sorted(len(encode_state(state, rules)) for state in replayer.states.values())
    histories = [state.accepted for state in replayer.states.values()]
    kept = [len(state.tail) for state in replayer.states.values()]
    print(
        f"  state bytes per lead: mean {statistics.fmean(sizes):,.0f}, "
        f"median {sizes[len(sizes) // 2]:,}, p99 {sizes[int(len(sizes) * 0.99)]:,}, "
        f"max {sizes[-1]:,} (events per lead: mean {statistics.fmean(histories):.1f}, "
        f"max {max(histories)}; kept in detail: mean {statistics.fmean(kept):.1f}, "
        f"max {max(kept)}; goal: mean <= 300)"
    )
