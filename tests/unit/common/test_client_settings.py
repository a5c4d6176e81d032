"""Kafka SASL/TLS and ClickHouse credentials settings reach every client's configuration."""

from __future__ import annotations

import ssl
from pathlib import Path
from unittest import mock

import faust
import pytest

from projections.clickhouse import client_arguments
from streams.common.kafka_clients import aiokafka_config, connection_config
from streams.common.settings import ClickHouseSettings, KafkaSettings, Settings
from streams.worker.app import _credentials

CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
SECURE_KAFKA = {
    "LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": "b1:9093,b2:9093",
    "LEADFLOW_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    "LEADFLOW_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
    "LEADFLOW_KAFKA__SASL_USERNAME": "leadflow",
    "LEADFLOW_KAFKA__SASL_PASSWORD": "s3cret",
    "LEADFLOW_KAFKA__SSL_CAFILE": str(CA_FILE),
}


@pytest.fixture
def kafka() -> KafkaSettings:
    if not CA_FILE.exists():
        pytest.skip("needs the system CA bundle")
    with mock.patch.dict("os.environ", SECURE_KAFKA, clear=True):
        return Settings().kafka


def test_kafka_python_clients_get_sasl_and_tls(kafka: KafkaSettings) -> None:
    config = connection_config(kafka)
    assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("leadflow", "s3cret")
    assert config["ssl_cafile"] == str(CA_FILE)


def test_aiokafka_clients_get_sasl_and_a_tls_context(kafka: KafkaSettings) -> None:
    config = aiokafka_config(kafka)
    assert config["sasl_plain_password"] == "s3cret"
    assert isinstance(config["ssl_context"], ssl.SSLContext)
    assert config["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_the_faust_worker_gets_sasl_credentials_with_tls(kafka: KafkaSettings) -> None:
    credentials = _credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "leadflow" and credentials.password == "s3cret"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_plaintext_kafka_gets_no_credentials() -> None:
    assert _credentials(KafkaSettings()) is None
    assert "ssl_context" not in aiokafka_config(KafkaSettings())


def test_clickhouse_server_credentials_and_tls_reach_the_client() -> None:
    env = {
        "LEADFLOW_CLICKHOUSE__URL": "https://clickhouse.internal:8443",
        "LEADFLOW_CLICKHOUSE__USERNAME": "leadflow",
        "LEADFLOW_CLICKHOUSE__PASSWORD": "ch-secret",
        "LEADFLOW_CLICKHOUSE__CA_CERT": str(CA_FILE),
        "LEADFLOW_CLICKHOUSE__VERIFY_TLS": "true",
    }
    with mock.patch.dict("os.environ", env, clear=True):
        arguments = client_arguments(Settings().clickhouse)
    assert arguments["host"] == "clickhouse.internal" and arguments["port"] == 8443
    assert (arguments["username"], arguments["password"]) == ("leadflow", "ch-secret")
    assert arguments["secure"] is True and arguments["verify"] is True
    assert arguments["ca_cert"] == str(CA_FILE)


def test_the_embedded_engine_is_a_dsn() -> None:
    arguments = client_arguments(ClickHouseSettings(url="chdb:///data/ch"))
    assert arguments["dsn"] == "chdb:///data/ch" and "password" not in arguments


def test_secrets_never_print() -> None:
    with mock.patch.dict("os.environ", SECURE_KAFKA, clear=True):
        text = repr(Settings())
    assert "s3cret" not in text
