"""Repeated client-library log records: one per kind per interval, with a count of the rest."""

from __future__ import annotations

import logging

from streams.common.logs import OncePerInterval


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, template: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, template, args, None)


def test_the_same_kind_passes_once_per_interval_then_says_how_many_were_held() -> None:
    clock = Clock()
    quiet = OncePerInterval(interval=10, clock=clock)
    passed = []
    for second in range(25):
        clock.now = float(second)
        for port in (1, 2):  # the arguments differ; the kind is the same
            connect = record("aiokafka.conn", "Unable connect to node %s", port)
            if quiet.filter(connect):
                passed.append((second, connect.getMessage()))
    assert passed == [
        (0, "Unable connect to node 1"),
        (10, "Unable connect to node 1 (19 more like this in 10s)"),
        (20, "Unable connect to node 1 (19 more like this in 10s)"),
    ]


def test_kinds_and_other_loggers_are_counted_apart() -> None:
    clock = Clock()
    quiet = OncePerInterval(interval=10, clock=clock)
    assert quiet.filter(record("aiokafka.conn", "Unable connect to node %s", 1))
    assert quiet.filter(record("aiokafka.client", "Unable to update metadata from %s", 1))
    assert quiet.filter(record("kafka.conn", "Unable connect to node %s", 1))
    assert not quiet.filter(record("aiokafka.conn", "Unable connect to node %s", 2))
    for _ in range(3):  # leadflow's own records and Faust's are never held back
        assert quiet.filter(record("streams.worker.app", "cannot set the fetch wait"))
        assert quiet.filter(record("faust.tables", "recovering"))
