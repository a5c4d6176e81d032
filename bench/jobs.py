"""`--jobs`: `leadflow replay` and `leadflow whatif` of the same generated log in 1 and 2
processes, alternated (1, 2, 1, 2...), best of each; the ratio is the time with 1 over the
time with 2, and the outputs must be equal byte for byte (stdout, stderr, exit code). Then
`leadflow import`'s sort of the same file, in this process, with 1 and 2 processes validating.

Each run is the whole command (`python -m streams`, its start included), so the ratio is what a
user sees. The machine is shared: the load average is printed beside the figures, and the CPU
time of the command and its processes says how much of the wall time they had. When other work
holds the cores, the wall ratio says little: the last figure is the ratio the CPU times allow
(the replay's work, in this process, split into what the parent does alone and what each
process does), as on an idle machine.
"""

from __future__ import annotations

import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from bench.core import events_file
from streams.common.event_files import event_lines
from streams.common.event_order import (
    check_lines,
    lines_in_event_time_order,
    numbered,
    sorted_by_event_time,
)
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.core.rules import load_rules
from streams.offline.replay import (
    BadLine,
    Replayed,
    Replayer,
    in_line_order,
    keys_of,
    printed_shard,
    replay_sharded,
)

FULL_LEADS = 20_000  # about 240,000 events: about 30 s in one process
QUICK_LEADS = 4_000
ROUNDS = 2


def _timed(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """Wall seconds, CPU seconds (the command and every process it waited for), the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "streams", *args], capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def _compare(name: str, args: list[str], rounds: int) -> None:
    best: dict[int, tuple[float, float]] = {}
    outputs: dict[int, tuple[bytes, bytes, int]] = {}
    for _ in range(rounds):
        for jobs in (1, 2):
            wall, cpu, done = _timed([*args, "--jobs", str(jobs)])
            if jobs not in best or wall < best[jobs][0]:
                best[jobs] = (wall, cpu)
            outputs[jobs] = (done.stdout, done.stderr, done.returncode)
    same = outputs[1] == outputs[2]
    (one, one_cpu), (two, two_cpu) = best[1], best[2]
    print(
        f"  {name:<34} jobs 1 {one:6.2f} s (cpu {one_cpu:6.2f})   "
        f"jobs 2 {two:6.2f} s (cpu {two_cpu:6.2f})   ratio {one / two:.2f}x   "
        f"output {'identical' if same else 'DIFFERENT'} ({len(outputs[1][0]):,} bytes)"
    )
    if outputs[1][2] != 0:
        print(f"    exit code {outputs[1][2]}: {outputs[1][1][-300:]!r}")


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _replay_work(
    log: list[bytes], jobs: int
) -> tuple[list[bytes | str], float, float, list[float]]:
    """`leadflow replay`'s work in this process (sort, shards, merge): what it prints, the CPU
    seconds of this process, of all the processes it forked, of each shard's replay."""
    rules = load_rules()
    cpu, children = time.process_time(), _children_cpu()
    checked, keys = None, None
    if jobs > 1:  # as `leadflow replay --jobs` does: one pass checks and keys each line
        checked, file_keys = check_lines(log, DEFAULT_MAX_EVENT_BYTES, jobs, keys_of)
    with lines_in_event_time_order(
        "log", log, DEFAULT_MAX_EVENT_BYTES, lambda _: None, checked=checked
    ) as ordered:
        lines, numbers = ordered.held()
    if jobs > 1:
        keys = [file_keys[number - 1] for number in numbers]

    def work(
        replayer: Replayer, items: Iterator[tuple[int, Replayed | BadLine]]
    ) -> tuple[Any, float]:
        start = time.process_time()
        return printed_shard(replayer, items), time.process_time() - start

    def make() -> Replayer:
        return Replayer(rules, DEFAULT_MAX_EVENT_BYTES)

    [parts] = replay_sharded(lines, jobs, [make], work, keys)
    printed = [shown for _, shown in in_line_order(part.shown() for part, _ in parts)]
    shards = [took for _, took in parts]
    return printed, time.process_time() - cpu, _children_cpu() - children, shards


def _cpu_bound(leads: int, rounds: int) -> None:
    log = events_file(leads).read_bytes().splitlines()
    alone: list[bytes | str] = []
    one_cpu = bound = float("inf")
    parts = ""
    same = True
    for _ in range(rounds):  # alternated; CPU time too varies with what else runs
        gc.collect()
        alone, cpu, _, _ = _replay_work(log, 1)
        one_cpu = min(one_cpu, cpu)
        gc.collect()
        split, parent, children, shards = _replay_work(log, 2)
        same = same and split == alone
        # The parent alone, its processes' validation and keys shared evenly by two, then the
        # busiest shard's replay.
        this_bound = parent + (children - sum(shards)) / 2 + max(shards)
        if this_bound < bound:
            bound = this_bound
            each = " + ".join(f"{took:.2f}" for took in shards)
            parts = f"parent alone {parent:.2f}, processes {children:.2f} (shards {each})"
    print(
        f"  replay work, CPU seconds (best of {rounds}): 1 process {one_cpu:.2f}; 2 processes: "
        f"{parts} -> at best {bound:.2f} s on 2 idle cores, ratio {one_cpu / bound:.2f}x; "
        f"output {'identical' if same else 'DIFFERENT'}"
    )


def _import_sort(log: Path, rounds: int) -> None:
    """`leadflow import`'s sort (read, validate in `--jobs` processes, sort, spill, merge in
    order, as the publisher reads it) of the log, in this process: 1 and 2 alternated."""
    best: dict[int, float] = {}
    for _ in range(rounds):
        for jobs in (1, 2):
            gc.collect()
            started = time.perf_counter()
            with (
                event_lines(str(log)) as handle,
                sorted_by_event_time(
                    numbered(str(log), handle), DEFAULT_MAX_EVENT_BYTES, lambda _: None, jobs=jobs
                ) as ordered,
            ):
                for _ in ordered:
                    pass
            best[jobs] = min(best.get(jobs, float("inf")), time.perf_counter() - started)
    print(
        f"  import's sort (in this process)    jobs 1 {best[1]:6.2f} s                "
        f"jobs 2 {best[2]:6.2f} s                ratio {best[1] / best[2]:.2f}x"
    )


def main(quick: bool = False) -> None:
    leads = QUICK_LEADS if quick else FULL_LEADS
    log = events_file(leads)
    count = sum(1 for _ in log.open("rb"))
    print(
        f"jobs: {count:,} generated events of {leads:,} leads, {os.cpu_count()} cores, "
        f"best of {ROUNDS} alternated rounds (load average {os.getloadavg()[0]:.1f})"
    )
    _compare("replay", ["replay", str(log)], ROUNDS)
    _compare("replay --accounts", ["replay", str(log), "--accounts"], ROUNDS)
    _compare("replay --arrival-order", ["replay", str(log), "--arrival-order"], ROUNDS)
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-jobs-") as workdir:
        draft = Path(workdir) / "draft.toml"
        text = resources.files("streams.core").joinpath("rules.toml").read_text()
        draft.write_text(text.replace("mql_threshold = 60.0", "mql_threshold = 45.0"))
        _compare("whatif --json", ["whatif", "--rules", str(draft), str(log), "--json"], ROUNDS)
    _import_sort(log, ROUNDS)
    print(f"  (load average after: {os.getloadavg()[0]:.1f})")
    _cpu_bound(leads, ROUNDS + 1)
