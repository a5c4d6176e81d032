"""What the notifier counts, in Prometheus format on `LEADFLOW_NOTIFY__METRICS_PORT`."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


@dataclass
class NotifyMetrics:
    """The notifier's counters; one instance per registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        registry = self.registry
        self.deliveries = Counter(
            "leadflow_notify_deliveries",
            "Deliveries done, by webhook, kind and outcome (delivered, dead_lettered).",
            ["endpoint", "kind", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "leadflow_notify_retries",
            "Attempts that failed and will be tried again, by webhook and kind.",
            ["endpoint", "kind"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "leadflow_notify_dead_letters",
            "Records sent to the dead-letter topic: undeliverable (by a webhook) or invalid.",
            ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "leadflow_notify_skipped",
            "Records read that alert nobody: history, not an alert (a stage change that is "
            "not a new MQL), invalid (dead-lettered).",
            ["reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "leadflow_notify_latency_seconds",
            "From the record's Kafka timestamp to the receiver's 2xx, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "leadflow_notify_pending",
            "Records read and not yet delivered to (or dead-lettered for) every webhook.",
            registry=registry,
        )
