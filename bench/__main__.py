"""Benchmarks: `./run bench [NAME ...]` prints figures; no benchmark asserts anything."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "core": "bench.core",
    "projector": "bench.projector",
    "collector": "bench.collector",
    "stream": "bench.stream",
    "state": "bench.state",
    "restart": "bench.restart",
    "challenger": "bench.challenger",
    "notify": "bench.notify",
    "handoff": "bench.handoff",
    "jobs": "bench.jobs",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="./run bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    options = parser.parse_args()
    unknown = [name for name in options.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for name in options.names or BENCHMARKS:
        importlib.import_module(BENCHMARKS[name]).main(quick=options.quick)


if __name__ == "__main__":
    main()
