"""docker-compose.yml cannot run here (no Docker engine): check it agrees with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from projections.report import REPORT_VIEWS
from streams.cli import app
from streams.common.settings import Settings

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LEADFLOW_SERVICES = ("topics", "migrate", "worker", "projector", "collector")


def _env(service: str) -> dict[str, str]:
    """The service's environment, with `${VAR:?...}` secrets replaced by a placeholder."""

    def placeholder(match: re.Match[str]) -> str:
        return '["placeholder-key"]' if "WRITE_KEYS" in match[0] else "placeholder-secret"

    return {
        name: re.sub(r"\$\{[^}]+\}", placeholder, str(value))
        for name, value in SERVICES[service]["environment"].items()
    }


def _field_exists(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0].lower())
    if field is None:
        return False
    if len(path) == 1:
        return True
    annotation = field.annotation
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and _field_exists(annotation, path[1:])
    )


def test_the_stack_has_every_part() -> None:
    assert set(SERVICES) == {
        "kafka",
        "clickhouse",
        "topics",
        "migrate",
        "worker",
        "projector",
        "collector",
        "notify",
        "grafana",
    }
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in COMPOSE["volumes"], (name, source)
    assert (ROOT / "Dockerfile").exists()


@pytest.mark.parametrize("service", LEADFLOW_SERVICES)
def test_leadflow_services_run_real_commands_with_real_settings(service: str) -> None:
    env = _env(service)
    for name in env:
        assert name.startswith("LEADFLOW_")
        assert _field_exists(Settings, name.removeprefix("LEADFLOW_").split("__")), name
    with mock.patch.dict("os.environ", env, clear=True):
        settings = Settings()
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    words = SERVICES[service]["command"]
    assert words[0] in commands, words
    if len(words) > 1:
        assert words[1] in commands[words[0]].commands, words
    assert settings.kafka.bootstrap_servers == "kafka:19092"
    assert settings.clickhouse.url == "http://clickhouse:8123"


def test_clients_reach_the_brokers_and_clickhouse_as_configured() -> None:
    env = _env("worker")
    kafka = SERVICES["kafka"]["environment"]
    assert f"PLAINTEXT://{env['LEADFLOW_KAFKA__BOOTSTRAP_SERVERS']}" in kafka[
        "KAFKA_ADVERTISED_LISTENERS"
    ].split(",")
    clickhouse = SERVICES["clickhouse"]["environment"]
    assert clickhouse["CLICKHOUSE_DB"] == env["LEADFLOW_CLICKHOUSE__DATABASE"]
    assert clickhouse["CLICKHOUSE_USER"] == env["LEADFLOW_CLICKHOUSE__USERNAME"]
    assert (
        clickhouse["CLICKHOUSE_PASSWORD"]
        == SERVICES["worker"]["environment"]["LEADFLOW_CLICKHOUSE__PASSWORD"]
    )


def test_grafana_reads_the_documented_views_as_the_read_only_bi_user() -> None:
    database = _env("projector")["LEADFLOW_CLICKHOUSE__DATABASE"]
    grants = (ROOT / "deploy/clickhouse/users.d/bi.xml").read_text()
    assert f"GRANT SELECT ON {database}.*" in grants
    assert "<readonly>1</readonly>" in grants
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yml").read_text()
    )["datasources"][0]
    assert source["jsonData"]["username"] == "bi"
    assert source["jsonData"]["defaultDatabase"] == database
    assert source["secureJsonData"]["password"] == "$CLICKHOUSE_BI_PASSWORD"
    assert "CLICKHOUSE_BI_PASSWORD" in SERVICES["grafana"]["environment"]
    dashboard: dict[str, Any] = json.loads(
        (ROOT / "deploy/grafana/dashboards/funnel.json").read_text()
    )
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            read = set(re.findall(rf"\b{database}\.(\w+)", target["rawSql"]))
            assert read and read <= set(REPORT_VIEWS), (panel["title"], read)
