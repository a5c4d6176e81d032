"""leadflow's one settings object, read from `LEADFLOW_*` environment variables.

Nested sections use a double underscore: `LEADFLOW_KAFKA__BOOTSTRAP_SERVERS=broker:9092`.
Secrets are `SecretStr`: they print as `**********` and are only revealed where a client needs them.
Nothing else in leadflow reads the environment.
"""

from __future__ import annotations

import difflib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import pydantic_settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import LeadflowError

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
"""The largest valid event, unless `LEADFLOW_MAX_EVENT_BYTES` says otherwise."""
DEAD_LETTER_HEADROOM = 64 * 1024
"""Bytes a dead letter may add to its original message (its headers)."""

Port = Annotated[int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """How to reach the brokers. Only these decide which cluster leadflow talks to."""

    bootstrap_servers: str = Field(
        default="localhost:9092", description="Comma-separated host:port list."
    )
    client_id: str = Field(default="leadflow", description="Client id the brokers log.")
    bootstrap_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How long a command waits for a first broker to answer before it gives up.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL only)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signs the brokers' certificates (TLS)."
    )
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (mTLS).")
    ssl_keyfile: Path | None = Field(default=None, description="Client certificate's key.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        servers = [server.strip() for server in value.split(",") if server.strip()]
        if not servers:
            raise ValueError("needs at least one host:port")
        for server in servers:
            host, colon, port = server.rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port with a port from 1 to 65535")
        return value

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

    events: str = Field(default="leadflow.events", description="Input events, keyed by lead.")
    stage_changes: str = Field(
        default="leadflow.stage-changes", description="Lead stage changes, keyed by lead."
    )
    dead_letter: str = Field(
        default="leadflow.dead-letter",
        description="Rejected messages with their reason (`leadflow-*` headers).",
    )
    account_signals: str = Field(
        default="leadflow.account-signals",
        description="Lead facts for the account table, keyed by account (a repartition topic).",
    )
    handoff: str = Field(
        default="leadflow.handoff",
        description="Handoff events (assigned, due soon, breached, touched), keyed by lead.",
    )
    account_changes: str = Field(
        default="leadflow.account-changes", description="Account stage changes, keyed by account."
    )
    identity_summaries: str = Field(
        default="leadflow.identity-summaries",
        description=(
            "Identity stitching between lead states: a lead's link requests keyed by the "
            "identity (an anonymous visitor, a merged duplicate), that identity's summaries "
            "keyed by the lead (a repartition topic the lead agent reads too)."
        ),
    )
    challenger_identity_summaries: str = Field(
        default="leadflow.challenger-identity-summaries",
        description=(
            "The challenger's own identity stitching (as `identity_summaries`, for the "
            "challenger's lead states), so that the shadow stitches as the live worker does."
        ),
    )
    challenger_stage_changes: str = Field(
        default="leadflow.challenger-stage-changes",
        description=(
            "Stage changes of the challenger rules (LEADFLOW_WORKER__CHALLENGER_RULES), keyed "
            "by lead: the shadow's own topic, so no consumer of the live stream sees them."
        ),
    )
    spend: str = Field(
        default="leadflow.spend",
        description=(
            "Campaign spend (schemas.CampaignSpend), keyed by its spend id: a record sent "
            "again for the same source, campaign, day and currency replaces the earlier one."
        ),
    )
    partitions: Annotated[int, Field(ge=1)] = Field(
        default=4,
        description="Partitions of the topics leadflow creates: the most workers that share work.",
    )
    replication_factor: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Replicas of the topics leadflow creates."
    )
    max_message_bytes: Annotated[int, Field(gt=0)] = Field(
        default=8 * 1024 * 1024,
        description="Largest message the events and dead-letter topics accept.",
    )

    @property
    def max_dead_letter_bytes(self) -> int:
        """Largest dead letter: the largest message plus its headers."""
        return self.max_message_bytes + DEAD_LETTER_HEADROOM


