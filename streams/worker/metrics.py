"""What the worker counts, exposed in Prometheus text format on the Faust web port (`/metrics`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class PipelineMetrics:
    """The worker's counters; one instance per registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        registry = self.registry
        self.events_received = Counter(
            "leadflow_events_received", "Messages read from the events topic.", registry=registry
        )
        self.events_applied = Counter(
            "leadflow_events_applied", "Valid events applied to a lead.", registry=registry
        )
        self.duplicates = Counter(
            "leadflow_events_duplicate",
            "Valid events whose event_id the lead had already accepted.",
            registry=registry,
        )
        self.rerouted = Counter(
            "leadflow_events_rerouted",
            "Events (and account signals) found on the wrong partition for their key and sent to "
            "the right one.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "leadflow_dead_letters",
            "Messages sent to the dead-letter topic, by kind of reason.",
            ["kind"],
            registry=registry,
        )
        self.stage_changes = Counter(
            "leadflow_stage_changes",
            "Stage changes published, by target stage (retractions under 'retracted').",
            ["to_stage"],
            registry=registry,
        )
        self.account_signals = Counter(
            "leadflow_account_signals",
            "Lead facts sent to accounts (received: applied by the account table).",
            ["direction"],
            registry=registry,
        )
        self.account_changes = Counter(
            "leadflow_account_changes",
            "Account changes published, by target stage (retractions under 'retracted').",
            ["to_stage"],
            registry=registry,
        )
        self.identity = Counter(
            "leadflow_identity",
            "Identity stitching: links sent to their identity (link_sent), summaries sent to and "
            "applied by known leads (summary_sent, summary_applied).",
            ["what"],
            registry=registry,
        )
        self.identity_conflicts = Counter(
            "leadflow_identity_conflicts",
            "Links that disagree with an earlier-dated or earlier-received link of their identity.",
            registry=registry,
        )
        self.handoffs = Counter(
            "leadflow_handoffs",
            "Handoff events published, by kind (assigned, due_soon, breached, touched...).",
            ["kind"],
            registry=registry,
        )
        self.handoff_clock = Counter(
            "leadflow_handoff_clock_records",
            "Clock records applied: a handoff deadline came for a lead.",
            registry=registry,
        )
        self.latency = Histogram(
            "leadflow_processing_latency_seconds",
            "From the event's Kafka timestamp to its stage changes acknowledged and state written.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "leadflow_consumer_lag",
            "Messages of the events topic not processed yet, per partition (high watermark based).",
            ["partition"],
            registry=registry,
        )
