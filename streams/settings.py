"""leadflow's one settings object, read from `LEADFLOW_*` environment variables.

Nested sections use a double underscore: `LEADFLOW_KAFKA__BOOTSTRAP_SERVERS=broker:9092`.
Secrets are `SecretStr`: they print as `**********` and are only revealed where a client needs them.
Nothing else in leadflow reads the environment.
"""

from __future__ import annotations

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
    max_request_bytes: Annotated[int, Field(gt=0)] = Field(
        default=8 * 1024 * 1024 + 65536,
        description="Largest message the worker produces (a dead letter carries its original).",
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
