"""kafka-python clients built from settings: the one place where connection settings become
client configuration (bootstrap servers, SASL, TLS)."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from streams.common.settings import KafkaSettings, Settings, TopicSettings
from streams.errors import BrokerUnreachableError, TopicMissingError

log = logging.getLogger(__name__)

Label = TypeVar("Label")


def _connection(kafka: KafkaSettings) -> dict[str, Any]:
    # The keyword arguments kafka-python and aiokafka spell alike.
    config: dict[str, Any] = {
        "bootstrap_servers": kafka.servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism is not None:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        config["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return config


def connection_config(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments shared by producers, consumers and admin clients."""
    config = _connection(kafka)
    config["bootstrap_timeout_ms"] = round(kafka.bootstrap_timeout_seconds * 1000)
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(kafka, name)
        if value is not None:
            config[name] = str(value)
    return config


@contextmanager
def reaching(kafka: KafkaSettings) -> Iterator[None]:
    """Around the creation of a kafka-python client: a line on stderr at once when the broker
    does not accept a connection (`say_if_waiting`), and when no broker answers in the end,
    one BrokerUnreachableError naming the address and its setting instead of a traceback."""
    from kafka import errors

    say_if_waiting(kafka)
    try:
        yield
    except errors.KafkaTimeoutError as exc:
        # kafka-python 3 says so with this error and message ("Unable to bootstrap from ...").
        if "bootstrap" not in str(exc):
            raise
        raise BrokerUnreachableError(_unreachable(kafka)) from None


WAITING_NOTICE_AFTER = 0.5
"""Seconds a TCP connection to the bootstrap addresses may take before a command says that it
is waiting for the broker (the clients themselves wait `LEADFLOW_KAFKA__BOOTSTRAP_TIMEOUT_SECONDS`,
30 s, before they give up)."""


def say_if_waiting(kafka: KafkaSettings, within: float = WAITING_NOTICE_AFTER) -> bool:
    """Print one line on stderr, at once, when none of the bootstrap addresses accepts a TCP
    connection within `within` seconds; return whether it did. A broker that accepts prints
    nothing. For any command about to wait for the broker (kafka-python, aiokafka, Faust)."""
    if _accepts_a_connection(kafka.servers, within):
        return False
    print(
        f"waiting for the Kafka broker at {kafka.bootstrap_servers} "
        "(LEADFLOW_KAFKA__BOOTSTRAP_SERVERS)...",
        file=sys.stderr,
        flush=True,
    )
    return True


def _accepts_a_connection(servers: list[str], within: float) -> bool:
    deadline = time.monotonic() + within
    for server in servers:
        host, _, port = server.rpartition(":")
        # Every address gets its share of the time, even after a slow one.
        timeout = max(deadline - time.monotonic(), within / len(servers))
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except OSError:  # refused, timed out, or a name that does not resolve
            continue
    return False


def _unreachable(kafka: KafkaSettings) -> str:
    return (
        f"no Kafka broker answered at {kafka.bootstrap_servers} "
        "(LEADFLOW_KAFKA__BOOTSTRAP_SERVERS): is it running, and reachable from here?"
    )


def end_offsets_read(
    kafka: KafkaSettings, partitions: Iterable[Any], timeout: float = 10.0
) -> dict[Any, int]:
    """The offset after the last record of each partition (kafka-python `TopicPartition`s),
    checked against the log rather than taken from the broker's high watermark.

    The local broker (Tansu 0.6.0) reports the watermark as if a partition's last record batch
    held one record. A fetch at the reported last offset returns the whole batch that holds it,
    and its last record is the real end. On Apache Kafka the reported end is already right and
    this only confirms it. A partition whose fetch brings nothing within `timeout` seconds keeps
    the reported end, with a warning."""
    from kafka import KafkaConsumer

    wanted = list(partitions)
    if not wanted:
        return {}
    with reaching(kafka):
        probe = KafkaConsumer(
            **connection_config(kafka),
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=64 * 1024 * 1024,
            fetch_max_bytes=256 * 1024 * 1024,
        )
    try:
        ends: dict[Any, int] = dict(probe.end_offsets(wanted))
        pending = {tp for tp, end in ends.items() if end > 0}
        probe.assign(list(pending))
        for tp in pending:
            probe.seek(tp, ends[tp] - 1)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            # Unbounded records per poll: the whole batch at the reported end comes in one go.
            for tp, records in probe.poll(timeout_ms=200, max_records=1 << 30).items():
                if records and tp in pending:
                    ends[tp] = max(ends[tp], records[-1].offset + 1)
                    pending.discard(tp)
                    probe.pause(tp)
        for tp in pending:
            log.warning("no record at the reported end of %s; keeping %d", tp, ends[tp])
        return ends
    finally:
        probe.close()


def aiokafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the same connection settings (TLS as an SSL context)."""
    config = _connection(kafka)
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_context"] = ssl_context(kafka)
    return config


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A TLS context that trusts `ssl_cafile` (or the system store) and presents the client
    certificate when one is configured."""
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(
            str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
        )
    return context


