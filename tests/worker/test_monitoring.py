"""The consumer-lag gauge: the events after the last one processed, per partition of the events
topic, for the partitions whose high watermark is known."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from faust.types import TP
from faust.types.transports import ConsumerT

from streams.worker.metrics import PipelineMetrics
from streams.worker.monitoring import set_consumer_lag


@dataclass
class FakeConsumer:
    """What the lag gauge asks of Faust's consumer."""

    highwaters: dict[TP, int | None] = field(default_factory=dict)

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]


def lags(metrics: PipelineMetrics) -> dict[str, float]:
    (family,) = (f for f in metrics.registry.collect() if f.name == "leadflow_consumer_lag")
    return {sample.labels["partition"]: sample.value for sample in family.samples}


def test_the_lag_counts_the_events_after_the_last_one_processed() -> None:
    consumer = FakeConsumer(
        {
            TP("events", 0): 10,  # offsets 0..9; 6 processed: 7, 8, 9 are behind
            TP("events", 1): 4,  # nothing processed yet: all 4 are behind
            TP("events", 2): None,  # no fetch has told the watermark yet
            TP("events", 3): 5,  # the local broker's watermark undercounts: never below 0
            TP("stage-changes", 0): 50,  # another topic of the worker
        }
    )
    metrics = PipelineMetrics()
    set_consumer_lag(cast(ConsumerT, consumer), "events", {0: 6, 3: 8}, metrics)
    assert lags(metrics) == {"0": 3, "1": 4, "3": 0}