class WorkerSettings(_Section):
    """The Faust worker. Timeouts were measured on the local broker and hold on Apache Kafka."""

    app_id: str = Field(default="leadflow", description="Consumer group and table-topic prefix.")
    store: Literal["rocksdb", "memory"] = Field(
        default="rocksdb",
        description="Table store: RocksDB through the rocksdict binding, or memory (tests).",
    )
    data_dir: Path = Field(
        default=Path(".leadflow/worker"),
        description=(
            "Where the tables' RocksDB files live (created if missing); one worker process "
            "per directory."
        ),
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="Address `/health` and `/metrics` listen on (`0.0.0.0`: every interface).",
    )
    web_port: Port = Field(default=6066, description="Port of `/health` and `/metrics`.")
    session_timeout: Annotated[float, Field(gt=0)] = Field(
        default=6.0,
        description="Seconds; also bounds how long a new worker waits to join its group.",
    )
    heartbeat_interval: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Seconds between the consumer's heartbeats to its group."
    )
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
    handoff_clock_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0,
        description=(
            "How often the handoff clock looks for deadlines that came (due soon, breached): "
            "an alert comes at most this late."
        ),
    )
    standby_replicas: Annotated[int, Field(ge=0, le=10)] = Field(
        default=1,
        description=(
            "Other workers that keep a copy of each table partition up to date from its "
            "changelog (Faust's standby replicas), so that one takes over a dead worker's "
            "partitions without reading the whole changelog. Each copy costs its worker the "
            "changelog's reads."
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
    max_state_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=900_000,
        description=(
            "Largest stored state of a lead or an account (one changelog record; Apache Kafka "
            "takes 1 MB by default). A message that would make a state larger goes to the "
            "dead letters (state_too_large) and the state stays as it was."
        ),
    )
    lead_cache: Annotated[int, Field(ge=0)] = Field(
        default=20_000,
        description=(
            "Decoded lead states kept in memory between batches (a state is reused only while "
            "the table still holds the bytes it came from); 0 decodes every time."
        ),
    )
    account_cache: Annotated[int, Field(ge=0)] = Field(
        default=2_000, description="Decoded account states kept in memory between batches."
    )
    max_request_bytes: Annotated[int, Field(gt=0)] = Field(
        default=8 * 1024 * 1024 + 65536,
        description="Largest message the worker produces (a dead letter carries its original).",
    )
    challenger_rules: Path | None = Field(
        default=None,
        description=(
            "A second rules file to score every event with in the shadow: one more worker "
            "process, in its own consumer group with its own tables, publishes what it "
            "decides to `topics.challenger_stage_changes` only (docs/rules.md)."
        ),
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
    database: str = Field(
        default="funnel",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Database of the funnel tables and views.",
    )
    username: str = Field(default="default", description="Server user.")
    password: SecretStr | None = Field(default=None, description="Server password.")
    verify_tls: bool = Field(default=True, description="Check the server's certificate.")
    ca_cert: Path | None = Field(default=None, description="CA bundle for `https://` servers.")

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb://")


class ProjectorSettings(_Section):
    """The projector that writes stage changes and events into ClickHouse."""

    group_id: str = Field(
        default="leadflow-projector",
        description="Group id its offsets are committed under (it owns every partition).",
    )
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

    host: str = Field(default="127.0.0.1", description="Address `leadflow collect` listens on.")
    port: Port = Field(default=8088, description="Port `leadflow collect` listens on.")
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
    header_timeout: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="Seconds a new connection has to send its first request line and headers; "
        "then it is closed.",
    )
    body_timeout: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Seconds a request's body may take to arrive once its headers did; then 408.",
    )
    idle_timeout: Annotated[float, Field(gt=0)] = Field(
        default=60.0,
        description="Seconds a keep-alive connection may take after an answer to send the next "
        "request's headers; then it is closed.",
    )
    max_connections: Annotated[int, Field(gt=0)] = Field(
        default=1000,
        description="Open connections at most; a connection beyond them gets 503 and is closed.",
    )
    topic_check_interval: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="Seconds between two checks that the broker answers and the collector's "
        "topics exist; requests get 503 while either is not so.",
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


