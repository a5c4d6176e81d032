"""What the worker tells of itself: its /health and /metrics pages and its consumer-lag gauge."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import faust
from faust.exceptions import ConsumerNotStarted
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types.transports import ConsumerT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.worker.metrics import PipelineMetrics

LAG_INTERVAL = 2.0
"""Seconds between two measures of the consumer lag."""


def add_monitoring(
    app: faust.App,
    events_topic: str,
    positions: Mapping[int, int],
    metrics: PipelineMetrics,
    faust_metrics: bool = False,
) -> None:
    """Give `app` its /health and /metrics pages and a timer that sets the consumer lag.

    `positions` is the last offset processed per partition of `events_topic`, read as it
    changes (the lead agent's `LeadQualifier.positions`). With `faust_metrics`, Faust's own
    metrics are served on /metrics too."""
    _measure_lag(app, events_topic, positions, metrics)
    _health_page(app, events_topic, positions)
    if faust_metrics:
        app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(metrics.registry, "faust"))
    _metrics_page(app, metrics)


def _measure_lag(
    app: faust.App, events_topic: str, positions: Mapping[int, int], metrics: PipelineMetrics
) -> None:
    @app.timer(interval=LAG_INTERVAL)  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        set_consumer_lag(app.consumer, events_topic, positions, metrics)


def set_consumer_lag(
    consumer: ConsumerT, events_topic: str, positions: Mapping[int, int], metrics: PipelineMetrics
) -> None:
    """Set the lag gauge of each assigned partition of `events_topic` whose high watermark the
    consumer knows: the messages after the last one processed."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        # None until a fetch has told it, and again after a broker came back without data.
        if tp.topic == events_topic and highwater is not None:
            behind = highwater - positions.get(tp.partition, -1) - 1
            # The local broker's high watermark can undercount (docs/operations.md).
            metrics.consumer_lag.labels(str(tp.partition)).set(max(0, behind))


def _health_page(app: faust.App, events_topic: str, positions: Mapping[int, int]) -> None:
    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            assigned = sorted(
                tp.partition for tp in app.consumer.assignment() if tp.topic == events_topic
            )
            return self.json(
                {
                    "status": "ok",
                    "partitions": assigned,
                    "positions": {p: positions.get(p) for p in assigned},
                    "fetch_max_wait_ms": getattr(_fetcher(app), "_fetch_max_wait_ms", None),
                }
            )


def _metrics_page(app: faust.App, metrics: PipelineMetrics) -> None:
    registry = metrics.registry

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset in `content_type`; Prometheus' type carries one.
            headers = {"Content-Type": CONTENT_TYPE_LATEST}
            return self.bytes(generate_latest(registry), headers=headers)


def _fetcher(app: faust.App) -> Any:
    """The started aiokafka consumer's fetcher, or None (not started, or another layout)."""
    try:
        return cast(Any, app.consumer)._thread._ensure_consumer()._fetcher
    except (AttributeError, ConsumerNotStarted):
        return None