def topic_specs(topics: TopicSettings) -> dict[str, dict[str, str]]:
    """Every topic leadflow owns, with its configuration.

    Stage changes are keyed by lead and form each lead's history: they are kept (delete policy,
    no compaction), as are account signals and changes (an account's history), and dead letters,
    which someone has to look at."""
    largest = str(topics.max_message_bytes)
    largest_dead_letter = str(topics.max_dead_letter_bytes)
    return {
        topics.events: {"cleanup.policy": "delete", "max.message.bytes": largest},
        topics.stage_changes: {"cleanup.policy": "delete"},
        topics.dead_letter: {"cleanup.policy": "delete", "max.message.bytes": largest_dead_letter},
        topics.account_signals: {"cleanup.policy": "delete"},
        topics.account_changes: {"cleanup.policy": "delete"},
        topics.handoff: {"cleanup.policy": "delete"},
        topics.identity_summaries: {"cleanup.policy": "delete"},
        topics.challenger_stage_changes: {"cleanup.policy": "delete"},
        topics.challenger_identity_summaries: {"cleanup.policy": "delete"},
        # The latest record of a spend id is the spend: older ones may be compacted away.
        topics.spend: {"cleanup.policy": "compact"},
    }


def create_topics(settings: Settings) -> list[str]:
    """Create leadflow's topics that do not exist yet; return the names this call created.

    Safe to run from several processes at once."""
    from kafka import errors as Errors
    from kafka.admin import KafkaAdminClient, NewTopic

    with reaching(settings.kafka):
        admin = KafkaAdminClient(**connection_config(settings.kafka))
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=settings.topics.partitions,
                replication_factor=settings.topics.replication_factor,
                topic_configs=configs,
            )
            for name, configs in topic_specs(settings.topics).items()
            if name not in existing
        ]
        if not missing:
            return []
        response = admin.create_topics(missing, raise_errors=False)
    finally:
        admin.close()
    created = []
    for result in response["topics"]:
        error = Errors.for_code(result["error_code"])
        # Workers started together race to create the same topics: losing that race is fine.
        if error is Errors.TopicAlreadyExistsError:
            continue
        if error is not Errors.NoError:
            raise error(f"cannot create topic {result['name']}: {result['error_message']}")
        created.append(result["name"])
    return created


def require_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Check, without creating or changing anything, that the broker answers and that every
    one of `topics` exists: BrokerUnreachableError, or TopicMissingError naming each missing
    topic and its setting. For commands that must know before they change anything."""
    from kafka.admin import KafkaAdminClient

    with reaching(settings.kafka):
        admin = KafkaAdminClient(**connection_config(settings.kafka))
    try:
        existing = set(admin.list_topics())  # all topics: a metadata read creates none
    finally:
        admin.close()
    missing = [topic for topic in dict.fromkeys(topics) if topic not in existing]
    if missing:
        setting = {
            value: f"LEADFLOW_TOPICS__{name.upper()}"
            for name, value in settings.topics.model_dump().items()
            if isinstance(value, str)
        }
        named = ", ".join(
            f"{topic!r} ({setting[topic]})" if topic in setting else repr(topic)
            for topic in missing
        )
        raise TopicMissingError(
            f"{'topic' if len(missing) == 1 else 'topics'} {named} not found on "
            f"{settings.kafka.bootstrap_servers}: `leadflow topics create` (or a worker) "
            "creates leadflow's topics"
        )


def unacknowledged(sends: Iterable[tuple[Label, Any]]) -> list[tuple[Label, str]]:
    """After the producer's `flush()`: the sends, each given as a label and the future that
    kafka-python's `send` returned, that the broker did not acknowledge, each label with why.
    (`flush()` returns once every send is done, failed ones included.)"""
    return [
        (label, send_failure(future.exception if future.is_done else None))
        for label, future in sends
        if not future.succeeded()
    ]


def send_failure(error: BaseException | None) -> str:
    """Why a send failed, in one line: the error's name, with its message or else the broker's
    description of its error code."""
    if error is None:
        return "not acknowledged by the broker"
    detail = error.args[0] if error.args and error.args[0] else getattr(error, "description", "")
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


READ_STALL_SECONDS = 30
"""How long a whole-topic read waits for a record before it gives up."""


def read_whole_topic(settings: Settings, topic: str) -> list[bytes]:
    """Every value on `topic`, partition by partition in offset order, from the first offset
    to the end as it was when the call began (tombstones left out), for the tools that read a
    log as a file (`whatif --from-topic`). The ends are checked against the log
    (`end_offsets_read`), not taken from the broker's word alone."""
    from kafka import KafkaConsumer, TopicPartition

    with reaching(settings.kafka):
        consumer = KafkaConsumer(
            **connection_config(settings.kafka),
            enable_auto_commit=False,
            group_id=None,
            allow_auto_create_topics=False,  # reading a log must not create it by accident
        )
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            raise TopicMissingError(
                f"topic {topic!r} does not exist on {settings.kafka.bootstrap_servers}"
            )
        partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
        ends = end_offsets_read(settings.kafka, partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        values: dict[int, list[bytes]] = {p.partition: [] for p in partitions}
        progressed = time.monotonic()
        while any(consumer.position(p) < ends[p] for p in partitions):
            polled = consumer.poll(timeout_ms=1000, max_records=10_000)
            for part, records in polled.items():
                values[part.partition].extend(
                    r.value for r in records if r.value is not None and r.offset < ends[part]
                )
            if polled:
                progressed = time.monotonic()
            elif time.monotonic() - progressed > READ_STALL_SECONDS:
                raise BrokerUnreachableError(
                    f"reading {topic!r} from {settings.kafka.bootstrap_servers} brought nothing "
                    f"for {READ_STALL_SECONDS} s before its end"
                )
    finally:
        consumer.close()
    return [value for number in sorted(values) for value in values[number]]