NotifyKind = Literal["mql", "assigned", "due_soon", "breached", "touched", "withdrawn"]
"""What `leadflow notify` can deliver: a new MQL (a stage change) or a kind of handoff event."""


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class NotifySettings(_Section):
    """`leadflow notify`: new MQLs and handoff events delivered to webhooks (docs/handoff.md)."""

    group_id: str = Field(
        default="leadflow-notify",
        description="Group id its offsets are committed under (it owns every partition).",
    )
    urls: tuple[str, ...] = Field(
        default=(),
        description="Webhooks (JSON list of http(s) URLs) that receive every kind in `kinds`.",
    )
    kinds: tuple[NotifyKind, ...] = Field(
        default=("mql", "assigned", "due_soon", "breached"),
        description="What `urls` receive (JSON list): `mql` (a new MQL), `assigned`, "
        "`due_soon`, `breached`, `touched`, `withdrawn`.",
    )
    endpoints: tuple[tuple[NotifyKind, tuple[str, ...]], ...] = Field(
        default=(),
        description="More webhooks by kind, whatever `kinds` says (JSON): "
        '`{"breached": ["https://..."]}`.',
    )
    secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of the `X-Leadflow-Signature` header of every delivery "
        "(signed as the CRM webhook is verified). Required.",
    )
    body_format: Literal["json", "slack"] = Field(
        default="json",
        description='`json`: the record as published; `slack`: a Slack-compatible `{"text": ...}`.',
    )
    timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="Seconds one delivery attempt may take, answer included."
    )
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=10, description="Attempts of one delivery before it goes to the dead letters."
    )
    max_age: Annotated[float, Field(gt=0)] = Field(
        default=3600.0,
        description="Seconds after its record was published past which a failing delivery is "
        "not tried again but goes to the dead letters.",
    )
    backoff_base: Annotated[float, Field(gt=0)] = Field(
        default=0.5,
        description="Seconds: the n-th retry waits a random time up to base * 2^(n-1) (full "
        "jitter), at most `backoff_cap`, unless the receiver's Retry-After says otherwise.",
    )
    backoff_cap: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Seconds: the longest wait between two attempts by backoff."
    )
    concurrency: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=8,
        description="Deliveries in flight per webhook (each of a different lead: a lead's "
        "deliveries to one webhook go one after the other).",
    )
    max_pending: Annotated[int, Field(ge=1)] = Field(
        default=10_000,
        description="Records read but not yet delivered to (or dead-lettered for) every "
        "webhook; past it, reading waits.",
    )
    commit_interval: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="Seconds between two commits of the offsets delivered."
    )
    start: Literal["latest", "earliest"] = Field(
        default="latest",
        description="Where a new group starts: `latest` delivers what is published from its "
        "first start on, `earliest` everything the topics hold (history never alerts).",
    )
    fetch_max_wait: Annotated[float, Field(gt=0)] = Field(
        default=0.5, description="Seconds the broker may hold a fetch that finds no new record."
    )
    metrics_port: Port | None = Field(
        default=None, description="Serve /metrics (Prometheus) on this port; off when unset."
    )

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not _is_http_url(url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return urls

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoints_by_kind(cls, value: object) -> object:
        # Read from a JSON object {kind: URLs} (or the list of pairs `environment_of` passes to
        # another process), kept as (kind, URLs) pairs in kind order: hashable, as settings are.
        if isinstance(value, Mapping):
            value = list(value.items())
        if not isinstance(value, list | tuple):
            return value  # pydantic says what is wrong with it
        pairs = [pair for pair in value if isinstance(pair, list | tuple) and len(pair) == 2]
        kinds = typing.get_args(NotifyKind)
        for kind, _ in pairs:
            if kind not in kinds:
                raise ValueError(f"unknown kind {kind!r} (one of {', '.join(kinds)})")
        return sorted(pairs, key=lambda pair: str(pair[0])) if len(pairs) == len(value) else value

    @field_validator("endpoints")
    @classmethod
    def _endpoints_are_http(
        cls, endpoints: tuple[tuple[NotifyKind, tuple[str, ...]], ...]
    ) -> tuple[tuple[NotifyKind, tuple[str, ...]], ...]:
        for kind, urls in endpoints:
            for url in urls:
                if not _is_http_url(url):
                    raise ValueError(f"{kind}: {url!r} is not an http(s) URL")
        return endpoints

    @model_validator(mode="after")
    def _backoff_is_ordered(self) -> NotifySettings:
        if self.backoff_base > self.backoff_cap:
            raise ValueError(
                f"backoff_base ({self.backoff_base}) is above backoff_cap ({self.backoff_cap})"
            )
        return self


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
    notify: NotifySettings = NotifySettings()


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


class SettingsError(LeadflowError):
    """The environment holds a setting leadflow cannot use."""


def load_settings() -> Settings:
    """The settings of this process, from its `LEADFLOW_*` variables; a bad value raises
    SettingsError naming the variable, its value and what is wrong, all in one line."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            variable = "LEADFLOW_" + "__".join(str(part) for part in error["loc"]).upper()
            problem = f"{variable}: {error['msg'].removeprefix('Value error, ')}"
            if error["type"] == "extra_forbidden":
                problem = f"{variable} is not a leadflow setting{_closest(variable)}"
            elif error["type"] != "value_error" and _showable(variable, error["input"]):
                problem += f" (got {_shown(error['input'])})"
            problems.append(problem)
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
    except pydantic_settings.SettingsError as exc:
        # A list or mapping setting whose value is not JSON: pydantic-settings names only the
        # section, so name the variables of it that do not parse.
        takes_json = set(setting_variables(json_only=True))
        unparsed = [
            name
            for name, value in os.environ.items()
            if name.upper() in takes_json and not _json(value)
        ]
        names = ", ".join(sorted(unparsed)) or str(exc)
        raise SettingsError(
            f"invalid settings: {names}: a list or mapping setting takes JSON, "
            'such as ["a", "b"] or {"key": "value"}'
        ) from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each `LEADFLOW_*` variable that names no setting (a misspelt name would
    otherwise be ignored without a word), with the closest known name."""
    environ = os.environ if environ is None else environ
    known = set(setting_variables())
    sections = {name for name, info in Settings.model_fields.items() if _is_section(info)}
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("LEADFLOW_") or upper in known:
            continue
        if upper.removeprefix("LEADFLOW_").split("__")[0].lower() in sections:
            # A whole section as JSON, or a name in it: validation refuses a wrong one.
            continue
        warnings.append(f"{name} is not a leadflow setting{_closest(upper)}; it is ignored")
    return warnings


def setting_variables(json_only: bool = False) -> list[str]:
    """Every `LEADFLOW_*` variable a setting is read from; with `json_only`, those of list and
    mapping settings, whose values are JSON."""
    names = []
    for name, field_info in Settings.model_fields.items():
        annotation = field_info.annotation
        if _is_section(field_info):
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
            names += [
                f"LEADFLOW_{name}__{field}".upper()
                for field, info in annotation.model_fields.items()
                if not json_only or _takes_json(info.annotation)
            ]
        elif not json_only or _takes_json(annotation):
            names.append(f"LEADFLOW_{name}".upper())
    return names


def _takes_json(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_json(argument) for argument in typing.get_args(annotation))
    return origin in (tuple, list, dict, set, frozenset)


def _json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _closest(variable: str) -> str:
    match = difflib.get_close_matches(variable.upper(), setting_variables(), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _showable(variable: str, value: object) -> bool:
    secret = any(word in variable for word in ("PASSWORD", "SECRET", "KEY", "TOKEN"))
    return not secret and not isinstance(value, dict)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def settings_reference() -> str:
    """Every setting as a Markdown table: variable, default, meaning (docs/settings.md)."""
    lines = [
        "# Settings",
        "",
        "Every setting is a `LEADFLOW_*` environment variable; nested sections use a double",
        "underscore. This page is generated from the settings model: `leadflow settings`.",
        "",
    ]
    for name, field_info in Settings.model_fields.items():
        section = field_info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            lines += [f"## `{name}`: {_first_line(section.__doc__)}", ""]
            lines += _table(section, f"LEADFLOW_{name.upper()}__")
            lines.append("")
    top = {n: f for n, f in Settings.model_fields.items() if not _is_section(f)}
    lines[5:5] = ["## General", "", *_table(Settings, "LEADFLOW_", top), ""]
    return "\n".join(lines)


def _is_section(field_info: FieldInfo) -> bool:
    annotation = field_info.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _table(
    model: type[BaseModel], prefix: str, fields: dict[str, FieldInfo] | None = None
) -> list[str]:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field_info in (fields or model.model_fields).items():
        default = field_info.get_default(call_default_factory=False)
        if field_info.default_factory is not None:
            shown = "(derived)"
        elif default in (None, ()):
            shown = "unset"
        elif isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        else:
            shown = f"`{default}`"
        meaning = (field_info.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {shown} | {meaning} |")
    return rows


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text else ""
