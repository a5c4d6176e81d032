"""leadflow's one settings object, read from `LEADFLOW_*` environment variables.

Nested sections use a double underscore: `LEADFLOW_KAFKA__BOOTSTRAP_SERVERS=broker:9092`.
Secrets are `SecretStr`: they print as `**********` and are only revealed where a client needs them.
Nothing else in leadflow reads the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.codecs import DEFAULT_MAX_EVENT_BYTES

Port = Annotated[int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """How to reach the brokers. Only these decide which cluster leadflow talks to."""

    bootstrap_servers: str = Field(
        default="localhost:9092", description="Comma-separated host:port list."
    )
    client_id: str = "leadflow"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self

    @property
    def servers(self) -> list[str]:
        return [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()]


class TopicSettings(_Section):
    """Topic names and how `leadflow topics create` makes them."""

    events: str = "leadflow.events"
    stage_changes: str = "leadflow.stage-changes"
    dead_letter: str = "leadflow.dead-letter"
    account_signals: str = Field(
        default="leadflow.account-signals",
        description="Lead facts for the account table, keyed by account (a repartition topic).",
    )
    account_changes: str = "leadflow.account-changes"
    partitions: Annotated[int, Field(ge=1)] = 4
    replication_factor: Annotated[int, Field(ge=1)] = 1
    max_message_bytes: Annotated[int, Field(gt=0)] = Field(
        default=8 * 1024 * 1024,
        description="Largest message the events and dead-letter topics accept.",
    )


class WorkerSettings(_Section):
    """The Faust worker. Timeouts were measured on the local broker and hold on Apache Kafka."""

    app_id: str = Field(default="leadflow", description="Consumer group and table-topic prefix.")
    store: Literal["rocksdb", "memory"] = Field(
        default="rocksdb",
        description="Table store: RocksDB through the rocksdict binding, or memory (tests).",
    )
    data_dir: Path = Path(".leadflow/worker")
    web_host: str = "127.0.0.1"
    web_port: Port = 6066
    session_timeout: Annotated[float, Field(gt=0)] = Field(
        default=6.0,
        description="Seconds; also bounds how long a new worker waits to join its group.",
    )
    heartbeat_interval: Annotated[float, Field(gt=0)] = 1.0
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=500, description="Most messages an agent applies in one step."
    )
    batch_wait: Annotated[float, Field(gt=0)] = Field(
        default=0.01,
        description=(
            "Seconds an agent step waits for more messages before it applies those it has: "
            "added to the latency when traffic is light."
        ),
    )
    faust_metrics: bool = Field(
        default=False,
        description=(
            "Also serve Faust's own `faust_*` metrics on /metrics. Its sensors run on every "
            "message and table operation: 10-20% of the worker's throughput, measured."
        ),
    )
    accounts: bool = Field(
        default=True,
        description="Roll leads up to accounts (the account table and its two topics).",
    )
    fetch_max_wait: Annotated[float, Field(gt=0)] = Field(
        default=1.5,
        description=(
            "Seconds the broker may hold a fetch that finds no new record (Faust's own 1.5 s "
            "by default). Apache Kafka answers as soon as a record arrives; the local Tansu "
            "build holds the fetch for much of this time, which becomes the worker's latency."
        ),
    )
    max_request_bytes: Annotated[int, Field(gt=0)] = Field(
        default=8 * 1024 * 1024 + 65536,
        description="Largest message the worker produces (a dead letter carries its original).",
    )


def _embedded_clickhouse() -> str:
    return f"chdb://{Path.cwd() / '.leadflow' / 'clickhouse'}"


class ClickHouseSettings(_Section):
    """Where the funnel projections live: an embedded chDB directory or a ClickHouse server."""

    url: str = Field(
        default_factory=_embedded_clickhouse,
        description=(
            "`chdb:///abs/dir` for the embedded engine (default: .leadflow/clickhouse under the "
            "working directory), or `http(s)://host:port` for a server."
        ),
    )
    database: str = Field(default="funnel", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    username: str = "default"
    password: SecretStr | None = None
    verify_tls: bool = True
    ca_cert: Path | None = None

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb://")


class ProjectorSettings(_Section):
    """The projector that writes stage changes and events into ClickHouse."""

    group_id: str = Field(default="leadflow-projector", description="Its consumer group.")
    batch_size: Annotated[int, Field(ge=1, le=500_000)] = Field(
        default=20_000, description="Most rows per ClickHouse insert (kept far below 1M)."
    )
    flush_interval: Annotated[float, Field(gt=0)] = Field(
        default=0.5, description="Seconds a partial batch may wait before it is written."
    )
    metrics_port: Port | None = Field(
        default=None, description="Serve /metrics (Prometheus) on this port; off when unset."
    )
    temp_dir: Path = Field(
        default=Path(".leadflow/projector-tmp"),
        description="Where insert buffers are spooled (the embedded engine inserts from files).",
    )


class CollectorSettings(_Section):
    """`leadflow collect`: the HTTP edge for trackers (Segment API) and the CRM (webhook)."""

    host: str = "127.0.0.1"
    port: Port = 8088
    write_keys: tuple[SecretStr, ...] = Field(
        default=(), description="Accepted Segment write keys (JSON list in the environment)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the CRM webhook's signature header."
    )
    max_in_flight_bytes: Annotated[int, Field(gt=0)] = Field(
        default=16 * 1024 * 1024,
        description="Events waiting for broker acks; past it, requests get 503 and retry.",
    )
    publish_timeout: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="Seconds to wait for the broker's acks before answering 503."
    )
    max_clock_skew: Annotated[float, Field(ge=0)] = Field(
        default=86_400.0,
        description=(
            "Seconds an event's occurred_at may lie ahead of the time the collector received it "
            "(a sender's fast clock); later events are refused with 400."
        ),
    )


class PrivacySettings(_Section):
    """How direct identifiers reach ClickHouse."""

    hash_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC that replaces lead ids in ClickHouse. Required unless "
        "clear_identifiers is true.",
    )
    clear_identifiers: bool = Field(
        default=False, description="Opt in to storing lead ids in clear in ClickHouse."
    )


class Settings(BaseSettings):
    """Every setting leadflow has. Build it once at start-up and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="LEADFLOW_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    rules_file: Path | None = Field(
        default=None, description="Rules file (TOML); the shipped default rules when unset."
    )
    max_event_bytes: Annotated[int, Field(gt=0)] = Field(
        default=DEFAULT_MAX_EVENT_BYTES,
        description="Larger input messages go to the dead-letter topic.",
    )
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    projector: ProjectorSettings = ProjectorSettings()
    collector: CollectorSettings = CollectorSettings()
    privacy: PrivacySettings = PrivacySettings()


def environment_of(settings: BaseModel, prefix: str = "LEADFLOW_") -> dict[str, str]:
    """The `LEADFLOW_*` variables that rebuild `settings` in another process (non-defaults only).

    Secrets are revealed: use it only to start leadflow's own processes."""
    variables: dict[str, str] = {}
    for name, field_info in type(settings).model_fields.items():
        value = getattr(settings, name)
        key = f"{prefix}{name.upper()}"
        if isinstance(value, BaseModel):
            variables.update(environment_of(value, f"{key}__"))
        elif isinstance(value, tuple):
            if value != field_info.default:
                items = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in value]
                variables[key] = json.dumps(items)
        elif value != field_info.default and value is not None:
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            variables[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return variables
